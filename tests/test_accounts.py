"""Accounts by name, with a floor each: the `accounts:` map of a connection and its two metric families."""

from __future__ import annotations

import logging
from dataclasses import replace
from decimal import Decimal

import pytest
from conftest import account
from test_config import MINIMAL, error_of, load

from exporter.config import AccountConfig, Config, ConnectionConfig, Secret
from exporter.metrics import HealthCollector

WITH_ACCOUNTS = (
    MINIMAL
    + """    accounts:
      1001: {name: Payroll USD, low_available_balance: 50000}
      "1002": {name: 'Suppliers "EU"'}
      1003: {low_available_balance: 0.5}
"""
)


def test_accounts_by_numeric_or_quoted_id(tmp_path):
    accounts = load(tmp_path, WITH_ACCOUNTS).connections[0].accounts
    assert accounts == {
        1001: AccountConfig(name="Payroll USD", low_available_balance=Decimal("50000")),
        1002: AccountConfig(name='Suppliers "EU"'),
        1003: AccountConfig(low_available_balance=Decimal("0.5")),
    }
    assert load(tmp_path, MINIMAL).connections[0].accounts == {}


@pytest.mark.parametrize(
    "entries, key, says",
    [
        ("abc: {name: x}", "accounts.abc", "whole number"),
        ("-5: {name: x}", "accounts.-5", "whole number"),
        ("9223372036854775808: {name: x}", "accounts.9223372036854775808", "2^63-1"),  # beyond any API id
        ("'9223372036854775808': {name: x}", "accounts.9223372036854775808", "2^63-1"),
        ("1.5: {name: x}", "accounts.1.5", "whole number"),
        ("yes: {name: x}", "accounts.True", "whole number"),  # YAML 1.1 reads `yes` as true
        ("1001: {name: x}\n      '1001': {name: y}", "accounts.1001", "listed twice"),
        ("1001: {}", "accounts.1001", "set name, low_available_balance or both"),
        ("1001: Payroll", "accounts.1001", "expected a mapping"),
        ("1001: {nmae: Payroll}", "accounts.1001.nmae", "unknown key"),
        ("1001: {name: ''}", "accounts.1001.name", "1-100 characters"),
        ("1001: {name: 42}", "accounts.1001.name", "got a number"),
        ('1001: {name: "two\\nlines"}', "accounts.1001.name", "one line of printable characters"),
        ("1001: {name: 'Payroll '}", "accounts.1001.name", "must not start or end with a space"),
        ("1001: {name: ' Payroll'}", "accounts.1001.name", "must not start or end with a space"),
        ("1001: {low_available_balance: -50000}", "accounts.1001.low_available_balance", "zero or more"),
        ("1001: {low_available_balance: .inf}", "accounts.1001.low_available_balance", "finite"),
        ("1001: {low_available_balance: plenty}", "accounts.1001.low_available_balance", "number"),
    ],
)
def test_each_mistake_in_the_accounts_map_names_its_key(tmp_path, entries, key, says):
    message = error_of(tmp_path, MINIMAL + "    accounts:\n      " + entries + "\n")
    assert f"connections[0].{key}" in message and says in message, message


def test_accounts_that_is_not_a_mapping(tmp_path):
    message = error_of(tmp_path, MINIMAL + "    accounts: [1001]\n")
    assert "connections[0].accounts" in message and "a list" in message


# -- exported -------------------------------------------------------------------------

NAMES = {
    1001: AccountConfig(name="Payroll USD", low_available_balance=Decimal("50000.25")),
    1002: AccountConfig(name='Back\\slash "quoted" – Zürich'),  # escaped in the exposition, read back exactly
    1003: AccountConfig(low_available_balance=Decimal("0")),
}


def families(stack) -> dict:
    return {
        key: value
        for key, value in stack.metrics().items()
        if key[0].startswith("ibanera_account_") and key[0] != "ibanera_account_suppressed"
    }


def test_names_and_floors_are_exported(make_stack):
    stack = make_stack([account(1001), account(1002), account(1003)], connections=[{"accounts": NAMES}])
    stack.poll()
    assert families(stack) == {
        (
            "ibanera_account_info",
            frozenset({"connection": "c0", "asset_account_id": "1001", "name": "Payroll USD"}.items()),
        ): 1.0,
        (
            "ibanera_account_info",
            frozenset(
                {"connection": "c0", "asset_account_id": "1002", "name": 'Back\\slash "quoted" – Zürich'}.items()
            ),
        ): 1.0,
        (
            "ibanera_account_low_threshold",
            frozenset({"connection": "c0", "asset_account_id": "1001"}.items()),
        ): 50000.25,
        ("ibanera_account_low_threshold", frozenset({"connection": "c0", "asset_account_id": "1003"}.items())): 0.0,
    }


def test_without_an_accounts_map_nothing_is_exported(make_stack):
    stack = make_stack([account(1001)])
    stack.poll()
    assert families(stack) == {}


