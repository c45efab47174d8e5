"""Every spelling the Ibanera docs show, read exactly through to /metrics; nothing looser."""

from __future__ import annotations

import logging
from dataclasses import replace
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import account
from scripted import envelope, reply
from test_hostile_api import script, scripted_poller

from exporter.config import ConfigError, Secret, parse_config
from exporter.dialect import Dialect, decimal_string
from exporter.model import InvalidRow, parse_account
from exporter.simulator import RawJson, SimAccount, SimCard, SimDialect

D = Decimal
ACCOUNTS = [
    SimAccount(1001, "USD", D("12345678901.23"), D("12345678900.00"), D("1.23")),
    SimAccount(1002, "BTC", D("0.00000001"), D("0"), D("0.00000001"), places=8),
    SimAccount(
        1003,
        "ETH",
        D("1.123456789012345678"),
        D("1.123456789012345678"),
        D("-0.000000000000000001"),
        suppressed=True,
        places=18,
    ),
]
CARDS = [SimCard(7, "EUR", D("2500.10"), D("2350.05"), D("150.05"), "4242", "EMP-1", "Ada", customers_id=77)]
ALL_AT_ONCE = SimDialect(
    pascal_case=True,
    account_id_key="assetAccountId",
    amounts_as_strings=True,
    customers_id_as_string=True,
    lower_case_codes=True,
    error_type=True,
)
DIALECTS = {
    "the JSON samples": SimDialect(),
    "PascalCase": SimDialect(pascal_case=True),
    "assetAccountId": SimDialect(account_id_key="assetAccountId"),
    "amounts as strings": SimDialect(amounts_as_strings=True),
    "lower-case codes": SimDialect(lower_case_codes=True),
    "customersID as a string": SimDialect(customers_id_as_string=True),
    "error items with errorType": SimDialect(error_type=True),
    "all at once": ALL_AT_ONCE,
}


@pytest.mark.parametrize("dialect", DIALECTS.values(), ids=DIALECTS.keys())
def test_every_dialect_is_read_exactly_through_to_metrics(make_stack, dialect):
    stack = make_stack(ACCOUNTS, simulator={"cards": CARDS}, connections=[{"cards": True, "page_size": 2}])
    stack.simulator.set_dialect(dialect)
    stack.poll()
    status = stack.pollers[0].status()
    assert [
        (a.asset_account_id, a.asset, a.total, a.available, a.pending, a.suppressed)
        for a in status.accounts.snapshot.rows
    ] == [
        (1001, "USD", D("12345678901.23"), D("12345678900.00"), D("1.23"), False),
        (1002, "BTC", D("0.00000001"), D("0"), D("0.00000001"), False),
        (1003, "ETH", D("1.123456789012345678"), D("1.123456789012345678"), D("-0.000000000000000001"), True),
    ]
    assert [
        (c.card_id, c.currency, c.total, c.card_last4, c.customers_reference) for c in status.cards.snapshot.rows
    ] == [(7, "EUR", D("2500.10"), "4242", "EMP-1")]
    metrics = stack.metrics()
    btc = frozenset({("connection", "c0"), ("asset_account_id", "1002"), ("asset", "BTC")})
    eth = frozenset({("connection", "c0"), ("asset_account_id", "1003"), ("asset", "ETH")})
    assert metrics[("ibanera_total_balance", btc)] == 1e-08
    assert metrics[("ibanera_account_suppressed", eth)] == 1
    card = frozenset({("connection", "c0"), ("card_id", "7"), ("currency", "EUR")})
    assert metrics[("ibanera_card_available_balance", card)] == 2350.05


def test_a_refusal_in_pascal_case_with_errorType_names_its_messageCode(make_stack):
    stack = make_stack([account(1)], connections=[{"password": Secret("not-the-password")}])
    stack.simulator.set_dialect(ALL_AT_ONCE)
    stack.poll()
    assert stack.value("ibanera_login_failures_total", connection="c0", reason="Username_Or_Password_Incorrect") == 1


