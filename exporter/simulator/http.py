"""The simulator on the wire: JSON bytes, the common envelope, and a small HTTP server.

The server knows nothing of the API: it turns each request into a `SimRequest`, asks the
application for an `Answer`, and writes it. Amounts (Decimal) are written as exact JSON
numbers, as the real API sends them; `RawJson` is written as it is.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .state import RawJson

Envelope = dict[str, object]
Reply = tuple[int, Envelope]  # HTTP status and JSON payload


def json_bytes(value: object) -> bytes:
    """JSON with Decimal written as an exact number, as the real API sends amounts."""
    if isinstance(value, RawJson):
        return value.encode()
    if isinstance(value, Decimal):
        return format(value, "f").encode()
    if isinstance(value, dict):
        return b"{" + b",".join(json.dumps(k).encode() + b":" + json_bytes(v) for k, v in value.items()) + b"}"
    if isinstance(value, (list, tuple)):
        return b"[" + b",".join(json_bytes(v) for v in value) + b"]"
    return json.dumps(value).encode()


def envelope(
    details: object, status: str = "1", errors: list[dict[str, str]] | None = None, **extra: object
) -> Envelope:
    return {"id": 0, "details": details, "status": status, "errors": errors or [], **extra}


def error(code: str, field: str = "") -> Envelope:
    return envelope(None, "0", [{"fieldName": field, "messageCode": code}])


@dataclass(frozen=True)
class SimRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Mapping[str, str]  # names in lower case
    body: bytes


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str = "application/json; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()
    reset: bool = False  # close the connection instead of answering


def json_answer(status: int, payload: Envelope, headers: tuple[tuple[str, str], ...] = ()) -> Answer:
    return Answer(status, json_bytes(payload), headers=headers)


Application = Callable[[SimRequest], Answer]


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # injected resets and clients that hang up are part of the job, not news


class SimServer:
    """`application` served on (host, port); its Date headers follow `clock`, which a test may skew."""

    def __init__(
        self,
        application: Application,
        clock: Callable[[], float],
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self._server = _QuietServer((host, port), _handler_class(application, clock))
        self._scheme = "http"
        if ssl_context is not None:
            self._server.socket = ssl_context.wrap_socket(self._server.socket, server_side=True)
            self._scheme = "https"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="simulator", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{self._scheme}://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler_class(application: Application, clock: Callable[[], float]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm
        # and delayed ACKs add ~40 ms to every keep-alive request.
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            self._route("POST")

        def do_GET(self) -> None:
            self._route("GET")

        def _route(self, method: str) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {name.lower(): value for name, value in self.headers.items()}
            answer = application(SimRequest(method, url.path, parse_qs(url.query), headers, body))
            if answer.reset:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            self.send_header("Content-Length", str(len(answer.body)))
            for name, value in answer.headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(answer.body)

        def date_time_string(self, timestamp: float | None = None) -> str:
            return super().date_time_string(clock() if timestamp is None else timestamp)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the exporter's logs are what a user reads; the stand-in stays quiet

    return Handler
