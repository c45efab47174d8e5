"""One HTTP request to the API, and the retries of transient failures.

The transport owns the httpx client, the size cap on replies, the request counters and
the retry policy (tenacity: exponential backoff with jitter, Retry-After honoured). It
knows nothing of tokens or codes: the caller passes a function that builds the request,
called again for every attempt, so that each attempt carries a code computed just
before it is sent.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_exponential_jitter

from ..config import ConnectionConfig, RetryPolicy
from .body import read_body
from .counters import ClientCounters
from .deadline import deadline
from .envelope import JsonObject, decode_envelope
from .errors import ApiError, Cancelled, ConnectionFailed, RequestTimeout, TransientError
from .http_client import http_client

log = logging.getLogger("exporter.api")

QueryParams = Mapping[str, int]


@dataclass(frozen=True)
class Request:
    """One attempt. Its headers and body hold secrets: they never show in a repr."""

    endpoint: str  # the `endpoint` label
    method: str
    path: str
    params: QueryParams | None = None
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    json_body: Mapping[str, str] | None = field(default=None, repr=False)


class Transport:
    def __init__(
        self,
        connection: ConnectionConfig,
        *,
        request_timeout: float,
        retry: RetryPolicy,
        max_response_size: int,
        counters: ClientCounters,
        clock: Callable[[], float],
        on_date: Callable[[str | None, float], None],
        stop_event: threading.Event,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self._connection = connection.name
        self._retry = retry
        self._max_response_size = max_response_size
        self._counters = counters
        self._clock = clock
        self._on_date = on_date
        self._stop_event = stop_event
        self.sleep = sleep or self._sleep_unless_stopped
        self._backoff = wait_exponential_jitter(
            multiplier=retry.initial_backoff, max=retry.max_backoff, jitter=retry.initial_backoff
        )
        self._request_timeout = request_timeout
        self._http = http_client(connection, request_timeout)

    def close(self) -> None:
        self._http.close()

    # -- with retries -------------------------------------------------------------------

    def call(self, endpoint: str, build: Callable[[], Request]) -> JsonObject:
        """The envelope of a success, retrying transient failures; any other ApiError at once."""
        retrying = Retrying(
            retry=retry_if_exception_type(TransientError),
            stop=self._should_stop,
            wait=self._wait,
            sleep=self.sleep,
            before_sleep=lambda state: self._on_retry(endpoint, state),
            reraise=True,
        )
        return retrying(lambda: self.send(build()))

    def _should_stop(self, state: RetryCallState) -> bool:
        if state.attempt_number >= self._retry.max_attempts:
            return True
        # A server that asks us to wait longer than we ever back off is not coming back
        # within this poll; the next poll will ask again.
        retry_after = _retry_after(state)
        return retry_after is not None and retry_after > self._retry.max_backoff

    def _wait(self, state: RetryCallState) -> float:
        return max(self._backoff(state), _retry_after(state) or 0.0)

    def _sleep_unless_stopped(self, seconds: float) -> None:
        if self._stop_event.wait(seconds):
            raise Cancelled()

    def _raise_if_stopped(self) -> None:
        # A stopped client's API user may already be a new client's (a reload restarted the
        # connection), which alone may use the next one-time-code step: once a request in
        # flight comes back, an abandoned poll sends no next page, and no login.
        if self._stop_event.is_set():
            raise Cancelled()

    def _on_retry(self, endpoint: str, state: RetryCallState) -> None:
        self._counters.retry(endpoint)
        error = state.outcome.exception() if state.outcome else None
        log.warning(
            "request failed, retrying",
            extra={
                "connection": self._connection,
                "endpoint": endpoint,
                "error": str(error),
                "attempt": f"{state.attempt_number}/{self._retry.max_attempts}",
                "retry_in": f"{state.upcoming_sleep:.1f}s",
            },
        )

    # -- one attempt ----------------------------------------------------------------------

    def send(self, request: Request) -> JsonObject:
        """One attempt: the envelope of a success, or the ApiError that says why not.

        Counted exactly once in ibanera_api_requests_total, whatever happens, and the
        response is closed on every path: a leaked one holds a pooled connection. The
        error's text quotes the reply (messageCodes, Content-Type): whatever of the request's
        secrets a reply echoes there is blanked out before anyone can log or show it.
        """
        self._raise_if_stopped()
        try:
            return self._send(request)
        except ApiError as exc:
            _redact(exc, request)
            raise

    def _send(self, request: Request) -> JsonObject:
        endpoint = request.endpoint
        code = "error"
        sent_at = self._clock()
        try:
            with deadline(self._request_timeout):
                built = self._http.build_request(
                    request.method, request.path, params=request.params, json=request.json_body, headers=request.headers
                )
                response = self._http.send(built, stream=True)
                try:
                    code = str(response.status_code)
                    content = read_body(
                        endpoint, response.headers.get("Content-Encoding"), response.iter_raw(), self._max_response_size
                    )
                finally:
                    response.close()
        except httpx.TimeoutException:
            code = "timeout"
            raise self._timed_out(endpoint) from None
        except httpx.HTTPError as exc:
            raise ConnectionFailed(f"{endpoint}: {_describe(exc)}") from None
        finally:
            self._counters.request(endpoint, code)
        envelope = decode_envelope(endpoint, response.status_code, response.headers, content, self._clock())
        # Only the API's own success envelope tells the server's clock: not a 200 maintenance
        # page, and not a cache's copy (Age), whose Date is when the original was made.
        if "Age" not in response.headers:
            self._on_date(response.headers.get("Date"), sent_at)
        return envelope

    def probe(self) -> str | None:
        """GET / without credentials: the Date header of whatever answers, or None.

        Raises ConnectionFailed when nothing answers at all (a name that does not resolve, a
        refused connection, a TLS handshake that fails, a proxy that refuses the CONNECT): a
        login to the same host would fail the same way, after spending a one-time code step on
        nothing.
        """
        self._raise_if_stopped()
        code = "error"
        try:
            with deadline(self._request_timeout), self._http.stream("GET", "/") as response:
                code = str(response.status_code)
                # A cached copy's Date (a CDN in front of /) is when the original was made.
                date: str | None = None if "Age" in response.headers else response.headers.get("Date")
                return date
        except httpx.ConnectTimeout:
            code = "timeout"
            raise self._timed_out("clock") from None
        except (httpx.ConnectError, httpx.ProxyError) as exc:  # a proxy that cannot reach the host either
            raise ConnectionFailed(f"clock: {_describe(exc)}") from None
        except httpx.HTTPError:
            return None
        finally:
            self._counters.request("clock", code)

    def _timed_out(self, endpoint: str) -> RequestTimeout:
        return RequestTimeout(f"{endpoint}: no complete answer within request_timeout ({self._request_timeout:g}s)")


def _describe(exc: httpx.HTTPError) -> str:
    """Words for a failed request that cannot contain what we sent (headers hold the token).

    The text of errors raised by the operating system or the TLS library (refused,
    reset, certificate verify failed) names no header; anything else, such as an
    error about an illegal header value, is described by its type alone.
    """
    cause = exc.__context__
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__context__
    if isinstance(exc, (httpx.ConnectError, httpx.ReadError, httpx.WriteError)) and isinstance(cause, OSError):
        return f"{type(exc).__name__}: {str(cause)[:200]}"
    return type(exc).__name__


# Shorter values are not worth blanking out (and would blank out ordinary words).
_MIN_SECRET_LENGTH = 4


def _redact(exc: ApiError, request: Request) -> None:
    """Blank out of `exc`'s text every header or body value `request` sent (token, code, password)."""
    secrets = [*request.headers.values(), *(request.json_body or {}).values()]
    secrets += [value.split(" ", 1)[1] for value in request.headers.values() if " " in value]  # "Bearer <token>"
    text = str(exc)
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= _MIN_SECRET_LENGTH and secret in text:
            text = text.replace(secret, "<redacted>")
    if text != str(exc):
        exc.args = (text,)


def _retry_after(state: RetryCallState) -> float | None:
    error = state.outcome.exception() if state.outcome else None
    return error.retry_after if isinstance(error, TransientError) else None
