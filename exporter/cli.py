"""The command line: flags, logging, wiring, signals. Nothing imports this module."""

from __future__ import annotations

import argparse
import logging
import os
import platform
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .api.client import IbaneraClient
from .api.memory import LoginMemory
from .config import AccountConfig, Config, ConfigError, ConnectionConfig, Secret, format_duration, load_config
from .logs import FORMATS, LEVELS, setup_logging
from .metrics import Exposition
from .poller import ConnectionStatus, Poller
from .web import ListenAddressError, WebContext, WebServer, parse_listen_address
from .webconfig import WebConfigError, WebConfigWatcher

if TYPE_CHECKING:  # imported for real only under --demo: the daemon never loads the simulator, nor pyotp
    from .simulator import Simulator

DEFAULT_LISTEN_ADDRESS = ":10095"  # outside 9100-9999: an exporter for one vendor's API
SHUTDOWN_GRACE_SECONDS = 1.5
PROGRAM = "ibanera-exporter"

log = logging.getLogger("exporter.cli")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Prometheus exporter for the balances of Ibanera asset accounts. "
        "Polls GET /api/v1/customer/accounts/balances in the background and serves the balances as gauges.",
        epilog="Try it without credentials: ibanera-exporter --demo",
    )
    parser.add_argument("--config.file", dest="config_file", default="config.yaml", metavar="FILE",
                        help="configuration file (default: %(default)s)")
    parser.add_argument("--web.listen-address", dest="listen_address", default=DEFAULT_LISTEN_ADDRESS, metavar="HOST:PORT",
                        help="address to serve /metrics on (default: %(default)s, all interfaces)")
    parser.add_argument("--web.config.file", dest="web_config_file", metavar="FILE",
                        help="TLS, client certificates, basic auth and headers, in the exporter-toolkit format")
    parser.add_argument("--web.telemetry-path", dest="telemetry_path", default="/metrics", metavar="PATH",
                        help="path under which to expose metrics (default: %(default)s)")
    parser.add_argument("--log.level", dest="log_level", default="info", choices=LEVELS,
                        help="only log messages with the given severity or above (default: %(default)s)")
    parser.add_argument("--log.format", dest="log_format", default="logfmt", choices=FORMATS,
                        help="output format of log messages (default: %(default)s)")
    parser.add_argument("--storage.path", dest="storage_path", metavar="DIR",
                        help="folder for the login state that must survive a restart (the last one-time code step "
                        "used, a login pause); without it the first login after a start waits up to 30s")
    parser.add_argument("--config.check", dest="config_check", action="store_true",
                        help="validate the configuration and its secrets, print what would be polled, and exit")
    parser.add_argument("--connection.check", dest="connection_check", action="store_true",
                        help="log in once per connection, read every page, print what was found and exit 0, or say "
                        "why not and exit 1")
    parser.add_argument("--demo", action="store_true",
                        help="poll a built-in simulator of the Ibanera API on loopback instead of the config file; "
                        "no credentials needed")
    parser.add_argument("--version", action="version",
                        version=f"{PROGRAM}, version {__version__} (python {platform.python_version()})")
    return parser


def _demo_config(simulator: Simulator) -> Config:
    connection = ConnectionConfig(
        name="demo",
        base_url=simulator.url,
        username=Secret(simulator.username),
        password=Secret(simulator.password),
        totp_secret=Secret(simulator.totp_secret_base32),
        page_size=5,  # the demo has 7 accounts: two pages, so pagination is on show
        cards=True,
        accounts={1001: AccountConfig(name="Payroll USD", low_available_balance=Decimal("50000")),
                  1002: AccountConfig(name="Suppliers EUR")},
    )
    return Config(
        connections=(connection,),
        poll_interval=10.0,
        low_available_balance={"USD": Decimal("10000"), "USDC": Decimal("5000")},
        low_available_card_balance={"USD": Decimal("200"), "EUR": Decimal("100")},
    )


def _describe(config: Config, source: str) -> str:
    lines = [
        f"{source}: configuration is valid",
        f"  poll every {format_duration(config.poll_interval)}, request timeout {format_duration(config.request_timeout)}, "
        f"{config.retry.max_attempts} attempts per request with backoff {format_duration(config.retry.initial_backoff)}"
        f"..{format_duration(config.retry.max_backoff)}, login pause after a refusal {format_duration(config.login_backoff)}",
    ]
    for c in config.connections:
        lines.append(
            f"  connection {c.name}: {c.base_url}, "
            + ("all accounts in one request, " if c.page_size == "all"
               else f"{c.page_size} accounts per page (at most {c.max_pages} pages), ")
            + f"TOTP secret {c.totp_secret_encoding}, username/password/totp_secret set"
            + (f", card balances too{' with holder names' if c.cards_holder_name_label else ''}" if c.cards else "")
        )
    thresholds = ", ".join(f"{asset} < {amount}" for asset, amount in sorted(config.low_available_balance.items()))
    lines.append(f"  low available balance thresholds: {thresholds or 'none'}")
    if config.low_available_card_balance:
        cards = ", ".join(f"{c} < {amount}" for c, amount in sorted(config.low_available_card_balance.items()))
        lines.append(f"  low available card balance thresholds: {cards}")
    return "\n".join(lines)


def _check(config: Config, source: str, connection_check: bool, storage: Path | None, demo: bool) -> int:
    if not connection_check:
        print(_describe(config, source))
        return 0
    from .check import check_all  # only the check needs it

    # The same login memory as the daemon: a recorded pause stops the check's login too,
    # and its login's step and any refusal are recorded for the daemon that follows.
    tables, ok = check_all(config, _login_memory(config, storage, demo))
    print(tables)
    return 0 if ok else 1


def _login_memory(config: Config, storage: Path | None, demo: bool) -> Callable[[ConnectionConfig], LoginMemory]:
    def memory(connection: ConnectionConfig) -> LoginMemory:
        # The built-in simulator is new with this process: none of its codes was ever used.
        if demo:
            return LoginMemory.first_contact()
        return LoginMemory.open(storage, connection.name, time.time(), config.login_backoff)

    return memory


def _fail(message: str, code: int) -> int:
    print(f"{PROGRAM}: error: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    if not args.telemetry_path.startswith("/") or args.telemetry_path in ("/", "/-/healthy", "/-/ready"):
        return _fail(f"--web.telemetry-path: must start with / and not be /, /-/healthy or /-/ready, got {args.telemetry_path!r}", 2)
    try:
        address = parse_listen_address(args.listen_address)
    except ListenAddressError as exc:
        return _fail(str(exc), 2)

    web_config = None
    if args.web_config_file:
        try:
            web_config = WebConfigWatcher(args.web_config_file)
        except WebConfigError as exc:
            return _fail(str(exc), 2)

    simulator = None
    if args.demo:
        from .simulator import Simulator

        simulator = Simulator(drift_every=5.0).start()
        config, source = _demo_config(simulator), "demo"
    else:
        try:
            config, source = load_config(args.config_file), args.config_file
        except ConfigError as exc:
            return _fail(str(exc), 2)
    storage = Path(args.storage_path) if args.storage_path else None
    if storage is not None and not (storage.is_dir() and os.access(storage, os.W_OK | os.X_OK)):
        return _fail(f"--storage.path: {storage} is not a writable folder", 2)
    if args.config_check or args.connection_check:
        code = _check(config, source, args.connection_check, storage, simulator is not None)
        if simulator:
            simulator.stop()
        return code
    return _serve(config, address, args.telemetry_path, simulator, web_config, storage)


def _serve(config: Config, address: tuple[str, int], telemetry_path: str, simulator: Simulator | None,
           web_config: WebConfigWatcher | None, storage: Path | None) -> int:
    stop = threading.Event()
    memory = _login_memory(config, storage, simulator is not None)
    pollers = [Poller(IbaneraClient(c, config, memory=memory(c), stop_event=stop), config.poll_interval, stop)
               for c in config.connections]

    def statuses() -> list[ConnectionStatus]:
        return [p.status() for p in pollers]

    exposition = Exposition(statuses, config, __version__)
    context = WebContext(exposition, statuses, telemetry_path, __version__)
    try:
        server = WebServer(address, context, web_config)
    except OSError as exc:
        return _fail(f"cannot listen on {address[0]}:{address[1]}: {exc.strerror or exc}", 1)

    def on_signal(signum: int, _frame: object) -> None:
        log.info("shutting down", extra={"signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    for poller in pollers:
        poller.start()
    web, _ = web_config.current() if web_config else (None, None)
    log.info(
        "listening",
        extra={"address": f"{address[0]}:{server.port}", "telemetry_path": telemetry_path, "version": __version__,
               "tls": bool(web and web.tls), "basic_auth_users": len(web.basic_auth_users) if web else 0,
               "connections": ",".join(p.name for p in pollers), "demo": simulator is not None},
    )
    stop.wait()
    server.stop()
    deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS
    for poller in pollers:
        # A poll stuck in a slow request is a daemon thread: it may be left to die with the process.
        poller.join(max(0.0, deadline - time.monotonic()))
    if simulator:
        simulator.stop()
    log.info("stopped")
    return 0


def run() -> None:
    sys.exit(main())
