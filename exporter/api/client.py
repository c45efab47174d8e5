"""IbaneraClient: one API user's listings, built from the rooms of this package.

The transport sends requests and retries transient failures, the one-time codes pick
each request's TOTP step on the server's clock, the session keeps the token and guards
the logins, and the pages walk a listing. No error message built here contains a
password, TOTP secret, code or token.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from ..config import Config, ConnectionConfig
from ..dialect import Dialect
from ..model import AccountBalance, CardBalance
from ..totp import decode_secret
from .codes import OneTimeCodes
from .counters import ClientCounters
from .memory import LoginMemory
from .pages import Listed, accounts_listing, cards_listing, fetch_all
from .session import Session
from .transport import Transport

log = logging.getLogger("exporter.api")

# With page_size: all the balances come in one request, but the cards endpoint always
# pages (its server default is 10 a page): it is asked for pages of this size.
CARDS_PAGE_SIZE_WITH_ALL = 100

Row = TypeVar("Row")


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
        one_login: bool = False,
    ) -> None:
        self.connection = connection
        self.counters = ClientCounters()
        stop_event = stop_event or threading.Event()
        key = decode_secret(connection.totp_secret.reveal(), connection.totp_secret_encoding)
        self._transport = Transport(
            connection,
            request_timeout=config.request_timeout,
            retry=config.retry,
            max_response_size=config.max_response_size,
            counters=self.counters,
            clock=clock,
            on_date=lambda date, sent_at: self._codes.observe_date(date, sent_at),
            stop_event=stop_event,
            sleep=sleep,
        )
        memory = memory or LoginMemory.open(None, connection.name, clock(), config.login_backoff)
        self._codes = OneTimeCodes(key, connection.name, clock, self._transport.sleep, memory)
        self._session = Session(
            connection,
            self._transport,
            self._codes,
            self.counters,
            memory,
            login_backoff=config.login_backoff,
            max_login_refusals=config.max_login_refusals,
            clock=clock,
            one_login=one_login,
        )
        self._dialects_told: dict[str, Dialect] = {}  # by endpoint: what the log last said

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

    @property
    def token_lifetime(self) -> float | None:
        return self._session.token_lifetime

    def fetch_balances(self) -> Listed[AccountBalance]:
        """Every page of the caller's asset accounts, or an ApiError: never a partial list."""
        page_size = self.connection.page_size
        listed = fetch_all(
            accounts_listing(), self._session.get, None if page_size == "all" else page_size, self.connection.max_pages
        )
        return self._told("accounts_balances", listed)

    def fetch_cards(self) -> Listed[CardBalance]:
        """Every page of the customer's card balances, or an ApiError: never a partial list."""
        listing = cards_listing(self.connection.cards_holder_name_label)
        page_size = self.connection.page_size
        listed = fetch_all(
            listing,
            self._session.get,
            CARDS_PAGE_SIZE_WITH_ALL if page_size == "all" else page_size,
            self.connection.max_pages,
        )
        return self._told("cards_balances", listed)

    def _told(self, endpoint: str, listed: Listed[Row]) -> Listed[Row]:
        """Say once which forms the API uses (and again if they change): a person pointing the
        exporter at a new account learns which of the docs' dialects it speaks."""
        if listed.rows and self._dialects_told.get(endpoint) != listed.dialect:
            self._dialects_told[endpoint] = listed.dialect
            log.info(
                "the API's dialect",
                extra={"connection": self.connection.name, "endpoint": endpoint, "dialect": listed.dialect.describe()},
            )
        return listed
