"""An embedded stand-in for the Ibanera Customer API, for `--demo` and the tests.

It is the other side of the wire, written from the API documentation and sharing no
code with the client: it checks one-time codes with pyotp (the library of Ibanera's own
Python sample), so every end-to-end test also checks our RFC 6238 code against it.

What it speaks: POST /api/v1/public/auth/login, GET /api/v1/customer/accounts/balances
and GET /api/v1/customer/cards/balances (paginated), Bearer tokens that expire, an `otp` header checked on every private
request, the common response envelope, and locking after repeated failed logins.
Tests steer it through its methods: change accounts, revoke tokens, queue faults.
"""

from __future__ import annotations

import base64
import json
import random
import secrets
import ssl
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pyotp

LOGIN_PATH = "/api/v1/public/auth/login"
BALANCES_PATH = "/api/v1/customer/accounts/balances"
CARDS_PATH = "/api/v1/customer/cards/balances"
CARDS_DEFAULT_PAGE_SIZE = 10  # documented server default
LOCK_AFTER_FAILED_LOGINS = 5
LOCK_SECONDS = 600


class RawJson(str):
    """Written into the JSON body as it is: NaN, Infinity, 1e400 and other things the API should not send."""


DROP = RawJson("")  # in SimAccount.raw: leave the field out of the row altogether


@dataclass(frozen=True)
class SimAccount:
    id: int
    asset: str
    total: Decimal
    available: Decimal
    pending: Decimal
    suppressed: bool = False
    places: int = 2  # decimal places the asset moves in (2 for fiat, 8 for BTC)
    raw: tuple[tuple[str, object], ...] = ()  # fields to send instead of the real ones (tests of bad rows)

    def to_json(self) -> dict:
        row = {
            "id": self.id,
            "asset": self.asset,
            "totalBalance": self.total,
            "availableBalance": self.available,
            "pendingBalance": self.pending,
            "bSuppressed": self.suppressed,
        }
        row.update(self.raw)
        return {k: v for k, v in row.items() if v is not DROP}


def demo_accounts() -> list[SimAccount]:
    d = Decimal
    return [
        SimAccount(1001, "USD", d("250000.00"), d("248500.00"), d("1500.00")),
        SimAccount(1002, "EUR", d("98000.50"), d("98000.50"), d("0.00")),
        SimAccount(1003, "GBP", d("12000.00"), d("12000.00"), d("0.00"), suppressed=True),
        SimAccount(1004, "USDC", d("40000.00"), d("39000.00"), d("1000.00")),
        SimAccount(1005, "BTC", d("3.12345678"), d("3.10000000"), d("0.02345678"), places=8),
        SimAccount(1006, "ETH", d("45.50000000"), d("45.50000000"), d("0.00000000"), places=8),
        SimAccount(1007, "USD", d("9200.00"), d("8700.00"), d("500.00")),
    ]


@dataclass(frozen=True)
class SimCard:
    id: int
    currency: str
    total: Decimal
    available: Decimal
    pending: Decimal
    last4: str
    reference: str
    holder: str
    status: str = "Active"
    customers_id: int = 77

    def to_json(self) -> dict:
        return {
            "id": self.id, "customersReference": self.reference, "cardHolderName": self.holder,
            "cardLast4": self.last4, "customersID": self.customers_id, "currency": self.currency,
            "totalBalance": self.total, "availableBalance": self.available, "pendingBalance": self.pending,
            "status": self.status,
        }


def demo_cards() -> list[SimCard]:
    d = Decimal
    return [
        SimCard(501, "USD", d("2500.00"), d("2350.00"), d("150.00"), "4242", "EMP-0001", "Ada Lovelace"),
        SimCard(502, "USD", d("180.00"), d("120.50"), d("59.50"), "1881", "EMP-0002", "Alan Turing"),
        SimCard(503, "EUR", d("900.00"), d("900.00"), d("0.00"), "0007", "EMP-0003", "Grace Hopper"),
        SimCard(504, "EUR", d("0.00"), d("0.00"), d("0.00"), "9999", "EMP-0004", "Ken Thompson", status="Blocked"),
    ]


