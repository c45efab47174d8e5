"""Card balances: pagination, exact amounts, failures of their own, vanished cards, personal data."""

from __future__ import annotations

from decimal import Decimal

import pytest
from conftest import account

from exporter.simulator import CARDS_PATH, Fault, SimCard

D = Decimal


def card(
    id: int, currency: str = "USD", available: str = "10.00", status: str = "Active", holder: str = "Jane Doe"
) -> SimCard:
    return SimCard(id, currency, D(available) + 1, D(available), D(1), f"{id % 10000:04d}", f"REF-{id}", holder, status)


def cards_of(stack, name: str = "ibanera_card_available_balance") -> dict[str, float]:
    return {dict(labels)["card_id"]: v for (n, labels), v in stack.metrics().items() if n == name}


def test_cards_are_off_by_default(make_stack):
    stack = make_stack([account(1)])
    stack.poll()
    assert stack.simulator.requests[CARDS_PATH] == 0
    assert not [k for k in stack.metrics() if k[0].startswith("ibanera_card")]


@pytest.mark.parametrize("count, pages", [(25, 3), (30, 3), (0, 1)])
def test_every_page_of_cards_with_the_capitalised_parameters(make_stack, count, pages):
    stack = make_stack(
        [account(1)],
        simulator={"cards": [card(600 + i) for i in range(count)]},
        connections=[{"cards": True, "page_size": 10}],
    )
    stack.poll()
    # The simulator reads PageNumber/PageSize only: lower-case names would get page 1 of 10 forever.
    assert set(cards_of(stack)) == {str(600 + i) for i in range(count)}
    assert stack.simulator.requests[CARDS_PATH] == pages
    assert stack.value("ibanera_cards", connection="c0") == count
    assert stack.value("ibanera_cards_up", connection="c0") == 1


def test_card_amounts_keep_every_digit_and_descriptive_fields_go_to_info(make_stack):
    stack = make_stack(
        [account(1)],
        simulator={
            "cards": [
                SimCard(
                    7, "EUR", D("12345678901.23"), D("0.01"), D("12345678901.22"), "0042", 'ACME "east"', "X", "Blocked"
                )
            ]
        },
        connections=[{"cards": True}],
    )
    stack.poll()
    metrics = stack.metrics()
    labels = frozenset({("connection", "c0"), ("card_id", "7"), ("currency", "EUR")})
    assert metrics[("ibanera_card_total_balance", labels)] == 12345678901.23
    assert metrics[("ibanera_card_available_balance", labels)] == 0.01
    info = [dict(labels) for (n, labels), v in metrics.items() if n == "ibanera_card_info" and v == 1]
    assert info == [
        {
            "connection": "c0",
            "card_id": "7",
            "card_last4": "0042",
            "customers_reference": 'ACME "east"',
            "status": "Blocked",
        }
    ]


def test_holder_names_are_exported_only_when_asked_for(make_stack):
    stack = make_stack(
        [account(1)],
        simulator={"cards": [card(1, holder="Ada Lovelace")]},
        connections=[
            {"name": "private", "cards": True},
            {"name": "named", "cards": True, "cards_holder_name_label": True},
        ],
    )
    stack.poll()
    text = stack.get("/metrics").text
    assert text.count("Ada Lovelace") == 1
    assert (
        'card_holder_name="Ada Lovelace"' in text
        and 'connection="named"' in text.split("Ada Lovelace")[1].split("\n")[0]
    )
    private = next(p for p in stack.pollers if p.name == "private")
    assert private.status().cards.snapshot.rows[0].holder_name is None  # not even held in memory


def test_a_card_failure_keeps_the_account_balances_and_ibanera_up(make_stack):
    stack = make_stack([account(1, total="5")], simulator={"cards": [card(1), card(2)]}, connections=[{"cards": True}])
    stack.poll()
    stack.simulator.update_card(1, available=D("999"))
    stack.simulator.update_account(1, total=D("6"))
    stack.simulator.inject(Fault("http", "cards", status=500), times=3)
    stack.poll()
    assert stack.value("ibanera_up", connection="c0") == 1
    assert stack.balances("ibanera_total_balance") == {"1": 6.0}  # the accounts' part is new
    assert stack.value("ibanera_cards_up", connection="c0") == 0
    assert cards_of(stack) == {"1": 10.0, "2": 10.0}  # the cards' part is the last good one
    assert stack.value("ibanera_card_poll_failures_total", connection="c0", reason="http_5xx") == 1
    assert stack.value("ibanera_poll_failures_total", connection="c0", reason="http_5xx") == 0
    assert "<td>down, 2 cards (last error: cards_balances: HTTP 500)</td>" in stack.get("/").text
    stack.poll()
    assert stack.value("ibanera_cards_up", connection="c0") == 1 and cards_of(stack)["1"] == 999.0


def test_an_account_failure_does_not_stop_the_cards(make_stack):
    stack = make_stack([account(1)], simulator={"cards": [card(1)]}, connections=[{"cards": True}])
    stack.poll()
    stack.simulator.update_card(1, available=D("3"))
    stack.simulator.inject(Fault("status0", "balances"))
    stack.poll()
    assert stack.value("ibanera_up", connection="c0") == 0
    assert stack.value("ibanera_cards_up", connection="c0") == 1 and cards_of(stack) == {"1": 3.0}


def test_cards_that_vanish_from_the_api_vanish_from_metrics(make_stack):
    stack = make_stack([account(1)], simulator={"cards": [card(1), card(2), card(3)]}, connections=[{"cards": True}])
    stack.poll()
    stack.simulator.set_cards([card(1), card(3)])
    stack.poll()
    assert set(cards_of(stack)) == {"1", "3"}
    assert {dict(labels)["card_id"] for (n, labels) in stack.metrics() if n == "ibanera_card_info"} == {"1", "3"}


@pytest.mark.parametrize(
    "fault, reason",
    [
        (Fault("html", "cards"), "malformed"),
        (Fault("empty", "cards"), "malformed"),
        (Fault("status0", "cards"), "rejected"),
    ],
)
def test_bad_card_replies_fail_only_the_card_part(make_stack, fault, reason):
    stack = make_stack(
        [account(1)],
        simulator={"cards": [card(i) for i in range(1, 16)]},
        connections=[{"cards": True, "page_size": 10}],
    )
    stack.poll()
    stack.clock.advance(60)
    stack.simulator.inject(fault)
    stack.poll()
    assert stack.value("ibanera_card_poll_failures_total", connection="c0", reason=reason) == 1
    assert stack.value("ibanera_up", connection="c0") == 1
    assert len(cards_of(stack)) == 15


def test_the_card_threshold_is_exported(make_stack):
    stack = make_stack(
        [account(1)], connections=[{"cards": True}], config={"low_available_card_balance": {"EUR": D("50.5")}}
    )
    stack.poll()
    assert stack.value("ibanera_card_low_threshold", currency="EUR") == 50.5
