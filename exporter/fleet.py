"""The running pollers, one per connection, and how a new Config is applied to them.

Logins are precious (each costs a one-time code, and refused ones lock the account), so
a reload restarts only the connections whose settings changed: an unchanged connection
keeps its poller, its token and its last snapshot.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from .api.client import IbaneraClient
from .config import Config, ConfigError, ConnectionConfig, RetryPolicy, Secret
from .poller import ConnectionStatus, Poller
from .totp import STEP_SECONDS

log = logging.getLogger("exporter.fleet")

# Margin past the next one-time-code step before a restarted connection logs in again:
# the client follows the API server's clock only once it is more than 2 s off ours.
TOTP_STEP_MARGIN_SECONDS = 3.0

# (connection, the config it comes from, its stop event) -> its client, with the login memory
# a restarted process would have (the CLI knows where that lives).
ClientFactory = Callable[[ConnectionConfig, Config, threading.Event], IbaneraClient]


@dataclass(frozen=True)
class PollerSettings:
    """Everything a connection's poller and client are built from: if it is equal, nothing changed."""

    # Secrets compare by value, so a new password counts as a change. Without its `accounts`:
    # names and floors are read at each scrape, and a restart for them would drop the balance
    # series until the next poll (resolving their alerts) and log in again.
    connection: ConnectionConfig
    poll_interval: float
    request_timeout: float
    retry: RetryPolicy
    login_backoff: float
    max_login_refusals: int
    max_response_size: int

    @classmethod
    def of(cls, connection: ConnectionConfig, config: Config) -> PollerSettings:
        return cls(
            replace(connection, accounts={}),
            config.poll_interval,
            config.request_timeout,
            config.retry,
            config.login_backoff,
            config.max_login_refusals,
            config.max_response_size,
        )


@dataclass(frozen=True)
class _Running:
    settings: PollerSettings
    poller: Poller
    stop: threading.Event  # this connection's own: a reload stops one connection, not all


@dataclass(frozen=True)
class ApplyResult:
    kept: tuple[str, ...]
    restarted: tuple[str, ...]
    started: tuple[str, ...]
    stopped: tuple[str, ...]


class Fleet:
    """One poller per connection of the current Config. `statuses` may be called from any thread."""

    def __init__(self, config: Config, make_client: ClientFactory, clock: Callable[[], float] = time.time) -> None:
        self._make_client = make_client
        self._clock = clock
        self._lock = threading.Lock()  # one apply or stop at a time
        self._stopped = False
        self._running: tuple[_Running, ...] = tuple(self._build(c, config) for c in config.connections)
        self._timers: list[threading.Timer] = []

    def start(self) -> None:
        for running in self._running:
            running.poller.start()

    def statuses(self) -> list[ConnectionStatus]:
        return [running.poller.status() for running in self._running]  # one read of an immutable tuple

    def apply(self, config: Config) -> ApplyResult:
        """Makes the running pollers match `config`. Raises ConfigError, changing nothing, when a
        connection cannot be set up."""
        with self._lock:
            if self._stopped:
                raise ConfigError("the exporter is shutting down")
            old = {running.poller.name: running for running in self._running}
            wanted = [(c, PollerSettings.of(c, config)) for c in config.connections]
            # Every new client is built before anything stops, so that a failure changes nothing.
            new: dict[str, _Running] = {}
            try:
                for connection, settings in wanted:
                    if connection.name not in old or old[connection.name].settings != settings:
                        new[connection.name] = self._build(connection, config)
            except ConfigError:
                for running in new.values():
                    running.poller.client.close()
                raise
            result = ApplyResult(
                kept=tuple(c.name for c, _ in wanted if c.name not in new),
                restarted=tuple(name for name in new if name in old),
                started=tuple(name for name in new if name not in old),
                stopped=tuple(name for name in old if name not in {c.name for c, _ in wanted}),
            )
            self._running = tuple(new.get(c.name) or old[c.name] for c, _ in wanted)
            stopping = [old[name] for name in (*result.restarted, *result.stopped)]
            for running in stopping:
                running.stop.set()  # its thread ends at its next wait; a request in flight is abandoned
            stopping_users = {_api_user(running.settings) for running in stopping}
            for running in new.values():
                delay = self._next_code_step() if _api_user(running.settings) in stopping_users else 0.0
                self._start_later(running.poller, delay)
            return result

    def stop(self, grace: float) -> None:
        """Stops every poller and waits up to `grace` seconds in all for them to end."""
        with self._lock:
            self._stopped = True
            for timer in self._timers:
                timer.cancel()
            for running in self._running:
                running.stop.set()
        deadline = time.monotonic() + grace
        for running in self._running:
            # A poll stuck in a slow request is a daemon thread: it may be left to die with the process.
            running.poller.join(max(0.0, deadline - time.monotonic()))

    def _build(self, connection: ConnectionConfig, config: Config) -> _Running:
        stop = threading.Event()
        try:
            client = self._make_client(connection, config, stop)
        except (OSError, ValueError) as exc:  # e.g. an unreadable ca_file; never the message: it might quote a secret
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            raise ConfigError(f"connection {connection.name}: cannot be set up: {detail}") from None
        return _Running(PollerSettings.of(connection, config), Poller(client, config.poll_interval, stop), stop)

    def _next_code_step(self) -> float:
        """Seconds until a client that replaces a stopping one with the same API user may log in.

        The old client may have just logged in with the current one-time code, and the new
        client cannot know it: a second login with the same code could be refused, and a
        refused login counts towards locking the account. Waiting past the next step
        makes the new client's first code one the old client never used.
        """
        return STEP_SECONDS - self._clock() % STEP_SECONDS + TOTP_STEP_MARGIN_SECONDS

    def _start_later(self, poller: Poller, delay: float) -> None:
        if delay <= 0:
            poller.start()
            return
        timer = threading.Timer(delay, poller.start)
        timer.daemon = True
        self._timers = [t for t in self._timers if t.is_alive()] + [timer]
        timer.start()


def _api_user(settings: PollerSettings) -> tuple[Secret, Secret]:
    return settings.connection.username, settings.connection.totp_secret
