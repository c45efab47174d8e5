"""The alert and recording rules, written once with the scrape job's selector as a parameter.

    python -m exporter.rules --selector 'job="ibanera"' --output-dir dashboards

writes alerts.yaml and rules.yaml for Prometheus's rule_files. The files shipped in
dashboards/ are this module's output for the default selector (a test keeps them equal), so
edit the rules here. The idea is the monitoring mixins' `selector` setting: every metric the
rules read is filtered by it, so the rules work for any job name and never pick up another
job's series.
"""

from __future__ import annotations

import argparse
import re
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

DEFAULT_SELECTOR = 'job="ibanera"'
DEFAULT_DASHBOARD_URL = "https://grafana.example.com/d/ibanera-balances/ibanera-balances"
# Series of one account across the exporter's families.
ACCOUNT = "job, instance, connection, asset_account_id"

# One PromQL label matcher: a label name, an operator and a quoted string on one line.
_MATCHER = r"""[a-zA-Z_][a-zA-Z0-9_]*\s*(?:=~|!~|!=|=)\s*(?:"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')"""
_SELECTOR = re.compile(rf"\s*{_MATCHER}(?:\s*,\s*{_MATCHER})*\s*")

Rule = dict[str, Any]
Group = dict[str, Any]


class _Rules:
    """The rules for one selector and one dashboard URL."""

    def __init__(self, selector: str, dashboard_url: str) -> None:
        check_selector(selector)
        self.selector = selector
        self.dashboard_url = dashboard_url

    def m(self, metric: str, matchers: str = "") -> str:
        """`metric` filtered by the selector (and by `matchers`, if any)."""
        return f"{metric}{{{', '.join(filter(None, (self.selector, matchers)))}}}"

    def alert(
        self, name: str, expr: str, severity: str, summary: str, description: str, runbook: str, for_: str | None = None
    ) -> Rule:
        rule: Rule = {"alert": name, "expr": expr}
        if for_ is not None:
            rule["for"] = for_
        rule["labels"] = {"severity": severity}
        rule["annotations"] = {
            "summary": summary,
            "description": description,
            "runbook": runbook,
            "dashboard_url": self.dashboard_url,
        }
        return rule

    def low_floor(self) -> str:
        """Every account's floor: its own where the config sets one, its asset's threshold otherwise."""
        zero = f"0 * {self.m('ibanera_available_balance')}"
        return (
            f"{zero}\n  + on({ACCOUNT}) group_left() {self.m('ibanera_account_low_threshold')}\nor\n"
            f"{zero}\n  + on(job, instance, asset) group_left() {self.m('ibanera_balance_low_threshold')}"
        )

    def named(self, expr: str) -> str:
        """`expr` (one series per account) with the account's `name` label where the config gives one.

        The accounts without a name join a nameless 1 instead: a plain join would drop them.
        """
        names = f"{self.m('ibanera_account_info')} or on({ACCOUNT}) 0 * {self.m('ibanera_available_balance')} + 1"
        return f"(\n{_indent(expr)}\n)\n* on({ACCOUNT}) group_left(name)\n  ({names})"


def check_selector(selector: str) -> None:
    """Raises ValueError unless `selector` is label matchers without braces: anything else would
    end up in every expression, the files' header comments and an annotation's template."""
    if not _SELECTOR.fullmatch(selector):
        raise ValueError(f'not label matchers without braces, such as job="ibanera", env=~"prod|dr": {selector!r}')
    if "{{" in selector or "}}" in selector:
        raise ValueError(f"{{{{ or }}}} would be template syntax in an annotation: {selector!r}")


def _indent(text: str) -> str:
    return textwrap.indent(text, "  ")


def alert_groups(selector: str = DEFAULT_SELECTOR, dashboard_url: str = DEFAULT_DASHBOARD_URL) -> list[Group]:
    r = _Rules(selector, dashboard_url)
    return [
        {"name": "ibanera-exporter", "rules": _exporter_alerts(r)},
        {"name": "ibanera-balances", "rules": _balance_alerts(r)},
        {"name": "ibanera-cards", "rules": _card_alerts(r)},
    ]


def recording_groups(selector: str = DEFAULT_SELECTOR) -> list[Group]:
    """Per-asset sums across accounts by connection, and every account's floor, for the dashboard."""
    r = _Rules(selector, DEFAULT_DASHBOARD_URL)
    sums = [
        {"record": f"connection_asset:{metric}:sum", "expr": f"sum by (connection, asset) ({r.m(metric)})"}
        for metric in (
            "ibanera_total_balance",
            "ibanera_available_balance",
            "ibanera_pending_balance",
            "ibanera_account_suppressed",
        )
    ]
    floor = {"record": "connection_account:ibanera_low_threshold:effective", "expr": r.low_floor()}
    return [{"name": "ibanera-balances.rules", "rules": [*sums, floor]}]


