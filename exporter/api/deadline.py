"""A total deadline for one HTTP request: connect, TLS, headers and the whole body.

httpx's timeouts bound each read, so a server that drips a byte a second never trips
them and holds a poll forever. Here every socket operation of the request gets at most
the time left until the deadline, and none starts once it has passed: the request ends
as a timeout at `request_timeout`, however the bytes arrive.

The deadline is per thread (each connection's poller has its own), set by `deadline()`
around one request. It lives in an httpcore network backend, httpcore's public hook for
socket I/O. A DNS lookup (getaddrinfo, which cannot be interrupted) runs in a thread of its
own that the request stops waiting for at the deadline; at most MAX_HUNG_LOOKUPS of them
at a time, so a resolver that never answers costs a few threads, not one per poll.
Requests through a proxy (HTTPS_PROXY and the like) go through a transport with the same
backend.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import httpcore
import httpx
from httpx._utils import get_environment_proxies

_local = threading.local()
# Lookups in flight at once, in the whole process. A lookup the request gave up on still
# holds its slot until the resolver answers (it bounds itself: resolv.conf's timeout and
# attempts), so this is also the most threads a hung resolver can hold.
MAX_HUNG_LOOKUPS = 4
_lookup_slots = threading.BoundedSemaphore(MAX_HUNG_LOOKUPS)


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

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        left = _time_left(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, left))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


def _resolve(host: str, port: int, timeout: float | None) -> list[str]:
    """The addresses of `host`, looked up within the time left (an address is its own answer)."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    if not _lookup_slots.acquire(timeout=_time_left(timeout, httpcore.ConnectTimeout)):
        raise httpcore.ConnectTimeout(f"DNS lookup of {host}: {MAX_HUNG_LOOKUPS} earlier lookups have not ended")
    answer: list[list[str] | OSError] = []
    done = threading.Event()

    def look_up() -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            answer.append(list(dict.fromkeys(str(info[4][0]) for info in infos)))
        except OSError as exc:
            answer.append(exc)
        finally:
            _lookup_slots.release()
            done.set()

    try:
        threading.Thread(target=look_up, name=f"dns {host}", daemon=True).start()
    except RuntimeError:  # out of threads: the slot is given back, or after a few no lookup would ever start
        _lookup_slots.release()
        raise httpcore.ConnectError(f"DNS lookup of {host}: no thread to run it in") from None
    if not done.wait(_time_left(timeout, httpcore.ConnectTimeout)):
        raise httpcore.ConnectTimeout(f"DNS lookup of {host} did not end within the request's deadline")
    if isinstance(answer[0], OSError):
        try:  # raised while handling it, so that it stays the context: httpcore's pool re-raises `from None`
            raise answer[0]
        except OSError as exc:  # the hints name an unresolvable host by it
            raise httpcore.ConnectError(f"DNS lookup of {host} failed") from exc
    if not answer[0]:
        raise httpcore.ConnectError(f"DNS lookup of {host} found no address")
    return answer[0]


class _DeadlineBackend(httpcore.SyncBackend):
    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        # Connected by address: the host name still serves TLS (SNI and the certificate
        # check), which httpcore takes from the request's origin, not from here.
        error: Exception | None = None
        for address in _resolve(host, port, timeout):
            left = _time_left(timeout, httpcore.ConnectTimeout)
            try:
                return _DeadlineStream(super().connect_tcp(address, port, left, local_address, socket_options))
            except httpcore.ConnectError as exc:  # the next address, as socket.create_connection does
                error = exc
        assert error is not None
        raise error


def deadline_transport(verify: ssl.SSLContext | bool, proxy: str | None = None) -> httpx.HTTPTransport:
    """httpx's own transport (through `proxy`, if given), its connections made by the deadline backend."""
    # One poller thread uses the client, one request at a time: two connections bound its
    # descriptors; idle ones go after 5 s, as httpx's own default.
    transport = httpx.HTTPTransport(
        verify=verify, proxy=proxy, limits=httpx.Limits(max_connections=2, keepalive_expiry=5.0)
    )
    # httpx takes no network backend: the pool it built (direct, HTTP or SOCKS proxy) gets
    # ours. The drip-feed tests (tests/test_hostile_api.py, test_hostile_more.py) fail if this breaks.
    transport._pool._network_backend = _DeadlineBackend()
    return transport


def deadline_mounts(verify: ssl.SSLContext | bool) -> dict[str, httpx.BaseTransport | None]:
    """The proxies of HTTP(S)_PROXY, ALL_PROXY and NO_PROXY, each with the deadline backend.

    httpx reads these variables only when it builds its own transport: given ours, it
    would silently ignore them and connect directly.
    """
    return {
        pattern: None if url is None else deadline_transport(verify, url)
        for pattern, url in get_environment_proxies().items()
    }
