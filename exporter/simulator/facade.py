"""Simulator: the rooms put together, with the steering methods tests and the demo use."""

from __future__ import annotations

import json
import ssl
import time
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Generic, TypeVar

from .auth import Auth
from .dialect import AS_SAMPLES, SimDialect
from .faults import ANSWERED_INSTEAD, Fault, FaultQueue, fault_answer
from .http import Answer, Reply, SimRequest, SimServer, error, json_answer
from .listings import Listings
from .state import Amounts, Book, SimAccount, SimCard, demo_accounts, demo_cards

LOGIN_PATH = "/api/v1/public/auth/login"
BALANCES_PATH = "/api/v1/customer/accounts/balances"
CARDS_PATH = "/api/v1/customer/cards/balances"
_ENDPOINTS = {LOGIN_PATH: "login", BALANCES_PATH: "balances", CARDS_PATH: "cards"}
_Value = TypeVar("_Value")


class _FromAuth(Generic[_Value]):
    """A read-only attribute of the simulator that is the same-named attribute of its Auth."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, simulator: Simulator, owner: type | None = None) -> _Value:
        value: _Value = getattr(simulator.auth, self._name)
        return value


class Simulator:
    def __init__(
        self,
        accounts: list[SimAccount] | None = None,
        *,
        cards: list[SimCard] | None = None,
        username: str = "demo",
        password: str = "demo-password",
        totp_secret: bytes = b"ibanera-demo-secret!",
        token_lifetime: int = 3600,
        report_number_of_pages: bool = True,
        max_page_size: int | None = None,
        drift_every: float | None = None,
        reject_reused_otp: bool = False,
        clock: Callable[[], float] = time.time,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.book = Book(
            demo_accounts() if accounts is None else accounts,
            demo_cards() if cards is None else cards,
            drift_every=drift_every,
            clock=clock,
        )
        self.auth = Auth(
            username=username,
            password=password,
            totp_secret=totp_secret,
            token_lifetime=token_lifetime,
            reject_reused_otp=reject_reused_otp,
            clock=clock,
        )
        self.listings = Listings(self.book, report_number_of_pages=report_number_of_pages, max_page_size=max_page_size)
        self.faults = FaultQueue()
        self.requests: Counter[str] = Counter()  # by path
        self._dialects: dict[int | None, SimDialect] = {None: AS_SAMPLES}  # by page number; None: any other
        self._server = SimServer(self._answer, clock, host, port, ssl_context)

    # -- lifecycle --------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self._server.url

    def start(self) -> Simulator:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- steering, for tests and the demo ---------------------------------------------

    def set_accounts(self, accounts: list[SimAccount]) -> None:
        self.book.set_accounts(accounts)

    def update_account(self, account_id: int, **changes: Any) -> None:
        self.book.update_account(account_id, **changes)

    def remove_account(self, account_id: int) -> None:
        self.book.remove_account(account_id)

    def set_cards(self, cards: list[SimCard]) -> None:
        self.book.set_cards(cards)

    def update_card(self, card_id: int, **changes: Any) -> None:
        self.book.update_card(card_id, **changes)

    def revoke_tokens(self) -> None:
        self.auth.revoke_tokens()

    def inject(self, fault: Fault, times: int = 1) -> None:
        """Apply `fault` to the next `times` requests to its endpoint."""
        self.faults.inject(fault, times)

    def chaos(self, rate: float) -> None:
        """From now on, answer a share `rate` of requests with a random fault of CHAOS_FAULTS."""
        self.faults.chaos(rate)

    def set_dialect(self, dialect: SimDialect, page: int | None = None) -> None:
        """Answer in `dialect` from now on: every reply, or only the listings' page `page`."""
        self._dialects[page] = dialect

    def record_served(self) -> None:
        """From now on, remember every (total, available, pending) served, for served_values()."""
        self.book.served = {}

    def served_values(self, account_id: int) -> set[Amounts]:
        return self.book.served_values(account_id)

    # -- what tests read ----------------------------------------------------------------

    # The credentials a client needs, and what the API user has seen happen.
    username: _FromAuth[str] = _FromAuth()
    password: _FromAuth[str] = _FromAuth()
    totp_secret_base32: _FromAuth[str] = _FromAuth()
    token_lifetime: _FromAuth[int] = _FromAuth()
    logins_succeeded: _FromAuth[int] = _FromAuth()
    logins_failed: _FromAuth[int] = _FromAuth()
    failed_login_times: _FromAuth[list[float]] = _FromAuth()
    issued_tokens: _FromAuth[list[str]] = _FromAuth()
    otp_codes_seen: _FromAuth[list[str]] = _FromAuth()
    otp_rejections: _FromAuth[int] = _FromAuth()

    @property
    def locked(self) -> bool:
        """Whether too many failed logins have locked the account, as Ibanera would."""
        return self.auth.locked

    @property
    def faults_served(self) -> Counter[str]:
        return self.faults.served

    @property
    def unpaginated_requests(self) -> int:
        """Balance requests without paging parameters (the whole list in one reply)."""
        return self.listings.unpaginated_requests

    @property
    def endless_pages(self) -> bool:
        return self.listings.endless_pages

    @endless_pages.setter
    def endless_pages(self, value: bool) -> None:
        self.listings.endless_pages = value

    # -- the API ----------------------------------------------------------------------

    def _answer(self, request: SimRequest) -> Answer:
        self.requests[request.path] += 1
        endpoint = _ENDPOINTS.get(request.path)
        if endpoint is None or (request.method == "POST") != (endpoint == "login"):
            return self._json(request, (404, error("Not_Found")))
        fault = self.faults.take(endpoint)
        if fault is not None and fault.kind in ANSWERED_INSTEAD:
            return fault_answer(fault, [a.to_json() for a in self.book.accounts()])
        if fault is not None and fault.kind == "delay":
            time.sleep(fault.delay)  # real time: the client's timeout is real too
        refuse_code = fault is not None and fault.kind == "otp"
        if endpoint == "login":
            return self._json(request, self.auth.login(_json_body(request.body), refuse_code))
        refusal = self.auth.authorize(request.headers, refuse_code)
        if refusal is not None:
            return self._json(request, refusal)
        if endpoint == "cards":
            return self._json(request, self.listings.cards(request.query, fault))
        return self._json(request, self.listings.balances(request.query, fault))

    def _json(self, request: SimRequest, reply: Reply) -> Answer:
        """The reply, spelled in the dialect of the page asked for."""
        status, payload = reply
        numbers = request.query.get("pageNumber") or request.query.get("PageNumber") or ["1"]
        page = int(numbers[0]) if numbers[0].isdigit() and len(numbers[0]) < 9 else None
        dialect = self._dialects.get(page, self._dialects[None])
        return json_answer(status, dialect.reply(payload))


def _json_body(raw: bytes) -> object:
    try:
        body: object = json.loads(raw or b"null", parse_float=Decimal)
    except ValueError:
        body = None
    return body
