"""One background thread per connection: poll, swap the snapshots, keep the health books.

A poll has a part per listing: the account balances, and the card balances where the
connection asks for them. Each part is all pages or nothing, and the two parts fail
separately: a card failure never throws away a good account poll, nor the other way
round. A snapshot is a frozen object replaced by a single assignment, so a scrape sees
either the previous poll or the new one, never a mix, and a failed part leaves its last
good snapshot where it was.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from .api.client import IbaneraClient
from .api.counters import ClientCounts
from .api.errors import INTERNAL_REASON, POLL_FAILURE_REASONS, ApiError, Cancelled
from .api.pages import Listed
from .model import AccountBalance, CardBalance

log = logging.getLogger("exporter.poller")

Row = TypeVar("Row")


@dataclass(frozen=True)
class Snapshot(Generic[Row]):
    rows: tuple[Row, ...]
    completed_at: float  # unix time the last page arrived


@dataclass(frozen=True)
class PartStatus(Generic[Row]):
    """The health of one part of the poll, consistent."""

    snapshot: Snapshot[Row] | None  # the last good poll of this part; None before the first one
    up: bool  # the last finished poll of this part succeeded
    failures: dict[str, int]  # by reason, every reason present from the start
    last_error: str | None


@dataclass(frozen=True)
class ConnectionStatus:
    """Everything a scrape or the landing page needs about one connection, consistent."""

    name: str
    accounts: PartStatus[AccountBalance]
    cards: PartStatus[CardBalance] | None  # None when the connection does not poll cards
    polls: int
    last_poll_duration: float | None  # of the accounts part, retries included
    token_expires_at: float | None
    logins_paused_until: float | None
    clock_offset: float | None  # the API server's clock minus ours, once measured
    client: ClientCounts


class PollPart(Generic[Row]):
    """The books of one part: its snapshot, whether it is up, its failures by reason.

    Written by the poller thread, read by scrapes: every access holds the poller's lock.
    """

    def __init__(self, what: str, rows_key: str, lock: threading.Lock) -> None:
        self._what = what  # "poll" or "card poll", for log lines
        self._rows_key = rows_key  # what the rows are called in log lines: "accounts" or "cards"
        self._lock = lock
        self._snapshot: Snapshot[Row] | None = None
        self._up = False
        self._failures: Counter[str] = Counter(dict.fromkeys(POLL_FAILURE_REASONS, 0))
        self._last_error: str | None = None

    def status(self) -> PartStatus[Row]:
        """Called under the lock."""
        return PartStatus(self._snapshot, self._up, dict(self._failures), self._last_error)

    def run(self, connection: str, fetch: Callable[[], Listed[Row]]) -> bool:
        """One poll of this part; False when it failed. Raises only Cancelled."""
        try:
            result = fetch()
        except Cancelled:
            raise
        except ApiError as exc:
            self._failed(connection, exc.reason, str(exc))
            return False
        except Exception as exc:  # a bug, not the API: keep the daemon and the last data alive
            self._failed(connection, INTERNAL_REASON, f"internal error: {type(exc).__name__}", exc)
            return False
        with self._lock:
            self._snapshot = Snapshot(result.rows, time.time())
            self._up = True
            self._last_error = None
        log.info(
            f"{self._what} succeeded",
            extra={"connection": connection, self._rows_key: len(result.rows), "pages": result.pages},
        )
        return True

    def _failed(self, connection: str, reason: str, message: str, bug: Exception | None = None) -> None:
        with self._lock:
            self._up = False
            self._failures[reason] += 1
            self._last_error = message
        log.warning(
            f"{self._what} failed", extra={"connection": connection, "reason": reason, "error": message}, exc_info=bug
        )


class Poller:
    def __init__(self, client: IbaneraClient, interval: float, stop_event: threading.Event) -> None:
        self.client = client
        self.name = client.connection.name
        self._interval = interval
        self._stop_event = stop_event
        self._lock = threading.Lock()
        self._polls = 0
        self._last_duration: float | None = None
        self._accounts: PollPart[AccountBalance] = PollPart("poll", "accounts", self._lock)
        self._cards: PollPart[CardBalance] | None = (
            PollPart("card poll", "cards", self._lock) if client.connection.cards else None
        )
        self._thread = threading.Thread(target=self._run, name=f"poller-{self.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def status(self) -> ConnectionStatus:
        with self._lock:
            return ConnectionStatus(
                name=self.name,
                accounts=self._accounts.status(),
                cards=self._cards.status() if self._cards else None,
                polls=self._polls,
                last_poll_duration=self._last_duration,
                token_expires_at=self.client.token_expires_at,
                logins_paused_until=self.client.logins_paused_until,
                clock_offset=self.client.clock_offset,
                client=self.client.counters.snapshot(),
            )

    def _run(self) -> None:
        # Start to start: a slow poll shortens the pause after it, and polls never overlap
        # because there is only this one thread for the connection.
        next_start = time.monotonic()
        while not self._stop_event.is_set():
            try:
                self.poll_once()
            except Cancelled:
                break
            next_start += self._interval
            now = time.monotonic()
            if next_start < now:  # the poll took longer than the interval: no burst to catch up
                next_start = now
            if self._stop_event.wait(next_start - now):
                break
        self.client.close()

    def poll_once(self) -> None:
        """One poll. Raises only Cancelled; every other outcome lands in the health books."""
        with self._lock:
            self._polls += 1
        started = time.monotonic()
        self._accounts.run(self.name, self.client.fetch_balances)
        with self._lock:
            self._last_duration = time.monotonic() - started
        if self._cards is not None:
            self._cards.run(self.name, self.client.fetch_cards)
