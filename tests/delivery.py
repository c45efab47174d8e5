"""The whole alerting path on loopback, with real components, for tests/test_alertmanager.py and bench/alert_delivery.py.

The exporter polls the simulator every second; a real Prometheus scrapes it every second and
evaluates the shipped rules; a real Alertmanager runs the shipped deploy/alertmanager.yml with
its receivers' URLs pointed at a local webhook receiver (one path per receiver).

Two things are changed from what ships, both timers: every rule's `for` is cut to 1s, and
Alertmanager's group_wait and group_interval to 1s. Waiting 5 real minutes for `for: 5m`
would prove nothing that `promtool test rules` (dashboards/tests/alerts_test.yaml) does not
already prove; expressions, labels, annotations, routes, grouping and inhibitions are the
shipped ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from conftest import ROOT, FakeClock, Stack, account, build_stack
from daemons import Alertmanager, Prometheus, Webhook

from exporter.config import AccountConfig

ALERTMANAGER_CONFIG = ROOT / "deploy" / "alertmanager.yml"
RULE_FILES = [ROOT / "dashboards" / "alerts.yaml", ROOT / "dashboards" / "rules.yaml"]
PAYROLL = 1001  # USD, with a floor of its own: 50 000, above the USD threshold of 10 000
ACCOUNTS = {PAYROLL: AccountConfig(name="Payroll USD", low_available_balance=Decimal("50000"))}


def fast_rules(path: Path, work: Path) -> Path:
    """A copy of a shipped rule file whose only change is every `for` cut to 1s."""
    rules = yaml.safe_load(path.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "1s"
    copy = work / path.name
    copy.write_text(yaml.safe_dump(rules, sort_keys=False))
    return copy


def local_alertmanager_config(webhook_url: str) -> dict[str, Any]:
    """deploy/alertmanager.yml with each receiver's webhook at `webhook_url`/<receiver>, notifying within a second."""
    config: dict[str, Any] = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    for receiver in config["receivers"]:
        for webhook in receiver["webhook_configs"]:
            webhook["url"] = f"{webhook_url}/{receiver['name']}"
    config["route"].update(group_wait="1s", group_interval="1s")
    return config


def set_available(stack: Stack, account_id: int, amount: str) -> None:
    stack.simulator.update_account(account_id, available=Decimal(amount), total=Decimal(amount), pending=Decimal("0"))


@dataclass
class Delivery:
    stack: Stack
    prometheus: Prometheus
    alertmanager: Alertmanager
    webhook: Webhook
    _stops: list[Callable[[], None]] = field(default_factory=list)

    @classmethod
    def start(cls, work: Path, prometheus_binary: str, alertmanager_binary: str) -> Delivery:
        """Everything started, in order; whatever did start is stopped again if a later part fails."""
        stops: list[Callable[[], None]] = []
        try:
            webhook = Webhook()
            stops.append(webhook.stop)
            alertmanager = Alertmanager(alertmanager_binary, work, local_alertmanager_config(webhook.url))
            stops.append(alertmanager.stop)
            stack = build_stack(
                FakeClock(),
                [account(PAYROLL, "USD", "248500.00"), account(1002, "EUR", "98000.50")],
                connections=({"accounts": ACCOUNTS},),
                config={"poll_interval": 1.0, "low_available_balance": {"USD": Decimal("10000")}},
            )
            stops.append(stack.close)
            stack.start_polling()
            prometheus = Prometheus(
                prometheus_binary,
                work,
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(fast_rules(path, work)) for path in RULE_FILES],
                    "alerting": {
                        "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager.port}"]}]}]
                    },
                    "scrape_configs": [
                        {"job_name": "ibanera", "static_configs": [{"targets": [f"127.0.0.1:{stack.server.port}"]}]}
                    ],
                },
            )
            stops.append(prometheus.stop)
        except BaseException:
            for stop in reversed(stops):
                stop()
            raise
        return cls(stack, prometheus, alertmanager, webhook, stops)

    def stop(self) -> None:
        for stop in reversed(self._stops):
            stop()
