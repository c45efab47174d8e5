"""Snapshots and health -> Prometheus metric families, built fresh at every scrape.

A custom collector rather than global gauges: an account that vanishes from the API
vanishes from the next exposition by construction, with no series left behind.
Decimal becomes float here and nowhere else.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Callable, Iterable, Mapping, Sequence

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .config import format_duration
from .poller import ConnectionStatus

ACCOUNT_LABELS = ("connection", "asset_account_id", "asset")


class ExporterCollector(Collector):
    def __init__(
        self,
        statuses: Callable[[], Sequence[ConnectionStatus]],
        *,
        poll_interval: float,
        low_available_balance: Mapping[str, Decimal],
        version: str,
    ) -> None:
        self._statuses = statuses
        self._poll_interval = poll_interval
        self._thresholds = low_available_balance
        self._version = version
        self._refreshed = f"Refreshed by a background poller every {format_duration(poll_interval)}."

    def collect(self) -> Iterable[Metric]:
        statuses = self._statuses()
        yield from self._balances(statuses)
        yield from self._health(statuses)
        threshold = GaugeMetricFamily(
            "ibanera_balance_low_threshold",
            "Available balance below which an asset counts as low, from thresholds.low_available_balance in the config.",
            labels=["asset"],
        )
        for asset, amount in sorted(self._thresholds.items()):
            threshold.add_metric([asset], float(amount))
        yield threshold
        interval = GaugeMetricFamily(
            "ibanera_poll_interval_seconds", "Configured time between the starts of two polls (poll_interval)."
        )
        interval.add_metric([], self._poll_interval)
        yield interval
        build = GaugeMetricFamily("ibanera_exporter_build_info", "Version of ibanera-exporter, always 1.", labels=["version"])
        build.add_metric([self._version], 1)
        yield build

    def _balances(self, statuses: Sequence[ConnectionStatus]) -> Iterable[Metric]:
        def family(name: str, api_field: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(
                name, f"{api_field} of the asset account, in units of the asset. {self._refreshed}", labels=ACCOUNT_LABELS
            )

        total = family("ibanera_total_balance", "totalBalance")
        available = family("ibanera_available_balance", "availableBalance (total minus incoming pending amounts)")
        pending = family("ibanera_pending_balance", "pendingBalance (sum of pending transaction amounts)")
        suppressed = GaugeMetricFamily(
            "ibanera_account_suppressed",
            f"1 if use of the asset account is currently disabled (bSuppressed), else 0. {self._refreshed}",
            labels=ACCOUNT_LABELS,
        )
        count = GaugeMetricFamily(
            "ibanera_asset_accounts", f"Asset accounts in the last good poll. {self._refreshed}", labels=["connection"]
        )
        for status in statuses:
            if status.snapshot is None:  # before the first good poll there is nothing to say
                continue
            for account in status.snapshot.accounts:
                labels = [status.name, str(account.asset_account_id), account.asset]
                total.add_metric(labels, float(account.total))
                available.add_metric(labels, float(account.available))
                pending.add_metric(labels, float(account.pending))
                suppressed.add_metric(labels, 1.0 if account.suppressed else 0.0)
            count.add_metric([status.name], len(status.snapshot.accounts))
        return total, available, pending, suppressed, count

    def _health(self, statuses: Sequence[ConnectionStatus]) -> Iterable[Metric]:
        up = GaugeMetricFamily("ibanera_up", "1 if the last poll of the Ibanera API succeeded, else 0.", labels=["connection"])
        last_success = GaugeMetricFamily(
            "ibanera_last_success_timestamp_seconds", "Unix time at which the last good poll ended.", labels=["connection"]
        )
        duration = GaugeMetricFamily(
            "ibanera_poll_duration_seconds", "How long the last poll took, retries included.", labels=["connection"]
        )
        polls = CounterMetricFamily("ibanera_polls", "Polls started.", labels=["connection"])
        failures = CounterMetricFamily("ibanera_poll_failures", "Polls that failed, by reason.", labels=["connection", "reason"])
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
        clock_offset = GaugeMetricFamily(
            "ibanera_clock_offset_seconds",
            "The API server's clock minus this host's, from its Date headers; one-time codes follow the server's clock.",
            labels=["connection"],
        )
        for status in statuses:
            name = status.name
            if status.clock_offset is not None:
                clock_offset.add_metric([name], status.clock_offset)
            up.add_metric([name], 1.0 if status.up else 0.0)
            if status.snapshot is not None:
                last_success.add_metric([name], status.snapshot.completed_at)
            if status.last_poll_duration is not None:
                duration.add_metric([name], status.last_poll_duration)
            polls.add_metric([name], status.polls)
            for reason, value in sorted(status.poll_failures.items()):
                failures.add_metric([name, reason], value)
            for (endpoint, code), value in sorted(status.client.requests.items()):
                requests.add_metric([name, endpoint, code], value)
            for endpoint, value in sorted(status.client.retries.items()):
                retries.add_metric([name, endpoint], value)
            logins.add_metric([name], status.client.logins)
            for reason, value in sorted(status.client.login_failures.items()):
                login_failures.add_metric([name, reason], value)
            if status.token_expires_at is not None:
                token_expiry.add_metric([name], status.token_expires_at)
        return (up, last_success, duration, polls, failures, requests, retries, logins, login_failures, token_expiry,
                clock_offset)


def build_registry(collector: ExporterCollector) -> CollectorRegistry:
    """The exporter's own registry: its collector plus the usual process_* and python_* metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry
