"""The PromQL the rules are written in: the scrape job's selector, checked, and the pieces
every rule builds from it."""

from __future__ import annotations

import re
import textwrap
from typing import Any

DEFAULT_SELECTOR = 'job="ibanera"'
DEFAULT_DASHBOARD_URL = "https://grafana.example.com/d/ibanera-balances/ibanera-balances"
# Series of one account across the exporter's families.
ACCOUNT = "job, instance, connection, asset_account_id"

# One PromQL label matcher: a label name, an operator and a quoted string on one line.
_MATCHER = r"""[a-zA-Z_][a-zA-Z0-9_]*\s*(?:=~|!~|!=|=)\s*(?:"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')"""
_SELECTOR = re.compile(rf"\s*{_MATCHER}(?:\s*,\s*{_MATCHER})*\s*")

Rule = dict[str, Any]
Group = dict[str, Any]


class Rules:
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
        return f"(\n{indent(expr)}\n)\n* on({ACCOUNT}) group_left(name)\n  ({names})"


def check_selector(selector: str) -> None:
    """Raises ValueError unless `selector` is label matchers without braces: anything else would
    end up in every expression, the files' header comments and an annotation's template."""
    if not _SELECTOR.fullmatch(selector):
        raise ValueError(f'not label matchers without braces, such as job="ibanera", env=~"prod|dr": {selector!r}')
    if "{{" in selector or "}}" in selector:
        raise ValueError(f"{{{{ or }}}} would be template syntax in an annotation: {selector!r}")


def indent(text: str) -> str:
    return textwrap.indent(text, "  ")
