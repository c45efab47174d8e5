"""The command line's flags, their defaults and the checks argparse cannot make."""

from __future__ import annotations

import argparse
import platform

from . import __version__
from .config import ConfigError, format_duration, parse_duration
from .http11 import ServerLimits
from .httpserver import DEFAULT_LIMITS
from .logs import FORMATS, LEVELS

DEFAULT_LISTEN_ADDRESS = ":10095"  # outside 9100-9999: an exporter for one vendor's API
PROGRAM = "ibanera-exporter"


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Prometheus exporter for the balances of Ibanera asset accounts. "
        "Polls GET /api/v1/customer/accounts/balances in the background and serves the balances as gauges.",
        epilog="Try it without credentials: ibanera-exporter --demo",
    )
    parser.add_argument(
        "--config.file",
        dest="config_file",
        default="config.yaml",
        metavar="FILE",
        help="configuration file (default: %(default)s)",
    )
    parser.add_argument(
        "--web.listen-address",
        dest="listen_address",
        default=DEFAULT_LISTEN_ADDRESS,
        metavar="HOST:PORT",
        help="address to serve /metrics on (default: %(default)s, all interfaces)",
    )
    parser.add_argument(
        "--web.config.file",
        dest="web_config_file",
        metavar="FILE",
        help="TLS, client certificates, basic auth and headers, in the exporter-toolkit format",
    )
    parser.add_argument(
        "--web.telemetry-path",
        dest="telemetry_path",
        default="/metrics",
        metavar="PATH",
        help="path under which to expose metrics (default: %(default)s)",
    )
    limits = DEFAULT_LIMITS
    parser.add_argument(
        "--web.max-connections",
        dest="max_connections",
        type=int,
        default=limits.max_connections,
        metavar="N",
        help="open client connections at most, one thread each; at the limit the oldest "
        "idle one is closed to make room (default: %(default)s)",
    )
    parser.add_argument(
        "--web.read-header-timeout",
        dest="read_header_timeout",
        default=format_duration(limits.read_header_timeout),
        metavar="DURATION",
        help="time a client has to send a request's line and headers, TLS handshake included (default: %(default)s)",
    )
    parser.add_argument(
        "--web.idle-timeout",
        dest="idle_timeout",
        default=format_duration(limits.idle_timeout),
        metavar="DURATION",
        help="how long a keep-alive connection may wait for its next request (default: %(default)s)",
    )
    parser.add_argument(
        "--log.level",
        dest="log_level",
        default="info",
        choices=LEVELS,
        help="only log messages with the given severity or above (default: %(default)s)",
    )
    parser.add_argument(
        "--log.format",
        dest="log_format",
        default="logfmt",
        choices=FORMATS,
        help="output format of log messages (default: %(default)s)",
    )
    parser.add_argument(
        "--storage.path",
        dest="storage_path",
        metavar="DIR",
        help="folder for the login state that must survive a restart (the last one-time code step "
        "used, a login pause); without it the first login after a start waits up to 30s",
    )
    parser.add_argument(
        "--config.check",
        dest="config_check",
        action="store_true",
        help="validate the configuration and its secrets, print what would be polled, and exit",
    )
    parser.add_argument(
        "--connection.check",
        dest="connection_check",
        action="store_true",
        help="log in once per connection, read every page, print what was found and exit 0, or say why not and exit 1",
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="poll a built-in simulator of the Ibanera API on loopback instead of the config file; "
        "no credentials needed",
    )
    parser.add_argument(
        "--version", action="version", version=f"{PROGRAM}, version {__version__} (python {platform.python_version()})"
    )
    return parser


def server_limits(args: argparse.Namespace) -> ServerLimits:
    if not 1 <= args.max_connections <= 100_000:
        raise ConfigError(f"--web.max-connections: expected 1 to 100000, got {args.max_connections}")
    return ServerLimits(
        max_connections=args.max_connections,
        read_header_timeout=parse_duration(args.read_header_timeout, "--web.read-header-timeout"),
        idle_timeout=parse_duration(args.idle_timeout, "--web.idle-timeout"),
    )