def test_dialects_may_change_from_page_to_page(make_stack):
    stack = make_stack([account(i, total=f"{i}.5") for i in range(1, 6)], connections=[{"page_size": 2}])
    stack.simulator.set_dialect(SimDialect(pascal_case=True, amounts_as_strings=True), page=2)
    stack.simulator.set_dialect(SimDialect(account_id_key="assetAccountId", lower_case_codes=True), page=3)
    listed = stack.pollers[0].client.fetch_balances()
    assert [(a.asset_account_id, a.asset, a.total) for a in listed.rows] == [
        (i, "USD", D(f"{i}.5")) for i in range(1, 6)
    ]
    assert listed.dialect.describe() == (
        "keys PascalCase and camelCase, account id as assetAccountId and as id, "
        "amounts as numbers and as strings, codes not upper case and upper case"
    )


def test_the_dialect_is_logged_once_per_connection_and_again_when_it_changes(make_stack, caplog):
    stack = make_stack([account(1)])
    with caplog.at_level(logging.INFO, logger="exporter.api"):
        stack.poll()
        stack.poll()
        stack.simulator.set_dialect(SimDialect(amounts_as_strings=True))
        stack.poll()
    told = [r.dialect for r in caplog.records if r.getMessage() == "the API's dialect"]
    assert told == [
        "keys camelCase, account id as id, amounts as numbers, codes upper case",
        "keys camelCase, account id as id, amounts as strings, codes upper case",
    ]


# -- as strict as before, apart from the spellings ---------------------------------------

STRICT_REFUSALS = {
    "exponent in a string": "1e5",
    "NaN in a string": "NaN",
    "Infinity in a string": "Infinity",
    "hex": "0x10",
    "leading space": " 1.00",
    "trailing space": "1.00 ",
    "empty string": "",
    "plus sign": "+1",
    "no integer part": ".5",
    "no fraction digits": "5.",
    "thousands separator": "1,000.00",
    "leading zero": "01.5",
    "other scripts' digits": "١٢",
    "underscore": "1_000",
    "two minus signs": "--1",
    "a lone minus": "-",
    "41 digits": "1" * 41,
    "10 000 digits": "9" * 10_000,
}


@pytest.mark.parametrize("text", STRICT_REFUSALS.values(), ids=STRICT_REFUSALS.keys())
def test_decimal_strings_outside_the_grammar_reject_the_poll(make_stack, text):
    stack = make_stack([account(1, total="5"), account(2, total="6")])
    stack.poll()
    stack.simulator.update_account(2, raw=(("totalBalance", text),))
    stack.poll()
    assert stack.value("ibanera_poll_failures_total", connection="c0", reason="malformed") == 1
    assert stack.balances("ibanera_total_balance") == {"1": 5.0, "2": 6.0}  # the last good poll, untouched
    assert "account 2: totalBalance is" in stack.pollers[0].status().accounts.last_error


@pytest.mark.parametrize(
    "text, value",
    [
        ("1234.56", D("1234.56")),
        ("-0.00000001", D("-0.00000001")),
        ("0", D(0)),
        ("-0.5", D("-0.5")),
        ("9" * 40, D("9" * 40)),
        ("0." + "0" * 37 + "1", D("1e-38")),
    ],
)
def test_decimal_strings_in_the_grammar_are_exact(text, value):
    assert decimal_string(text) == value


@pytest.mark.parametrize(
    "raw, says",
    [
        (RawJson("1" * 41), "totalBalance has more than 40 digits"),
        (RawJson("9" * 10_000), "a number has 10000 characters"),
        (RawJson("0." + "0" * 9_997 + "1"), "a number has 10000 characters"),
        (RawJson("1e400"), "totalBalance is not a finite number"),
        # One digit, but far below what a float holds: it would be published as 0 (or -0).
        (RawJson("1e-400"), "totalBalance has more than 40 decimal places"),
        (RawJson("-1e-999999"), "totalBalance has more than 40 decimal places"),
        (RawJson("1e-41"), "totalBalance has more than 40 decimal places"),
    ],
)
def test_json_numbers_have_a_bounded_number_of_digits_too(make_stack, raw, says):
    stack = make_stack([account(1)])
    stack.simulator.update_account(1, raw=(("totalBalance", raw),))
    stack.poll()
    assert stack.value("ibanera_up", connection="c0") == 0
    assert says in stack.pollers[0].status().accounts.last_error