def _exporter_alerts(r: _Rules) -> list[Rule]:
    up = r.m("up")
    return [
        r.alert(
            "IbaneraExporterDown",
            f"{up} == 0",
            "critical",
            "Prometheus cannot scrape the Ibanera exporter.",
            "{{ $labels.instance }} (job {{ $labels.job }}) has not answered a scrape for 5 minutes: "
            "no Ibanera balance is being watched.",
            "Check that the exporter process or pod runs and that its port is reachable from Prometheus; "
            "its log says why it stopped.",
            for_="5m",
        ),
        r.alert(
            "IbaneraExporterAbsent",
            f"absent({up})",
            "critical",
            "No Ibanera exporter is being scraped.",
            f"Prometheus has no target matching {{{r.selector}}} for 15 minutes; the exporter is gone from "
            "service discovery or the scrape config.",
            "Restore the scrape config, ServiceMonitor or Deployment of the exporter.",
            for_="15m",
        ),
        r.alert(
            "IbaneraPollingFailing",
            f"{r.m('ibanera_up')} == 0",
            "warning",
            "The Ibanera exporter cannot poll the API.",
            "Every poll of connection {{ $labels.connection }} on {{ $labels.instance }} has failed for 10 minutes. "
            "The balances shown are from the last good poll; ibanera_poll_failures_total says why.",
            'Read the exporter\'s "poll failed" log lines (reason=...). Transient reasons (timeout, http_5xx, '
            "http_429) usually mean Ibanera is degraded; login_refused or rejected need a person.",
            for_="10m",
        ),
        # A hung poller keeps ibanera_up at 1, so staleness is watched on its own.
        r.alert(
            "IbaneraDataStale",
            f"time() - {r.m('ibanera_last_success_timestamp_seconds')}\n"
            f"> on(job, instance) group_left() 3 * {r.m('ibanera_poll_interval_seconds')}",
            "critical",
            "Ibanera balances are stale.",
            "The last good poll of connection {{ $labels.connection }} ended {{ $value | humanizeDuration }} ago, "
            "more than three poll intervals: the balances on the dashboard are out of date.",
            "If IbaneraPollingFailing also fires, fix that first. Otherwise the poller is stuck; restart the "
            "exporter and report the log.",
            for_="15m",
        ),
        r.alert(
            "IbaneraLoginRefused",
            f"increase({r.m('ibanera_login_failures_total')}[1h]) > 0",
            "critical",
            "Ibanera refused the exporter's login.",
            "Ibanera refused a login of connection {{ $labels.connection }} ({{ $labels.reason }}). The exporter "
            "now pauses logins for login_backoff, but repeated refusals lock the account for everyone using it.",
            "Check the API user's username, password and TOTP secret (and totp_secret_encoding) and the machine's "
            "clock, fix the secret, then restart the exporter. Account_Locked means wait 10 minutes first.",
        ),
    ]


# The account as a treasury team says it: "Payroll USD (1001)", or "account 1001" without a name.
_ACCOUNT_NAME = (
    "{{ with $labels.name }}{{ . }} ({{ $labels.asset_account_id }}){{ else }}"
    "account {{ $labels.asset_account_id }}{{ end }}"
)