@dataclass(frozen=True)
class Fault:
    """What to do instead of answering normally, for requests to `endpoint` (None: any).

    kind: "http" (answer `status`, with `retry_after` if set, and an error envelope),
    "status0" (HTTP 200 with status "0" and `message_code`), "html" (HTTP 200 with an
    HTML maintenance page), "truncated" (HTTP 200 with half a JSON body),
    "delay" (sleep `delay` seconds, then answer normally), "reset" (close the connection),
    "otp" (HTTP 400 refusing the one-time code), and for balances only: "empty" (the page
    with no rows), "repeat" (the rows of the previous page, as this page), "huge" (a valid
    page padded past `size` bytes).
    """

    kind: str
    endpoint: str | None = None
    status: int = 503
    retry_after: str | None = None
    message_code: str = "General_Error"
    delay: float = 0.0
    size: int = 0


# What `chaos` mode picks from: every fault a real network and gateway produce, none that
# refuses credentials (a refused login pauses logins for login_backoff, stalling a soak).
CHAOS_FAULTS = (
    Fault("http", status=500), Fault("http", status=502), Fault("http", status=503), Fault("http", status=504),
    Fault("http", status=429), Fault("http", status=429, retry_after="0"), Fault("reset"),
    Fault("delay", delay=0.2), Fault("truncated"), Fault("html"), Fault("status0", "balances", message_code="Maintenance"),
    Fault("http", "balances", status=401), Fault("otp", "balances"), Fault("empty", "balances"),
    Fault("repeat", endpoint="balances"),
)


def _json_bytes(value: object) -> bytes:
    """JSON with Decimal written as an exact number, as the real API sends amounts."""
    if isinstance(value, RawJson):
        return value.encode()
    if isinstance(value, Decimal):
        return format(value, "f").encode()
    if isinstance(value, dict):
        return b"{" + b",".join(json.dumps(k).encode() + b":" + _json_bytes(v) for k, v in value.items()) + b"}"
    if isinstance(value, (list, tuple)):
        return b"[" + b",".join(_json_bytes(v) for v in value) + b"]"
    return json.dumps(value).encode()


def _page_request(query: dict[str, list[str]], number_param: str, size_param: str, default_size: int) -> tuple[int, int]:
    """(page number, page size) from the query; a ValueError names the parameter at fault."""
    try:
        number = int(query.get(number_param, ["1"])[0])
        size = int(query.get(size_param, [str(default_size)])[0])
    except ValueError:
        raise ValueError(number_param) from None
    if size < 1:
        raise ValueError(size_param)
    if number < 1:
        raise ValueError(number_param)
    return number, size


def _envelope(details: object, status: str = "1", errors: list | None = None, **extra: object) -> dict:
    return {"id": 0, "details": details, "status": status, "errors": errors or [], **extra}