@pytest.mark.parametrize(
    "raw, ok",
    [
        ((("assetAccountId", 1),), True),  # both names, one id
        ((("assetAccountId", 4),), False),  # both names, two ids: which is true cannot be known
        ((("TotalBalance", D("1.00")),), False),  # one key in two cases: the same
        ((("TOTALBALANCE", D("100.00")),), False),  # even with the same value
        ((("bSuppressed", "false"),), False),  # booleans stay booleans
        ((("bSuppressed", 0),), False),
        ((("id", "1"),), False),  # ids stay integers
        ((("id", 2**63),), False),  # and fit a .NET long
    ],
)
def test_what_stays_strict(make_stack, raw, ok):
    stack = make_stack([account(1)])
    stack.simulator.update_account(1, raw=raw)
    stack.poll()
    assert stack.value("ibanera_up", connection="c0") == (1 if ok else 0)


def test_two_ids_that_differ_are_named_in_the_error():
    with pytest.raises(InvalidRow, match="id 1 and assetAccountId 4 differ"):
        parse_account(
            {
                "id": 1,
                "assetAccountId": 4,
                "asset": "USD",
                "totalBalance": 1,
                "availableBalance": 1,
                "pendingBalance": 0,
                "bSuppressed": False,
            }
        )


def test_keys_outside_ascii_are_not_folded_onto_ascii_ones():
    # The Kelvin sign lower-cases to k in Unicode; no key of ours has a k, but the rule is ASCII-only.
    row = {
        "id": 1,
        "asset": "USD",
        "totalBalance": 1,
        "availableBalance": 1,
        "pendingBalance": 0,
        "bSuppressed": False,
        "\u212a": "x",
        "k": "y",
    }
    assert parse_account(row).asset_account_id == 1


# -- codes are case-insensitive ------------------------------------------------------------


def test_lower_case_codes_join_thresholds_set_in_any_case(make_stack):
    stack = make_stack(
        [account(1, asset="USD", total="50")],
        simulator={"cards": CARDS},
        connections=[{"cards": True}],
        config={"low_available_balance": _thresholds({"uSd": 100})["low_available_balance"]},
    )
    stack.simulator.set_dialect(SimDialect(lower_case_codes=True))
    stack.poll()
    assert stack.value("ibanera_balance_low_threshold", asset="USD") == 100
    assert stack.balances("ibanera_available_balance") == {"1": 50.0}
    assert stack.value("ibanera_available_balance", connection="c0", asset_account_id="1", asset="USD") == 50
    assert stack.value("ibanera_card_available_balance", connection="c0", card_id="7", currency="EUR") == 2350.05


def test_codes_padded_with_spaces_are_the_same_code(make_stack):
    # A code from a fixed-width column ("USD ") is USD: a label of its own would join no threshold.
    stack = make_stack(
        [account(1, total="50"), account(2, total="60"), account(3, total="70")],
        config={"low_available_balance": _thresholds({" usd": 100})["low_available_balance"]},
    )
    stack.simulator.update_account(1, raw=(("asset", "USD "),))
    stack.simulator.update_account(2, raw=(("asset", " usd"),))
    stack.poll()
    assert {labels for (name, labels) in stack.metrics() if name == "ibanera_available_balance"} == {
        frozenset({("connection", "c0"), ("asset_account_id", str(i)), ("asset", "USD")}) for i in (1, 2, 3)
    }
    assert stack.value("ibanera_balance_low_threshold", asset="USD") == 100
    assert (
        "codes not upper case and upper case and with spaces around"
        in stack.pollers[0].client.fetch_balances().dialect.describe()
    )


def _thresholds(low: dict, cards: dict | None = None) -> dict:
    config = parse_config(
        {
            "connections": [{"name": "x", "username": "u", "password": "p", "totp_secret": "JBSWY3DP"}],
            "thresholds": {"low_available_balance": low, "low_available_card_balance": cards or {}},
        },
        "t.yaml",
    )
    return {
        "low_available_balance": config.low_available_balance,
        "low_available_card_balance": config.low_available_card_balance,
    }


