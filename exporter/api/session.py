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
from ..dialect import KeysDifferInCase, fold_keys
from ..totp import STEP_SECONDS
from .codes import OneTimeCodes
from .counters import CREDENTIAL_REFUSALS, ClientCounters
from .envelope import JsonObject
from .errors import ApiRejected, LoginPaused, LoginRefused, LoginsStopped, MalformedResponse, Unauthorized
from .hints import login_hint
from .memory import LoginMemory
from .transport import QueryParams, Request, Transport

LOGIN_PATH = "/api/v1/public/auth/login"
# What a token may look like: printable ASCII without spaces (it goes into a header as
# it is), of a sane length. A JWT is one to two kilobytes. Matched whole (fullmatch): with
# `$`, a token ending in a line break would pass.
_TOKEN = re.compile(r"[\x21-\x7e]{1,8192}")
# expiresIn outside this range is not a lifetime we can plan renewals around.
MIN_TOKEN_LIFETIME = 1.0
MAX_TOKEN_LIFETIME = 7 * 86400.0
# A renewal login waits for nothing: it happens at the first request that finds a fresh
# one-time step (a login never reuses one) once the token is in its last minute (or last
# quarter, if shorter), and until then the current token serves. The window is at least a
# step and a margin long, so that a fresh step always begins in it while the token is good.
_RENEW_MARGIN = 60.0
_RENEW_WINDOW_FLOOR = STEP_SECONDS + 5.0
# A token this close to its end is not sent: the request might arrive after it.
_TOKEN_GUARD = 2.0

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
        one_login: bool = False,
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
        self._token_lifetime: float | None = None
        self._token_renew_at = 0.0
        self._memory = memory
        self._logins_paused_until = memory.state.logins_paused_until
        self._refusals_in_a_row = memory.state.refusals_in_a_row
        self._clock_probed = False
        # --connection.check: exactly one login request, never retried nor renewed; a token
        # that is refused or runs out is an error rather than a reason to log in again.
        self._one_login = one_login
        self._logged_in_once = False

    @property
    def token_expires_at(self) -> float | None:
        return self._token_expires_at if self._token else None

    @property
    def token_lifetime(self) -> float | None:
        """The expiresIn of the last login, in seconds."""
        return self._token_lifetime

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
        # may be chance. Retry this request once with a fresh code, which may take a new
        # step: with a new token, if the current one would run out meanwhile.
        self._codes.reused_code_refused()
        if not self._token_lasts():
            self._login()
        return self._send_authorized(request)

    # -- logins ---------------------------------------------------------------------------

    def _ensure_token(self) -> None:
        if not self._token_lasts():
            self._login()  # no token that will still be good: log in, waiting for a fresh step if need be
        elif self._clock() >= self._token_renew_at and self._codes.fresh_step_available() and not self._one_login:
            self._login()  # renewal, now that it costs no wait

    def _token_lasts(self) -> bool:
        """Whether the token will still be good when the next request is sent, after any wait for a fresh code."""
        sent_at = self._clock() + self._codes.request_wait()
        return self._token_expires_at is not None and self._token is not None and (
            sent_at < self._token_expires_at - _TOKEN_GUARD)

    def _login(self) -> None:
        self._token = None
        if self._one_login and self._logged_in_once:
            raise Unauthorized("the token from the one login was refused or ran out, and a second login is not tried")
        now = self._clock()
        if self._refusals_in_a_row >= self._max_login_refusals:
            where = f" and delete {self._memory.path}" if self._memory.path else ""
            raise LoginsStopped(
                f"logins stopped after {self._refusals_in_a_row} refused logins in a row, so that the account is "
                f"not locked: fix the credentials{where}, then restart the exporter"
            )
        if self._logins_paused_until is not None and self._logins_paused_until > now + self._login_backoff:
            # Set by a clock that ran ahead (or read from a file it wrote) and has since gone
            # back: a pause never lasts longer than login_backoff from now.
            self._logins_paused_until = now + self._login_backoff
            self._memory.remember_logins(self._logins_paused_until, self._refusals_in_a_row)
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

        self._logged_in_once = True
        try:
            # One login means one login request: not even a 5xx is retried then.
            envelope = self._transport.send(build()) if self._one_login else self._transport.call("login", build)
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
        # The same hint as --connection.check gives: the log line and the landing page show it.
        hint = login_hint(refusal, self._connection, self._codes.offset)
        return LoginRefused(f"login refused ({refusal}): {exc}; {then}, so that the account is not locked; {hint}",
                            refusal, hint)

    def _accept_token(self, envelope: JsonObject, sent_at: float) -> None:
        details = envelope.get("details")
        try:  # keys in either case, like every reply
            details = fold_keys(details) if isinstance(details, dict) else {}
        except KeysDifferInCase as exc:
            raise MalformedResponse(f"login: details: {exc}") from None
        token = details.get("accesstoken")
        lifetime = details.get("expiresin")
        # Never put the token itself into a message: say what is wrong with it.
        if not isinstance(token, str) or not _TOKEN.fullmatch(token):
            raise MalformedResponse("login: details.accessToken is missing, empty, longer than 8192 characters, or "
                                    "not printable ASCII without spaces")
        if isinstance(lifetime, bool) or not isinstance(lifetime, (int, Decimal)) or not (
            MIN_TOKEN_LIFETIME <= lifetime <= MAX_TOKEN_LIFETIME
        ):
            raise MalformedResponse("login: details.expiresIn is not a number of seconds from 1 to 604800 (7 days)")
        seconds = float(lifetime)
        self._token = token
        self._token_lifetime = seconds
        # Lifetime counts from before the request was sent: the token can only be younger.
        self._token_expires_at = sent_at + seconds
        self._token_renew_at = sent_at + seconds - max(min(_RENEW_MARGIN, seconds / 4), min(_RENEW_WINDOW_FLOOR, seconds))
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
