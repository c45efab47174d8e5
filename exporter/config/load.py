"""config.yaml -> Config.

Every error names the key that is wrong (``connections[0].password_file``) and the
file it came from, and never contains a secret value: the message of a ConfigError
may be printed as it is.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path

from ..dialect import code
from ..files import UnreadableFile, read_small_text
from ..strict_yaml import UnreadableYaml, load_yaml, shown_key
from .connections import read_connection
from .model import MIN_LOGIN_BACKOFF, Config, ConfigError, RetryPolicy
from .reader import Reader, Yaml, default, floor, type_name
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
        key = f"thresholds.{name}.{shown_key(asset)}"
        if not isinstance(asset, str) or not asset:
            raise reader.error(key, "asset must be a non-empty string")
        # Codes are case-insensitive (the API sends "usd" as well as "USD"), and exported in
        # upper case: usd and USD are one threshold, and setting both is a mistake.
        if code(asset) in spelled:
            raise reader.error(key, f"the same code as {spelled[code(asset)]} (codes are case-insensitive)")
        spelled[code(asset)] = asset
        result[code(asset)] = floor(reader, value, key)
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


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    path = Path(path)
    try:
        text = read_small_text(path, MAX_CONFIG_FILE_BYTES)
    except UnreadableFile as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.reason}") from None
    try:
        data = load_yaml(text)
    except UnreadableYaml as exc:
        raise ConfigError(f"{path}: {exc}") from None
    # Relative *_file paths resolve against the config file's directory, like Prometheus.
    return parse_config(data, str(path), environ, base_dir=path.parent)
