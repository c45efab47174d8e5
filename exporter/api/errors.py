"""Every way a request or a poll can fail, as exception classes.

Each class carries `reason`, the fixed label of `ibanera_poll_failures_total` (and its card
twin). The label set is derived from these classes, so a new failure mode cannot be
raised without also being exported at 0 from the start.
"""

from __future__ import annotations


class ApiError(Exception):
    """A request or a poll failed. `reason` is a short fixed label for metrics."""

    reason = "api_error"


class TransientError(ApiError):
    """Worth retrying: the request may well succeed a moment later."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RequestTimeout(TransientError):
    reason = "timeout"


class ConnectionFailed(TransientError):
    reason = "connection_error"


class RateLimited(TransientError):
    reason = "http_429"


class ServerError(TransientError):
    reason = "http_5xx"


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

    def __init__(self, message: str, message_code: str = "", hint: str = "") -> None:
        super().__init__(message)
        self.message_code = message_code  # the first messageCode of the refusal
        self.hint = hint  # what a person can do about it (exporter.api.hints)


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


# The reason of a poll that failed on a bug of ours rather than on the API.
INTERNAL_REASON = "internal"

FAILURE_CLASSES: tuple[type[ApiError], ...] = (
    RequestTimeout,
    ConnectionFailed,
    RateLimited,
    ServerError,
    Unauthorized,
    ApiRejected,
    LoginRefused,
    LoginPaused,
    LoginsStopped,
    MalformedResponse,
    TooManyPages,
    ResponseTooLarge,
)
POLL_FAILURE_REASONS: tuple[str, ...] = (*(cls.reason for cls in FAILURE_CLASSES), INTERNAL_REASON)
