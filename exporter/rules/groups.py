"""The alert and recording rule groups: every expression filtered by the selector."""

from __future__ import annotations

from .promql import ACCOUNT, DEFAULT_DASHBOARD_URL, DEFAULT_SELECTOR, Group, Rule, Rules, indent


def alert_groups(selector: str = DEFAULT_SELECTOR, dashboard_url: str = DEFAULT_DASHBOARD_URL) -> list[Group]:
    r = Rules(selector, dashboard_url)
    return [
        {"name": "ibanera-exporter", "rules": _exporter_alerts(r)},
        {"name": "ibanera-balances", "rules": _balance_alerts(r)},
        {"name": "ibanera-cards", "rules": _card_alerts(r)},
    ]


def recording_groups(selector: str = DEFAULT_SELECTOR) -> list[Group]:
    """Per-asset sums across accounts by connection, and every account's floor, for the dashboard."""
    r = Rules(selector, DEFAULT_DASHBOARD_URL)
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


def _exporter_alerts(r: Rules) -> list[Rule]:
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


def _balance_alerts(r: Rules) -> list[Rule]:
    available = r.m("ibanera_available_balance")
    return [
        r.alert(
            "IbaneraBalanceLow",
            f"{available}\n< on({ACCOUNT}) group_left(name)\n(\n{indent(r.named(r.low_floor()))}\n)",
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


def _card_alerts(r: Rules) -> list[Rule]:
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
