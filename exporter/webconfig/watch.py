"""The web config as it is now: read again when the file or a certificate changes, and
never weakened by a reload (turning TLS, auth or client checks off takes a restart)."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from .load import LoadedWebConfig, load_web_config
from .model import WebConfig, WebConfigError
from .tls import CLIENT_AUTH_TYPES, TLS_VERSIONS

log = logging.getLogger("exporter.webconfig")

_CLIENT_AUTH_STRENGTH = {name: rank for rank, name in enumerate(CLIENT_AUTH_TYPES)}


def weakening(old: WebConfig, new: WebConfig) -> str | None:
    """What `new` would switch off that `old` has on, or None. Such a change needs a restart."""
    if old.tls is not None and new.tls is None:
        return "it would turn TLS off"
    if old.basic_auth_users and not new.basic_auth_users:
        return "it would turn basic auth off"
    if old.tls is not None and new.tls is not None:
        if _CLIENT_AUTH_STRENGTH[new.tls.client_auth_type] < _CLIENT_AUTH_STRENGTH[old.tls.client_auth_type]:
            return f"it would weaken client_auth_type from {old.tls.client_auth_type} to {new.tls.client_auth_type}"
        if old.tls.client_allowed_sans and not new.tls.client_allowed_sans:
            return "it would drop client_allowed_sans"
        if TLS_VERSIONS[new.tls.min_version] < TLS_VERSIONS[old.tls.min_version]:
            return f"it would lower min_version from {old.tls.min_version} to {new.tls.min_version}"
    return None


class WebConfigWatcher:
    """The current web config, read again whenever the file or a certificate changes.

    Fails closed: a change that does not load (a half-written file or certificate pair, an
    empty file) or that would switch TLS, basic auth or client-certificate checks off is
    refused, logged with the reason, and the last good config keeps serving. Switching
    them off takes a restart, so that no moment of an edit can serve without them.
    """

    # After a refused change, the files are read again this often even if they look the same:
    # an editor's last write can leave the size and (coarse) timestamps of a half-written state.
    RETRY_SECONDS = 1.0

    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)
        self._lock = threading.Lock()
        self._loaded = load_web_config(self._path)  # at start-up, errors are fatal
        self._stamps = self._file_stamps()
        self._retry_at: float | None = None  # set while the files on disk are a refused change
        self._refusal: str | None = None

    def current(self) -> LoadedWebConfig:
        stamps = self._file_stamps()
        if stamps != self._stamps or self._retry_due():
            with self._lock:
                changed = stamps != self._stamps
                if changed or self._retry_due():
                    self._stamps = stamps
                    self._reload(log_again=changed)
        return self._loaded

    def _retry_due(self) -> bool:
        return self._retry_at is not None and time.monotonic() >= self._retry_at

    def _reload(self, log_again: bool) -> None:
        try:
            loaded = load_web_config(self._path)
            reason = weakening(self._loaded.config, loaded.config)
            if reason:
                raise WebConfigError(
                    f"{self._path}: {reason}; turning TLS, basic auth or client certificate checks off needs a restart"
                )
        except WebConfigError as exc:
            self._retry_at = time.monotonic() + self.RETRY_SECONDS
            if log_again or str(exc) != self._refusal:  # the retries repeat nothing already said
                log.error("web config not reloaded, the last good one stays in use", extra={"error": str(exc)})
            self._refusal = str(exc)
            return
        self._loaded, self._retry_at, self._refusal = loaded, None, None
        log.info("web config reloaded", extra={"file": str(self._path)})

    def _file_stamps(self) -> tuple[tuple[int, int, int, int] | None, ...]:
        tls = self._loaded.config.tls
        files = [self._path]
        if tls:
            files += [tls.cert_file, tls.key_file]
            if tls.client_ca_file:
                files.append(tls.client_ca_file)
        stamps: list[tuple[int, int, int, int] | None] = []
        for file in files:
            try:
                stat = os.stat(file)
                stamps.append((stat.st_mtime_ns, stat.st_ctime_ns, stat.st_size, stat.st_ino))
            except OSError:
                stamps.append(None)
        return tuple(stamps)
