"""A total deadline for one HTTP request: connect, TLS, headers and the whole body.

httpx's timeouts bound each read, so a server that drips a byte a second never trips
them and holds a poll forever. Here every socket operation of the request gets at most
the time left until the deadline, and none starts once it has passed: the request ends
as a timeout at `request_timeout`, however the bytes arrive.

The deadline is per thread (each connection's poller has its own), set by `deadline()`
around one request. It lives in an httpcore network backend, httpcore's public hook for
socket I/O. Not covered: a DNS lookup, which the system resolver bounds on its own
(getaddrinfo cannot be interrupted), and requests sent through an HTTPS_PROXY, whose
transport httpx builds itself.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import httpcore
import httpx

_local = threading.local()


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Every socket operation inside must end within `seconds` from now, all together."""
    _local.deadline = time.monotonic() + seconds
    try:
        yield
    finally:
        _local.deadline = None


def _time_left(timeout: float | None, fail: type[Exception]) -> float | None:
    until: float | None = getattr(_local, "deadline", None)
    if until is None:
        return timeout
    left = until - time.monotonic()
    if left <= 0:
        raise fail("the request's total deadline has passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _time_left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _time_left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        left = _time_left(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, left))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.SyncBackend):
    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None) -> httpcore.NetworkStream:
        left = _time_left(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(super().connect_tcp(host, port, left, local_address, socket_options))


def deadline_transport(verify: ssl.SSLContext | bool) -> httpx.HTTPTransport:
    """httpx's own transport, its connections made by the deadline backend."""
    transport = httpx.HTTPTransport(verify=verify)
    # httpx takes no network backend, so the pool it built is replaced by an equal one
    # that has ours. The drip-feed tests (tests/test_hostile_api.py) fail if this breaks.
    # One poller thread uses the client, one request at a time: two connections bound its
    # descriptors; idle ones go after 5 s, as httpx's own default.
    transport._pool = httpcore.ConnectionPool(
        ssl_context=httpx.create_ssl_context(verify=verify), max_connections=2, keepalive_expiry=5.0,
        network_backend=_DeadlineBackend(),
    )
    return transport
