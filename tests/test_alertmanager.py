"""Alerts delivered: the shipped Alertmanager config, checked by amtool and run for real on loopback.

amtool and prometheus-alertmanager come from the Debian package `prometheus-alertmanager`,
prometheus from `prometheus` (.ci/run installs both). Without them these tests skip with a
plain message on a developer's machine, and fail in CI.
"""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml
from conftest import required_tool
from daemons import Alertmanager, eventually
from delivery import ALERTMANAGER_CONFIG, PAYROLL, Delivery, local_alertmanager_config, set_available

from exporter.rules import alert_groups
from exporter.simulator import Fault

ALERT_NAMES = {rule["alert"] for group in alert_groups() for rule in group["rules"]}


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [required_tool("amtool", "prometheus-alertmanager"), *args], capture_output=True, text=True, timeout=60
    )


def test_amtool_check_config_passes():
    result = amtool("check-config", str(ALERTMANAGER_CONFIG))
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr


@pytest.mark.parametrize("severity, receiver", [("critical", "pager"), ("warning", "chat"), ("info", "ticket")])
def test_each_severity_goes_to_its_receiver(severity, receiver):
    result = amtool(
        "config",
        "routes",
        "test",
        f"--config.file={ALERTMANAGER_CONFIG}",
        "alertname=IbaneraBalanceLow",
        "connection=treasury",
        f"severity={severity}",
    )
    assert result.returncode == 0 and result.stdout.strip() == receiver, result.stdout + result.stderr


def test_the_inhibitions_name_only_alerts_that_exist():
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    for rule in config["inhibit_rules"]:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            names = re.fullmatch(r'alertname=~?"([A-Za-z|]+)"', matcher).group(1).split("|")
            assert set(names) <= ALERT_NAMES, matcher


# -- delivered through a real Alertmanager --------------------------------------------


@pytest.fixture
def delivery(tmp_path):
    running = Delivery.start(
        tmp_path,
        required_tool("prometheus", "prometheus"),
        required_tool("prometheus-alertmanager", "prometheus-alertmanager"),
    )
    try:
        yield running
    finally:
        running.stop()


def low(status: str):
    return lambda n: n.alerts("IbaneraBalanceLow", status, asset_account_id=str(PAYROLL))


def test_a_drained_account_is_delivered_firing_then_resolved(delivery):
    # 20 000 USD: above the USD threshold (10 000), below the account's own floor (50 000).
    set_available(delivery.stack, PAYROLL, "20000")
    firing = delivery.webhook.wait_for(low("firing"), "with IbaneraBalanceLow firing for Payroll USD")
    assert firing.receiver == "chat"  # severity warning
    assert firing.payload["groupLabels"] == {"alertname": "IbaneraBalanceLow", "connection": "c0"}
    (alert,) = low("firing")(firing)
    assert {k: v for k, v in alert["labels"].items() if k != "instance"} == {
        "alertname": "IbaneraBalanceLow",
        "severity": "warning",
        "job": "ibanera",
        "connection": "c0",
        "asset_account_id": "1001",
        "asset": "USD",
        "name": "Payroll USD",
    }
    assert alert["annotations"]["summary"] == "Ibanera Payroll USD (1001) on c0 is below its low-balance floor."
    assert alert["annotations"]["description"].startswith(
        "Available USD on Payroll USD (1001) (c0) is 20k, below its floor"
    )

    set_available(delivery.stack, PAYROLL, "60000")
    resolved = delivery.webhook.wait_for(low("resolved"), "with IbaneraBalanceLow resolved for Payroll USD")
    assert resolved.receiver == "chat" and resolved.payload["status"] == "resolved"


def test_while_the_data_is_stale_the_low_balance_alert_is_held_back(delivery):
    set_available(delivery.stack, PAYROLL, "20000")
    delivery.webhook.wait_for(low("firing"), "with IbaneraBalanceLow firing for Payroll USD")
    assert [a["status"]["state"] for a in delivery.alertmanager.alerts("IbaneraBalanceLow")] == ["active"]

    # Every poll from now on is refused: the balances freeze at their last good values.
    delivery.stack.simulator.inject(Fault("status0", "balances", message_code="Maintenance"), times=1_000_000)
    stale = delivery.webhook.wait_for(
        lambda n: n.alerts("IbaneraDataStale", "firing", connection="c0"), "with IbaneraDataStale firing for c0"
    )
    assert stale.receiver == "pager"  # severity critical

    def held_back():
        return [a for a in delivery.alertmanager.alerts("IbaneraBalanceLow") if a["status"]["state"] == "suppressed"]

    held = eventually(held_back)
    (stale_alert,) = delivery.alertmanager.alerts("IbaneraDataStale")
    assert held and held[0]["status"]["inhibitedBy"] == [stale_alert["fingerprint"]], held
    # Still what Prometheus says: the alert is held back by Alertmanager, not resolved by the rules.
    assert [a["state"] for a in delivery.prometheus.alerts("IbaneraBalanceLow")] == ["firing"]


# -- what an inhibition holds back, and what it must not ---------------------------------


def test_a_stale_connection_or_a_down_exporter_holds_back_its_own_alerts_only(tmp_path):
    # Alerts posted straight to a real Alertmanager running the shipped inhibitions: two
    # exporters (e1, e2), two connections (a, b) on e1 sharing an account id and an asset.
    alertmanager = Alertmanager(
        required_tool("prometheus-alertmanager", "prometheus-alertmanager"),
        tmp_path,
        local_alertmanager_config("http://127.0.0.1:9/unused"),
    )
    try:

        def alert(name: str, instance: str, connection: str | None = None, **labels: str) -> dict:
            where = {"connection": connection} if connection else {}
            return {"labels": {"alertname": name, "job": "ibanera", "instance": instance, **where, **labels}}

        low = {"asset_account_id": "1001", "asset": "USD", "severity": "warning"}
        alerts = [
            alert("IbaneraDataStale", "e1:10095", "a", severity="critical"),
            alert("IbaneraBalanceLow", "e1:10095", "a", **low),
            alert("IbaneraBalanceLow", "e1:10095", "b", **low),
            alert("IbaneraBalanceLow", "e2:10095", "a", **low),
            alert("IbaneraExporterDown", "e2:10095", severity="critical"),
            alert("IbaneraPollingFailing", "e2:10095", "b", severity="warning"),
            alert("IbaneraPollingFailing", "e1:10095", "b", severity="warning"),
        ]
        alertmanager.http.post("/api/v2/alerts", json=alerts).raise_for_status()

        def states() -> dict[tuple[str, str, str], str]:
            return {
                (a["labels"]["alertname"], a["labels"]["instance"], a["labels"].get("connection", "")): a["status"][
                    "state"
                ]
                for name in ("IbaneraBalanceLow", "IbaneraPollingFailing")
                for a in alertmanager.alerts(name)
            }

        expected = {
            ("IbaneraBalanceLow", "e1:10095", "a"): "suppressed",  # its connection is stale
            ("IbaneraBalanceLow", "e1:10095", "b"): "active",  # another connection of that exporter
            ("IbaneraBalanceLow", "e2:10095", "a"): "suppressed",  # its exporter is down
            ("IbaneraPollingFailing", "e2:10095", "b"): "suppressed",
            ("IbaneraPollingFailing", "e1:10095", "b"): "active",  # another exporter
        }
        assert eventually(lambda: states() == expected), states()
    finally:
        alertmanager.stop()
