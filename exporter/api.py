"""IbaneraClient: login, token lifetime, the response envelope, paginated balances.

What is retried and what is not is the heart of this module:
- transient (timeouts, connection errors, 429, 5xx) -> tenacity, exponential backoff with
  jitter, Retry-After honoured;
- a refused login -> never retried quickly: logins pause for `login_backoff`, because
  Ibanera locks the account after a few failed attempts and a monitoring tool must never
  lock its owner out of their bank account;
- everything else (400, status "0", malformed payloads) -> fails the poll at once.
No error message built here contains a password, TOTP secret, code or token.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Mapping

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_exponential_jitter

from . import __version__
from .config import DEFAULT_MAX_LOGIN_REFUSALS, DEFAULT_MAX_RESPONSE_SIZE, Config, ConnectionConfig, RetryPolicy
from .model import AccountBalance, CardBalance, InvalidRow, parse_account, parse_card
from .totp import STEP_SECONDS, decode_secret, totp_at

LOGIN_PATH = "/api/v1/public/auth/login"
BALANCES_PATH = "/api/v1/customer/accounts/balances"
CARDS_PATH = "/api/v1/customer/cards/balances"
ENDPOINTS = ("login", "accounts_balances", "cards_balances")  # the `endpoint` label ("clock" too, for the probe)
CLOCK_OFFSET_TOLERANCE = 2.0  # seconds
# The documented login refusals; anything else is counted as "other" so that a server
# cannot grow the label set of ibanera_login_failures_total without bound.
KNOWN_LOGIN_REFUSALS = frozenset(
    {"Required", "Username_Or_Password_Incorrect", "Account_Not_Verified", "Account_Locked", "Account_Suppressed"}
)
LOGIN_FAILURE_REASONS = (*sorted(KNOWN_LOGIN_REFUSALS), "other")
_MESSAGE_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

log = logging.getLogger("exporter.api")


class ApiError(Exception):
    """A request or a poll failed. `reason` is a short fixed label for metrics."""

    reason = "api_error"


class TransientError(ApiError):
    """Worth retrying: the request may well succeed a moment later."""

    def __init__(self, reason: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after = retry_after


class Unauthorized(ApiError):
    reason = "unauthorized"


class ApiRejected(ApiError):
    """The API answered and said no (HTTP 4xx, or status "0")."""

    reason = "rejected"

    def __init__(self, message: str, errors: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.errors = errors  # (fieldName, messageCode) pairs, sanitised

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(code for _, code in self.errors)


class LoginRefused(ApiError):
    reason = "login_refused"


class LoginPaused(ApiError):
    """No login is attempted until the back-off after a refused login has passed."""

    reason = "login_backoff"


class LoginsStopped(ApiError):
    """Too many refused logins in a row: no login at all until the exporter restarts."""

    reason = "logins_stopped"


class MalformedResponse(ApiError):
    reason = "malformed"


class TooManyPages(MalformedResponse):
    reason = "too_many_pages"


class ResponseTooLarge(MalformedResponse):
    reason = "too_large"


class Cancelled(Exception):
    """The exporter is shutting down; raised out of a retry sleep."""


@dataclass(frozen=True)
class BalancesResult:
    accounts: tuple[AccountBalance, ...]
    pages: int


@dataclass(frozen=True)
class CardsResult:
    cards: tuple[CardBalance, ...]
    pages: int


@dataclass(frozen=True)
class Page:
    rows: tuple  # AccountBalance or CardBalance, validated
    number_of_pages: int | None  # None when the reply does not say
    served_size: int | None  # the page size the server says it used


@dataclass(frozen=True)
class Listing:
    """How one paginated endpoint is walked and its rows read."""

    endpoint: str  # the `endpoint` label
    path: str
    page_number_param: str
    page_size_param: str
    parse_row: Callable[[object], object]
    row_id: Callable[[object], int]


ACCOUNTS_LISTING = Listing("accounts_balances", BALANCES_PATH, "pageNumber", "pageSize",
                           parse_account, lambda account: account.asset_account_id)
# The cards endpoint spells its paging parameters with capitals, as documented.
CARDS_LISTING = Listing("cards_balances", CARDS_PATH, "PageNumber", "PageSize", parse_card, lambda card: card.card_id)


@dataclass(frozen=True)
class ClientCounts:
    """A consistent copy of a client's counters, for one scrape."""

    requests: dict[tuple[str, str], int]
    retries: dict[str, int]
    logins: int
    login_failures: dict[str, int]


