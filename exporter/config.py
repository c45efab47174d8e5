"""config.yaml -> frozen dataclasses.

Every error names the key that is wrong (``connections[0].password_file``) and the
file it came from, and never contains a secret value: the message of a ConfigError
may be printed as it is.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass, field, fields
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from .dialect import code
from .files import MAX_CONFIG_CHARS, MAX_SECRET_CHARS, read_text
from .totp import SecretDecodeError, decode_secret

DEFAULT_BASE_URL = "https://public-api.ibanera.com"
# Ibanera locks an account for 10 minutes after too many failed logins. A pause shorter
# than that could let the exporter itself keep the account locked.
MIN_LOGIN_BACKOFF = 600.0
# How many refused logins in a row lock an Ibanera account is not documented. Stopping
# after three means the exporter alone can never take an account there.
DEFAULT_MAX_LOGIN_REFUSALS = 3
TOTP_SECRET_ENCODINGS = ("base32", "ascii")
# A page of 1000 accounts is about 150 kB; a reply far past that is not a balances page.
DEFAULT_MAX_RESPONSE_SIZE = 16 * 1024 * 1024
Yaml = dict[str, Any]  # a mapping as yaml.safe_load made it; every value is checked before use
_Parsed = TypeVar("_Parsed")
_CONNECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class ConfigError(Exception):
    """The configuration cannot be used. The message is safe to print."""


class Secret:
    """A string that never shows itself in repr(), str() or f-strings."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4
    initial_backoff: float = 1.0
    max_backoff: float = 30.0


@dataclass(frozen=True)
class AccountConfig:
    """How a treasury team knows one asset account: its display name and its own floor."""

    name: str | None = None
    low_available_balance: Decimal | None = None  # overrides the asset's threshold


@dataclass(frozen=True)
class ConnectionConfig:
    name: str
    username: Secret
    password: Secret
    totp_secret: Secret
    base_url: str = DEFAULT_BASE_URL
    totp_secret_encoding: str = "base32"
    # Accounts (and cards) per request; "all": the balances in one request without paging
    # parameters, which the docs say returns the whole list (cards always page).
    page_size: int | Literal["all"] = 100
    # A server that keeps answering "there is another page" must not keep us polling forever.
    max_pages: int = 1000
    ca_file: Path | None = None  # CA bundle for the API's certificate instead of the system's
    tls_insecure_skip_verify: bool = False
    cards: bool = False  # also poll GET /customer/cards/balances
    cards_holder_name_label: bool = False  # card holders' names are personal data
    accounts: Mapping[int, AccountConfig] = field(default_factory=dict)  # by asset account id


@dataclass(frozen=True)
class Config:
    connections: tuple[ConnectionConfig, ...]
    poll_interval: float = 60.0
    request_timeout: float = 10.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    login_backoff: float = 900.0
    max_login_refusals: int = DEFAULT_MAX_LOGIN_REFUSALS
    max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE
    low_available_balance: Mapping[str, Decimal] = field(default_factory=dict)
    low_available_card_balance: Mapping[str, Decimal] = field(default_factory=dict)  # by currency


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
# The longest duration any setting may have. A day is more than any poll interval, timeout,
# back-off or login pause worth waiting for; and threading's waits refuse infinity
# (`poll_interval: .inf` would kill the poller thread).
MAX_DURATION = 86400.0
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object, key: str) -> float:
    """'500ms', '30s', '5m', '1h30m' or a plain number of seconds -> seconds (> 0, at most a day)."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a duration such as 30s, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and value and _DURATION_PART.sub("", value) == "":
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(value))
    else:
        raise ConfigError(f"{key}: expected a duration such as 500ms, 30s, 5m or 1h, got {value!r}")
    if not seconds > 0:
        raise ConfigError(f"{key}: must be longer than zero, got {value!r}")
    if not seconds <= MAX_DURATION:  # also infinity (YAML .inf, 1e400)
        raise ConfigError(f"{key}: must be at most 24h, got {value!r}")
    return seconds


def _default(cls: type, name: str) -> Any:
    """A field's default, so that the dataclasses are the one place defaults are written."""
    return next(f.default for f in fields(cls) if f.name == name)


def format_duration(seconds: float) -> str:
    """The shortest of '1h', '5m', '30s', '1.5s' that says exactly `seconds`."""
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


