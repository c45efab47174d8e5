"""The alert rules, recording rules and Grafana dashboard, proven with promtool and a real Prometheus.

promtool and prometheus come from the Debian package `prometheus` (.ci/run installs it).
Without them these tests skip with a plain message on a developer's machine, and fail in CI.
"""

from __future__ import annotations

import json
import re
import subprocess
from decimal import Decimal

import httpx
import pytest
import yaml
from conftest import ROOT, FakeClock, Running, build_stack, required_tool
from daemons import Prometheus, eventually

from exporter.config import AccountConfig
from exporter.simulator import demo_accounts

DASHBOARDS = ROOT / "dashboards"
ALERTS = DASHBOARDS / "alerts.yaml"
RULES = DASHBOARDS / "rules.yaml"
DASHBOARD = DASHBOARDS / "ibanera-balances.json"
VARIABLES = {"$connection": ".*", "$asset": ".*", "$account": ".*"}


def tool(name: str) -> str:
    return required_tool(name, "prometheus")


def alert_rules() -> list[dict]:
    return [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]


def recording_rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict]:
    found = []
    for panel in dashboard()["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))  # panels inside collapsed rows
    return found


def dashboard_queries(rate_interval: str) -> list[tuple[str, str]]:
    """(panel title, PromQL with the dashboard's variables filled in as 'All')."""
    queries = []
    for panel in panels():
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", rate_interval)
            for variable, value in VARIABLES.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, (panel["title"], expr)
            queries.append((panel["title"], expr))
    return queries


def metric_names(expr: str) -> set[str]:
    """The metric names in a PromQL expression (ours all start with ibanera_ or name a recording rule)."""
    return {t for t in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr) if "ibanera_" in t}


# -- static checks --------------------------------------------------------------------