def test_threshold_keys_are_upper_cased():
    assert _thresholds({"usd": 1, "Btc": "0.5"}, {"eur": 2}) == {
        "low_available_balance": {"USD": D(1), "BTC": D("0.5")},
        "low_available_card_balance": {"EUR": D(2)},
    }


def test_two_threshold_keys_for_one_code_are_a_config_error():
    with pytest.raises(ConfigError, match=r"thresholds.low_available_balance.usd: the same code as USD"):
        _thresholds({"USD": 1, "usd": 2})


@pytest.mark.parametrize("amount", ["1e400", "-1e999999"])
def test_a_threshold_beyond_float_range_is_a_config_error(amount):
    # It would be exported as +Inf (or -Inf): every balance low, or none ever.
    with pytest.raises(ConfigError, match=r"thresholds.low_available_balance.USD: expected a finite number"):
        _thresholds({"USD": amount})


@pytest.mark.parametrize("amount", ["1e-400", "-1e-41", "0.00000000000000000000000000000000000000001"])
def test_a_threshold_too_small_to_export_is_a_config_error(amount):
    # It would be exported as 0 (or -0), and a floor of 0 never alerts.
    with pytest.raises(ConfigError, match=r"thresholds.low_available_balance.USD: more than 40 decimal places"):
        _thresholds({"USD": amount})


def test_a_dialect_describes_itself_for_people():
    assert Dialect().describe() == "no rows to tell"
    assert Dialect(frozenset({("amounts", "as strings"), ("keys", "PascalCase")})).describe() == (
        "keys PascalCase, amounts as strings"
    )


# -- paging metadata the walk cannot read is malformed, not left out ------------------------


def _thirty_accounts_in_pages_of_ten(meta):
    def balances(request, sock) -> None:
        number = int(parse_qs(urlsplit(request.path).query).get("pageNumber", ["1"])[0])
        rows = [
            {
                "id": i,
                "asset": "USD",
                "totalBalance": 1,
                "availableBalance": 1,
                "pendingBalance": 0,
                "bSuppressed": False,
            }
            for i in range(number * 10 - 9, number * 10 + 1)
        ]
        reply(sock, 200, envelope(rows, pageNumber=number, **meta))

    return balances


@pytest.mark.parametrize(
    "meta, says",
    [
        ({"pageSize": "10", "numberOfPages": "3"}, "numberOfPages is not a whole number"),  # every number as a string
        ({"pageSize": "10"}, "pageSize is not a whole number"),
        ({"pageSize": 10, "numberOfPages": 3.0}, "numberOfPages is not a whole number"),
        ({"pageSize": 10, "numberOfPages": -1}, "numberOfPages is not a whole number"),
        ({"pageSize": 10, "numberOfPages": 0}, "numberOfPages is 0, but the page has rows"),
    ],
)
@pytest.mark.parametrize("page_size", [100, "all"])
def test_paging_metadata_that_cannot_be_read_rejects_the_poll_rather_than_cutting_the_list(
    serve, meta, says, page_size
):
    # The server pages by 10 whatever was asked; a walk that ignored what it could not read
    # would end at page 1 (10 rows, short of 100) and publish 10 of 30 accounts.
    server = serve(script(_thirty_accounts_in_pages_of_ten(meta)))
    poller = scripted_poller(server)
    poller.client.connection = replace(poller.client.connection, page_size=page_size)
    poller.poll_once()
    status = poller.status().accounts
    assert status.snapshot is None and says in status.last_error


@pytest.mark.parametrize("amount", [-1, "-0.01", "-1e3"])
def test_a_negative_threshold_is_a_config_error(amount):
    # No overdraft on Ibanera accounts or cards: a negative floor never alerts.
    with pytest.raises(ConfigError, match=r"thresholds.low_available_balance.USD: must be zero or more"):
        _thresholds({"USD": amount})
    # Mutation: amount() for floor() on the card thresholds only passed every test.
    with pytest.raises(ConfigError, match=r"thresholds.low_available_card_balance.USD: must be zero or more"):
        _thresholds({}, {"USD": amount})
