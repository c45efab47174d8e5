"""--web.config.file, in the Prometheus exporter-toolkit format: TLS, mTLS, basic auth, headers.

Same keys, same meaning as the Go exporters' file, so one file serves both (tls.py has the
TLS part). The file and the certificates are read again when one of them changes, so certificates
rotate without a restart; a change that does not load leaves the last good config serving.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from pathlib import Path

from ..files import read_small_text
from ..strict_yaml import UnreadableYaml, load_yaml, shown, shown_key
from .model import WebConfig, WebConfigError, mapping
from .tls import build_ssl_context, read_tls

# Far more than any real web config (a thousand users' bcrypt hashes are about 70 kB).
MAX_WEB_CONFIG_BYTES = 1024 * 1024
# A whole bcrypt hash: a hash cut short or with a cost that is not a number would make
# every check of an unknown user fail with an error instead of a 401. Cost 4 to 17 (what
# htpasswd -B -C accepts): each step doubles the CPU of a check, and at 31 one would take hours.
_BCRYPT_HASH = re.compile(r"\$2[aby]\$(0[4-9]|1[0-7])\$[./A-Za-z0-9]{53}")
# The exporter-toolkit's allow-list, with the values it accepts where it restricts them.
ALLOWED_HEADERS = {
    "Content-Security-Policy": None,
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-Content-Type-Options": ("nosniff",),
    "X-XSS-Protection": None,
    "Strict-Transport-Security": None,
}


def parse_web_config(data: object, source: str, base_dir: Path) -> WebConfig:
    data = mapping(data, "top level", source)
    for key in data:
        if key == "rate_limit":
            raise WebConfigError(f"{source}: rate_limit: not supported by ibanera-exporter")
        if key not in ("tls_server_config", "http_server_config", "basic_auth_users"):
            raise WebConfigError(f"{source}: {shown_key(key)}: unknown key")
    return WebConfig(
        tls=read_tls(data.get("tls_server_config"), source, base_dir),
        headers=_headers(data.get("http_server_config"), source),
        basic_auth_users=_users(data.get("basic_auth_users"), source),
    )


def _headers(value: object, source: str) -> dict[str, str]:
    data = mapping(value, "http_server_config", source)
    for key in data:
        if key not in ("headers", "http2"):
            raise WebConfigError(f"{source}: http_server_config.{shown_key(key)}: unknown key")
    http2 = data.get("http2", False)
    if not isinstance(http2, bool):
        raise WebConfigError(f"{source}: http_server_config.http2: expected true or false")
    if http2:
        raise WebConfigError(
            f"{source}: http_server_config.http2: not supported: this exporter serves HTTP/1.1 only "
            "(Prometheus scrapes over HTTP/1.1); set it to false or remove it"
        )
    headers = mapping(data.get("headers"), "http_server_config.headers", source)
    result = {}
    for name, text in headers.items():
        key = f"http_server_config.headers.{shown_key(name)}"
        if name not in ALLOWED_HEADERS:
            raise WebConfigError(f"{source}: {key}: not an allowed header ({', '.join(ALLOWED_HEADERS)})")
        if not isinstance(text, str):
            raise WebConfigError(f"{source}: {key}: expected a string")
        # Sent as it is in every response: a CR or LF would start a header of its own, and a
        # character outside Latin-1 (a pasted typographic quote) could not be sent at all.
        if not all(" " <= char <= "~" or char == "\t" for char in text):
            raise WebConfigError(f"{source}: {key}: expected printable ASCII, without line breaks")
        allowed = ALLOWED_HEADERS[name]
        if text and allowed and text.lower() not in allowed:
            raise WebConfigError(f"{source}: {key}: expected one of {', '.join(allowed)}, got {shown(text)}")
        if text:  # blank means unset, as in the toolkit
            result[name] = text
    return result


def _users(value: object, source: str) -> dict[str, bytes]:
    users = mapping(value, "basic_auth_users", source)
    result = {}
    for user, hashed in users.items():
        if not isinstance(user, str) or not user or ":" in user:
            raise WebConfigError(f"{source}: basic_auth_users: user names must be non-empty and without ':'")
        if not isinstance(hashed, str) or not _BCRYPT_HASH.fullmatch(hashed):
            # Say what is wrong without echoing it: it may be a password typed in clear.
            raise WebConfigError(
                f"{source}: basic_auth_users.{user}: expected a whole bcrypt hash of cost 4 to 17 ($2y$10$..., see htpasswd -B)"
            )
        result[user] = hashed.encode()
    return result


@dataclass(frozen=True)
class LoadedWebConfig:
    """A web config and the TLS context built from it, swapped as one so that no reader sees a mix."""

    config: WebConfig
    ssl_context: ssl.SSLContext | None


def load_web_config(path: str | Path) -> LoadedWebConfig:
    path = Path(path)
    try:
        data = load_yaml(read_small_text(path, MAX_WEB_CONFIG_BYTES))
    except OSError as exc:
        raise WebConfigError(f"{path}: cannot read the web config file: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise WebConfigError(f"{path}: not valid YAML: not UTF-8") from None
    except UnreadableYaml as exc:
        raise WebConfigError(f"{path}: {exc}") from None
    if data is None:
        # An empty file is what an editor leaves for a moment while it rewrites one: it never
        # means "no TLS, no auth". A file that really wants nothing says {}.
        raise WebConfigError(f"{path}: the web config file is empty (write {{}} for a config without TLS or auth)")
    config = parse_web_config(data, str(path), path.parent)
    return LoadedWebConfig(config, build_ssl_context(config.tls, str(path)) if config.tls else None)
