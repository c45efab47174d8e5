"""Durations and sizes as people write them in config.yaml and on the command line."""

from __future__ import annotations

import re

from ..strict_yaml import shown
from .model import ConfigError

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
        seconds = float(value) if not isinstance(value, int) or value.bit_length() < 1024 else float("inf")
    elif isinstance(value, str) and value and _DURATION_PART.sub("", value) == "":
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(value))
    else:
        raise ConfigError(f"{key}: expected a duration such as 500ms, 30s, 5m or 1h, got {shown(value)}")
    if not seconds > 0:
        raise ConfigError(f"{key}: must be longer than zero, got {shown(value)}")
    if not seconds <= MAX_DURATION:  # also infinity (YAML .inf, 1e400, an int too large for a float)
        raise ConfigError(f"{key}: must be at most 24h, got {shown(value)}")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest of '1h', '5m', '30s', '1.5s' that says exactly `seconds`."""
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


_MAX_SIZE_DIGITS = 15  # a petabyte and more: far past any reply
_SIZE = re.compile(r"^(\d+)\s*(B|KiB|MiB|GiB|kB|MB|GB)?$")
_UNIT_BYTES = {None: 1, "B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "kB": 1000, "MB": 1000**2, "GB": 1000**3}


def parse_size(value: object, key: str) -> int:
    """'16MiB', '500kB' or a plain number of bytes -> bytes (> 0)."""
    match = _SIZE.match(str(value).strip()) if isinstance(value, (int, str)) and not isinstance(value, bool) else None
    # Digits counted before int(): it refuses more than 4300 of them with a ValueError.
    if not match or len(match.group(1).lstrip("0")) > _MAX_SIZE_DIGITS or int(match.group(1)) == 0:
        raise ConfigError(
            f"{key}: expected a size such as 16MiB, 500kB or a number of bytes (at most {_MAX_SIZE_DIGITS} digits), "
            f"got {shown(value)}"
        )
    return int(match.group(1)) * _UNIT_BYTES[match.group(2)]
