"""Snapshots and health -> the /metrics body.

The balances (four series per asset account, the bulk of the body) are rendered once per
set of snapshots and served from that cache, so a scrape costs the same at 100 accounts
as at 100 000 apart from the bytes; only the small health part is built per scrape, by a
custom collector. Nothing is kept in global gauges: an account that vanishes from the API
vanishes from the next body by construction.
"""

from __future__ import annotations

import logging
import threading
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_latest_openmetrics
from prometheus_client.registry import Collector

from ..config import Config
from ..model import AccountBalance, CardBalance
from ..poller import ConnectionStatus, Snapshot
from . import balances
from .balances import refreshed_note
from .health import HealthCollector

log = logging.getLogger("exporter.metrics")

_Snapshots = tuple[Snapshot[AccountBalance] | Snapshot[CardBalance] | None, ...]


@dataclass(frozen=True)
class _BalanceCache:
    snapshots: _Snapshots  # held, so that identity comparisons stay sound
    body: bytes
    gzip_prefix: bytes = b""
    gzip_state: zlib._Compress | None = None  # a compressor that has seen `body`, sync-flushed


class Exposition:
    """The body of /metrics. Scrapes never block a poll: polls only swap snapshots."""

    def __init__(self, statuses: Callable[[], Sequence[ConnectionStatus]], config: Config, version: str) -> None:
        self._statuses = statuses
        self._refreshed = refreshed_note(config.poll_interval)
        self._render_failures: Counter[str] = Counter()
        self._failures_lock = threading.Lock()
        self._health = HealthCollector(statuses, config, version, self.render_failures)
        self.registry = build_registry(self._health)
        self._lock = threading.Lock()
        self._cache = _BalanceCache((), b"")

    def replace_config(self, config: Config) -> None:
        """After a reload: thresholds and poll_interval (in HELP texts too) show from the next scrape."""
        self._health.replace_config(config)
        with self._lock:
            self._refreshed = refreshed_note(config.poll_interval)
            self._cache = _BalanceCache((), b"")  # matches no set of snapshots: the next scrape renders

    def render_failures(self) -> dict[str, int]:
        """By connection: renderings that had to leave its balance series out."""
        with self._failures_lock:
            return dict(self._render_failures)

    def _render_failed(self, connection: str, error: Exception) -> None:
        with self._failures_lock:
            self._render_failures[connection] += 1
        log.error(
            "cannot render a connection's balances: its balance series are left out until its next good poll",
            extra={"connection": connection, "error": type(error).__name__},
        )

    def render(self, openmetrics: bool = False, gzipped: bool = False) -> bytes:
        return b"".join(self.render_parts(openmetrics, gzipped))

    def render_parts(self, openmetrics: bool = False, gzipped: bool = False) -> tuple[bytes, bytes]:
        """The body as (the cached balances, this scrape's part), sent one after the other.

        Not joined: a scrape then holds only its own small part, not a copy of the balances,
        however many scrapes are being written at once.
        """
        cache = self._balances(gzipped)
        health = (generate_latest_openmetrics if openmetrics else generate_latest)(self.registry)
        if not gzipped:
            return cache.body, health
        # One gzip stream: the cached compressed balances, continued with this scrape's health.
        assert cache.gzip_state is not None
        compressor = cache.gzip_state.copy()
        return cache.gzip_prefix, compressor.compress(health) + compressor.flush()

    def _balances(self, gzipped: bool) -> _BalanceCache:
        snapshots = _snapshots_of(self._statuses())
        cache = self._cache
        if _same(cache.snapshots, snapshots) and (cache.gzip_state is not None or not gzipped):
            return cache
        with self._lock:  # one scrape renders; the others wait for it instead of rendering too
            cache = self._cache
            if not _same(cache.snapshots, snapshots):
                statuses = self._statuses()
                snapshots = _snapshots_of(statuses)
                cache = _BalanceCache(
                    snapshots, balances.render_balances(statuses, self._refreshed, self._render_failed)
                )
            if gzipped and cache.gzip_state is None:
                compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
                prefix = compressor.compress(cache.body) + compressor.flush(zlib.Z_SYNC_FLUSH)
                cache = _BalanceCache(cache.snapshots, cache.body, prefix, compressor)
            self._cache = cache
            return cache


def _snapshots_of(statuses: Sequence[ConnectionStatus]) -> _Snapshots:
    return tuple(
        snapshot for s in statuses for snapshot in (s.accounts.snapshot, s.cards.snapshot if s.cards else None)
    )


def _same(cached: _Snapshots, current: _Snapshots) -> bool:
    return len(cached) == len(current) and all(a is b for a, b in zip(cached, current, strict=False))


def build_registry(collector: Collector) -> CollectorRegistry:
    """The exporter's own registry: its collector plus the usual process_* and python_* metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry
