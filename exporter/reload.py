"""Reading config.yaml again (SIGHUP, POST /-/reload) and applying it, as Prometheus does.

A file that does not load is refused with the key it trips on, and the running config
carries on; `ibanera_config_last_reload_successful` and
`ibanera_config_last_reload_success_timestamp_seconds` (Prometheus's and Alertmanager's
names) say how the last attempt went.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .config import Config, ConfigError
from .fleet import Fleet
from .metrics import Exposition

log = logging.getLogger("exporter.reload")


class Reloader(Collector):
    """Applies a freshly read Config to the pollers and the exposition; one reload at a time."""

    def __init__(
        self, load: Callable[[], Config], fleet: Fleet, exposition: Exposition, clock: Callable[[], float] = time.time
    ) -> None:
        self._load = load
        self._fleet = fleet
        self._exposition = exposition
        self._clock = clock
        self._lock = threading.Lock()
        self._state = (True, clock())  # (last reload successful, time of the last success); the start counts

    def reload(self) -> None:
        """Reads and applies the config; raises ConfigError (already logged) when it is refused."""
        with self._lock:
            try:
                config = self._load()
                result = self._fleet.apply(config)
            except ConfigError as exc:
                self._state = (False, self._state[1])
                log.error("config not reloaded, the running config stays in use", extra={"error": str(exc)})
                raise
            except Exception as exc:  # a bug of ours: a refused reload, never the end of the SIGHUP loop
                self._state = (False, self._state[1])
                log.error("config not reloaded on an unexpected error", extra={"error": type(exc).__name__})
                raise ConfigError(f"unexpected {type(exc).__name__} while reloading; see the log") from None
            self._exposition.replace_config(config)
            self._state = (True, self._clock())
        log.info(
            "config reloaded",
            extra={
                name: ",".join(getattr(result, name)) or "-" for name in ("kept", "restarted", "started", "stopped")
            },
        )

    def collect(self) -> Iterable[Metric]:
        successful, at = self._state
        yield GaugeMetricFamily(
            "ibanera_config_last_reload_successful",
            "1 if the last reload of the configuration file succeeded, else 0.",
            value=int(successful),
        )
        yield GaugeMetricFamily(
            "ibanera_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration load (start-up or reload).",
            value=at,
        )
