"""The command line: flags, logging, wiring, signals. Nothing imports this module."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__, early  # noqa: F401 - first: see early.py
from .api.client import IbaneraClient
from .api.memory import LoginMemory
from .check import check_all, describe_config
from .config import (
    AccountConfig,
    Config,
    ConfigError,
    ConnectionConfig,
    Secret,
    load_config,
)
from .flags import PROGRAM, parser, server_limits
from .fleet import ClientFactory, Fleet
from .http11 import ServerLimits
from .logs import escaped, setup_logging
from .metrics import Exposition
from .reload import Reloader
from .web import ListenAddressError, WebContext, WebServer, parse_listen_address
from .webconfig import WebConfigError, WebConfigWatcher

if TYPE_CHECKING:  # imported for real only under --demo: the daemon never loads the simulator, nor pyotp
    from .simulator import Simulator

SHUTDOWN_GRACE_SECONDS = 1.5

log = logging.getLogger("exporter.cli")


def _demo_config(simulator: Simulator) -> Config:
    connection = ConnectionConfig(
        name="demo",
        base_url=simulator.url,
        username=Secret(simulator.username),
        password=Secret(simulator.password),
        totp_secret=Secret(simulator.totp_secret_base32),
        page_size=5,  # the demo has 7 accounts: two pages, so pagination is on show
        cards=True,
        accounts={
            1001: AccountConfig(name="Payroll USD", low_available_balance=Decimal("50000")),
            1002: AccountConfig(name="Suppliers EUR"),
        },
    )
    return Config(
        connections=(connection,),
        poll_interval=10.0,
        low_available_balance={"USD": Decimal("10000"), "USDC": Decimal("5000")},
        low_available_card_balance={"USD": Decimal("200"), "EUR": Decimal("100")},
    )


def _check(config: Config, source: str, connection_check: bool, open_memory: MemoryOpener) -> int:
    if not connection_check:
        print(describe_config(config, source))
        return 0
    # The same login memory as the daemon: a recorded pause stops the check's login too,
    # and its login's step and any refusal are recorded for the daemon that follows.
    tables, ok = check_all(config, lambda connection: open_memory(connection, config.login_backoff))
    print(tables)
    return 0 if ok else 1


MemoryOpener = Callable[[ConnectionConfig, float], LoginMemory]  # (connection, login_backoff)


def _memory_opener(storage: Path | None, *, demo: bool) -> MemoryOpener:
    def open_memory(connection: ConnectionConfig, login_backoff: float) -> LoginMemory:
        # The built-in simulator is new with this process: none of its codes was ever used.
        if demo:
            return LoginMemory.first_contact()
        return LoginMemory.open(storage, connection.name, time.time(), login_backoff)

    return open_memory


def _fail(message: str, code: int) -> int:
    print(f"{PROGRAM}: error: {escaped(message)}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    if not args.telemetry_path.startswith("/") or args.telemetry_path in ("/", "/-/healthy", "/-/ready"):
        return _fail(
            f"--web.telemetry-path: must start with / and not be /, /-/healthy or /-/ready, got {args.telemetry_path!r}",
            2,
        )
    try:
        address = parse_listen_address(args.listen_address)
    except ListenAddressError as exc:
        return _fail(str(exc), 2)

    try:
        limits = server_limits(args)
    except ConfigError as exc:
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
    open_memory = _memory_opener(storage, demo=simulator is not None)
    if args.config_check or args.connection_check:
        code = _check(config, source, args.connection_check, open_memory)
        if simulator:
            simulator.stop()
        return code
    demo_config = config

    def load() -> Config:
        return demo_config if args.demo else load_config(args.config_file)

    def make_client(connection: ConnectionConfig, current: Config, stop_event: threading.Event) -> IbaneraClient:
        memory = open_memory(connection, current.login_backoff)
        return IbaneraClient(connection, current, memory=memory, stop_event=stop_event)

    return _serve(config, load, make_client, address, args.telemetry_path, simulator, web_config, limits)


def _serve(
    config: Config,
    load: Callable[[], Config],
    make_client: ClientFactory,
    address: tuple[str, int],
    telemetry_path: str,
    simulator: Simulator | None,
    web_config: WebConfigWatcher | None,
    limits: ServerLimits,
) -> int:
    # The signals first: from here on, SIGHUP reloads and never ends the process.
    wake = threading.Event()
    pending: set[str] = set()

    def on_signal(signum: int, _frame: object) -> None:
        pending.add("reload" if signum == signal.SIGHUP else "stop")
        if signum != signal.SIGHUP:
            log.info("shutting down", extra={"signal": signal.Signals(signum).name})
        wake.set()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)

    try:
        fleet = Fleet(config, make_client)
    except ConfigError as exc:  # a connection that cannot be set up, e.g. an unreadable ca_file
        return _fail(str(exc), 2)
    exposition = Exposition(fleet.statuses, config, __version__)
    reloader = Reloader(load, fleet, exposition)
    exposition.registry.register(reloader)
    context = WebContext(exposition, fleet.statuses, telemetry_path, __version__, reload=reloader.reload)
    try:
        server = WebServer(address, context, web_config, limits)
    except OSError as exc:
        return _fail(f"cannot listen on {address[0]}:{address[1]}: {exc.strerror or exc}", 1)
    server.start()
    fleet.start()
    web = web_config.current().config if web_config else None
    log.info(
        "listening",
        extra={
            "address": f"{address[0]}:{server.port}",
            "telemetry_path": telemetry_path,
            "version": __version__,
            "tls": bool(web and web.tls),
            "basic_auth_users": len(web.basic_auth_users) if web else 0,
            "connections": ",".join(c.name for c in config.connections),
            "demo": simulator is not None,
            "max_connections": limits.max_connections,
        },
    )
    while "stop" not in pending:
        wake.wait()
        wake.clear()
        if "reload" in pending and "stop" not in pending:
            pending.discard("reload")  # a storm of SIGHUPs while a reload runs makes one more reload
            try:
                reloader.reload()
            except ConfigError:
                pass  # logged by the reloader; the running config carries on
    server.stop()
    fleet.stop(SHUTDOWN_GRACE_SECONDS)
    if simulator:
        simulator.stop()
    log.info("stopped")
    return 0


def run() -> None:
    sys.exit(main())
