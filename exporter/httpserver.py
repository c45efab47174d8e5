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
import re
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus

log = logging.getLogger("exporter.httpserver")

# Methods that exist: answered 405 where they do not apply. Anything else is 501.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"})
# Control characters other than HTAB, a bare CR above all: a proxy in front may end a line
# at it where this server would not (RFC 9112 2.2), and so frame the request differently.
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_TOKEN_CHARS = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_ACCEPT_RETRY_ERRNOS = {errno.ECONNABORTED, errno.EPROTO, errno.EINTR, errno.EAGAIN, errno.EPERM}
_OUT_OF_DESCRIPTORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_ACCEPT_BACKOFF = (0.05, 1.0)  # first and longest pause of accept() while out of descriptors
_STOP_CHECK_SECONDS = 0.2  # how often the accept loop looks at the stop flag
_LIMIT_WARNING_INTERVAL = 60.0
_SEND_CHUNK = 256 * 1024
_RECV_CHUNK = 16 * 1024  # with max_header_bytes, what one connection's read buffer can hold


@dataclass(frozen=True)
class ServerLimits:
    """What one client may take. The first three are flags; the rest are fixed (see README)."""

    max_connections: int = 512  # open client connections, one thread each
    read_header_timeout: float = 10.0  # TLS handshake + request line + headers, in total
    idle_timeout: float = 120.0  # a keep-alive connection between two requests
    write_timeout: float = 60.0  # writing one response, in total
    backlog: int = 1024  # the kernel caps it at net.core.somaxconn
    max_header_bytes: int = 16 * 1024  # request line and headers together
    max_headers: int = 100
    max_discarded_body: int = 64 * 1024  # a body on GET is read and dropped up to this size


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    version: str  # "HTTP/1.1" or "HTTP/1.0"
    headers: Mapping[str, str]  # lower-case names; repeated headers joined with ", "
    client: str


