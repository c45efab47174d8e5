"""tls_server_config: the settings checked, and the SSL context built from them.

Where Python's ssl module cannot do what a key asks (Go cipher-suite names, asking for a
client certificate without verifying it), the key is refused with a clear error, never ignored.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from ..files import MAX_CA_FILE_BYTES, read_pem_bundle, read_small_file
from ..strict_yaml import shown, shown_key
from .model import TLSConfig, WebConfigError, mapping

CLIENT_AUTH_TYPES = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
UNSUPPORTED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert")
TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
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


def read_tls(value: object, source: str, base_dir: Path) -> TLSConfig | None:
    data = mapping(value, "tls_server_config", source)
    if not data:
        return None
    for key in data:
        if key in _UNSUPPORTED_TLS_KEYS:
            raise WebConfigError(f"{source}: tls_server_config.{key}: not supported: {_UNSUPPORTED_TLS_KEYS[key]}")
        if key not in _TLS_KEYS:
            raise WebConfigError(f"{source}: tls_server_config.{shown_key(key)}: unknown key")

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
            f"{', '.join(CLIENT_AUTH_TYPES)}, got {shown(auth_type)}"
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
                f"{source}: tls_server_config.{key}: expected one of {', '.join(TLS_VERSIONS)}, got {shown(version)}"
            )
        versions.append(version)
    if TLS_VERSIONS[versions[0]] > TLS_VERSIONS[versions[1]]:
        raise WebConfigError(f"{source}: tls_server_config.max_version: is below min_version")
    return TLSConfig(cert_file, key_file, auth_type, client_ca, tuple(sans), *versions)


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
