"""config.yaml -> Config.

Every error names the key that is wrong (``connections[0].password_file``) and the
file it came from, and never contains a secret value: the message of a ConfigError
may be printed as it is.
"""

from __future__ import annotations

import os
import re
from collections.abc import Hashable, Mapping
from decimal import Decimal
from pathlib import Path

import yaml

from ..dialect import code
from ..files import UnreadableFile, read_small_text
from .connections import read_connection
from .model import MIN_LOGIN_BACKOFF, Config, ConfigError, RetryPolicy
from .reader import Reader, Yaml, amount, default, type_name
from .units import parse_duration, parse_size

# Far more than any real config (a thousand accounts with names is about 60 kB).
MAX_CONFIG_FILE_BYTES = 1024 * 1024
_TOP_KEYS = {
    "poll_interval",
    "request_timeout",
    "retry",
    "login_backoff",
    "max_login_refusals",
    "max_response_size",
    "connections",
    "thresholds",
}


def _read_thresholds(reader: Reader, data: Yaml, name: str) -> dict[str, Decimal]:
    per_asset = data.get(name, {})
    if not isinstance(per_asset, dict):
        raise reader.error(f"thresholds.{name}", f"expected a mapping of asset to amount, got {type_name(per_asset)}")
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
        result[code(asset)] = amount(reader, value, key)
    return result


def parse_config(
    data: object, source: str, environ: Mapping[str, str] | None = None, base_dir: Path | None = None
) -> Config:
    reader = Reader(source, os.environ if environ is None else environ, base_dir or Path("."))
    data = reader.mapping(data, "", _TOP_KEYS, required={"connections"})
    retry_data = reader.mapping(data.get("retry", {}), "retry", {"max_attempts", "initial_backoff", "max_backoff"})
    defaults = RetryPolicy()
    retry = RetryPolicy(
        max_attempts=reader.integer(retry_data, "max_attempts", "retry.max_attempts", defaults.max_attempts, 1, 20),
        initial_backoff=reader.parsed(
            retry_data, "initial_backoff", "retry.initial_backoff", defaults.initial_backoff, parse_duration
        ),
        max_backoff=reader.parsed(retry_data, "max_backoff", "retry.max_backoff", defaults.max_backoff, parse_duration),
    )
    if retry.max_backoff < retry.initial_backoff:
        raise reader.error("retry.max_backoff", "must not be shorter than retry.initial_backoff")
    connections_data = data["connections"]
    if not isinstance(connections_data, list) or not connections_data:
        raise reader.error(
            "connections", f"expected a list of one or more connections, got {type_name(connections_data)}"
        )
    connections = tuple(read_connection(reader, c, f"connections[{i}]") for i, c in enumerate(connections_data))
    seen: set[str] = set()
    for i, connection in enumerate(connections):
        if connection.name in seen:
            raise reader.error(f"connections[{i}].name", f"{connection.name!r} is used by another connection")
        seen.add(connection.name)
    login_backoff = reader.parsed(
        data, "login_backoff", "login_backoff", default(Config, "login_backoff"), parse_duration
    )
    if login_backoff < MIN_LOGIN_BACKOFF:
        raise reader.error(
            "login_backoff", "must be at least 10m: Ibanera locks an account for 10 minutes after failed logins"
        )
    thresholds = reader.mapping(
        data.get("thresholds", {}), "thresholds", {"low_available_balance", "low_available_card_balance"}
    )
    return Config(
        connections=connections,
        poll_interval=reader.parsed(
            data, "poll_interval", "poll_interval", default(Config, "poll_interval"), parse_duration
        ),
        request_timeout=reader.parsed(
            data, "request_timeout", "request_timeout", default(Config, "request_timeout"), parse_duration
        ),
        retry=retry,
        login_backoff=login_backoff,
        max_login_refusals=reader.integer(
            data, "max_login_refusals", "max_login_refusals", default(Config, "max_login_refusals"), 1, 10
        ),
        max_response_size=reader.parsed(
            data, "max_response_size", "max_response_size", default(Config, "max_response_size"), parse_size
        ),
        low_available_balance=_read_thresholds(reader, thresholds, "low_available_balance"),
        low_available_card_balance=_read_thresholds(reader, thresholds, "low_available_card_balance"),
    )


# YAML 1.1 reads 01001 as octal (513) and 1:30 as base 60 (90): an account id or an amount
# written so would silently mean another account or another amount, so neither is accepted.
_SURPRISING_INTEGER = re.compile(r"[-+]?(0[0-7_]+|[0-9][0-9_]*(:[0-5]?[0-9])+)")


class _Loader(yaml.SafeLoader):
    """yaml.safe_load, but an integer in octal or base-60 notation, or a key written twice in
    one mapping, is an error."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[object, object]:
        # Last one wins, in PyYAML: a second `1001:` dropped the first one's floor without a word.
        # Keys that a merge (<<) brings in may still be overridden.
        seen: set[object] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node)
            if isinstance(key, Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"{key} is written twice in one mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        text = self.construct_scalar(node)
        if isinstance(text, str) and _SURPRISING_INTEGER.fullmatch(text):
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"{text} is {super().construct_yaml_int(node)} in YAML 1.1 (octal or base 60): "
                "write the number in decimal without a leading zero, or quote it",
                node.start_mark,
            )
        return super().construct_yaml_int(node)


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    path = Path(path)
    try:
        text = read_small_text(path, MAX_CONFIG_FILE_BYTES)
    except UnreadableFile as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.reason}") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader: no Python objects
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        if "'\\t'" in problem:
            problem += " (YAML indents with spaces, not tabs)"
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML: nested too deeply") from None
    except ValueError:  # never its message: it may quote a value
        raise ConfigError(
            f"{path}: not valid YAML: a scalar cannot be read as a value "
            "(a number of more than 4300 digits, a date that does not exist): quote it"
        ) from None
    # Relative *_file paths resolve against the config file's directory, like Prometheus.
    return parse_config(data, str(path), environ, base_dir=path.parent)
