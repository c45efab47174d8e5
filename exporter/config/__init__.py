"""The configuration: config.yaml read into frozen dataclasses, with errors that name the key.

model: the dataclasses; units: durations and sizes; reader: walking the YAML;
connections: one connection; load: the whole file.
"""

from .load import load_config, parse_config
from .model import (
    DEFAULT_BASE_URL,
    DEFAULT_MAX_LOGIN_REFUSALS,
    DEFAULT_MAX_RESPONSE_SIZE,
    MIN_LOGIN_BACKOFF,
    TOTP_SECRET_ENCODINGS,
    AccountConfig,
    CaBundle,
    Config,
    ConfigError,
    ConnectionConfig,
    RetryPolicy,
    Secret,
)
from .units import MAX_DURATION, format_duration, parse_duration, parse_size

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_LOGIN_REFUSALS",
    "DEFAULT_MAX_RESPONSE_SIZE",
    "MAX_DURATION",
    "MIN_LOGIN_BACKOFF",
    "TOTP_SECRET_ENCODINGS",
    "AccountConfig",
    "CaBundle",
    "Config",
    "ConfigError",
    "ConnectionConfig",
    "RetryPolicy",
    "Secret",
    "format_duration",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_size",
]
