"""HTTP: `/` landing page, the telemetry path, `/-/healthy`, `/-/ready` and `/-/reload`."""

from __future__ import annotations

import html
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import urlsplit

from prometheus_client.exposition import choose_encoder

from .config import ConfigError
from .http11 import KNOWN_METHODS, Request, Response, ServerLimits
from .httpserver import DEFAULT_LIMITS, HTTPServer, TLSSettings
from .metrics import Exposition
from .poller import ConnectionStatus
from .webconfig import BasicAuth, WebConfig, WebConfigWatcher

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
    # POST /-/reload: reads config.yaml again and applies it, or raises ConfigError.
    reload: Callable[[], None] | None = None


NO_WEB_CONFIG = WebConfig()
TEXT = "text/plain; charset=utf-8"


def gzip_accepted(header: str) -> bool:
    """Whether Accept-Encoding allows gzip (RFC 9110 12.5.3): `gzip;q=0` and `identity` do not."""
    qualities: dict[str, float] = {}
    for item in header.split(","):
        coding, *params = (part.strip() for part in item.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0  # an unreadable weight is not a yes
        if coding:
            qualities[coding.lower()] = quality
    gzip = qualities.get("gzip", qualities.get("x-gzip", qualities.get("*", 0.0)))
    return gzip > 0


class _App:
    """Request -> Response: authentication, then the route."""

    def __init__(self, context: WebContext, web_config: WebConfigWatcher | None) -> None:
        self._context = context
        self._web_config = web_config
        self._basic_auth = BasicAuth()

    def __call__(self, request: Request) -> Response:
        config = self._web_config.current().config if self._web_config else NO_WEB_CONFIG
        response = self._route(request, config)
        return Response(
            response.status, response.body, response.headers + tuple(config.headers.items()), response.close
        )

    def _route(self, request: Request, config: WebConfig) -> Response:
        context = self._context
        path = urlsplit(request.target).path
        users = config.basic_auth_users
        # /-/healthy stays open for liveness probes, which carry no credentials.
        if users and path != "/-/healthy" and not self._basic_auth.check(users, request.headers.get("authorization")):
            return _text(
                HTTPStatus.UNAUTHORIZED,
                "Unauthorized.\n",
                ("WWW-Authenticate", 'Basic realm="ibanera-exporter", charset="UTF-8"'),
            )
        if path == "/-/reload":
            if request.method != "POST":
                return _text(HTTPStatus.METHOD_NOT_ALLOWED, "Only POST reloads the configuration.\n", ("Allow", "POST"))
            return self._reload()
        if request.method not in ("GET", "HEAD"):
            code = HTTPStatus.METHOD_NOT_ALLOWED if request.method in KNOWN_METHODS else HTTPStatus.NOT_IMPLEMENTED
            return _text(code, "Only GET and HEAD here.\n", ("Allow", "GET, HEAD"))
        if path == context.telemetry_path:
            return self._metrics(request)
        if path == "/":
            return Response(
                HTTPStatus.OK, (_landing_page(context).encode(),), (("Content-Type", "text/html; charset=utf-8"),)
            )
        if path == "/-/healthy":
            return _text(HTTPStatus.OK, "Healthy.\n")
        if path == "/-/ready":
            waiting = [s.name for s in context.statuses() if s.accounts.snapshot is None]
            if waiting:
                return _text(HTTPStatus.SERVICE_UNAVAILABLE, f"Not ready: no good poll yet for {', '.join(waiting)}.\n")
            return _text(HTTPStatus.OK, "Ready.\n")
        return _text(HTTPStatus.NOT_FOUND, "Not found. See / for what this exporter serves.\n")

    def _reload(self) -> Response:
        if self._context.reload is None:
            return _text(HTTPStatus.NOT_FOUND, "Not found. See / for what this exporter serves.\n")
        try:
            self._context.reload()
        except ConfigError as exc:  # its message names the key and never holds a secret
            return _text(HTTPStatus.INTERNAL_SERVER_ERROR, f"failed to reload config: {exc}\n")
        return _text(HTTPStatus.OK, "Reloaded.\n")

    def _metrics(self, request: Request) -> Response:
        _, content_type = choose_encoder(request.headers.get("accept", ""))
        gzipped = gzip_accepted(request.headers.get("accept-encoding", ""))
        try:
            body = self._context.exposition.render_parts(
                content_type.startswith("application/openmetrics-text"), gzipped
            )
        except Exception:  # a bug in a collector: answer 500 rather than half an exposition
            log.exception("building the metrics failed")
            return _text(HTTPStatus.INTERNAL_SERVER_ERROR, "Error building the metrics; see the exporter's log.\n")
        headers = [("Content-Type", content_type), ("Vary", "Accept, Accept-Encoding")]
        if gzipped:
            headers.append(("Content-Encoding", "gzip"))
        return Response(HTTPStatus.OK, body, tuple(headers))


def _text(status: HTTPStatus, text: str, *headers: tuple[str, str]) -> Response:
    return Response(status, (text.encode(),), (("Content-Type", TEXT), *headers))


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
                for cell in (
                    status.name,
                    "up" if status.accounts.up else "down",
                    last_success,
                    accounts,
                    cards,
                    status.accounts.last_error or "",
                )
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
    def __init__(
        self,
        address: tuple[str, int],
        context: WebContext,
        web_config: WebConfigWatcher | None = None,
        limits: ServerLimits = DEFAULT_LIMITS,
    ) -> None:
        self._web_config = web_config
        self._server = HTTPServer(address, _App(context, web_config), limits, self._tls, "ibanera-exporter")

    def _tls(self) -> TLSSettings | None:
        # Each new connection gets the TLS settings of the moment: that is how rotated
        # certificates take effect without a restart.
        if self._web_config is None:
            return None
        current = self._web_config.current()
        if current.ssl_context is None or current.config.tls is None:
            return None
        return TLSSettings(current.ssl_context, current.config.tls.client_allowed_sans)

    @property
    def port(self) -> int:
        return self._server.port

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop()
