"""--web.config.file, in the Prometheus exporter-toolkit format: TLS, mTLS, basic auth, headers.

Same keys, same meaning as the Go exporters' file, so one file serves both. Where Python's
ssl module cannot do what a key asks (Go cipher-suite names, asking for a client
certificate without verifying it), the key is refused with a clear error, never ignored.
The file and the certificates are read again when one of them changes, so certificates
rotate without a restart; a change that does not load leaves the last good config serving.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..files import MAX_CA_FILE_BYTES, read_pem_bundle, read_small_file, read_small_text
from ..strict_yaml import UnreadableYaml, load_yaml

CLIENT_AUTH_TYPES = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
UNSUPPORTED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert")
# Far more than any real web config (a thousand users' bcrypt hashes are about 70 kB).
MAX_WEB_CONFIG_BYTES = 1024 * 1024
# A whole bcrypt hash: a hash cut short or with a cost that is not a number would make
# every check of an unknown user fail with an error instead of a 401. Cost 4 to 17 (what
# htpasswd -B -C accepts): each step doubles the CPU of a check, and at 31 one would take hours.
_BCRYPT_HASH = re.compile(r"\$2[aby]\$(0[4-9]|1[0-7])\$[./A-Za-z0-9]{53}")
TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
# The exporter-toolkit's allow-list, with the values it accepts where it restricts them.
ALLOWED_HEADERS = {
    "Content-Security-Policy": None,
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-Content-Type-Options": ("nosniff",),
    "X-XSS-Protection": None,
    "Strict-Transport-Security": None,
}
_TLS_KEYS = {
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "client_allowed_sans",
    "min_version",
    "max_version",
}
_UNSUPPORTED_TLS_KEYS = {
    "cert": "put the certificate in a file and use cert_file",
    "key": "put the key in a file and use key_file",
    "client_ca": "put the CA in a file and use client_ca_file",
    "cipher_suites": "Go cipher-suite names have no OpenSSL equivalent here; the defaults of min_version apply",
    "prefer_server_cipher_suites": "see cipher_suites",
    "curve_preferences": "Go curve names have no OpenSSL equivalent here",
}


class WebConfigError(Exception):
    """The web config cannot be used. The message names the key and the file, never a secret."""


@dataclass(frozen=True)
class TLSConfig:
    cert_file: Path
    key_file: Path
    client_auth_type: str = "NoClientCert"
    client_ca_file: Path | None = None
    client_allowed_sans: tuple[str, ...] = ()
    min_version: str = "TLS12"
    max_version: str = "TLS13"


@dataclass(frozen=True)
class WebConfig:
    tls: TLSConfig | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    basic_auth_users: Mapping[str, bytes] = field(default_factory=dict)  # user -> bcrypt hash


def _mapping(value: object, key: str, source: str) -> dict[Any, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise WebConfigError(f"{source}: {key}: expected a mapping")
    return value


def parse_web_config(data: object, source: str, base_dir: Path) -> WebConfig:
    data = _mapping(data, "top level", source)
    for key in data:
        if key == "rate_limit":
            raise WebConfigError(f"{source}: rate_limit: not supported by ibanera-exporter")
        if key not in ("tls_server_config", "http_server_config", "basic_auth_users"):
            raise WebConfigError(f"{source}: {key}: unknown key")
    return WebConfig(
        tls=_tls(data.get("tls_server_config"), source, base_dir),
        headers=_headers(data.get("http_server_config"), source),
        basic_auth_users=_users(data.get("basic_auth_users"), source),
    )


def _tls(value: object, source: str, base_dir: Path) -> TLSConfig | None:
    data = _mapping(value, "tls_server_config", source)
    if not data:
        return None
    for key in data:
        if key in _UNSUPPORTED_TLS_KEYS:
            raise WebConfigError(f"{source}: tls_server_config.{key}: not supported: {_UNSUPPORTED_TLS_KEYS[key]}")
        if key not in _TLS_KEYS:
            raise WebConfigError(f"{source}: tls_server_config.{key}: unknown key")

    def path(key: str) -> Path | None:
        text = data.get(key)
        if text is None:
            return None
        if not isinstance(text, str) or not text:
            raise WebConfigError(f"{source}: tls_server_config.{key}: expected a file name")
        return base_dir / text  # relative paths are relative to the web config file

    cert_file, key_file = path("cert_file"), path("key_file")
    if cert_file is None or key_file is None:
        raise WebConfigError(f"{source}: tls_server_config: cert_file and key_file are both required")
    auth_type = data.get("client_auth_type", "NoClientCert")
    if auth_type in UNSUPPORTED_CLIENT_AUTH:
        raise WebConfigError(
            f"{source}: tls_server_config.client_auth_type: {auth_type} accepts unverified client "
            "certificates, which this exporter does not do; use RequireAndVerifyClientCert"
        )
    if not isinstance(auth_type, str) or auth_type not in CLIENT_AUTH_TYPES:
        raise WebConfigError(
            f"{source}: tls_server_config.client_auth_type: expected one of "
            f"{', '.join(CLIENT_AUTH_TYPES)}, got {_shown(auth_type)}"
        )
    client_ca = path("client_ca_file")
    if auth_type != "NoClientCert" and client_ca is None:
        raise WebConfigError(f"{source}: tls_server_config.client_ca_file: required with client_auth_type {auth_type}")
    sans = data.get("client_allowed_sans") or []
    if not isinstance(sans, list) or not all(isinstance(s, str) for s in sans):
        raise WebConfigError(f"{source}: tls_server_config.client_allowed_sans: expected a list of strings")
    if sans and auth_type != "RequireAndVerifyClientCert":
        raise WebConfigError(
            f"{source}: tls_server_config.client_allowed_sans: needs client_auth_type RequireAndVerifyClientCert"
        )
    versions = []
    for key, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        version = data.get(key, default)
        if not isinstance(version, str) or version not in TLS_VERSIONS:
            raise WebConfigError(
                f"{source}: tls_server_config.{key}: expected one of {', '.join(TLS_VERSIONS)}, got {_shown(version)}"
            )
        versions.append(version)
    if TLS_VERSIONS[versions[0]] > TLS_VERSIONS[versions[1]]:
        raise WebConfigError(f"{source}: tls_server_config.max_version: is below min_version")
    return TLSConfig(cert_file, key_file, auth_type, client_ca, tuple(sans), *versions)


def _shown(value: object) -> str:
    """A wrong setting for an error message: a string as it is, anything else by its type only
    (`in` a dict raised TypeError for a list, and the repr of YAML aliases can be huge)."""
    return repr(value) if isinstance(value, (str, int, float)) else f"a {type(value).__name__}"


def _headers(value: object, source: str) -> dict[str, str]:
    data = _mapping(value, "http_server_config", source)
    for key in data:
        if key not in ("headers", "http2"):
            raise WebConfigError(f"{source}: http_server_config.{key}: unknown key")
    http2 = data.get("http2", False)
    if not isinstance(http2, bool):
        raise WebConfigError(f"{source}: http_server_config.http2: expected true or false")
    if http2:
        raise WebConfigError(
            f"{source}: http_server_config.http2: not supported: this exporter serves HTTP/1.1 only "
            "(Prometheus scrapes over HTTP/1.1); set it to false or remove it"
        )
    headers = _mapping(data.get("headers"), "http_server_config.headers", source)
    result = {}
    for name, text in headers.items():
        key = f"http_server_config.headers.{name}"
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
            raise WebConfigError(f"{source}: {key}: expected one of {', '.join(allowed)}, got {text!r}")
        if text:  # blank means unset, as in the toolkit
            result[name] = text
    return result


def _users(value: object, source: str) -> dict[str, bytes]:
    users = _mapping(value, "basic_auth_users", source)
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


def build_ssl_context(tls: TLSConfig, source: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = TLS_VERSIONS[tls.min_version]
    context.maximum_version = TLS_VERSIONS[tls.max_version]

    def no_passphrase() -> bytes:
        # Without it, ssl asks /dev/tty and waits: a start in a terminal, or a reload under
        # the watcher's lock with every request behind it, would hang there.
        raise WebConfigError(
            f"{source}: tls_server_config.key_file: {tls.key_file} is encrypted; "
            "a passphrase cannot be given: decrypt it (openssl pkey -in KEY -out KEY.plain)"
        )

    try:
        # Looked at first without blocking: ssl would wait forever on a FIFO (holding every
        # request behind the watcher's lock) and read a device until memory runs out.
        for file in (tls.cert_file, tls.key_file):
            read_small_file(Path(file), MAX_CA_FILE_BYTES)
        context.load_cert_chain(tls.cert_file, tls.key_file, password=no_passphrase)
    except (OSError, ssl.SSLError) as exc:
        raise WebConfigError(
            f"{source}: tls_server_config: cannot load {tls.cert_file} and {tls.key_file}: "
            f"{getattr(exc, 'strerror', None) or exc}"
        ) from None
    context.verify_mode = CLIENT_AUTH_TYPES[tls.client_auth_type]
    if tls.client_ca_file is not None:
        try:
            context.load_verify_locations(cadata=read_pem_bundle(Path(tls.client_ca_file)))
        except (OSError, ssl.SSLError) as exc:
            raise WebConfigError(
                f"{source}: tls_server_config.client_ca_file: cannot load {tls.client_ca_file}: "
                f"{getattr(exc, 'strerror', None) or exc}"
            ) from None
    return context


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
