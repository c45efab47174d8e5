"""What a person can do about a failure, in words: the refused login's log line, the landing
page and --connection.check give the same advice. No hint contains a secret: they name
config keys, hosts and measured numbers only.
"""

from __future__ import annotations

import socket
import ssl
from urllib.parse import urlsplit

from ..config import ConnectionConfig
from .errors import (
    ApiError,
    ConnectionFailed,
    LoginPaused,
    LoginsStopped,
    RequestTimeout,
    ResponseTooLarge,
    TooManyPages,
    TransientError,
)


def clock_words(offset: float | None) -> str:
    if offset is None:
        return "not measured (no two Date headers agreed)"
    return f"{offset:+.1f} s (the API's clock minus this host's)"


def login_hint(message_code: str, connection: ConnectionConfig, clock_offset: float | None) -> str:
    """Advice for a login refused with `message_code`, one of counters.CREDENTIAL_REFUSALS."""
    if message_code == "Username_Or_Password_Incorrect":
        # Ibanera answers a wrong one-time code the same way, so the secret and the clock are suspects too.
        return (
            f"check the username, the password and the TOTP secret, totp_secret_encoding ({connection.totp_secret_encoding} "
            f"now; ascii if the secret is plain text), and the clock offset: {clock_words(clock_offset)}"
        )
    if message_code == "Account_Locked":
        return "Ibanera locks the account for 10 minutes after failed logins: wait, and check the credentials first"
    if message_code == "Account_Not_Verified":
        return "the API user is not verified yet: ask Ibanera to finish setting it up"
    if message_code == "Account_Suppressed":
        return "the API user's account is inactive: ask Ibanera to reactivate it"
    return f"the API gave no documented reason: check the credentials and base_url ({_host(connection)})"


def failure_hint(error: ApiError, connection: ConnectionConfig) -> str | None:
    """Advice for a failure other than a refused login (which carries its own), or None."""
    host = _host(connection)
    if isinstance(error, ConnectionFailed):
        cause = _root_cause(error)
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"the certificate of {host} is not trusted here: check base_url, or set ca_file to the CA that signed it"
        if isinstance(cause, ssl.SSLError):
            return f"TLS with {host} failed: check that base_url is the API's https:// address"
        if isinstance(cause, socket.gaierror):
            return f"the name {host} does not resolve: check base_url and this host's DNS"
        if isinstance(cause, ConnectionRefusedError):
            return f"{host} refused the connection: check base_url, and any firewall or proxy (HTTPS_PROXY) on the way"
        return f"cannot reach {host}: check base_url, the network and any proxy (HTTPS_PROXY)"
    if isinstance(error, RequestTimeout):
        return f"{host} did not answer within request_timeout: check the network, or raise request_timeout"
    if isinstance(error, TransientError):
        return "the API is having trouble: try again in a few minutes"
    if isinstance(error, LoginPaused):
        return "a refused login paused logins, so that the account is not locked: fix the credentials and wait"
    if isinstance(error, LoginsStopped):
        return "refused logins stopped them, so that the account is not locked: do what the cause says"
    if isinstance(error, ResponseTooLarge):
        return "raise max_response_size, or use a smaller page_size"
    if isinstance(error, TooManyPages):
        return "raise max_pages or page_size"
    return None


def _host(connection: ConnectionConfig) -> str:
    """The host and port of base_url, never a user:password@ part."""
    url = urlsplit(connection.base_url)
    return f"{url.hostname}:{url.port}" if url.port else str(url.hostname)


def _root_cause(error: BaseException) -> BaseException:
    """The innermost exception behind `error` (the transport raises its errors from the httpx ones)."""
    seen: set[int] = set()
    while id(error) not in seen:
        seen.add(id(error))
        inner = error.__cause__ or error.__context__
        if inner is None:
            break
        error = inner
    return error