def test_an_unknown_account_id_is_warned_about_once(make_stack, caplog):
    stack = make_stack(
        [account(1001)], connections=[{"accounts": {1001: AccountConfig(name="A"), 4242: AccountConfig(name="B")}}]
    )
    with caplog.at_level(logging.WARNING, logger="exporter.metrics"):
        for _ in range(3):
            stack.poll()
            stack.metrics()
    warnings = [r for r in caplog.records if r.name == "exporter.metrics"]
    assert [(r.levelname, r.asset_account_id, r.connection) for r in warnings] == [("WARNING", 4242, "c0")]
    # Still exported: the account may simply not be open yet.
    labels = frozenset({"connection": "c0", "asset_account_id": "4242", "name": "B"}.items())
    assert stack.metrics()[("ibanera_account_info", labels)] == 1.0


def test_a_config_swapped_at_run_time_shows_at_the_next_scrape():
    def config(accounts: dict[int, AccountConfig]) -> Config:
        secret = Secret("x")
        return Config(connections=(ConnectionConfig("c0", secret, secret, secret, accounts=accounts),))

    collector = HealthCollector(lambda: [], config({1001: AccountConfig(name="Old")}), "test", lambda: {})
    collector.replace_config(config({1001: AccountConfig(name="New")}))
    info = next(m for m in collector.collect() if m.name == "ibanera_account_info")
    assert [s.labels["name"] for s in info.samples] == ["New"]


def test_an_id_added_by_a_reload_is_warned_about_without_waiting_for_a_poll(make_stack, caplog):
    # A reload keeps the snapshot; with poll_interval 1h, the warning must not wait an hour.
    stack = make_stack([account(1001)], connections=[{"accounts": {1001: AccountConfig(name="A")}}])
    stack.poll()
    connection = stack.config.connections[0]
    collector = HealthCollector(lambda: [p.status() for p in stack.pollers], stack.config, "test", lambda: {})
    with caplog.at_level(logging.WARNING, logger="exporter.metrics"):
        list(collector.collect())
        accounts = {1001: AccountConfig(name="A"), 4242: AccountConfig(name="B")}
        collector.replace_config(Config(connections=(replace(connection, accounts=accounts),)))
        list(collector.collect())
        list(collector.collect())
    warnings = [r for r in caplog.records if r.name == "exporter.metrics"]
    assert [(r.asset_account_id, r.connection) for r in warnings] == [(4242, "c0")]


@pytest.mark.parametrize("key, read_as", [("01001", "513"), ("01_001", "513"), ("1:0", "60")])
def test_an_id_yaml_would_read_in_octal_or_base_60_is_refused(tmp_path, key, read_as):
    # Unquoted, YAML 1.1 reads 01001 as 513: the name and floor would go to another account.
    message = error_of(tmp_path, MINIMAL + f"    accounts:\n      {key}: {{name: Payroll}}\n")
    assert "line 8" in message and f"{key} is {read_as}" in message and "quote it" in message, message


def test_an_amount_yaml_would_read_in_base_60_is_refused(tmp_path):
    # YAML 1.1 reads 1:30.5 as 90.5 (a float in base 60): the floor would be another amount.
    message = error_of(tmp_path, MINIMAL + "thresholds:\n  low_available_balance:\n    USD: 1:30.5\n")
    assert "line 9" in message and "1:30.5 is 90.5" in message and "quote it" in message, message


def test_a_quoted_id_with_a_leading_zero_is_read_in_decimal(tmp_path):
    accounts = load(tmp_path, MINIMAL + '    accounts:\n      "01001": {name: Payroll}\n').connections[0].accounts
    assert accounts == {1001: AccountConfig(name="Payroll")}


def test_the_largest_api_id_is_accepted_quoted_or_not(tmp_path):
    for key in ("9223372036854775807", "'9223372036854775807'"):
        accounts = load(tmp_path, MINIMAL + f"    accounts:\n      {key}: {{name: Last}}\n").connections[0].accounts
        assert accounts == {2**63 - 1: AccountConfig(name="Last")}


@pytest.mark.parametrize(
    "extra, line",
    [
        ("    accounts:\n      1001: {low_available_balance: 50000}\n      1001: {name: Payroll}\n", 9),
        ("thresholds:\n  low_available_balance:\n    USD: 1000\n    USD: 10\n", 10),
        # A merge written twice kept the last one; a mapping written inside a merge was never checked.
        ("thresholds:\n  low_available_balance:\n    <<: {USD: 1000}\n    <<: {USD: 10}\n", 10),
        ("thresholds:\n  low_available_balance:\n    <<: {USD: 1000, USD: 10}\n", 9),
        ("    password: other\n", 7),
    ],
)
def test_a_key_written_twice_in_a_mapping_is_an_error_not_last_one_wins(tmp_path, extra, line):
    # The second 1001 silently dropped the first one's floor: no low-balance alert, and no word.
    message = error_of(tmp_path, MINIMAL + extra)
    assert f"line {line}" in message and "twice" in message, message


def test_a_key_from_a_merge_may_still_be_overridden(tmp_path):
    text = MINIMAL + "    accounts:\n      1001: &payroll {name: Payroll, low_available_balance: 5}\n"
    text += "      1002: {<<: *payroll, name: Payroll EU}\n"
    accounts = load(tmp_path, text).connections[0].accounts
    assert accounts[1002] == AccountConfig(name="Payroll EU", low_available_balance=Decimal("5"))
