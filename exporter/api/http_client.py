"""The connection's own httpx client: whom it trusts, every request under the total
deadline (proxies too), no redirects followed, no cookies kept."""

from __future__ import annotations

import http.cookiejar
import logging
import ssl

import httpx

from .. import __version__
from ..config import ConnectionConfig
from .body import ACCEPT_ENCODING
from .deadline import deadline_mounts, deadline_transport

log = logging.getLogger("exporter.api")


def http_client(connection: ConnectionConfig, request_timeout: float) -> httpx.Client:
    """The connection's own httpx client: every request under the total deadline, no redirects, no cookies."""
    if connection.tls_insecure_skip_verify:
        log.warning(
            "TLS verification is off: anyone on the path to the API can read the credentials",
            extra={"connection": connection.name},
        )
    verification = tls_verification(connection)
    return httpx.Client(
        base_url=connection.base_url,
        timeout=request_timeout,
        # Proxies come from HTTPS_PROXY / NO_PROXY (httpx ignores them beside our transport).
        transport=deadline_transport(verification),
        mounts=deadline_mounts(verification),
        follow_redirects=False,
        # The API authenticates by token: cookies a reply sets are neither kept nor sent
        # back, or each reply could add ~100 kB to the client and to every later request.
        cookies=http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[])),
        headers={
            "User-Agent": f"ibanera-exporter/{__version__}",
            "Accept": "application/json",
            "Accept-Encoding": ACCEPT_ENCODING,
        },
    )


def tls_verification(connection: ConnectionConfig) -> ssl.SSLContext | bool:
    if connection.tls_insecure_skip_verify:
        return False
    if connection.ca_file is None:
        return True
    # The bundle as the config read it (bounded, never blocking), not the file as it is now.
    return ssl.create_default_context(cadata=connection.ca_file.pem)
