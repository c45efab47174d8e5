"""The session: a token, the logins that get it, and the refusals that must stop them.

A refused login is never retried quickly: logins pause for `login_backoff`, and after
`max_login_refusals` refusals in a row they stop until a restart, because Ibanera locks
the account after a few failed attempts and a monitoring tool must never lock its owner
out of their bank account.

An authorized request is three named steps: send it with the current token; on a 401,
log in once and send it once more; on a refused *reused* one-time code, send it once
more with a fresh code. Nothing else is retried here (transient failures are retried
by the transport).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from ..config import ConnectionConfig
from .codes import OneTimeCodes
from .counters import CREDENTIAL_REFUSALS, ClientCounters
from .envelope import JsonObject
from .errors import ApiRejected, LoginPaused, LoginRefused, LoginsStopped, MalformedResponse, Unauthorized
from .memory import LoginMemory
from .transport import QueryParams, Request, Transport

LOGIN_PATH = "/api/v1/public/auth/login"
# What a token may look like: printable ASCII without spaces (it goes into a header as
# it is), of a sane length. A JWT is one to two kilobytes.
_TOKEN = re.compile(r"^[\x21-\x7e]{1,8192}$")
# expiresIn outside this range is not a lifetime we can plan renewals around.
MIN_TOKEN_LIFETIME = 1.0
MAX_TOKEN_LIFETIME = 7 * 86400.0

log = logging.getLogger("exporter.api")


@dataclass(frozen=True)
class _Get:
    endpoint: str
    path: str
    params: QueryParams | None


class Session:
    def __init__(
        self,
        connection: ConnectionConfig,
        transport: Transport,
        codes: OneTimeCodes,
        counters: ClientCounters,
        memory: LoginMemory,
        *,
        login_backoff: float,
        max_login_refusals: int,
        clock: Callable[[], float],
    ) -> None:
        self._connection = connection
        self._transport = transport
        self._codes = codes
        self._counters = counters
        self._login_backoff = login_backoff
        self._max_login_refusals = max_login_refusals
        self._clock = clock
        self._token: str | None = None
        self._token_expires_at: float | None = None
        self._token_renew_at = 0.0
        self._memory = memory
        self._logins_paused_until = memory.state.logins_paused_until
        self._refusals_in_a_row = memory.state.refusals_in_a_row
        self._clock_probed = False

    @property
    def token_expires_at(self) -> float | None:
        return self._token_expires_at if self._token else None

    @property
    def logins_paused_until(self) -> float | None:
        return self._logins_paused_until

    # -- an authorized GET ----------------------------------------------------------------

    def get(self, endpoint: str, path: str, params: QueryParams | None) -> JsonObject:
        request = _Get(endpoint, path, params)
        self._ensure_token()
        try:
            return self._send_authorized(request)
        except Unauthorized:
            return self._after_token_refused(request)
        except ApiRejected as exc:
            if not (self._codes.last_was_reused and _is_otp_refusal(exc)):
                raise
            return self._after_reused_code_refused(request)

    def _send_authorized(self, request: _Get) -> JsonObject:
        def build() -> Request:
            assert self._token is not None
            headers = {"Authorization": f"Bearer {self._token}", "otp": self._codes.for_request()}
            return Request(request.endpoint, "GET", request.path, request.params, headers=headers)

        envelope = self._transport.call(request.endpoint, build)
        self._codes.reused_code_accepted()
        return envelope

    def _after_token_refused(self, request: _Get) -> JsonObject:
        # The token was revoked or expired early: one new login, one more try.
        log.info("token refused with HTTP 401, logging in again", extra={"connection": self._connection.name})
        self._login()
        return self._send_authorized(request)

    def _after_reused_code_refused(self, request: _Get) -> JsonObject:
        # A server that refuses reused codes refuses every one of them; a single refusal
        # may be chance. Retry this request once with a fresh code.
        self._codes.reused_code_refused()
        return self._send_authorized(request)

    # -- logins ---------------------------------------------------------------------------

    def _ensure_token(self) -> None:
        if self._token is None or self._clock() >= self._token_renew_at:
            self._login()

    def _login(self) -> None:
        self._token = None
        now = self._clock()
        if self._refusals_in_a_row >= self._max_login_refusals:
            where = f" and delete {self._memory.path}" if self._memory.path else ""
            raise LoginsStopped(
                f"logins stopped after {self._refusals_in_a_row} refused logins in a row, so that the account is "
                f"not locked: fix the credentials{where}, then restart the exporter"
            )
        if self._logins_paused_until is not None and now < self._logins_paused_until:
            raise LoginPaused(f"logins paused after a refused login, next attempt at {_iso(self._logins_paused_until)}")
        if not self._clock_probed:
            self._probe_clock()

        def build() -> Request:
            self._counters.login()
            body = {
                "username": self._connection.username.reveal(),
                "password": self._connection.password.reveal(),
                # A refused login counts towards Ibanera's lock: never risk a reused code here.
                "otp": self._codes.for_login(),
            }
            return Request("login", "POST", LOGIN_PATH, json_body=body)

        try:
            envelope = self._transport.call("login", build)
        except ApiRejected as exc:
            refusal = next((code for code in exc.codes if code in CREDENTIAL_REFUSALS), None)
            if refusal is None:
                # A redirect, a 403 or an error page is not Ibanera refusing the credentials:
                # the poll fails, and the next one may log in again.
                raise
            raise self._refused(refusal, exc) from None
        self._logins_paused_until = None
        self._refusals_in_a_row = 0
        self._memory.remember_logins(None, 0)
        self._codes.new_token()
        self._accept_token(envelope, now)

    def _refused(self, refusal: str, exc: ApiRejected) -> LoginRefused:
        self._counters.login_failure(refusal)
        self._refusals_in_a_row += 1
        self._logins_paused_until = self._clock() + self._login_backoff
        self._memory.remember_logins(self._logins_paused_until, self._refusals_in_a_row)
        if self._refusals_in_a_row >= self._max_login_refusals:
            then = f"that is {self._refusals_in_a_row} in a row: no more logins until the exporter is restarted"
        else:
            then = f"no new login before {_iso(self._logins_paused_until)}"
        return LoginRefused(f"login refused ({refusal}): {exc}; {then}, so that the account is not locked")

    def _accept_token(self, envelope: JsonObject, sent_at: float) -> None:
        details = envelope.get("details")
        token = details.get("accessToken") if isinstance(details, dict) else None
        lifetime = details.get("expiresIn") if isinstance(details, dict) else None
        # Never put the token itself into a message: say what is wrong with it.
        if not isinstance(token, str) or not _TOKEN.match(token):
            raise MalformedResponse("login: details.accessToken is missing, empty, longer than 8192 characters, or "
                                    "not printable ASCII without spaces")
        if isinstance(lifetime, bool) or not isinstance(lifetime, (int, Decimal)) or not (
            MIN_TOKEN_LIFETIME <= lifetime <= MAX_TOKEN_LIFETIME
        ):
            raise MalformedResponse("login: details.expiresIn is not a number of seconds from 1 to 604800 (7 days)")
        seconds = float(lifetime)
        self._token = token
        # Lifetime counts from before the request was sent: the token can only be younger.
        self._token_expires_at = sent_at + seconds
        self._token_renew_at = sent_at + seconds - min(60.0, seconds / 4)
        log.info("logged in", extra={"connection": self._connection.name, "token_expires_in": f"{seconds:g}s"})

    def _probe_clock(self) -> None:
        """Learn the server's clock before the first login, from two replies to GET /.

        A login with a code from a skewed clock would be refused, and every refusal counts
        towards the lock; a GET of / without credentials costs nothing of the kind. Its
        replies are error pages by design, so two of them must agree before they count.
        """
        self._clock_probed = True
        for _ in range(2):
            sent_at = self._clock()
            self._codes.observe_date(self._transport.probe(), sent_at)


def _is_otp_refusal(exc: ApiRejected) -> bool:
    return any(field.lower() == "otp" or "otp" in code.lower() for field, code in exc.errors)


def _iso(unix_time: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix_time))
