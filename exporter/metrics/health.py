"""The health families (everything but the balances): small, and built fresh at every scrape."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..config import AccountConfig, Config, ConnectionConfig
from ..model import AccountBalance
from ..poller import ConnectionStatus, PartStatus, Snapshot
from .balances import refreshed_note

Row = TypeVar("Row")
log = logging.getLogger("exporter.metrics")


class HealthCollector(Collector):
    """Everything but the balances: small, and built fresh at every scrape."""

    def __init__(
        self,
        statuses: Callable[[], Sequence[ConnectionStatus]],
        config: Config,
        version: str,
        render_failures: Callable[[], Mapping[str, int]],
    ) -> None:
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
        build = GaugeMetricFamily(
            "ibanera_exporter_build_info", "Version of ibanera-exporter, always 1.", labels=["version"]
        )
        build.add_metric([self._version], 1)
        yield build

    def _health(self, statuses: Sequence[ConnectionStatus]) -> Iterable[Metric]:
        duration = GaugeMetricFamily(
            "ibanera_poll_duration_seconds", "How long the last poll took, retries included.", labels=["connection"]
        )
        polls = CounterMetricFamily("ibanera_polls", "Polls started.", labels=["connection"])
        requests = CounterMetricFamily(
            "ibanera_api_requests",
            "HTTP requests sent to the Ibanera API, by endpoint and status code.",
            labels=["connection", "endpoint", "code"],
        )
        retries = CounterMetricFamily(
            "ibanera_api_retries", "Requests retried after a transient failure.", labels=["connection", "endpoint"]
        )
        logins = CounterMetricFamily("ibanera_logins", "Login requests sent.", labels=["connection"])
        login_failures = CounterMetricFamily(
            "ibanera_login_failures",
            "Logins refused by Ibanera, by messageCode. Repeated refusals lock the account.",
            labels=["connection", "reason"],
        )
        token_expiry = GaugeMetricFamily(
            "ibanera_token_expiry_timestamp_seconds",
            "Unix time at which the current access token expires.",
            labels=["connection"],
        )
        render_failures = CounterMetricFamily(
            "ibanera_render_failures",
            "Renderings of /metrics that left a connection's balance series out because "
            "its snapshot could not be written (the log says why).",
            labels=["connection"],
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
    "ibanera_up",
    "1 if the last poll of the Ibanera API succeeded, else 0.",
    "ibanera_asset_accounts",
    "Asset accounts in the last good poll.",
    "ibanera_last_success_timestamp_seconds",
    "Unix time at which the last good poll ended.",
    "ibanera_poll_failures",
    "Polls that failed, by reason.",
)
CARDS_PART = PartFamilies(
    "ibanera_cards_up",
    "1 if the last card poll succeeded, else 0 (ibanera_up is about account balances only).",
    "ibanera_cards",
    "Cards in the last good card poll.",
    "ibanera_cards_last_success_timestamp_seconds",
    "Unix time at which the last good card poll ended.",
    "ibanera_card_poll_failures",
    "Card polls that failed, by reason.",
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
    info = GaugeMetricFamily(
        "ibanera_account_info",
        "Display name of an asset account, from accounts in the config; always 1.",
        labels=["connection", "asset_account_id", "name"],
    )
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
    Each snapshot is looked at once per accounts map, so a scrape costs nothing more with many
    accounts; a reload keeps the snapshot but brings a new map, whose new ids are warned about at
    once rather than after the next poll.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # The last snapshot and accounts map looked at, per connection.
        self._seen: dict[str, tuple[Snapshot[AccountBalance], Mapping[int, AccountConfig]]] = {}
        self._warned: set[tuple[str, int]] = set()

    def warn(self, connections: Sequence[ConnectionConfig], statuses: Sequence[ConnectionStatus]) -> None:
        configured = {c.name: c.accounts for c in connections if c.accounts}
        with self._lock:  # scrapes run in parallel; each warning is still written once
            for status in statuses:
                snapshot = status.accounts.snapshot
                if status.name not in configured or snapshot is None:
                    continue
                seen = self._seen.get(status.name)
                if seen is not None and seen[0] is snapshot and seen[1] is configured[status.name]:
                    continue
                self._seen[status.name] = (snapshot, configured[status.name])
                polled = {a.asset_account_id for a in snapshot.rows}
                for account_id in sorted(configured[status.name].keys() - polled):
                    if (status.name, account_id) not in self._warned:
                        self._warned.add((status.name, account_id))
                        log.warning(
                            "an account in the config is not among the polled accounts",
                            extra={"connection": status.name, "asset_account_id": account_id},
                        )
