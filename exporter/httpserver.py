"""A small HTTP/1.1 server in which everything a client controls is bounded.

Connections (and so threads and file descriptors) are capped; every request has a total
deadline for its TLS handshake, request line and headers, and every response one for
being written; idle keep-alive connections are closed after a while, and when the cap
is reached the oldest idle connection makes room for the new one, so that holding
connections open costs an attacker more than it costs the scrapers. accept() backs off
on EMFILE/ENFILE instead of spinning.

Why not http.server: it has no connection cap, a per-recv timeout rather than a deadline,
a listen backlog of 5, and parses a GET's body as the next request. Why not cheroot
(11.1.2): it runs the TLS handshake on its single accept thread (one slow client holds up
every new connection), its timeouts are per recv (a byte every few seconds keeps a
worker forever), and an EMFILE from accept() lands in a catch-all loop that logs and
retries at once. Each of those is one of the failures this module exists to prevent.
"""

from __future__ import annotations

import errno
import logging
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus

from .http11 import (
    SEND_CHUNK,
    BadRequest,
    Closed,
    Reader,
    Request,
    Response,
    ServerLimits,
    keeps_alive,
    linger,
    read_request,
    response_head,
    send_all,
)
from .slots import Connection, Slots

log = logging.getLogger("exporter.httpserver")

_ACCEPT_RETRY_ERRNOS = {errno.ECONNABORTED, errno.EPROTO, errno.EINTR, errno.EAGAIN, errno.EPERM}
_OUT_OF_DESCRIPTORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_ACCEPT_BACKOFF = (0.05, 1.0)  # first and longest pause of accept() while out of descriptors
_STOP_CHECK_SECONDS = 0.2  # how often the accept loop looks at the stop flag


@dataclass(frozen=True)
class TLSSettings:
    """The TLS context for a new connection, and the client SANs it must show (empty: any)."""

    context: ssl.SSLContext
    allowed_sans: tuple[str, ...] = ()


Handler = Callable[[Request], Response]


def _peer_sans_allowed(tls_socket: ssl.SSLSocket, allowed: tuple[str, ...]) -> bool:
    certificate = tls_socket.getpeercert() or {}
    names = {str(entry[1]) for entry in certificate.get("subjectAltName", ())}
    return not names.isdisjoint(allowed)


def _handshake(connection: Connection, tls: TLSSettings, deadline: float) -> ssl.SSLSocket:
    # In the connection's own thread, within the header deadline: a client that never
    # finishes its handshake holds one connection slot for that long, and nothing else.
    remaining = deadline - time.monotonic()
    connection.sock.settimeout(max(remaining, 0.001))
    try:
        # wrap_socket detaches the plain socket: the TLS one is the connection's socket from
        # here on, before the handshake, so that closing it to make room wakes the handshake.
        tls_socket = tls.context.wrap_socket(connection.sock, server_side=True, do_handshake_on_connect=False)
        connection.sock = tls_socket
        if connection.closing:  # chosen to make room while the plain socket was being detached
            raise Closed("closed to make room")
        tls_socket.do_handshake()
    except (OSError, ssl.SSLError) as exc:
        raise Closed(f"tls handshake failed: {exc}") from None
    if tls.allowed_sans and not _peer_sans_allowed(tls_socket, tls.allowed_sans):
        log.warning("client certificate refused: none of client_allowed_sans", extra={"client": connection.client})
        tls_socket.close()
        raise Closed("client certificate not in client_allowed_sans")
    return tls_socket


DEFAULT_LIMITS = ServerLimits()


