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
from collections.abc import Callable
from dataclasses import dataclass

from ..config import ConnectionConfig
from .codes import OneTimeCodes
from .counters import CREDENTIAL_REFUSALS, ClientCounters
from .envelope import JsonObject
from .errors import ApiRejected, LoginRefused, Unauthorized
from .hints import login_hint
from .memory import LoginMemory
from .refusals import LoginGate
from .token import Token, read_token
from .transport import QueryParams, Request, Transport

LOGIN_PATH = "/api/v1/public/auth/login"
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
        self._clock = clock
        self._token: Token | None = None
        self._token_lifetime: float | None = None  # kept after the token is dropped: the check reports it
        self._gate = LoginGate(memory, login_backoff=login_backoff, max_login_refusals=max_login_refusals, clock=clock)
        self._clock_probed = False
        # --connection.check: exactly one login request, never retried nor renewed; a token
        # that is refused or runs out is an error rather than a reason to log in again.
        self._one_login = one_login
        self._logged_in_once = False

    @property
    def token_expires_at(self) -> float | None:
        return self._token.expires_at if self._token else None

    @property
    def token_lifetime(self) -> float | None:
        """The expiresIn of the last login, in seconds."""
        return self._token_lifetime

    @property
    def logins_paused_until(self) -> float | None:
        return self._gate.paused_until

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
            headers = {"Authorization": f"Bearer {self._token.value}", "otp": self._codes.for_request()}
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
        elif (
            self._token is not None
            and self._clock() >= self._token.renew_at
            and self._codes.fresh_step_available()
            and not self._one_login
        ):
            self._login()  # renewal, now that it costs no wait

    def _token_lasts(self) -> bool:
        """Whether the token will still be good when the next request is sent, after any wait for a fresh code."""
        sent_at = self._clock() + self._codes.request_wait()
        return self._token is not None and sent_at < self._token.expires_at - _TOKEN_GUARD

    def _login(self) -> None:
        self._token = None
        if self._one_login and self._logged_in_once:
            raise Unauthorized("the token from the one login was refused or ran out, and a second login is not tried")
        self._gate.check()
        sent_at = self._clock()
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
        self._gate.accepted()
        self._codes.new_token()
        self._token = read_token(envelope, sent_at)
        self._token_lifetime = self._token.lifetime
        log.info(
            "logged in", extra={"connection": self._connection.name, "token_expires_in": f"{self._token.lifetime:g}s"}
        )

    def _refused(self, refusal: str, exc: ApiRejected) -> LoginRefused:
        self._counters.login_failure(refusal)
        then = self._gate.refused()
        # The same hint as --connection.check gives: the log line and the landing page show it.
        hint = login_hint(refusal, self._connection, self._codes.offset)
        return LoginRefused(
            f"login refused ({refusal}): {exc}; {then}, so that the account is not locked; {hint}", refusal, hint
        )

    def _probe_clock(self) -> None:
        """Learn the server's clock before the first login, from two replies to GET /.

        A login with a code from a skewed clock would be refused, and every refusal counts
        towards the lock; a GET of / without credentials costs nothing of the kind. Its
        replies are error pages by design, so two of them must agree before they count. A host
        that cannot be reached fails the login here, before a code is taken: the next login
        probes again.
        """
        for _ in range(2):
            sent_at = self._clock()
            self._codes.observe_date(self._transport.probe(), sent_at)
        self._clock_probed = True


def _is_otp_refusal(exc: ApiRejected) -> bool:
    return any(field.lower() == "otp" or "otp" in code.lower() for field, code in exc.errors)
