"""One background thread per connection: poll, swap the snapshot, keep the health books.

A poll is all pages or nothing. The snapshot is a frozen object replaced by a single
assignment, so a scrape sees either the previous poll or the new one, never a mix, and
a failed poll leaves the last good snapshot where it was.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from .api import ApiError, Cancelled, ClientCounts, IbaneraClient
from .model import AccountBalance, CardBalance

log = logging.getLogger("exporter.poller")

# The `reason` of every ApiError, plus "internal" for a bug. All are exported from the
# start at 0, so that rate() and increase() see the first failure of each kind.
POLL_FAILURE_REASONS = (
    "timeout", "connection_error", "http_429", "http_5xx", "unauthorized", "rejected",
    "login_refused", "login_backoff", "logins_stopped", "malformed", "too_many_pages", "too_large", "internal",
)


@dataclass(frozen=True)
class Snapshot:
    accounts: tuple[AccountBalance, ...]
    completed_at: float  # unix time the last page arrived


@dataclass(frozen=True)
class CardSnapshot:
    cards: tuple[CardBalance, ...]
    completed_at: float


@dataclass(frozen=True)
class ConnectionStatus:
    """Everything a scrape or the landing page needs about one connection, consistent."""

    name: str
    snapshot: Snapshot | None  # the last good poll; None before the first one
    up: bool  # the last finished poll succeeded
    polls: int
    poll_failures: dict[str, int]  # by reason
    last_poll_duration: float | None
    last_error: str | None
    token_expires_at: float | None
    logins_paused_until: float | None
    clock_offset: float | None  # the API server's clock minus ours, once measured
    client: ClientCounts
    # Cards are a part of the poll of their own: their failure leaves the accounts' part,
    # and ibanera_up, alone. All None/False/empty when the connection does not poll cards.
    cards_enabled: bool = False
    cards: CardSnapshot | None = None
    cards_up: bool = False
    card_failures: dict[str, int] = field(default_factory=dict)
    last_card_error: str | None = None


class Poller:
    def __init__(self, client: IbaneraClient, interval: float, stop_event: threading.Event) -> None:
        self.client = client
        self.name = client.connection.name
        self._interval = interval
        self._stop_event = stop_event
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._up = False
        self._polls = 0
        self._failures: Counter[str] = Counter(dict.fromkeys(POLL_FAILURE_REASONS, 0))
        self._last_duration: float | None = None
        self._last_error: str | None = None
        self._cards: CardSnapshot | None = None
        self._cards_up = False
        self._last_card_error: str | None = None
        self._card_failures: Counter[str] = Counter(dict.fromkeys(POLL_FAILURE_REASONS, 0))
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
                snapshot=self._snapshot,
                up=self._up,
                polls=self._polls,
                poll_failures=dict(self._failures),
                last_poll_duration=self._last_duration,
                last_error=self._last_error,
                token_expires_at=self.client.token_expires_at,
                logins_paused_until=self.client.logins_paused_until,
                clock_offset=self.client.clock_offset,
                client=self.client.counters.snapshot(),
                cards_enabled=self.client.connection.cards,
                cards=self._cards,
                cards_up=self._cards_up,
                card_failures=dict(self._card_failures) if self.client.connection.cards else {},
                last_card_error=self._last_card_error,
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
        self._poll_accounts()
        if self.client.connection.cards:
            self._poll_cards()

    def _poll_cards(self) -> None:
        try:
            result = self.client.fetch_cards()
        except Cancelled:
            raise
        except Exception as exc:  # ApiError, or a bug: either way the accounts' part stands
            reason = exc.reason if isinstance(exc, ApiError) else "internal"
            with self._lock:
                self._cards_up = False
                self._card_failures[reason] += 1
                self._last_card_error = str(exc) if isinstance(exc, ApiError) else f"internal error: {type(exc).__name__}"
            log.warning("card poll failed", extra={"connection": self.name, "reason": reason, "error": str(exc)},
                        exc_info=not isinstance(exc, ApiError))
            return
        with self._lock:
            self._cards = CardSnapshot(result.cards, time.time())
            self._cards_up = True
            self._last_card_error = None
        log.info("card poll succeeded", extra={"connection": self.name, "cards": len(result.cards), "pages": result.pages})

    def _poll_accounts(self) -> None:
        with self._lock:
            self._polls += 1
        started = time.monotonic()
        try:
            result = self.client.fetch_balances()
        except Cancelled:
            raise
        except ApiError as exc:
            self._record_failure(exc.reason, str(exc), time.monotonic() - started)
            log.warning("poll failed", extra={"connection": self.name, "reason": exc.reason, "error": str(exc)})
            return
        except Exception as exc:  # a bug, not the API: keep the daemon and the last data alive
            self._record_failure("internal", f"internal error: {type(exc).__name__}", time.monotonic() - started)
            log.exception("poll failed with an internal error", extra={"connection": self.name})
            return
        duration = time.monotonic() - started
        snapshot = Snapshot(accounts=result.accounts, completed_at=time.time())
        with self._lock:
            self._snapshot = snapshot
            self._up = True
            self._last_duration = duration
            self._last_error = None
        log.info(
            "poll succeeded",
            extra={"connection": self.name, "accounts": len(result.accounts), "pages": result.pages, "duration": f"{duration:.3f}s"},
        )

    def _record_failure(self, reason: str, message: str, duration: float) -> None:
        with self._lock:
            self._up = False
            self._failures[reason] += 1
            self._last_duration = duration
            self._last_error = message
