"""Walking parsed YAML with the file and the key path in hand for every error."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Set
from dataclasses import fields
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TypeVar

from ..dialect import MAX_AMOUNT_DIGITS
from ..files import UnreadableFile, read_small_text
from ..strict_yaml import shown, shown_key
from .model import ConfigError, Secret

Yaml = dict[str, Any]  # a mapping as yaml.safe_load made it; every value is checked before use
_Parsed = TypeVar("_Parsed")
# A secret is a line; a file of more than this is not the secret file that was meant.
MAX_SECRET_FILE_BYTES = 64 * 1024


def default(cls: type, name: str) -> Any:
    """A field's default, so that the dataclasses are the one place defaults are written."""
    return next(f.default for f in fields(cls) if f.name == name)


class Reader:
    """Walks the parsed YAML, knowing the file and the key path for every error."""

    def __init__(self, source: str, environ: Mapping[str, str], base_dir: Path) -> None:
        self.source = source
        self.environ = environ
        self.base_dir = base_dir

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {key}: {message}")

    def mapping(self, value: object, key: str, allowed: set[str], required: Set[str] = frozenset()) -> Yaml:
        if not isinstance(value, dict):
            raise self.error(key or "top level", f"expected a mapping, got {type_name(value)}")
        for name in value:
            if name not in allowed:
                where = f"{key}.{shown_key(name)}" if key else shown_key(name)
                raise self.error(where, f"unknown key (allowed: {', '.join(sorted(allowed))})")
        for name in sorted(required - value.keys()):
            raise self.error(f"{key}.{name}" if key else name, "is required")
        return value

    def parsed(
        self, data: Yaml, name: str, key: str, default: _Parsed, parse: Callable[[object, str], _Parsed]
    ) -> _Parsed:
        """data[name] through `parse` (parse_duration, parse_size), or `default` when absent."""
        if name not in data:
            return default
        try:
            return parse(data[name], key)
        except ConfigError as exc:
            raise ConfigError(f"{self.source}: {exc}") from None

    def integer(self, data: Yaml, name: str, key: str, default: int, low: int, high: int) -> int:
        value = data.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"expected a whole number, got {type_name(value)}")
        if not low <= value <= high:
            raise self.error(key, f"must be between {low} and {high}, got {shown(value)}")
        return value

    def string(self, data: Yaml, name: str, key: str, default: str | None = None) -> str:
        value = data.get(name, default)
        if not isinstance(value, str) or not value:
            raise self.error(key, f"expected a non-empty string, got {type_name(value)}")
        return self.expand(value, key)

    def expand(self, value: str, key: str) -> str:
        """${VAR} reads the environment; $$ is a literal dollar sign."""

        def substitute(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            var = match.group(1)
            if var not in self.environ:
                raise self.error(key, f"environment variable {var} is not set")
            return self.environ[var]

        return re.sub(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}", substitute, value)

    def path(self, text: str, key: str) -> Path:
        """A file named in the config: relative to its folder, ~ and ~user expanded."""
        try:
            return (self.base_dir / text).expanduser()
        except RuntimeError:  # ~nosuchuser, or ~ without HOME or a passwd entry
            raise self.error(key, "cannot find the home folder its ~ names") from None

    def secret(self, data: Yaml, name: str, key_prefix: str) -> Secret:
        """A secret comes from `name` (literal or ${VAR}) or from `name_file`, never both."""
        file_key = f"{name}_file"
        if name in data and file_key in data:
            raise self.error(f"{key_prefix}.{name}", f"set either {name} or {file_key}, not both")
        if file_key in data:
            path = self.path(self.string(data, file_key, f"{key_prefix}.{file_key}"), f"{key_prefix}.{file_key}")
            try:
                # Without Notepad's byte order mark: sent as the first character, every login is refused.
                value = read_small_text(path, MAX_SECRET_FILE_BYTES).removeprefix("\ufeff").rstrip("\r\n")
            except UnreadableFile as exc:
                raise self.error(f"{key_prefix}.{file_key}", f"cannot read {path}: {exc.reason}") from None
            if not value:
                raise self.error(f"{key_prefix}.{file_key}", f"{path} is empty")
            return Secret(value)
        if name not in data:
            raise self.error(f"{key_prefix}.{name}", f"is required (or {file_key})")
        value = data[name]
        if not isinstance(value, str) or not value:
            # Say what the type was, never the value: it may be a mistyped secret.
            raise self.error(f"{key_prefix}.{name}", f"expected a non-empty string, got {type_name(value)}")
        expanded = self.expand(value, f"{key_prefix}.{name}")
        if not expanded:
            raise self.error(f"{key_prefix}.{name}", "is empty after reading the environment")
        return Secret(expanded)


def type_name(value: object) -> str:
    if value is None:
        return "nothing (null)"
    return {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }.get(type(value), type(value).__name__)


def amount(reader: Reader, value: object, key: str) -> Decimal:
    """A finite number, as an exact Decimal."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise reader.error(key, f"expected a number, got {type_name(value)}")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise reader.error(key, f"expected a number, got {shown(value)}") from None
    # "1e400" is a finite Decimal but +Inf as the float it is exported as: every balance would be low.
    if not amount.is_finite() or amount.adjusted() > 307:
        raise reader.error(key, f"expected a finite number, got {shown(value)}")
    # "1e-400" would be exported as 0: the same bound as the API's amounts (model.py).
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > MAX_AMOUNT_DIGITS:
        raise reader.error(key, f"more than {MAX_AMOUNT_DIGITS} decimal places, got {shown(value)}")
    return amount


def floor(reader: Reader, value: object, key: str) -> Decimal:
    """A low-balance floor: an amount of zero or more.

    Ibanera accounts and cards have no overdraft: a negative floor is a typo that would never alert.
    """
    result = amount(reader, value, key)
    if result < 0:
        raise reader.error(key, f"must be zero or more, got {shown(value)}")
    return result