def test_promtool_check_rules():
    result = subprocess.run(
        [tool("promtool"), "check", "rules", str(ALERTS), str(RULES)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_of_every_alert():
    result = subprocess.run(
        [tool("promtool"), "test", "rules", str(DASHBOARDS / "tests" / "alerts_test.yaml")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr


def test_every_alert_has_a_unit_test_that_sees_it_fire():
    tests = yaml.safe_load((DASHBOARDS / "tests" / "alerts_test.yaml").read_text())["tests"]
    fired = {case["alertname"] for t in tests for case in t.get("alert_rule_test", []) if case["exp_alerts"]}
    quiet = {case["alertname"] for t in tests for case in t.get("alert_rule_test", []) if not case["exp_alerts"]}
    names = {r["alert"] for r in alert_rules()}
    assert fired == names and quiet == names


def test_alerts_are_named_and_annotated_like_a_mixin():
    for rule in alert_rules():
        assert re.fullmatch(r"Ibanera[A-Z][A-Za-z]+", rule["alert"]), rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning", "info")
        assert {"summary", "description", "runbook", "dashboard_url"} <= set(rule["annotations"]), rule["alert"]


def test_dashboard_is_an_importable_grafana_11_dashboard():
    board = dashboard()
    assert 36 <= board["schemaVersion"] <= 41 and board["uid"] == "ibanera-balances"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert {"connection", "asset", "account"} <= set(variables)
    ids = [p["id"] for p in panels()]
    assert len(ids) == len(set(ids))
    for panel in panels():
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"]), panel["title"]
    titles = {p["title"] for p in panels()}
    assert {
        "Accounts",
        "Polling",
        "Data age",
        "Suppressed accounts",
        "Available balance by asset",
        "Poll duration",
        "Retries",
        "Logins and refusals",
        "Token lifetime left",
    } <= titles


def test_every_dashboard_query_parses(tmp_path):
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": expr}
                    for i, (_, expr) in enumerate(dashboard_queries("5m"))
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run([tool("promtool"), "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# -- against what the exporter really exposes -----------------------------------------


@pytest.fixture(scope="module")
def demo_exposition() -> str:
    """/metrics of `ibanera-exporter --demo`, after its first good poll."""
    exporter = Running("--demo")
    try:
        exporter.wait_ready()
        return httpx.get(exporter.url + "/metrics").text
    finally:
        exporter.stop()


def exposed(exposition: str) -> dict[str, set[str]]:
    """{sample name: label names} of an exposition."""
    found: dict[str, set[str]] = {}
    for line in exposition.splitlines():
        match = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s", line)
        if match and not line.startswith("#"):
            found.setdefault(match.group(1), set()).update(re.findall(r'(\w+)="', match.group(3) or ""))
    return found


def test_every_metric_in_rules_and_panels_is_exposed(demo_exposition):
    names = exposed(demo_exposition)
    recorded = {r["record"] for r in recording_rules()}
    expressions = [r["expr"] for r in alert_rules() + recording_rules()] + [e for _, e in dashboard_queries("5m")]
    for expr in expressions:
        for name in metric_names(expr):
            assert name in (recorded if ":" in name else names), f"{name} in {expr!r}"


def test_every_label_in_annotations_and_legends_exists(demo_exposition):
    names = exposed(demo_exposition)
    scrape_labels = {"job", "instance"}
    for rule in alert_rules():
        available = scrape_labels.union(*(names.get(m, set()) for m in metric_names(rule["expr"])))
        for label in re.findall(r"\$labels\.(\w+)", json.dumps(rule["annotations"])):
            assert label in available, (rule["alert"], label)
    for panel in panels():
        for target in panel.get("targets", []):
            available = scrape_labels.union(*(names.get(m, set()) for m in metric_names(target["expr"])))
            for _name in metric_names(target["expr"]) & {r["record"] for r in recording_rules()}:
                available |= {"connection", "asset"}  # what the recording rules keep
            for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")):
                assert label in available, (panel["title"], label)


def test_promtool_check_metrics_finds_no_problem(demo_exposition):
    result = subprocess.run(
        [tool("promtool"), "check", "metrics"], input=demo_exposition, capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout.strip() == "" and result.stderr.strip() == "", (
        result.stdout + result.stderr
    )


# -- a real Prometheus scraping the exporter ------------------------------------------


LIVE_ACCOUNTS = {1001: AccountConfig(name="Payroll USD", low_available_balance=Decimal("50000"))}


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """The exporter polling the simulator every second, a real Prometheus scraping it every second."""
    binary = tool("prometheus")
    stack = build_stack(
        FakeClock(),
        demo_accounts(),
        connections=({"cards": True, "accounts": LIVE_ACCOUNTS},),
        config={
            "poll_interval": 1.0,
            "low_available_balance": {"USD": Decimal("10000"), "USDC": Decimal("5000")},
            "low_available_card_balance": {"USD": Decimal("200"), "EUR": Decimal("100")},
        },
    )
    try:
        stack.start_polling()
        prometheus = Prometheus(
            binary,
            tmp_path_factory.mktemp("prometheus"),
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(ALERTS), str(RULES)],
                "scrape_configs": [
                    {"job_name": "ibanera", "static_configs": [{"targets": [f"127.0.0.1:{stack.server.port}"]}]}
                ],
            },
        )
        try:
            # Enough scrapes for rate() and increase() over the 10s window the queries use.
            assert eventually(lambda: prometheus.query("count_over_time(ibanera_up[10s]) >= 6"), timeout=30)
            yield stack, prometheus
        finally:
            prometheus.stop()
    finally:
        stack.close()


def test_real_prometheus_scrapes_the_exporter(live):
    _, prometheus = live
    (up,) = prometheus.query('up{job="ibanera"}')
    assert up["value"][1] == "1"
    assert len(prometheus.query("ibanera_available_balance")) == len(demo_accounts())


def test_every_dashboard_query_returns_data(live):
    _, prometheus = live
    for title, expr in dashboard_queries("10s"):
        assert eventually(lambda expr=expr: prometheus.query(expr), timeout=10), f"no data for panel {title!r}: {expr}"


def test_the_account_variable_shows_names_beside_ids(live):
    """Grafana runs the variable's query_result() and reads ids and texts with its regex."""
    _, prometheus = live
    (variable,) = [v for v in dashboard()["templating"]["list"] if v["name"] == "account"]
    expr = variable["query"]["query"].removeprefix("query_result(").removesuffix(")")
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    regex = re.compile(variable["regex"].strip("/").replace("(?<", "(?P<"))
    options = {}
    for series in prometheus.query(expr):
        text = "{" + ", ".join(f'{k}="{v}"' for k, v in series["metric"].items()) + "}"
        match = regex.search(text)
        options[match.group("value")] = match.group("text")
    assert options == {str(a.id): "1001 · Payroll USD" if a.id == 1001 else str(a.id) for a in demo_accounts()}


def test_the_suppressed_demo_account_fires_its_alert(live):
    _, prometheus = live
    firing = eventually(lambda: [a for a in prometheus.alerts("IbaneraAccountSuppressed") if a["state"] == "firing"])
    assert [a["labels"]["asset_account_id"] for a in firing] == ["1003"]


def test_draining_an_account_raises_the_low_balance_alert(live):
    stack, prometheus = live

    def low_for_1001():
        return [a for a in prometheus.alerts("IbaneraBalanceLow") if a["labels"]["asset_account_id"] == "1001"]

    assert low_for_1001() == []
    # Above the USD threshold (10 000), below the account's own floor (50 000).
    stack.simulator.update_account(1001, available=Decimal("12345.67"), pending=Decimal("0"), total=Decimal("12345.67"))
    alerts = eventually(low_for_1001)
    assert alerts and alerts[0]["state"] in ("pending", "firing")
    assert alerts[0]["labels"]["severity"] == "warning" and alerts[0]["labels"]["name"] == "Payroll USD"
    assert alerts[0]["annotations"]["summary"] == "Ibanera Payroll USD (1001) on c0 is below its low-balance floor."
    assert alerts[0]["annotations"]["description"].startswith("Available USD on Payroll USD (1001) (c0) is 12.35k")


def test_a_card_below_its_threshold_raises_its_alert(live):
    _, prometheus = live
    alerts = eventually(
        lambda: [a for a in prometheus.alerts("IbaneraCardBalanceLow") if a["labels"]["card_id"] == "502"]
    )
    assert alerts and alerts[0]["state"] in ("pending", "firing") and alerts[0]["labels"]["currency"] == "USD"