def _error(code: str, field: str = "") -> dict:
    return _envelope(None, "0", [{"fieldName": field, "messageCode": code}])


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: tuple) -> None:
        pass  # injected resets and clients that hang up are part of the job, not news


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
        endless_pages: bool = False,
        reject_reused_otp: bool = False,
        clock: Callable[[], float] = time.time,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.username = username
        self.password = password
        # pyotp wants base32 text; the key bytes are the same whatever encoding the client is told.
        self._totp = pyotp.TOTP(base64.b32encode(totp_secret).decode())
        self.token_lifetime = token_lifetime
        self.report_number_of_pages = report_number_of_pages
        self.max_page_size = max_page_size
        self._drift_every = drift_every
        self.endless_pages = endless_pages  # always one more page, of accounts never seen before
        self.reject_reused_otp = reject_reused_otp  # a code is good for one request only
        self._used_codes: set[tuple[int, str]] = set()
        self._chaos_rate = 0.0
        self.faults_served: Counter[str] = Counter()
        self.otp_rejections = 0
        # id -> every (total, available, pending) ever served for it, for checks that a
        # published number is one the API really sent (the soak run); None: not recorded.
        self.served: dict[int, set[tuple]] | None = None
        self._clock = clock
        self._lock = threading.Lock()
        self._accounts = {a.id: a for a in (demo_accounts() if accounts is None else accounts)}
        self._ordered_cache: list[SimAccount] | None = None
        self._cards = {c.id: c for c in (demo_cards() if cards is None else cards)}
        self._tokens: dict[str, float] = {}
        self._faults: deque[Fault] = deque()
        self._failed_logins = 0
        self._locked_until = 0.0
        self._random = random.Random(6238)
        self._last_drift = clock()
        self.requests: Counter[str] = Counter()  # by path
        self.logins_succeeded = 0
        self.logins_failed = 0
        self.failed_login_times: list[float] = []
        self.issued_tokens: list[str] = []
        self.otp_codes_seen: list[str] = []
        self._server = _QuietServer((host, port), self._handler_class())
        self._scheme = "http"
        if ssl_context is not None:
            self._server.socket = ssl_context.wrap_socket(self._server.socket, server_side=True)
            self._scheme = "https"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="simulator", daemon=True)

    # -- lifecycle --------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{self._scheme}://{host}:{port}"

    @property
    def totp_secret_base32(self) -> str:
        return self._totp.secret

    def start(self) -> Simulator:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- steering, for tests and the demo ---------------------------------------------

    def accounts(self) -> list[SimAccount]:
        with self._lock:
            return sorted(self._accounts.values(), key=lambda a: a.id)

    def set_accounts(self, accounts: list[SimAccount]) -> None:
        with self._lock:
            self._accounts = {a.id: a for a in accounts}
            self._ordered_cache = None

    def update_account(self, account_id: int, **changes: object) -> None:
        with self._lock:
            self._accounts[account_id] = replace(self._accounts[account_id], **changes)
            self._ordered_cache = None

    def set_cards(self, cards: list[SimCard]) -> None:
        with self._lock:
            self._cards = {c.id: c for c in cards}

    def update_card(self, card_id: int, **changes: object) -> None:
        with self._lock:
            self._cards[card_id] = replace(self._cards[card_id], **changes)

    def remove_account(self, account_id: int) -> None:
        with self._lock:
            del self._accounts[account_id]
            self._ordered_cache = None

    def served_values(self, account_id: int) -> set[tuple]:
        """Every (total, available, pending) served for the account (needs `served` set to {})."""
        with self._lock:
            return set((self.served or {}).get(account_id, ()))

    def revoke_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()

    def inject(self, fault: Fault, times: int = 1) -> None:
        """Apply `fault` to the next `times` requests to its endpoint."""
        with self._lock:
            self._faults.extend([fault] * times)

    def chaos(self, rate: float) -> None:
        """From now on, answer a share `rate` of requests with a random fault of CHAOS_FAULTS."""
        with self._lock:
            self._chaos_rate = rate

    @property
    def locked(self) -> bool:
        """Whether too many failed logins have locked the account, as Ibanera would."""
        with self._lock:
            return self._clock() < self._locked_until

    # -- the API ----------------------------------------------------------------------

    def _take_fault(self, endpoint: str) -> Fault | None:
        with self._lock:
            chosen = next((f for f in self._faults if f.endpoint in (None, endpoint)), None)
            if chosen is not None:
                self._faults.remove(chosen)
            elif self._chaos_rate and self._random.random() < self._chaos_rate:
                chosen = self._random.choice([f for f in CHAOS_FAULTS if f.endpoint in (None, endpoint)])
            if chosen is not None:
                self.faults_served[chosen.kind] += 1
            return chosen

    def _code_ok(self, code: str, now: float) -> bool:
        """Called under the lock. pyotp checks the code, with one step of leeway each way."""
        if not self._totp.verify(code, for_time=now, valid_window=1):
            return False
        if self.reject_reused_otp:
            key = (int(now // 30), code)
            if key in self._used_codes:
                return False
            self._used_codes.add(key)
        return True

    def _login(self, body: object, refuse_code: bool = False) -> tuple[int, dict]:
        if not isinstance(body, dict) or not all(isinstance(body.get(k), str) and body.get(k) for k in ("username", "password", "otp")):
            return 400, _error("Required")
        with self._lock:
            now = self._clock()
            if now < self._locked_until:
                self.logins_failed += 1
                return 400, _error("Account_Locked")
            self.otp_codes_seen.append(body["otp"])
            ok = (
                secrets.compare_digest(body["username"], self.username)
                and secrets.compare_digest(body["password"], self.password)
                and self._code_ok(body["otp"], now)
                and not refuse_code
            )
            if not ok:
                self.logins_failed += 1
                self.failed_login_times.append(now)
                self._failed_logins += 1
                if self._failed_logins >= LOCK_AFTER_FAILED_LOGINS:
                    self._locked_until = now + LOCK_SECONDS
                return 400, _error("Username_Or_Password_Incorrect")
            self._failed_logins = 0
            self.logins_succeeded += 1
            token = secrets.token_urlsafe(32)
            self._tokens[token] = now + self.token_lifetime
            self.issued_tokens.append(token)
        return 200, _envelope({"accessToken": token, "expiresIn": self.token_lifetime})

    def _authorize(self, headers, refuse_code: bool = False) -> tuple[int, dict] | None:
        """None when the Bearer token and the otp header are good, else the refusal."""
        auth = headers.get("Authorization", "")
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else ""
        with self._lock:
            now = self._clock()
            expires_at = self._tokens.get(token)
            if expires_at is None or now >= expires_at:
                return 401, _error("Unauthorized")
            code = headers.get("otp", "")
            self.otp_codes_seen.append(code)
            if not self._code_ok(code, now) or refuse_code:
                self.otp_rejections += 1
                return 400, _error("Invalid_Otp", "otp")
        return None

    def _balances(self, query: dict[str, list[str]], fault: Fault | None = None) -> tuple[int, dict]:
        with self._lock:
            self._drift()
            accounts = self._ordered()  # replaced, never changed in place: safe to read unlocked
        if "pageNumber" not in query and "pageSize" not in query:
            return 200, _envelope([a.to_json() for a in accounts])
        try:
            number, size = _page_request(query, "pageNumber", "pageSize", 10)
        except ValueError as exc:
            return 400, _error("Invalid", str(exc))
        if self.max_page_size:
            size = min(size, self.max_page_size)
        pages = max(1, -(-len(accounts) // size))
        # Only the page asked for is turned into JSON: a server that did all of them for
        # every page would make the benchmark's floor (bench/perf.py) meaninglessly slow.
        if fault is not None and fault.kind == "repeat":
            served = [a.to_json() for a in accounts[max(0, number - 2) * size : max(1, number - 1) * size]]
        else:
            served = [a.to_json() for a in accounts[(number - 1) * size : number * size]]
        if self.endless_pages:
            pages = number + 1
            served = [{**accounts[0].to_json(), "id": 10_000_000 + number * size + i} for i in range(size)] if accounts else []
        if fault is not None and fault.kind == "empty":
            served = []
        elif fault is not None and fault.kind == "huge":
            served = [*served, {"padding": "x" * fault.size}]
        if self.served is not None:
            with self._lock:
                for row in served:
                    triple = (row.get("totalBalance"), row.get("availableBalance"), row.get("pendingBalance"))
                    self.served.setdefault(row.get("id"), set()).add(triple)
        return self._page_envelope(served, number, size, pages)

    def _page_envelope(self, rows: list, number: int, size: int, pages: int) -> tuple[int, dict]:
        extra = {"pageSize": size, "pageNumber": number}
        if self.report_number_of_pages:
            extra["numberOfPages"] = pages
        return 200, _envelope(rows, **extra)

    def _card_page(self, query: dict[str, list[str]], fault: Fault | None) -> tuple[int, dict]:
        with self._lock:
            cards = sorted(self._cards.values(), key=lambda c: c.id)
        try:
            number, size = _page_request(query, "PageNumber", "PageSize", CARDS_DEFAULT_PAGE_SIZE)
        except ValueError as exc:
            return 400, _error("Invalid", str(exc))
        served = [] if fault is not None and fault.kind == "empty" else [c.to_json() for c in cards[(number - 1) * size : number * size]]
        return self._page_envelope(served, number, size, max(1, -(-len(cards) // size)))

    def _ordered(self) -> list[SimAccount]:
        """The accounts by id, the order pages follow. Called under the lock."""
        if self._ordered_cache is None:
            self._ordered_cache = sorted(self._accounts.values(), key=lambda a: a.id)
        return self._ordered_cache

    def _drift(self) -> None:
        """Balances that move over time, for the demo: a small random walk per account."""
        if not self._drift_every:
            return
        now = self._clock()
        while now - self._last_drift >= self._drift_every:
            self._last_drift += self._drift_every
            for account in list(self._accounts.values()):
                unit = Decimal(1).scaleb(-account.places)
                step = (account.total * Decimal(self._random.uniform(-0.004, 0.005))).quantize(unit)
                pending = max(Decimal(0), (account.total * Decimal(self._random.uniform(0, 0.01))).quantize(unit))
                total = max(Decimal(0), account.total + step)
                self._accounts[account.id] = replace(account, total=total, pending=pending, available=max(Decimal(0), total - pending))
            self._ordered_cache = None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        simulator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm
            # and delayed ACKs add ~40 ms to every keep-alive request.
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                self._route("POST")

            def do_GET(self) -> None:
                self._route("GET")

            def _route(self, method: str) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                simulator.requests[url.path] += 1
                endpoint = {LOGIN_PATH: "login", BALANCES_PATH: "balances", CARDS_PATH: "cards"}.get(url.path)
                if endpoint is None or (method == "POST") != (endpoint == "login"):
                    return self._answer(404, _error("Not_Found"))
                fault = simulator._take_fault(endpoint)
                if fault is not None and fault.kind not in ("delay", "otp", "empty", "repeat", "huge"):
                    return self._fault(fault)
                if fault is not None and fault.kind == "delay":
                    time.sleep(fault.delay)
                if endpoint == "login":
                    try:
                        body = json.loads(raw or b"null")
                    except ValueError:
                        body = None
                    return self._answer(*simulator._login(body, refuse_code=fault is not None and fault.kind == "otp"))
                refusal = simulator._authorize(self.headers, refuse_code=fault is not None and fault.kind == "otp")
                if refusal is not None:
                    return self._answer(*refusal)
                if endpoint == "cards":
                    return self._answer(*simulator._card_page(parse_qs(url.query), fault))
                return self._answer(*simulator._balances(parse_qs(url.query), fault))

            def _fault(self, fault: Fault) -> None:
                if fault.kind == "http":
                    headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
                    return self._answer(fault.status, _error(f"HTTP_{fault.status}"), headers)
                if fault.kind == "status0":
                    return self._answer(200, _error(fault.message_code))
                if fault.kind == "html":
                    return self._raw(200, b"<html><body><h1>Down for maintenance</h1></body></html>", "text/html")
                if fault.kind == "truncated":
                    body = _json_bytes(_envelope([a.to_json() for a in simulator.accounts()]))
                    return self._raw(200, body[: len(body) // 2], "application/json")
                if fault.kind == "reset":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return None
                raise ValueError(f"unknown fault kind {fault.kind!r}")

            def _answer(self, code: int, payload: dict, headers: dict | None = None) -> None:
                self._raw(code, _json_bytes(payload), "application/json; charset=utf-8", headers)

            def _raw(self, code: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def date_time_string(self, timestamp: float | None = None) -> str:
                # The Date header follows the simulator's clock, which a test may skew.
                return super().date_time_string(simulator._clock() if timestamp is None else timestamp)

            def log_message(self, format: str, *args: object) -> None:
                pass  # the exporter's logs are what a user reads; the stand-in stays quiet

        return Handler
