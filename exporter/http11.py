"""HTTP/1.1 messages on the wire: a request's line, headers and body framing, a response's head,
writing by a deadline and the staged close.

The rules of RFC 9112 that keep a request from being misread (no folded lines, no space before
a colon, no bare CR, one framing of the body, a body never parsed as the next request) and the
limits on what a request may send. Reads are bounded by a deadline the caller gives; which
connections there are, and how long each may stay, is httpserver's job.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus

# Methods that exist: answered 405 where they do not apply. Anything else is 501.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"})
# Control characters other than HTAB, a bare CR above all: a proxy in front may end a line
# at it where this server would not (RFC 9112 2.2), and so frame the request differently.
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_TOKEN_CHARS = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_RECV_CHUNK = 16 * 1024  # with max_header_bytes, what one connection's read buffer can hold
SEND_CHUNK = 256 * 1024
# After an answer that closes the connection: how long what the client still sends is read and
# dropped (nginx lingers up to 30 s; a connection slot is held meanwhile).
_LINGER_SECONDS = 2.0


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


class BadRequest(Exception):
    """The request cannot be answered normally: answered with `status` and the connection closed."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class Closed(Exception):
    """The client went away, or its time ran out, before a request was complete."""


def _strip_line_end(line: bytes) -> bytes:
    """The line without its one CRLF or LF: any other CR is left for _CONTROL to refuse."""
    return line[:-2] if line.endswith(b"\r\n") else line[:-1]


def _is_token(text: bytes) -> bool:
    return bool(text) and all(byte in _TOKEN_CHARS for byte in text)


class Reader:
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
            raise Closed("deadline passed")
        self._sock.settimeout(remaining)
        try:
            data = self._sock.recv(_RECV_CHUNK)
        except (OSError, ssl.SSLError) as exc:  # a timeout is an OSError too
            raise Closed(str(exc)) from None
        if not data:
            raise Closed("closed by the client")
        self._buffer += data


def read_request(reader: Reader, limits: ServerLimits, client: str, deadline: float) -> tuple[Request, bool]:
    """One request: its line and headers, its body read and dropped; True with it when the body was left unread."""
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
    count = hosts = 0
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
        hosts += key == "host"
        text = value.strip(b" \t").decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    # RFC 9112 3.2: exactly one Host in HTTP/1.1, at most one before; a proxy in front routes by it.
    if hosts > 1 or (hosts == 0 and version == "HTTP/1.1"):
        raise BadRequest(HTTPStatus.BAD_REQUEST, "an HTTP/1.1 request needs exactly one Host header")
    request = Request(method, target, version, headers, client)
    return request, _skip_body(reader, limits, headers, deadline)


def _skip_body(reader: Reader, limits: ServerLimits, headers: Mapping[str, str], deadline: float) -> bool:
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
    limit = limits.max_discarded_body
    # Compared by its digits first: int() refuses more than 4300 of them.
    if len(length_text.lstrip("0")) > len(str(limit)) or int(length_text) > limit:
        return True
    reader.discard(int(length_text), deadline)
    return False


def response_head(response: Response, keep_alive: bool, server_name: str) -> bytes:
    """The status line and headers; Content-Length and Connection added unless the handler set them."""
    status = HTTPStatus(response.status)
    lines = [f"HTTP/1.1 {status.value} {status.phrase}", f"Date: {formatdate(usegmt=True)}"]
    if server_name:
        lines.append(f"Server: {server_name}")
    lines += [f"{name}: {value}" for name, value in response.headers]
    if not any(name == "Content-Length" for name, _ in response.headers):
        lines.append(f"Content-Length: {response.length}")
    lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def keeps_alive(request: Request) -> bool:
    """Whether the client lets the connection stay open after the answer: HTTP/1.1 without Connection: close."""
    return request.version == "HTTP/1.1" and "close" not in _tokens(request.headers.get("connection", ""))


def _tokens(header: str) -> set[str]:
    return {part.strip().lower() for part in header.split(",")}


def linger(sock: socket.socket) -> None:
    """Half-closes, then reads and drops what the client still sends, for _LINGER_SECONDS at most.

    RFC 9112 9.6's staged close: a close with unread bytes (an answer given before the request was read: 400, 431, a
    body not read) sends a reset, and a client still sending would never see the answer.
    """
    try:
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + _LINGER_SECONDS
        while (remaining := deadline - time.monotonic()) > 0:
            sock.settimeout(remaining)
            if not sock.recv(SEND_CHUNK):
                return
    except OSError:  # a reset, the deadline: the answer went out, nothing more to do
        return


def send_all(sock: socket.socket, data: bytes, deadline: float) -> None:
    """All of `data`, in pieces of SEND_CHUNK, or Closed when the deadline passes first."""
    view = memoryview(data)
    while view:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Closed("write deadline passed")
        sock.settimeout(remaining)
        sent = sock.send(view[:SEND_CHUNK])
        view = view[sent:]