def _balance_alerts(r: _Rules) -> list[Rule]:
    available = r.m("ibanera_available_balance")
    return [
        r.alert(
            "IbaneraBalanceLow",
            f"{available}\n< on({ACCOUNT}) group_left(name)\n(\n{_indent(r.named(r.low_floor()))}\n)",
            "warning",
            f"Ibanera {_ACCOUNT_NAME} on {{{{ $labels.connection }}}} is below its low-balance floor.",
            f"Available {{{{ $labels.asset }}}} on {_ACCOUNT_NAME} ({{{{ $labels.connection }}}}) is "
            "{{ $value | humanize }}, below its floor: accounts.<id>.low_available_balance where set, else "
            "thresholds.low_available_balance.{{ $labels.asset }}.",
            "Fund the account before payments from it fail, or lower its floor in config.yaml if it no longer fits.",
            for_="5m",
        ),
        # The shape of node-mixin's filesystem-filling alerts: the trend of the last 6 hours,
        # projected forward, reaches zero within the horizon.
        *(
            r.alert(
                "IbaneraBalanceRunningOut",
                f"predict_linear({available}[6h], {horizon} * 3600) < 0\nand {available} > 0",
                severity,
                f"An Ibanera account is predicted to run dry within {within}.",
                "At the rate of the last 6 hours, available {{ $labels.asset }} on account "
                f"{{{{ $labels.asset_account_id }}}} ({{{{ $labels.connection }}}}) reaches zero within {soon}.",
                runbook,
                for_=for_,
            )
            for horizon, severity, within, soon, runbook, for_ in (
                (24, "warning", "24 hours", "a day", "Check the outflows from the account and plan a top-up.", "1h"),
                (4, "critical", "4 hours", "4 hours", "Fund the account now or stop the payments draining it.", "30m"),
            )
        ),
        # Suppression is a state the bank reports, not a noisy signal: page at once.
        r.alert(
            "IbaneraAccountSuppressed",
            f"{r.m('ibanera_account_suppressed')} == 1",
            "critical",
            "An Ibanera account is suppressed.",
            "Use of {{ $labels.asset }} account {{ $labels.asset_account_id }} ({{ $labels.connection }}) is "
            "disabled by Ibanera: payments from it will fail.",
            "Contact Ibanera support to learn why the account was suppressed and how to lift it.",
        ),
        r.alert(
            "IbaneraPendingBalanceHigh",
            f"{r.m('ibanera_pending_balance')} > 0.5 * {r.m('ibanera_total_balance')}\n"
            f"and {r.m('ibanera_total_balance')} > 0",
            "info",
            "Much of an Ibanera account's balance is pending.",
            "{{ $value | humanize }} {{ $labels.asset }} on account {{ $labels.asset_account_id }} "
            "({{ $labels.connection }}) has been pending for an hour: more than half of the total balance.",
            "Check for stuck incoming transfers; the available balance is what can be spent.",
            for_="1h",
        ),
    ]


def _card_alerts(r: _Rules) -> list[Rule]:
    return [
        r.alert(
            "IbaneraCardBalanceLow",
            f"{r.m('ibanera_card_available_balance')}\n"
            f"< on(job, instance, currency) group_left() {r.m('ibanera_card_low_threshold')}",
            "warning",
            "An Ibanera card is below its low-balance threshold.",
            "Available {{ $labels.currency }} on card {{ $labels.card_id }} ({{ $labels.connection }}) is "
            "{{ $value | humanize }}, below thresholds.low_available_card_balance.{{ $labels.currency }}.",
            "Top up the card before payments with it are declined, or lower the threshold in config.yaml.",
            for_="5m",
        ),
        # ibanera_up is about the account balances; card polling has a signal of its own.
        r.alert(
            "IbaneraCardPollingFailing",
            f"{r.m('ibanera_cards_up')} == 0",
            "warning",
            "The Ibanera exporter cannot poll card balances.",
            "Every card poll of connection {{ $labels.connection }} on {{ $labels.instance }} has failed for "
            "10 minutes; card balances are from the last good poll. ibanera_card_poll_failures_total says why.",
            'Read the exporter\'s "card poll failed" log lines (reason=...); account balances are polled on '
            "regardless.",
            for_="10m",
        ),
    ]


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the longer expressions) as literal blocks, as a person would write them."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _string)


def render(groups: list[Group], what: str, selector: str) -> str:
    header = (
        f"# {what} for ibanera-exporter, for the series matching {{{selector}}}.\n"
        "# Generated by `python -m exporter.rules` (exporter/rules.py): edit that, not this file.\n"
    )
    return header + yaml.dump({"groups": groups}, Dumper=_Dumper, sort_keys=False, width=120, allow_unicode=True)


def files(selector: str = DEFAULT_SELECTOR, dashboard_url: str = DEFAULT_DASHBOARD_URL) -> dict[str, str]:
    """{file name: text} of the two rule files."""
    return {
        "alerts.yaml": render(alert_groups(selector, dashboard_url), "Alert rules", selector),
        "rules.yaml": render(recording_groups(selector), "Recording rules (for the dashboard)", selector),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m exporter.rules", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--selector",
        default=DEFAULT_SELECTOR,
        help=f"label matchers of the exporter's series, without braces (default: {DEFAULT_SELECTOR})",
    )
    parser.add_argument("--dashboard-url", default=DEFAULT_DASHBOARD_URL, help="your Grafana's URL of the dashboard")
    parser.add_argument("--output-dir", type=Path, default=Path("."), help="where to write alerts.yaml and rules.yaml")
    args = parser.parse_args(argv)
    try:
        check_selector(args.selector)
    except ValueError as exc:
        parser.error(f"--selector: {exc}")
    for name, text in files(args.selector, args.dashboard_url).items():
        (args.output_dir / name).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