class ClientCounters:
    """Written by the poller thread, read by scrapes: every access holds the lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[tuple[str, str]] = Counter()
        self._retries: Counter[str] = Counter(dict.fromkeys(ENDPOINTS, 0))
        self._logins = 0
        # Every reason and endpoint starts at 0, so that the first one is an increase alerts can see.
        self._login_failures: Counter[str] = Counter(dict.fromkeys(LOGIN_FAILURE_REASONS, 0))

    def request(self, endpoint: str, code: str) -> None:
        with self._lock:
            self._requests[(endpoint, code)] += 1

    def retry(self, endpoint: str) -> None:
        with self._lock:
            self._retries[endpoint] += 1

    def login(self) -> None:
        with self._lock:
            self._logins += 1

    def login_failure(self, reason: str) -> None:
        with self._lock:
            self._login_failures[reason] += 1

    def snapshot(self) -> ClientCounts:
        with self._lock:
            return ClientCounts(dict(self._requests), dict(self._retries), self._logins, dict(self._login_failures))


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Retry-After is either delay-seconds or an HTTP-date (RFC 9110 section 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError):
        return None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _errors(payload: object) -> tuple[tuple[str, str], ...]:
    """The (fieldName, messageCode) pairs of an error envelope, each cut to a safe token."""
    errors = payload.get("errors") if isinstance(payload, dict) else None
    if not isinstance(errors, list):
        return ()

    def token(value: object) -> str:
        return value if isinstance(value, str) and _MESSAGE_CODE.match(value) else "unrecognised"

    return tuple(
        (token(e.get("fieldName")) if e.get("fieldName") else "", token(e.get("messageCode")))
        for e in errors if isinstance(e, dict)
    )


def decode_envelope(endpoint: str, status: int, headers: Mapping[str, str], content: bytes, now: float) -> dict:
    """An HTTP reply -> the envelope of a success, or the ApiError that says what went wrong."""
    if status == 429 or status >= 500:
        retry_after = parse_retry_after(headers.get("Retry-After"), now)
        reason = "http_429" if status == 429 else "http_5xx"
        raise TransientError(reason, f"{endpoint}: HTTP {status}", retry_after)
    if status == 401:
        raise Unauthorized(f"{endpoint}: HTTP 401")
    try:
        payload = json.loads(content, parse_float=Decimal, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        payload = None
    if not 200 <= status < 300:
        errors = _errors(payload)
        codes = ", ".join(code for _, code in errors)
        raise ApiRejected(f"{endpoint}: HTTP {status}" + (f" ({codes})" if codes else ""), errors)
    if not isinstance(payload, dict):
        content_type = headers.get("Content-Type", "no content type")
        raise MalformedResponse(f"{endpoint}: HTTP {status} but the body is not a JSON object ({content_type})")
    if payload.get("status") == "1":
        return payload
    if payload.get("status") == "0":
        errors = _errors(payload)
        codes = ", ".join(code for _, code in errors)
        raise ApiRejected(f"{endpoint}: status 0 ({codes or 'no messageCode'})", errors)
    raise MalformedResponse(f"{endpoint}: the envelope has no status \"1\" or \"0\"")


def read_page(envelope: dict, page: int, parse_row: Callable[[object], object] = parse_account) -> Page:
    """One page of a paginated listing, every row validated, or MalformedResponse."""
    rows = envelope.get("details")
    if not isinstance(rows, list):
        raise MalformedResponse(f"page {page}: details is not a list")
    reported_page = envelope.get("pageNumber")
    if _is_int(reported_page) and reported_page != page:
        raise MalformedResponse(f"page {page}: the server answered with page {reported_page}")
    parsed = []
    for row in rows:
        try:
            parsed.append(parse_row(row))
        except InvalidRow as exc:
            raise MalformedResponse(f"page {page}: {exc}") from None
    number_of_pages = envelope.get("numberOfPages")
    served_size = envelope.get("pageSize")
    return Page(
        rows=tuple(parsed),
        number_of_pages=number_of_pages if _is_int(number_of_pages) else None,
        served_size=served_size if _is_int(served_size) and served_size > 0 else None,
    )


class IbaneraClient:
    """One API user. Not thread-safe: each connection's poller owns one client."""

    def __init__(
        self,
        connection: ConnectionConfig,
        *,
        request_timeout: float,
        retry: RetryPolicy,
        login_backoff: float,
        max_login_refusals: int = DEFAULT_MAX_LOGIN_REFUSALS,
        max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE,
        stop_event: threading.Event | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.connection = connection
        self._max_response_size = max_response_size
        self.counters = ClientCounters()
        self._key = decode_secret(connection.totp_secret.reveal(), connection.totp_secret_encoding)
        self._retry = retry
        self._login_backoff = login_backoff
        self._stop_event = stop_event or threading.Event()
        self._clock = clock
        self._sleep = sleep or self._sleep_unless_stopped
        self._backoff = wait_exponential_jitter(
            multiplier=retry.initial_backoff, max=retry.max_backoff, jitter=retry.initial_backoff
        )
        if connection.tls_insecure_skip_verify:
            log.warning("TLS verification is off: anyone on the path to the API can read the credentials",
                        extra={"connection": connection.name})
        self._http = httpx.Client(
            base_url=connection.base_url,
            timeout=request_timeout,
            # Proxies come from HTTPS_PROXY / NO_PROXY, as httpx reads them by default.
            verify=_tls_verification(connection),
            follow_redirects=False,
            headers={"User-Agent": f"ibanera-exporter/{__version__}", "Accept": "application/json"},
        )
        self._token: str | None = None
        self._token_expires_at: float | None = None
        self._token_renew_at = 0.0
        self._logins_paused_until: float | None = None
        self._max_login_refusals = max_login_refusals
        self._refusals_in_a_row = 0
        self._clock_offset: float | None = None  # server time minus ours, from Date headers
        self._last_code_step: int | None = None
        self._last_code_reused = False
        self._reused_code_refusals = 0  # in a row
        self._force_fresh_code = False
        # Whether one code may serve several requests is undocumented: assume it may, until
        # the API refuses reused codes twice in a row; from then on, until the next login,
        # every request waits for a fresh one.
        self._fresh_code_per_request = False

    @classmethod
    def for_connection(cls, connection: ConnectionConfig, config: Config, **kwargs) -> "IbaneraClient":
        """A client with the settings of `config` (kwargs: stop_event, clock, sleep)."""
        return cls(connection, request_timeout=config.request_timeout, retry=config.retry,
                   login_backoff=config.login_backoff, max_login_refusals=config.max_login_refusals,
                   max_response_size=config.max_response_size, **kwargs)

    @property
    def token_expires_at(self) -> float | None:
        return self._token_expires_at if self._token else None

    @property
    def logins_paused_until(self) -> float | None:
        return self._logins_paused_until

    @property
    def clock_offset(self) -> float | None:
        return self._clock_offset

    def close(self) -> None:
        self._http.close()

    # -- the paginated listings: account balances, card balances -----------------------

    def fetch_balances(self) -> BalancesResult:
        """Every page of the caller's asset accounts, or an ApiError: never a partial list."""
        accounts, pages = self._fetch_all(ACCOUNTS_LISTING)
        return BalancesResult(accounts, pages)

    def fetch_cards(self) -> CardsResult:
        """Every page of the customer's card balances, or an ApiError: never a partial list."""
        listing = CARDS_LISTING
        if self.connection.cards_holder_name_label:  # personal data: read only when asked for
            listing = replace(CARDS_LISTING, parse_row=lambda row: parse_card(row, keep_holder_name=True))
        cards, pages = self._fetch_all(listing)
        return CardsResult(cards, pages)

    def _fetch_all(self, listing: Listing) -> tuple[tuple, int]:
        size = self.connection.page_size
        rows: list = []
        seen_ids: set[int] = set()
        page = 1
        while True:
            if page > self.connection.max_pages:
                raise TooManyPages(f"{listing.endpoint}: more than max_pages={self.connection.max_pages} pages")
            envelope = self._get_authorized(listing.endpoint, listing.path,
                                             {listing.page_number_param: page, listing.page_size_param: size})
            try:
                result = read_page(envelope, page, listing.parse_row)
            except MalformedResponse as exc:
                raise MalformedResponse(f"{listing.endpoint} {exc}") from None
            for row in result.rows:
                row_id = listing.row_id(row)
                if row_id in seen_ids:
                    # A repeated id means pages overlapped or repeated: which row is right is unknown.
                    raise MalformedResponse(f"{listing.endpoint} page {page}: id {row_id} appears twice")
                seen_ids.add(row_id)
            rows.extend(result.rows)
            if result.number_of_pages is not None:
                if result.number_of_pages > self.connection.max_pages:
                    raise TooManyPages(f"{listing.endpoint}: the server reports {result.number_of_pages} pages, "
                                       f"more than max_pages={self.connection.max_pages}")
                if page >= result.number_of_pages:
                    break
                if not result.rows:
                    raise MalformedResponse(f"{listing.endpoint} page {page} of {result.number_of_pages} is empty")
            # No page count: a short page is the last one. The server may cap the page size
            # below what we asked, so compare with the size it says it used.
            elif len(result.rows) < (result.served_size or size):
                break
            page += 1
        return tuple(rows), page

    # -- authentication ---------------------------------------------------------------

    def _ensure_token(self) -> str:
        if self._token is None or self._clock() >= self._token_renew_at:
            self._login()
        assert self._token is not None
        return self._token

    def _login(self) -> None:
        self._token = None
        now = self._clock()
        if self._refusals_in_a_row >= self._max_login_refusals:
            raise LoginsStopped(
                f"logins stopped after {self._refusals_in_a_row} refused logins in a row, so that the account is "
                "not locked: fix the credentials, then restart the exporter"
            )
        if self._logins_paused_until is not None and now < self._logins_paused_until:
            raise LoginPaused(f"logins paused after a refused login, next attempt at {_iso(self._logins_paused_until)}")
        if self._clock_offset is None:
            self._probe_clock()

        def send_login() -> dict:
            self.counters.login()
            body = {
                "username": self.connection.username.reveal(),
                "password": self.connection.password.reveal(),
                # A refused login counts towards Ibanera's lock: never risk a reused code here.
                "otp": self._code(fresh=True),
            }
            return self._send("login", "POST", LOGIN_PATH, json_body=body)

        try:
            envelope = self._with_retries("login", send_login)
        except (ApiRejected, Unauthorized) as exc:
            codes = (exc.codes if isinstance(exc, ApiRejected) else ()) or (exc.reason,)
            self.counters.login_failure(codes[0] if codes[0] in KNOWN_LOGIN_REFUSALS else "other")
            self._refusals_in_a_row += 1
            self._logins_paused_until = self._clock() + self._login_backoff
            if self._refusals_in_a_row >= self._max_login_refusals:
                then = f"that is {self._refusals_in_a_row} in a row: no more logins until the exporter is restarted"
            else:
                then = f"no new login before {_iso(self._logins_paused_until)}"
            raise LoginRefused(f"login refused ({', '.join(codes)}): {exc}; {then}, so that the account is not locked") from None
        self._logins_paused_until = None
        self._refusals_in_a_row = 0
        # Learn again with every token: even two refusals may have been chance, and the
        # lesson makes every later request wait for a fresh 30 s step.
        self._fresh_code_per_request = False
        details = envelope.get("details")
        token = details.get("accessToken") if isinstance(details, dict) else None
        lifetime = details.get("expiresIn") if isinstance(details, dict) else None
        if not isinstance(token, str) or not token:
            raise MalformedResponse("login: details.accessToken is missing")
        if isinstance(lifetime, bool) or not isinstance(lifetime, (int, Decimal)) or not lifetime > 0:
            raise MalformedResponse("login: details.expiresIn is not a positive number of seconds")
        lifetime = float(lifetime)
        self._token = token
        # Lifetime counts from before the request was sent: the token can only be younger.
        self._token_expires_at = now + lifetime
        self._token_renew_at = now + lifetime - min(60.0, lifetime / 4)
        log.info("logged in", extra={"connection": self.connection.name, "token_expires_in": f"{lifetime:g}s"})

    def _get_authorized(self, endpoint: str, path: str, params: dict) -> dict:
        def send() -> dict:
            return self._send(endpoint, "GET", path, params=params, token=self._token)

        self._ensure_token()
        try:
            envelope = self._with_retries(endpoint, send)
        except Unauthorized:
            # The token was revoked or expired early: one new login, one more try.
            log.info("token refused with HTTP 401, logging in again", extra={"connection": self.connection.name})
            self._login()
        except ApiRejected as exc:
            if not (self._last_code_reused and _is_otp_refusal(exc)):
                raise
            # A server that refuses reused codes refuses every one of them; a single refusal
            # may be chance. Retry this request with a fresh code, and only after a second
            # refusal in a row make every request wait for one (until the next login).
            self._reused_code_refusals += 1
            if self._reused_code_refusals >= 2:
                self._fresh_code_per_request = True
                log.info("the API refuses one-time codes used twice; until the next login every request waits for a "
                         "fresh code", extra={"connection": self.connection.name})
            self._force_fresh_code = True  # the retry below must not reuse the refused step
        else:
            if self._last_code_reused:
                self._reused_code_refusals = 0
            return envelope
        return self._with_retries(endpoint, send)

    def _code(self, fresh: bool = False) -> str:
        """The TOTP code for now, on the server's clock; from a step not used before if asked."""
        now = self._server_time()
        step = int(now // STEP_SECONDS)
        if (fresh or self._fresh_code_per_request or self._force_fresh_code) and step == self._last_code_step:
            wait = (step + 1) * STEP_SECONDS - now + 0.05
            log.info("waiting for a fresh one-time code", extra={"connection": self.connection.name, "wait": f"{wait:.1f}s"})
            self._sleep(wait)
            now = self._server_time()
            step = int(now // STEP_SECONDS)
        self._force_fresh_code = False
        self._last_code_reused = step == self._last_code_step
        self._last_code_step = step
        return totp_at(self._key, now)

    def _server_time(self) -> float:
        # Trust our own clock unless the server's differs by more than the noise of
        # whole-second Date headers: then codes from our clock would be refused.
        offset = self._clock_offset or 0.0
        return self._clock() + (offset if abs(offset) > CLOCK_OFFSET_TOLERANCE else 0.0)

    def _probe_clock(self) -> None:
        """Learn the server's clock before the first login, from any reply's Date header.

        A login with a code from a skewed clock would be refused, and every refusal counts
        towards the lock; a GET of / without credentials costs nothing of the kind.
        """
        try:
            sent_at = self._clock()
            response = self._http.get("/")
            self.counters.request("clock", str(response.status_code))
            self._observe_date(response, sent_at)
        except httpx.HTTPError:
            self.counters.request("clock", "error")

    def _observe_date(self, response: httpx.Response, sent_at: float) -> None:
        try:
            server_time = parsedate_to_datetime(response.headers["Date"]).timestamp()
        except (KeyError, TypeError, ValueError):
            return
        # Date is truncated to the second: its true value is half a second later on average.
        self._clock_offset = server_time + 0.5 - (sent_at + self._clock()) / 2

    # -- one request ------------------------------------------------------------------

    def _send(self, endpoint: str, method: str, path: str, *, params=None, json_body=None, token=None) -> dict:
        headers = {}
        if token is not None:
            headers = {"Authorization": f"Bearer {token}", "otp": self._code()}
        request = self._http.build_request(method, path, params=params, json=json_body, headers=headers)
        sent_at = self._clock()
        try:
            response = self._http.send(request, stream=True)
            self._observe_date(response, sent_at)
            try:
                content = self._read_capped(endpoint, response)
            except ResponseTooLarge:
                self.counters.request(endpoint, str(response.status_code))  # answered, then refused by us
                raise
            finally:
                response.close()
        except httpx.TimeoutException as exc:
            self.counters.request(endpoint, "timeout")
            raise TransientError("timeout", f"{endpoint}: no answer within the request timeout ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            self.counters.request(endpoint, "error")
            raise TransientError("connection_error", f"{endpoint}: {type(exc).__name__}: {exc}") from None
        self.counters.request(endpoint, str(response.status_code))
        return decode_envelope(endpoint, response.status_code, response.headers, content, self._clock())

    def _read_capped(self, endpoint: str, response: httpx.Response) -> bytes:
        """The decoded body, refused as soon as it grows past max_response_size (gzip bombs too)."""
        limit = self._max_response_size
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise ResponseTooLarge(f"{endpoint}: the reply declares {declared} bytes, more than max_response_size={limit}")
        chunks, size = [], 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > limit:
                raise ResponseTooLarge(f"{endpoint}: the reply is larger than max_response_size={limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    # -- retries ----------------------------------------------------------------------

    def _with_retries(self, endpoint: str, send: Callable[[], dict]) -> dict:
        retrying = Retrying(
            retry=retry_if_exception_type(TransientError),
            stop=self._should_stop,
            wait=self._wait,
            sleep=self._sleep,
            before_sleep=lambda state: self._on_retry(endpoint, state),
            reraise=True,
        )
        return retrying(send)

    def _should_stop(self, state: RetryCallState) -> bool:
        if state.attempt_number >= self._retry.max_attempts:
            return True
        # A server that asks us to wait longer than we ever back off is not coming back
        # within this poll; the next poll will ask again.
        retry_after = getattr(state.outcome.exception(), "retry_after", None)
        return retry_after is not None and retry_after > self._retry.max_backoff

    def _wait(self, state: RetryCallState) -> float:
        retry_after = getattr(state.outcome.exception(), "retry_after", None) or 0.0
        return max(self._backoff(state), retry_after)

    def _sleep_unless_stopped(self, seconds: float) -> None:
        if self._stop_event.wait(seconds):
            raise Cancelled()

    def _on_retry(self, endpoint: str, state: RetryCallState) -> None:
        self.counters.retry(endpoint)
        log.warning(
            "request failed, retrying",
            extra={
                "connection": self.connection.name,
                "endpoint": endpoint,
                "error": str(state.outcome.exception()),
                "attempt": f"{state.attempt_number}/{self._retry.max_attempts}",
                "retry_in": f"{state.upcoming_sleep:.1f}s",
            },
        )


def _tls_verification(connection: ConnectionConfig) -> ssl.SSLContext | bool:
    if connection.tls_insecure_skip_verify:
        return False
    return ssl.create_default_context(cafile=connection.ca_file) if connection.ca_file else True


def _is_otp_refusal(exc: ApiRejected) -> bool:
    return any(field.lower() == "otp" or "otp" in code.lower() for field, code in exc.errors)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _iso(unix_time: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix_time))