class HTTPServer:
    """Serves `handler` on `address` with `limits`; `tls()` gives each new connection its TLS settings."""

    def __init__(
        self,
        address: tuple[str, int],
        handler: Handler,
        limits: ServerLimits = DEFAULT_LIMITS,
        tls: Callable[[], TLSSettings | None] = lambda: None,
        server_name: str = "",
    ) -> None:
        self._handler = handler
        self._limits = limits
        self._tls = tls
        self._server_header = server_name
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        # create_server sets SO_REUSEADDR: a restarted exporter binds its port again at once.
        self._listener = socket.create_server(address, family=family, backlog=limits.backlog)
        self._listener.settimeout(_STOP_CHECK_SECONDS)
        self._slots = Slots(limits.max_connections)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name="http-accept", daemon=True)

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()
        self._listener.close()
        self._slots.shut_down_all()

    # -- accepting ---------------------------------------------------------------------

    def _accept_loop(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            self._accept_until_stopped(selector)

    def _accept_until_stopped(self, selector: selectors.BaseSelector) -> None:
        backoff = 0.0  # > 0 while accept() is out of descriptors
        while not self._stopping.is_set():
            # Room is made only for a connection that is waiting, never ahead of one.
            if not selector.select(_STOP_CHECK_SECONDS) or not self._slots.make_room(_STOP_CHECK_SECONDS):
                continue
            try:
                sock, address = self._listener.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if exc.errno in _OUT_OF_DESCRIPTORS:
                    # The connection stays in the backlog; it is taken once descriptors free up.
                    if not backoff:
                        log.warning(
                            "cannot accept connections: out of file descriptors; pausing accept",
                            extra={"error": exc.strerror or str(exc)},
                        )
                    backoff = min(_ACCEPT_BACKOFF[1], max(_ACCEPT_BACKOFF[0], backoff * 2))
                    self._stopping.wait(backoff)
                elif exc.errno not in _ACCEPT_RETRY_ERRNOS and not self._stopping.is_set():
                    log.error("accept failed", extra={"error": exc.strerror or str(exc)})
                    self._stopping.wait(_ACCEPT_BACKOFF[0])
                continue
            if backoff:
                log.warning("accepting connections again")
                backoff = 0.0
            self._start_connection(sock, str(address[0]))

    def _start_connection(self, sock: socket.socket, client: str) -> None:
        connection = self._slots.add(sock, client)
        try:
            threading.Thread(target=self._serve, args=(connection,), name="http-connection", daemon=True).start()
        except RuntimeError:  # no thread to be had: the client is told so by a closed connection
            log.warning("cannot start a thread for a connection", extra={"client": client})
            self._slots.forget(connection)
            sock.close()

    # -- one connection ----------------------------------------------------------------

    def _serve(self, connection: Connection) -> None:
        sock = connection.sock
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # A new connection has read_header_timeout for its handshake and first request, in all.
            deadline = time.monotonic() + self._limits.read_header_timeout
            tls = self._tls()
            if tls is not None:
                sock = _handshake(connection, tls, deadline)
            reader = Reader(sock)
            first_byte_by = deadline
            while True:
                reader.wait_for_data(first_byte_by)
                # From a request's first byte, read_header_timeout for the rest of it.
                deadline = min(deadline, time.monotonic() + self._limits.read_header_timeout)
                response, keep_alive = self._answer(reader, connection, deadline)
                self._send(sock, response, keep_alive)
                if not keep_alive:
                    self._slots.set_done(connection)
                    linger(sock)
                    break
                self._slots.set_idle(connection, True)
                first_byte_by = time.monotonic() + self._limits.idle_timeout
                deadline = float("inf")
        except Closed as exc:
            log.debug("connection closed", extra={"client": connection.client, "reason": str(exc)})
        except (OSError, ssl.SSLError) as exc:
            log.debug("connection failed", extra={"client": connection.client, "error": str(exc)})
        except Exception as exc:  # a bug of ours: the log says so in its format, not a bare traceback on stderr
            log.error(
                "connection failed on an unexpected error",
                extra={"client": connection.client, "error": type(exc).__name__},
            )
        finally:
            self._slots.forget(connection)
            connection.sock.close()

    def _answer(self, reader: Reader, connection: Connection, deadline: float) -> tuple[Response, bool]:
        """Reads one request and runs the handler: (response, whether to keep the connection)."""
        client = connection.client
        try:
            request, body_left_unread = read_request(reader, self._limits, client, deadline)
        except BadRequest as exc:
            return Response(exc.status, (f"{exc.status.phrase}: {exc}\n".encode(),)), False
        self._slots.set_idle(connection, False)
        keep_alive = keeps_alive(request) and not body_left_unread
        try:
            response = self._handler(request)
        except Exception:  # a bug in a handler: one 500, not a dead connection thread
            log.exception("handling a request failed", extra={"client": client})
            return Response(HTTPStatus.INTERNAL_SERVER_ERROR, (b"Internal error; see the exporter's log.\n",)), False
        if request.method == "HEAD":
            response = Response(
                response.status, (), (*response.headers, ("Content-Length", str(response.length))), response.close
            )
        return response, keep_alive and not response.close

    def _send(self, sock: socket.socket, response: Response, keep_alive: bool) -> None:
        head = response_head(response, keep_alive, self._server_header)
        deadline = time.monotonic() + self._limits.write_timeout
        if response.length < SEND_CHUNK:  # one write: with TCP_NODELAY, several small ones would be several packets
            send_all(sock, b"".join((head, *response.body)), deadline)
        else:
            for part in (head, *response.body):
                send_all(sock, part, deadline)