@dataclass(frozen=True)
class Response:
    status: int
    # Sent one after the other: a large shared part (the cached balances) is never copied.
    body: tuple[bytes, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()  # Content-Length and Connection are added by the server
    close: bool = False  # close the connection after this response

    @property
    def length(self) -> int:
        return sum(len(part) for part in self.body)


@dataclass(frozen=True)
class TLSSettings:
    """The TLS context for a new connection, and the client SANs it must show (empty: any)."""

    context: ssl.SSLContext
    allowed_sans: tuple[str, ...] = ()


Handler = Callable[[Request], Response]


class BadRequest(Exception):
    """The request cannot be answered normally: answered with `status` and the connection closed."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Closed(Exception):
    """The client went away, or its time ran out, before a request was complete."""


def _strip_line_end(line: bytes) -> bytes:
    """The line without its one CRLF or LF: any other CR is left for _CONTROL to refuse."""
    return line[:-2] if line.endswith(b"\r\n") else line[:-1]


def _is_token(text: bytes) -> bool:
    return bool(text) and all(byte in _TOKEN_CHARS for byte in text)


def _peer_sans_allowed(tls_socket: ssl.SSLSocket, allowed: tuple[str, ...]) -> bool:
    certificate = tls_socket.getpeercert() or {}
    names = {str(entry[1]) for entry in certificate.get("subjectAltName", ())}
    return not names.isdisjoint(allowed)


class _Reader:
    """Buffered reads from a socket, each bounded by a deadline (monotonic seconds)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()

    def wait_for_data(self, deadline: float) -> None:
        if not self._buffer:
            self._fill(deadline)

    def read_line(self, deadline: float, limit: int) -> bytes:
        while True:
            end = self._buffer.find(b"\n")
            if 0 <= end < limit:
                line = bytes(self._buffer[: end + 1])
                del self._buffer[: end + 1]
                return line
            if end >= limit or len(self._buffer) >= limit:
                raise BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request line and headers too large")
            self._fill(deadline)

    def discard(self, size: int, deadline: float) -> None:
        while size > 0:
            if not self._buffer:
                self._fill(deadline)
            taken = min(size, len(self._buffer))
            del self._buffer[:taken]
            size -= taken

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Closed("deadline passed")
        self._sock.settimeout(remaining)
        try:
            data = self._sock.recv(_RECV_CHUNK)
        except (OSError, ssl.SSLError) as exc:  # a timeout is an OSError too
            raise _Closed(str(exc)) from None
        if not data:
            raise _Closed("closed by the client")
        self._buffer += data


@dataclass
class _Connection:
    sock: socket.socket
    client: str
    # Not answering a whole request (waiting for one, or still reading it): may be closed to make room.
    idle: bool = True
    since: float = field(default_factory=time.monotonic)
    closing: bool = False  # closed to make room; its thread has yet to finish


DEFAULT_LIMITS = ServerLimits()


class HTTPServer:
    """Serves `handler` on `address` with `limits`; `tls()` gives each new connection its TLS settings."""

    def __init__(self, address: tuple[str, int], handler: Handler, limits: ServerLimits = DEFAULT_LIMITS,
                 tls: Callable[[], TLSSettings | None] = lambda: None, server_name: str = "") -> None:
        self._handler = handler
        self._limits = limits
        self._tls = tls
        self._server_header = server_name
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        # create_server sets SO_REUSEADDR: a restarted exporter binds its port again at once.
        self._listener = socket.create_server(address, family=family, backlog=limits.backlog)
        self._listener.settimeout(_STOP_CHECK_SECONDS)
        self._lock = threading.Condition()
        self._connections: dict[int, _Connection] = {}
        self._next_limit_warning = 0.0  # the limit is logged at most once a minute
        self._closed_for_room = 0
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
        with self._lock:
            for connection in self._connections.values():
                _shutdown(connection.sock)

    # -- accepting ---------------------------------------------------------------------

    def _accept_loop(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            self._accept_until_stopped(selector)

    def _accept_until_stopped(self, selector: selectors.BaseSelector) -> None:
        backoff = 0.0  # > 0 while accept() is out of descriptors
        while not self._stopping.is_set():
            # Room is made only for a connection that is waiting, never ahead of one.
            if not selector.select(_STOP_CHECK_SECONDS) or not self._make_room():
                continue
            try:
                sock, address = self._listener.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if exc.errno in _OUT_OF_DESCRIPTORS:
                    # The connection stays in the backlog; it is taken once descriptors free up.
                    if not backoff:
                        log.warning("cannot accept connections: out of file descriptors; pausing accept",
                                    extra={"error": exc.strerror or str(exc)})
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

    def _make_room(self) -> bool:
        """True when a connection may be accepted; at the cap, closes the oldest idle one or waits."""
        cap = self._limits.max_connections
        victim = None
        with self._lock:
            if len(self._connections) < cap:
                return True
            # One at a time: the one being closed frees its slot when its thread ends.
            if not any(c.closing for c in self._connections.values()):
                idle = [c for c in self._connections.values() if c.idle]
                if idle:
                    victim = min(idle, key=lambda c: c.since)
                    victim.closing = True
                    self._closed_for_room += 1
            now = time.monotonic()
            warn = now >= self._next_limit_warning
            if warn:
                self._next_limit_warning = now + _LIMIT_WARNING_INTERVAL
                closed, self._closed_for_room = self._closed_for_room, 0
        # Outside the lock: a slow log sink (a full stderr pipe) must not stop every connection.
        if victim is not None:
            _shutdown(victim.sock)
        if warn:
            log.warning("connection limit reached: closing the oldest idle connections to make room",
                        extra={"max_connections": cap, "closed_since_last_warning": closed})
        with self._lock:
            self._lock.wait_for(lambda: len(self._connections) < cap, _STOP_CHECK_SECONDS)
        return False

    def _start_connection(self, sock: socket.socket, client: str) -> None:
        connection = _Connection(sock, client)
        with self._lock:
            self._connections[id(connection)] = connection
        try:
            threading.Thread(target=self._serve, args=(connection,), name="http-connection", daemon=True).start()
        except RuntimeError:  # no thread to be had: the client is told so by a closed connection
            log.warning("cannot start a thread for a connection", extra={"client": client})
            self._forget(connection)
            sock.close()

    def _forget(self, connection: _Connection) -> None:
        with self._lock:
            self._connections.pop(id(connection), None)
            self._lock.notify()

    # -- one connection ----------------------------------------------------------------

    def _serve(self, connection: _Connection) -> None:
        sock = connection.sock
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # A new connection has read_header_timeout for its handshake and first request, in all.
            deadline = time.monotonic() + self._limits.read_header_timeout
            tls = self._tls()
            if tls is not None:
                sock = self._handshake(connection, tls, deadline)
            reader = _Reader(sock)
            first_byte_by = deadline
            while True:
                reader.wait_for_data(first_byte_by)
                # From a request's first byte, read_header_timeout for the rest of it.
                deadline = min(deadline, time.monotonic() + self._limits.read_header_timeout)
                response, keep_alive = self._answer(reader, connection, deadline)
                self._send(sock, response, keep_alive)
                if not keep_alive:
                    break
                self._set_idle(connection, True)
                first_byte_by = time.monotonic() + self._limits.idle_timeout
                deadline = float("inf")
        except _Closed as exc:
            log.debug("connection closed", extra={"client": connection.client, "reason": str(exc)})
        except (OSError, ssl.SSLError) as exc:
            log.debug("connection failed", extra={"client": connection.client, "error": str(exc)})
        finally:
            self._forget(connection)
            connection.sock.close()

    def _handshake(self, connection: _Connection, tls: TLSSettings, deadline: float) -> ssl.SSLSocket:
        # In the connection's own thread, within the header deadline: a client that never
        # finishes its handshake holds one connection slot for that long, and nothing else.
        remaining = deadline - time.monotonic()
        connection.sock.settimeout(max(remaining, 0.001))
        try:
            tls_socket = tls.context.wrap_socket(connection.sock, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            raise _Closed(f"tls handshake failed: {exc}") from None
        connection.sock = tls_socket
        if tls.allowed_sans and not _peer_sans_allowed(tls_socket, tls.allowed_sans):
            log.warning("client certificate refused: none of client_allowed_sans", extra={"client": connection.client})
            tls_socket.close()
            raise _Closed("client certificate not in client_allowed_sans")
        return tls_socket

    def _set_idle(self, connection: _Connection, idle: bool) -> None:
        with self._lock:
            connection.idle = idle
            connection.since = time.monotonic()

    def _answer(self, reader: _Reader, connection: _Connection, deadline: float) -> tuple[Response, bool]:
        """Reads one request and runs the handler: (response, whether to keep the connection)."""
        client = connection.client
        try:
            request, body_left_unread = self._read_request(reader, client, deadline)
        except BadRequest as exc:
            return Response(exc.status, (f"{exc.status.phrase}: {exc}\n".encode(),)), False
        self._set_idle(connection, False)
        keep_alive = (request.version == "HTTP/1.1" and not body_left_unread
                      and "close" not in _tokens(request.headers.get("connection", "")))
        try:
            response = self._handler(request)
        except Exception:  # a bug in a handler: one 500, not a dead connection thread
            log.exception("handling a request failed", extra={"client": client})
            return Response(HTTPStatus.INTERNAL_SERVER_ERROR, (b"Internal error; see the exporter's log.\n",)), False
        if request.method == "HEAD":
            response = Response(response.status, (), (*response.headers, ("Content-Length", str(response.length))),
                                response.close)
        return response, keep_alive and not response.close

    def _read_request(self, reader: _Reader, client: str, deadline: float) -> tuple[Request, bool]:
        limits = self._limits
        budget = limits.max_header_bytes
        line = reader.read_line(deadline, budget)
        for _ in range(4):  # RFC 9112 2.2: empty lines before a request line are ignored
            if line not in (b"\r\n", b"\n"):
                break
            line = reader.read_line(deadline, budget)
        budget -= len(line)
        line = _strip_line_end(line)
        if _CONTROL.search(line):
            raise BadRequest(HTTPStatus.BAD_REQUEST, "control character in the request line")
        parts = line.split(b" ")
        if len(parts) != 3 or not _is_token(parts[0]) or not parts[1] or not parts[2].startswith(b"HTTP/"):
            raise BadRequest(HTTPStatus.BAD_REQUEST, "not an HTTP/1.x request line")  # garbage and HTTP/0.9
        method, target, version = (part.decode("ascii", "replace") for part in parts)
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            raise BadRequest(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, "only HTTP/1.0 and HTTP/1.1")
        headers: dict[str, str] = {}
        count = 0
        while True:
            line = reader.read_line(deadline, max(budget, 1))
            budget -= len(line)
            if budget <= 0:
                raise BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request line and headers too large")
            line = _strip_line_end(line)
            if not line:
                break
            count += 1
            if count > limits.max_headers:
                raise BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "too many header lines")
            name, colon, value = line.partition(b":")
            # No folded lines, no space before the colon, no bare CR: all request-smuggling tools.
            if not colon or not _is_token(name) or _CONTROL.search(value):
                raise BadRequest(HTTPStatus.BAD_REQUEST, "malformed header line")
            key = name.decode("ascii").lower()
            text = value.strip(b" \t").decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        request = Request(method, target, version, headers, client)
        return request, self._skip_body(reader, headers, deadline)

    def _skip_body(self, reader: _Reader, headers: Mapping[str, str], deadline: float) -> bool:
        """Reads and drops a request body; True when it could not be, and the connection must close."""
        length_text = headers.get("content-length")
        if "transfer-encoding" in headers:
            if length_text is not None:
                raise BadRequest(HTTPStatus.BAD_REQUEST, "both Content-Length and Transfer-Encoding")
            return True  # not read: never parsed as the next request, because the connection closes
        if length_text is None:
            return False
        # ASCII digits only: str.isdigit() also takes "¹", which int() then refuses.
        if not (length_text.isascii() and length_text.isdigit()):
            raise BadRequest(HTTPStatus.BAD_REQUEST, "bad Content-Length")
        limit = self._limits.max_discarded_body
        # Compared by its digits first: int() refuses more than 4300 of them.
        if len(length_text.lstrip("0")) > len(str(limit)) or int(length_text) > limit:
            return True
        reader.discard(int(length_text), deadline)
        return False

    def _send(self, sock: socket.socket, response: Response, keep_alive: bool) -> None:
        status = HTTPStatus(response.status)
        lines = [f"HTTP/1.1 {status.value} {status.phrase}", f"Date: {formatdate(usegmt=True)}"]
        if self._server_header:
            lines.append(f"Server: {self._server_header}")
        lines += [f"{name}: {value}" for name, value in response.headers]
        if not any(name == "Content-Length" for name, _ in response.headers):
            lines.append(f"Content-Length: {response.length}")
        lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        deadline = time.monotonic() + self._limits.write_timeout
        if response.length < _SEND_CHUNK:  # one write: with TCP_NODELAY, several small ones would be several packets
            _send_all(sock, b"".join((head, *response.body)), deadline)
        else:
            for part in (head, *response.body):
                _send_all(sock, part, deadline)


def _tokens(header: str) -> set[str]:
    return {part.strip().lower() for part in header.split(",")}


def _send_all(sock: socket.socket, data: bytes, deadline: float) -> None:
    view = memoryview(data)
    while view:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Closed("write deadline passed")
        sock.settimeout(remaining)
        sent = sock.send(view[:_SEND_CHUNK])
        view = view[sent:]


def _shutdown(sock: socket.socket) -> None:
    """Wakes the connection's thread out of a blocking read; it then closes the socket itself."""
    try:
        # The plain socket's shutdown, also for a TLS socket: SSLSocket.shutdown would drop its
        # SSL object under the feet of the thread reading from it.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass
