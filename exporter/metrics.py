"""Snapshots and health -> the /metrics body.

The balances (four series per asset account, the bulk of the body) are rendered once per
set of snapshots and served from that cache, so a scrape costs the same at 100 accounts
as at 100 000 apart from the bytes; only the small health part is built per scrape, by a
custom collector. Nothing is kept in global gauges: an account that vanishes from the API
vanishes from the next body by construction. Decimal becomes float here and nowhere else.
"""

from __future__ import annotations

import logging
import threading
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_latest_openmetrics
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from .config import Config, ConnectionConfig, format_duration
from .model import AccountBalance, CardBalance
from .poller import ConnectionStatus, PartStatus, Snapshot

Row = TypeVar("Row")
log = logging.getLogger("exporter.metrics")

# name, HELP, value of an account. The text format and OpenMetrics write gauges the same
# way, so one rendering serves both.
BALANCE_FAMILIES: tuple[tuple[str, str, Callable[[AccountBalance], float]], ...] = (
    ("ibanera_total_balance", "totalBalance of the asset account, in units of the asset.", lambda a: float(a.total)),
    ("ibanera_available_balance",
     "availableBalance (total minus incoming pending amounts) of the asset account, in units of the asset.",
     lambda a: float(a.available)),
    ("ibanera_pending_balance",
     "pendingBalance (sum of pending transaction amounts) of the asset account, in units of the asset.",
     lambda a: float(a.pending)),
    ("ibanera_account_suppressed", "1 if use of the asset account is currently disabled (bSuppressed), else 0.",
     lambda a: 1.0 if a.suppressed else 0.0),
)


def refreshed_note(poll_interval: float) -> str:
    """Said in the HELP of every series that comes from the poller."""
    return f"Refreshed by a background poller every {format_duration(poll_interval)}."


def _go_float(value: float) -> str:
    """A sample value as Prometheus writes it (prometheus_client's floatToGoString, typed)."""
    text: str = floatToGoString(value)  # type: ignore[no-untyped-call]
    return text


def _label_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


CARD_FAMILIES: tuple[tuple[str, str, Callable[[CardBalance], float]], ...] = (
    ("ibanera_card_total_balance", "totalBalance of the card, in units of its currency.", lambda c: float(c.total)),
    ("ibanera_card_available_balance", "availableBalance of the card, in units of its currency.",
     lambda c: float(c.available)),
    ("ibanera_card_pending_balance", "pendingBalance of the card, in units of its currency.", lambda c: float(c.pending)),
)


CARD_INFO = ("ibanera_card_info", "Descriptive fields of a card, always 1.")


def render_balances(statuses: Sequence[ConnectionStatus], refreshed: str,
                    on_failure: Callable[[str, Exception], None]) -> bytes:
    """The balance families of every connection's last good snapshots, in exposition format.

    Each connection is rendered on its own: one whose rows cannot be written (whatever a
    snapshot holds) loses its balance series and is reported to `on_failure`, and the
    others, and the health part, are served as usual.
    """
    headers = [(name, help_text) for name, help_text, _ in BALANCE_FAMILIES]
    if any(s.cards is not None for s in statuses):
        headers += [(name, help_text) for name, help_text, _ in CARD_FAMILIES] + [CARD_INFO]
    samples: dict[str, list[bytes]] = {name: [] for name, _ in headers}
    for status in statuses:
        try:
            rendered = _connection_samples(status)
        except Exception as exc:
            on_failure(status.name, exc)
            continue
        for name, chunk in rendered.items():
            samples[name].append(chunk)
    body = bytearray()
    for name, help_text in headers:
        body += f"# HELP {name} {help_text} {refreshed}\n# TYPE {name} gauge\n".encode()
        body += b"".join(samples[name])
    return bytes(body)


def _connection_samples(status: ConnectionStatus) -> dict[str, bytes]:
    """The sample lines of one connection, by family name, encoded (UTF-8, strictly)."""
    connection = _label_value(status.name)
    rendered: dict[str, bytes] = {}
    accounts = status.accounts.snapshot.rows if status.accounts.snapshot else ()
    account_rows = [(f'{{asset="{_label_value(a.asset)}",asset_account_id="{a.asset_account_id}",'
                     f'connection="{connection}"}} ', a) for a in accounts]
    _gauges(BALANCE_FAMILIES, account_rows, rendered)
    if status.cards is not None:
        cards = status.cards.snapshot.rows if status.cards.snapshot else ()
        card_rows = [(f'{{card_id="{c.card_id}",connection="{connection}",currency="{_label_value(c.currency)}"}} ', c)
                     for c in cards]
        _gauges(CARD_FAMILIES, card_rows, rendered)
        # The descriptive fields live in an _info series, so that a change of status does not
        # break the balance series; the holder's name only where the config asked for it.
        info = []
        for c in cards:
            holder = "" if c.holder_name is None else f'card_holder_name="{_label_value(c.holder_name)}",'
            info.append(f'ibanera_card_info{{card_id="{c.card_id}",{holder}card_last4="{_label_value(c.card_last4)}",'
                        f'connection="{connection}",customers_reference="{_label_value(c.customers_reference)}",'
                        f'status="{_label_value(c.status)}"}} 1.0\n')
        rendered[CARD_INFO[0]] = "".join(info).encode()
    return rendered


def _gauges(families: tuple[tuple[str, str, Callable[[Row], float]], ...], rows: list[tuple[str, Row]],
            rendered: dict[str, bytes]) -> None:
    """One sample per (rendered labels, row) for each gauge family."""
    for name, _, value in families:
        rendered[name] = "".join(f"{name}{labels}{_go_float(value(row))}\n" for labels, row in rows).encode()


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
        log.error("cannot render a connection's balances: its balance series are left out until its next good poll",
                  extra={"connection": connection, "error": type(error).__name__})

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
                cache = _BalanceCache(snapshots, render_balances(statuses, self._refreshed, self._render_failed))
            if gzipped and cache.gzip_state is None:
                compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
                prefix = compressor.compress(cache.body) + compressor.flush(zlib.Z_SYNC_FLUSH)
                cache = _BalanceCache(cache.snapshots, cache.body, prefix, compressor)
            self._cache = cache
            return cache


def _snapshots_of(statuses: Sequence[ConnectionStatus]) -> _Snapshots:
    return tuple(snapshot for s in statuses
                 for snapshot in (s.accounts.snapshot, s.cards.snapshot if s.cards else None))


def _same(cached: _Snapshots, current: _Snapshots) -> bool:
    return len(cached) == len(current) and all(a is b for a, b in zip(cached, current, strict=False))


class HealthCollector(Collector):
    """Everything but the balances: small, and built fresh at every scrape."""

    def __init__(self, statuses: Callable[[], Sequence[ConnectionStatus]], config: Config, version: str,
                 render_failures: Callable[[], Mapping[str, int]]) -> None:
        self._statuses = statuses
        self._render_failures = render_failures
        self._version = version
        self._unknown_ids = _UnknownIds()
        self.replace_config(config)

    def replace_config(self, config: Config) -> None:
        # One reference swapped whole, read once per scrape: a scrape never shows half of the
        # old settings and half of the new.
        self._config = config

    def collect(self) -> Iterable[Metric]:
        statuses = self._statuses()
        config = self._config
        refreshed = refreshed_note(config.poll_interval)
        yield from _part_health(ACCOUNTS_PART, [(s.name, s.accounts) for s in statuses], refreshed)
        yield from self._health(statuses)
        threshold = GaugeMetricFamily(
            "ibanera_balance_low_threshold",
            "Available balance below which an asset counts as low, from thresholds.low_available_balance in the config.",
            labels=["asset"],
        )
        for asset, amount in sorted(config.low_available_balance.items()):
            threshold.add_metric([asset], float(amount))
        yield threshold
        connections = config.connections
        if any(c.accounts for c in connections):  # like the card families: only when configured
            yield from account_families(connections)
            self._unknown_ids.warn(connections, statuses)
        if config.low_available_card_balance:
            card_threshold = GaugeMetricFamily(
                "ibanera_card_low_threshold",
                "Available card balance below which a card counts as low, from thresholds.low_available_card_balance.",
                labels=["currency"],
            )
            for currency, amount in sorted(config.low_available_card_balance.items()):
                card_threshold.add_metric([currency], float(amount))
            yield card_threshold
        carded = [(s.name, s.cards) for s in statuses if s.cards is not None]
        if carded:
            yield from _part_health(CARDS_PART, carded, refreshed)
        interval = GaugeMetricFamily(
            "ibanera_poll_interval_seconds", "Configured time between the starts of two polls (poll_interval)."
        )
        interval.add_metric([], config.poll_interval)
        yield interval
        build = GaugeMetricFamily("ibanera_exporter_build_info", "Version of ibanera-exporter, always 1.", labels=["version"])
        build.add_metric([self._version], 1)
        yield build

    def _health(self, statuses: Sequence[ConnectionStatus]) -> Iterable[Metric]:
        duration = GaugeMetricFamily(
            "ibanera_poll_duration_seconds", "How long the last poll took, retries included.", labels=["connection"]
        )
        polls = CounterMetricFamily("ibanera_polls", "Polls started.", labels=["connection"])
        requests = CounterMetricFamily(
            "ibanera_api_requests", "HTTP requests sent to the Ibanera API, by endpoint and status code.",
            labels=["connection", "endpoint", "code"],
        )
        retries = CounterMetricFamily(
            "ibanera_api_retries", "Requests retried after a transient failure.", labels=["connection", "endpoint"]
        )
        logins = CounterMetricFamily("ibanera_logins", "Login requests sent.", labels=["connection"])
        login_failures = CounterMetricFamily(
            "ibanera_login_failures", "Logins refused by Ibanera, by messageCode. Repeated refusals lock the account.",
            labels=["connection", "reason"],
        )
        token_expiry = GaugeMetricFamily(
            "ibanera_token_expiry_timestamp_seconds", "Unix time at which the current access token expires.",
            labels=["connection"],
        )
        render_failures = CounterMetricFamily(
            "ibanera_render_failures", "Renderings of /metrics that left a connection's balance series out because "
            "its snapshot could not be written (the log says why).", labels=["connection"],
        )
        failed_renderings = self._render_failures()
        clock_offset = GaugeMetricFamily(
            "ibanera_clock_offset_seconds",
            "The API server's clock minus this host's, from its Date headers; one-time codes follow the server's clock.",
            labels=["connection"],
        )
        for status in statuses:
            name = status.name
            if status.clock_offset is not None:
                clock_offset.add_metric([name], status.clock_offset)
            if status.last_poll_duration is not None:
                duration.add_metric([name], status.last_poll_duration)
            polls.add_metric([name], status.polls)
            render_failures.add_metric([name], failed_renderings.get(name, 0))
            for (endpoint, code), value in sorted(status.client.requests.items()):
                requests.add_metric([name, endpoint, code], value)
            for endpoint, value in sorted(status.client.retries.items()):
                retries.add_metric([name, endpoint], value)
            logins.add_metric([name], status.client.logins)
            for reason, value in sorted(status.client.login_failures.items()):
                login_failures.add_metric([name, reason], value)
            if status.token_expires_at is not None:
                token_expiry.add_metric([name], status.token_expires_at)
        return duration, polls, requests, retries, logins, login_failures, token_expiry, clock_offset, render_failures


@dataclass(frozen=True)
class PartFamilies:
    """The names and words of one poll part's health families."""

    up: str
    up_help: str
    count: str
    count_help: str
    last_success: str
    last_success_help: str
    failures: str
    failures_help: str


ACCOUNTS_PART = PartFamilies(
    "ibanera_up", "1 if the last poll of the Ibanera API succeeded, else 0.",
    "ibanera_asset_accounts", "Asset accounts in the last good poll.",
    "ibanera_last_success_timestamp_seconds", "Unix time at which the last good poll ended.",
    "ibanera_poll_failures", "Polls that failed, by reason.",
)
CARDS_PART = PartFamilies(
    "ibanera_cards_up", "1 if the last card poll succeeded, else 0 (ibanera_up is about account balances only).",
    "ibanera_cards", "Cards in the last good card poll.",
    "ibanera_cards_last_success_timestamp_seconds", "Unix time at which the last good card poll ended.",
    "ibanera_card_poll_failures", "Card polls that failed, by reason.",
)


def _part_health(names: PartFamilies, parts: Sequence[tuple[str, PartStatus[Row]]], refreshed: str) -> Iterable[Metric]:
    up = GaugeMetricFamily(names.up, names.up_help, labels=["connection"])
    count = GaugeMetricFamily(names.count, f"{names.count_help} {refreshed}", labels=["connection"])
    last_success = GaugeMetricFamily(names.last_success, names.last_success_help, labels=["connection"])
    failures = CounterMetricFamily(names.failures, names.failures_help, labels=["connection", "reason"])
    for connection, part in parts:
        up.add_metric([connection], 1.0 if part.up else 0.0)
        if part.snapshot is not None:  # before the first good poll there is nothing to say
            count.add_metric([connection], len(part.snapshot.rows))
            last_success.add_metric([connection], part.snapshot.completed_at)
        for reason, value in sorted(part.failures.items()):
            failures.add_metric([connection, reason], value)
    return up, count, last_success, failures


def account_families(connections: Sequence[ConnectionConfig]) -> tuple[Metric, Metric]:
    """What the `accounts:` maps say: display names and per-account floors."""
    info = GaugeMetricFamily("ibanera_account_info", "Display name of an asset account, from accounts in the config; "
                             "always 1.", labels=["connection", "asset_account_id", "name"])
    floor = GaugeMetricFamily(
        "ibanera_account_low_threshold",
        "Available balance below which this asset account counts as low, from accounts.<id>.low_available_balance "
        "in the config; where set, it replaces ibanera_balance_low_threshold of the account's asset.",
        labels=["connection", "asset_account_id"],
    )
    for connection in connections:
        for account_id, account in sorted(connection.accounts.items()):
            if account.name is not None:
                info.add_metric([connection.name, str(account_id), account.name], 1)
            if account.low_available_balance is not None:
                floor.add_metric([connection.name, str(account_id)], float(account.low_available_balance))
    return info, floor


class _UnknownIds:
    """Warns once about each configured account id that a good poll did not return.

    A warning, not an error: accounts come and go, and the config may name one before it opens.
    Each snapshot is looked at once, so a scrape costs nothing more with many accounts.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, Snapshot[AccountBalance]] = {}  # the last snapshot looked at, per connection
        self._warned: set[tuple[str, int]] = set()

    def warn(self, connections: Sequence[ConnectionConfig], statuses: Sequence[ConnectionStatus]) -> None:
        configured = {c.name: c.accounts for c in connections if c.accounts}
        with self._lock:  # scrapes run in parallel; each warning is still written once
            for status in statuses:
                snapshot = status.accounts.snapshot
                if status.name not in configured or snapshot is None or self._seen.get(status.name) is snapshot:
                    continue
                self._seen[status.name] = snapshot
                polled = {a.asset_account_id for a in snapshot.rows}
                for account_id in sorted(configured[status.name].keys() - polled):
                    if (status.name, account_id) not in self._warned:
                        self._warned.add((status.name, account_id))
                        log.warning("an account in the config is not among the polled accounts",
                                    extra={"connection": status.name, "asset_account_id": account_id})


def build_registry(collector: Collector) -> CollectorRegistry:
    """The exporter's own registry: its collector plus the usual process_* and python_* metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry
