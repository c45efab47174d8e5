"""IbaneraClient: one API user's listings, built from the rooms of this package.

The transport sends requests and retries transient failures, the one-time codes pick
each request's TOTP step on the server's clock, the session keeps the token and guards
the logins, and the pages walk a listing. No error message built here contains a
password, TOTP secret, code or token.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ..config import Config, ConnectionConfig
from ..model import AccountBalance, CardBalance
from ..totp import decode_secret
from .codes import OneTimeCodes
from .counters import ClientCounters
from .memory import LoginMemory
from .pages import Listed, accounts_listing, cards_listing, fetch_all
from .session import Session
from .transport import Transport


class IbaneraClient:
    """One API user. Not thread-safe: each connection's poller owns one client."""

    def __init__(
        self,
        connection: ConnectionConfig,
        config: Config,
        *,
        memory: LoginMemory | None = None,
        stop_event: threading.Event | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.connection = connection
        self.counters = ClientCounters()
        stop_event = stop_event or threading.Event()
        key = decode_secret(connection.totp_secret.reveal(), connection.totp_secret_encoding)
        self._transport = Transport(
            connection, request_timeout=config.request_timeout, retry=config.retry,
            max_response_size=config.max_response_size, counters=self.counters, clock=clock,
            on_date=lambda date, sent_at: self._codes.observe_date(date, sent_at),
            stop_event=stop_event, sleep=sleep,
        )
        memory = memory or LoginMemory.open(None, connection.name, clock(), config.login_backoff)
        self._codes = OneTimeCodes(key, connection.name, clock, self._transport.sleep, memory)
        self._session = Session(connection, self._transport, self._codes, self.counters, memory,
                                login_backoff=config.login_backoff, max_login_refusals=config.max_login_refusals,
                                clock=clock)

    @property
    def token_expires_at(self) -> float | None:
        return self._session.token_expires_at

    @property
    def logins_paused_until(self) -> float | None:
        return self._session.logins_paused_until

    @property
    def clock_offset(self) -> float | None:
        return self._codes.offset

    def close(self) -> None:
        self._transport.close()

    def fetch_balances(self) -> Listed[AccountBalance]:
        """Every page of the caller's asset accounts, or an ApiError: never a partial list."""
        return fetch_all(accounts_listing(), self._session.get, self.connection.page_size, self.connection.max_pages)

    def fetch_cards(self) -> Listed[CardBalance]:
        """Every page of the customer's card balances, or an ApiError: never a partial list."""
        listing = cards_listing(self.connection.cards_holder_name_label)
        return fetch_all(listing, self._session.get, self.connection.page_size, self.connection.max_pages)
