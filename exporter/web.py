"""HTTP: `/` landing page, the telemetry path, `/-/healthy` and `/-/ready`."""

from __future__ import annotations

import html
import logging
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from prometheus_client.exposition import choose_encoder

from .metrics import Exposition
from .poller import ConnectionStatus
from .webconfig import BasicAuth, WebConfig, WebConfigWatcher, peer_sans_allowed

log = logging.getLogger("exporter.web")


class ListenAddressError(ValueError):
    pass


def parse_listen_address(text: str) -> tuple[str, int]:
    """'HOST:PORT', ':PORT' (all interfaces) or '[::1]:PORT', as Go exporters take it."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ListenAddressError(f"--web.listen-address: expected HOST:PORT or :PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "0.0.0.0", int(port_text)


@dataclass(frozen=True)
class WebContext:
    exposition: Exposition
    statuses: Callable[[], Sequence[ConnectionStatus]]
    telemetry_path: str
    version: str


HANDSHAKE_TIMEOUT_SECONDS = 10  # a client that never finishes its TLS handshake holds one thread, not forever
NO_WEB_CONFIG = WebConfig()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # A restarted exporter must be able to bind its port again straight away.
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], context: WebContext, web_config: WebConfigWatcher | None) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.context = context
        self.web_config = web_config
        self.basic_auth = BasicAuth()
        super().__init__(address, _Handler)

    def current_web_config(self) -> tuple[WebConfig, ssl.SSLContext | None]:
        return self.web_config.current() if self.web_config else (NO_WEB_CONFIG, None)

    def finish_request(self, request: socket.socket, client_address: tuple) -> None:
        # The TLS handshake runs here, in the connection's own thread, so that a slow or
        # hostile client cannot hold up accept(); each connection gets the context of the
        # moment, which is how rotated certificates take effect.
        config, tls_context = self.current_web_config()
        if tls_context is None:
            return super().finish_request(request, client_address)
        request.settimeout(HANDSHAKE_TIMEOUT_SECONDS)
        try:
            connection = tls_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            log.debug("tls handshake failed", extra={"client": client_address[0], "error": str(exc)})
            return None
        try:
            if config.tls.client_allowed_sans and not peer_sans_allowed(connection, config.tls.client_allowed_sans):
                log.warning("client certificate refused: none of client_allowed_sans", extra={"client": client_address[0]})
                return None
            connection.settimeout(None)
            return super().finish_request(connection, client_address)
        finally:
            connection.close()

    def handle_error(self, request: object, client_address: tuple) -> None:
        # socketserver would print a traceback to stderr; a scraper that hangs up early is
        # routine, anything else is worth one log line.
        error = sys.exc_info()[1]
        level = logging.DEBUG if isinstance(error, ConnectionError) else logging.WARNING
        log.log(level, "http connection failed", extra={"client": client_address[0], "error": repr(error)})


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    _web_config = NO_WEB_CONFIG
    # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm
    # and delayed ACKs add ~40 ms to every keep-alive request.
    disable_nagle_algorithm = True
    server_version = "ibanera-exporter"

    # An idle keep-alive connection gives its thread back after this long.
    timeout = 300

    def do_GET(self) -> None:
        context = self.server.context
        path = urlsplit(self.path).path
        self._web_config, _ = self.server.current_web_config()
        users = self._web_config.basic_auth_users
        # /-/healthy stays open for liveness probes, which carry no credentials.
        if users and path != "/-/healthy" and not self.server.basic_auth.check(users, self.headers.get("Authorization")):
            self._send(401, "text/plain; charset=utf-8", b"Unauthorized.\n",
                       extra_headers={"WWW-Authenticate": 'Basic realm="ibanera-exporter", charset="UTF-8"'})
            return
        if path == context.telemetry_path:
            self._metrics(context)
        elif path == "/":
            self._send(200, "text/html; charset=utf-8", _landing_page(context).encode())
        elif path == "/-/healthy":
            self._send(200, "text/plain; charset=utf-8", b"Healthy.\n")
        elif path == "/-/ready":
            waiting = [s.name for s in context.statuses() if s.accounts.snapshot is None]
            if waiting:
                body = f"Not ready: no good poll yet for {', '.join(waiting)}.\n".encode()
                self._send(503, "text/plain; charset=utf-8", body)
            else:
                self._send(200, "text/plain; charset=utf-8", b"Ready.\n")
        else:
            self._send(404, "text/plain; charset=utf-8", b"Not found. See / for what this exporter serves.\n")

    def do_HEAD(self) -> None:
        self.do_GET()

    def _metrics(self, context: WebContext) -> None:
        _, content_type = choose_encoder(self.headers.get("Accept", ""))
        gzipped = "gzip" in self.headers.get("Accept-Encoding", "")
        try:
            body = context.exposition.render(content_type.startswith("application/openmetrics-text"), gzipped)
        except Exception:  # a bug in a collector: answer 500 rather than half an exposition
            log.exception("building the metrics failed")
            self._send(500, "text/plain; charset=utf-8", b"Error building the metrics; see the exporter's log.\n")
            return
        self._send(200, content_type, body, content_encoding="gzip" if gzipped else None)

    def _send(self, code: int, content_type: str, body: bytes, content_encoding: str | None = None,
              extra_headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if content_encoding:
            self.send_header("Content-Encoding", content_encoding)
        for name, value in {**self._web_config.headers, **(extra_headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        log.debug("http request", extra={"client": self.client_address[0], "request": format % args})


def _landing_page(context: WebContext) -> str:
    now = time.time()
    rows = []
    for status in context.statuses():
        snapshot = status.accounts.snapshot
        if snapshot is None:
            last_success, accounts = "never", "–"
        else:
            age = now - snapshot.completed_at
            stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(snapshot.completed_at))
            last_success, accounts = f"{stamp} ({age:.0f}s ago)", str(len(snapshot.rows))
        if status.cards is None:
            cards = "not polled"
        else:
            count = f", {len(status.cards.snapshot.rows)} cards" if status.cards.snapshot is not None else ""
            cards = ("up" if status.cards.up else "down") + count
            if status.cards.last_error:
                cards += f" (last error: {status.cards.last_error})"
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{html.escape(cell)}</td>"
                for cell in (status.name, "up" if status.accounts.up else "down", last_success, accounts, cards,
                             status.accounts.last_error or "")
            )
            + "</tr>"
        )
    telemetry = html.escape(context.telemetry_path, quote=True)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Ibanera Exporter</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}</style>
</head><body>
<h1>Ibanera Exporter</h1>
<p>Version {html.escape(context.version)}. Balances of Ibanera asset accounts and cards, for Prometheus.</p>
<ul><li><a href="{telemetry}">Metrics</a></li><li><a href="/-/healthy">Health</a></li><li><a href="/-/ready">Readiness</a></li></ul>
<h2>Connections</h2>
<table><tr><th>Connection</th><th>Last poll</th><th>Last good poll</th><th>Accounts</th><th>Cards</th><th>Last error</th></tr>
{"".join(rows)}
</table>
</body></html>
"""


class WebServer:
    def __init__(self, address: tuple[str, int], context: WebContext, web_config: WebConfigWatcher | None = None) -> None:
        self._server = _Server(address, context, web_config)
        # A short poll interval makes shutdown() return promptly on SIGTERM.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,), name="web", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