_SIZE = re.compile(r"^(\d+)\s*(B|KiB|MiB|GiB|kB|MB|GB)?$")
_UNIT_BYTES = {None: 1, "B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "kB": 1000, "MB": 1000**2, "GB": 1000**3}


def parse_size(value: object, key: str) -> int:
    """'16MiB', '500kB' or a plain number of bytes -> bytes (> 0)."""
    match = _SIZE.match(str(value).strip()) if isinstance(value, (int, str)) and not isinstance(value, bool) else None
    if not match or int(match.group(1)) == 0:
        raise ConfigError(f"{key}: expected a size such as 16MiB, 500kB or a number of bytes, got {value!r}")
    return int(match.group(1)) * _UNIT_BYTES[match.group(2)]


class _Reader:
    """Walks the parsed YAML, knowing the file and the key path for every error."""

    def __init__(self, source: str, environ: Mapping[str, str], base_dir: Path) -> None:
        self.source = source
        self.environ = environ
        self.base_dir = base_dir

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {key}: {message}")

    def mapping(self, value: object, key: str, allowed: set[str], required: Set[str] = frozenset()) -> Yaml:
        if not isinstance(value, dict):
            raise self.error(key or "top level", f"expected a mapping, got {_type_name(value)}")
        for name in value:
            if name not in allowed:
                where = f"{key}.{name}" if key else str(name)
                raise self.error(where, f"unknown key (allowed: {', '.join(sorted(allowed))})")
        for name in sorted(required - value.keys()):
            raise self.error(f"{key}.{name}" if key else name, "is required")
        return value

    def parsed(self, data: Yaml, name: str, key: str, default: _Parsed, parse: Callable[[object, str], _Parsed]) -> _Parsed:
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
            raise self.error(key, f"expected a whole number, got {_type_name(value)}")
        if not low <= value <= high:
            raise self.error(key, f"must be between {low} and {high}, got {value}")
        return value

    def string(self, data: Yaml, name: str, key: str, default: str | None = None) -> str:
        value = data.get(name, default)
        if not isinstance(value, str) or not value:
            raise self.error(key, f"expected a non-empty string, got {_type_name(value)}")
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

    def secret(self, data: Yaml, name: str, key_prefix: str) -> Secret:
        """A secret comes from `name` (literal or ${VAR}) or from `name_file`, never both."""
        file_key = f"{name}_file"
        if name in data and file_key in data:
            raise self.error(f"{key_prefix}.{name}", f"set either {name} or {file_key}, not both")
        if file_key in data:
            path_text = self.string(data, file_key, f"{key_prefix}.{file_key}")
            path = (self.base_dir / path_text).expanduser()
            try:
                value = read_text(path, MAX_SECRET_CHARS).rstrip("\r\n")
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not readable as UTF-8 text"
                raise self.error(f"{key_prefix}.{file_key}", f"cannot read {path}: {reason}") from None
            if not value:
                raise self.error(f"{key_prefix}.{file_key}", f"{path} is empty")
            return Secret(value)
        if name not in data:
            raise self.error(f"{key_prefix}.{name}", f"is required (or {file_key})")
        value = data[name]
        if not isinstance(value, str) or not value:
            # Say what the type was, never the value: it may be a mistyped secret.
            raise self.error(f"{key_prefix}.{name}", f"expected a non-empty string, got {_type_name(value)}")
        expanded = self.expand(value, f"{key_prefix}.{name}")
        if not expanded:
            raise self.error(f"{key_prefix}.{name}", "is empty after reading the environment")
        return Secret(expanded)


def _type_name(value: object) -> str:
    if value is None:
        return "nothing (null)"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


_SECRET_KEYS = ("username", "password", "totp_secret")
_CONNECTION_KEYS = {"name", "base_url", "totp_secret_encoding", "page_size", "max_pages", "ca_file",
                    "tls_insecure_skip_verify", "cards", "cards_holder_name_label", "accounts"} | {
    k for s in _SECRET_KEYS for k in (s, f"{s}_file")
}
_TOP_KEYS = {
    "poll_interval", "request_timeout", "retry", "login_backoff", "max_login_refusals", "max_response_size",
    "connections", "thresholds",
}


def _read_connection(reader: _Reader, data: object, key: str) -> ConnectionConfig:
    data = reader.mapping(data, key, _CONNECTION_KEYS, required={"name"})
    name = reader.string(data, "name", f"{key}.name")
    if not _CONNECTION_NAME.match(name):
        raise reader.error(f"{key}.name", f"{name!r} must be 1-63 letters, digits, '_', '.' or '-'")
    base_url = reader.string(data, "base_url", f"{key}.base_url", DEFAULT_BASE_URL).rstrip("/")
    if not re.match(r"^https?://[^/\s]+(/\S*)?$", base_url):
        raise reader.error(f"{key}.base_url", f"expected an http:// or https:// URL, got {base_url!r}")
    encoding = reader.string(data, "totp_secret_encoding", f"{key}.totp_secret_encoding",
                             _default(ConnectionConfig, "totp_secret_encoding"))
    if encoding not in TOTP_SECRET_ENCODINGS:
        raise reader.error(f"{key}.totp_secret_encoding", f"must be one of {', '.join(TOTP_SECRET_ENCODINGS)}, got {encoding!r}")
    username, password, totp_secret = (reader.secret(data, s, key) for s in _SECRET_KEYS)
    try:
        decode_secret(totp_secret.reveal(), encoding)
    except SecretDecodeError as exc:
        raise reader.error(f"{key}.totp_secret", str(exc)) from None
    ca_file = None
    if "ca_file" in data:
        ca_file = (reader.base_dir / reader.string(data, "ca_file", f"{key}.ca_file")).expanduser()
        if not os.access(ca_file, os.R_OK):
            raise reader.error(f"{key}.ca_file", f"cannot read {ca_file}")
    flags = {}
    for flag in ("tls_insecure_skip_verify", "cards", "cards_holder_name_label"):
        flags[flag] = data.get(flag, False)
        if not isinstance(flags[flag], bool):
            raise reader.error(f"{key}.{flag}", f"expected true or false, got {_type_name(flags[flag])}")
    if flags["cards_holder_name_label"] and not flags["cards"]:
        raise reader.error(f"{key}.cards_holder_name_label", "needs cards: true")
    return ConnectionConfig(
        ca_file=ca_file,
        **flags,
        accounts=read_accounts(reader, data.get("accounts", {}), f"{key}.accounts"),
        name=name,
        base_url=base_url,
        username=username,
        password=password,
        totp_secret=totp_secret,
        totp_secret_encoding=encoding,
        page_size=_read_page_size(reader, data, f"{key}.page_size"),
        max_pages=reader.integer(data, "max_pages", f"{key}.max_pages", _default(ConnectionConfig, "max_pages"), 1, 1_000_000),
    )


def _read_page_size(reader: _Reader, data: Yaml, key: str) -> int | Literal["all"]:
    value = data.get("page_size")
    if value == "all":
        return "all"
    if isinstance(value, str):
        raise reader.error(key, f"expected a whole number from 1 to 10000, or all, got {value!r}")
    return reader.integer(data, "page_size", key, _default(ConnectionConfig, "page_size"), 1, 10_000)


def _read_thresholds(reader: _Reader, data: Yaml, name: str) -> dict[str, Decimal]:
    per_asset = data.get(name, {})
    if not isinstance(per_asset, dict):
        raise reader.error(f"thresholds.{name}", f"expected a mapping of asset to amount, got {_type_name(per_asset)}")
    result: dict[str, Decimal] = {}
    spelled: dict[str, str] = {}  # code -> as the config spells it
    for asset, value in per_asset.items():
        key = f"thresholds.{name}.{asset}"
        if not isinstance(asset, str) or not asset:
            raise reader.error(key, "asset must be a non-empty string")
        # Codes are case-insensitive (the API sends "usd" as well as "USD"), and exported in
        # upper case: usd and USD are one threshold, and setting both is a mistake.
        if code(asset) in spelled:
            raise reader.error(key, f"the same code as {spelled[code(asset)]} (codes are case-insensitive)")
        spelled[code(asset)] = asset
        result[code(asset)] = _amount(reader, value, key)
    return result


def _amount(reader: _Reader, value: object, key: str) -> Decimal:
    """A finite number, as an exact Decimal."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise reader.error(key, f"expected a number, got {_type_name(value)}")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise reader.error(key, f"expected a number, got {value!r}") from None
    if not amount.is_finite():
        raise reader.error(key, f"expected a finite number, got {value!r}")
    return amount


MAX_ACCOUNT_NAME_LENGTH = 100
_ACCOUNT_ID = re.compile(r"^[0-9]{1,18}$")


def read_accounts(reader: _Reader, data: object, key: str) -> dict[int, AccountConfig]:
    """`accounts:` of a connection: {asset account id: AccountConfig}.

    Keys are the API's ids, written as numbers or as quoted digits ("1001"), as YAML users do both.
    """
    if not isinstance(data, dict):
        raise reader.error(key, f"expected a mapping of asset account id to name and floor, got {_type_name(data)}")
    result: dict[int, AccountConfig] = {}
    for raw_id, entry in data.items():
        account_id = _account_id(reader, raw_id, f"{key}.{raw_id}")
        if account_id in result:
            raise reader.error(f"{key}.{raw_id}", f"account {account_id} is listed twice")
        result[account_id] = _read_account(reader, entry, f"{key}.{raw_id}")
    return result


def _account_id(reader: _Reader, raw_id: object, key: str) -> int:
    # bool is an int in Python, and YAML reads `yes:` as True: neither is an account id.
    if isinstance(raw_id, int) and not isinstance(raw_id, bool) and raw_id >= 0:
        return raw_id
    if isinstance(raw_id, str) and _ACCOUNT_ID.match(raw_id):
        return int(raw_id)
    raise reader.error(key, f"an asset account id is a whole number of zero or more, got {raw_id!r}")


def _read_account(reader: _Reader, entry: object, key: str) -> AccountConfig:
    entry = reader.mapping(entry, key, {"name", "low_available_balance"})
    if not entry:
        raise reader.error(key, "set name, low_available_balance or both")
    name = entry.get("name")
    if name is not None:
        # A display name goes into labels, legends and alert summaries: one printable line.
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_ACCOUNT_NAME_LENGTH:
            raise reader.error(f"{key}.name", f"expected a name of 1-{MAX_ACCOUNT_NAME_LENGTH} characters, "
                                              f"got {_type_name(name)}")
        if not name.isprintable():
            raise reader.error(f"{key}.name", "must be one line of printable characters")
    floor = None
    if "low_available_balance" in entry:
        floor = _amount(reader, entry["low_available_balance"], f"{key}.low_available_balance")
        # Ibanera accounts have no overdraft: a negative floor is a typo that would never alert.
        if floor < 0:
            raise reader.error(f"{key}.low_available_balance", f"must be zero or more, got {entry['low_available_balance']!r}")
    return AccountConfig(name=name, low_available_balance=floor)


def parse_config(data: object, source: str, environ: Mapping[str, str] | None = None, base_dir: Path | None = None) -> Config:
    reader = _Reader(source, os.environ if environ is None else environ, base_dir or Path("."))
    data = reader.mapping(data, "", _TOP_KEYS, required={"connections"})
    retry_data = reader.mapping(data.get("retry", {}), "retry", {"max_attempts", "initial_backoff", "max_backoff"})
    defaults = RetryPolicy()
    retry = RetryPolicy(
        max_attempts=reader.integer(retry_data, "max_attempts", "retry.max_attempts", defaults.max_attempts, 1, 20),
        initial_backoff=reader.parsed(retry_data, "initial_backoff", "retry.initial_backoff", defaults.initial_backoff, parse_duration),
        max_backoff=reader.parsed(retry_data, "max_backoff", "retry.max_backoff", defaults.max_backoff, parse_duration),
    )
    if retry.max_backoff < retry.initial_backoff:
        raise reader.error("retry.max_backoff", "must not be shorter than retry.initial_backoff")
    connections_data = data["connections"]
    if not isinstance(connections_data, list) or not connections_data:
        raise reader.error("connections", f"expected a list of one or more connections, got {_type_name(connections_data)}")
    connections = tuple(_read_connection(reader, c, f"connections[{i}]") for i, c in enumerate(connections_data))
    seen: set[str] = set()
    for i, connection in enumerate(connections):
        if connection.name in seen:
            raise reader.error(f"connections[{i}].name", f"{connection.name!r} is used by another connection")
        seen.add(connection.name)
    login_backoff = reader.parsed(data, "login_backoff", "login_backoff", _default(Config, "login_backoff"), parse_duration)
    if login_backoff < MIN_LOGIN_BACKOFF:
        raise reader.error("login_backoff", "must be at least 10m: Ibanera locks an account for 10 minutes after failed logins")
    thresholds = reader.mapping(data.get("thresholds", {}), "thresholds", {"low_available_balance", "low_available_card_balance"})
    return Config(
        connections=connections,
        poll_interval=reader.parsed(data, "poll_interval", "poll_interval", _default(Config, "poll_interval"), parse_duration),
        request_timeout=reader.parsed(data, "request_timeout", "request_timeout", _default(Config, "request_timeout"), parse_duration),
        retry=retry,
        login_backoff=login_backoff,
        max_login_refusals=reader.integer(data, "max_login_refusals", "max_login_refusals", _default(Config, "max_login_refusals"), 1, 10),
        max_response_size=reader.parsed(data, "max_response_size", "max_response_size", _default(Config, "max_response_size"), parse_size),
        low_available_balance=_read_thresholds(reader, thresholds, "low_available_balance"),
        low_available_card_balance=_read_thresholds(reader, thresholds, "low_available_card_balance"),
    )


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    path = Path(path)
    try:
        text = read_text(path, MAX_CONFIG_CHARS)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the config file is not UTF-8 text") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        if "'\\t'" in problem:
            problem += " (YAML indents with spaces, not tabs)"
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    # Relative *_file paths resolve against the config file's directory, like Prometheus.
    return parse_config(data, str(path), environ, base_dir=path.parent)
