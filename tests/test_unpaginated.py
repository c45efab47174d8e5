"""page_size: all — the balances in one request without paging parameters, as the docs allow."""

from __future__ import annotations

import pytest
from conftest import account
from test_cards import card

from exporter.config import ConfigError, parse_config
from exporter.simulator import BALANCES_PATH, CARDS_PATH, LOGIN_PATH

MANY = [account(i, total=f"{i}.25") for i in range(1, 121)]


def test_one_request_and_one_code_per_poll(make_stack):
    stack = make_stack(MANY, connections=[{"page_size": "all"}])
    for _ in range(3):
        stack.poll()
        stack.clock.advance(60)
    assert stack.balances("ibanera_total_balance") == {str(i): i + 0.25 for i in range(1, 121)}
    assert stack.simulator.unpaginated_requests == 3
    assert stack.simulator.requests[BALANCES_PATH] == 3
    # One login (one code), then one code per poll.
    assert stack.simulator.requests[LOGIN_PATH] == 1 and len(stack.simulator.otp_codes_seen) == 1 + 3


def test_cards_still_page(make_stack):
    stack = make_stack(
        [account(1)],
        simulator={"cards": [card(i) for i in range(1, 251)]},
        connections=[{"page_size": "all", "cards": True}],
    )
    stack.poll()
    assert stack.value("ibanera_cards", connection="c0") == 250
    assert stack.simulator.requests[CARDS_PATH] == 3  # pages of 100, not the server default of 10


@pytest.mark.parametrize(
    "counts_pages, says",
    [
        (
            True,
            "asked for the whole list (page_size: all), the server answered page 1 of 24: set page_size to a number",
        ),
        (False, "the server answered a full page of 5 without a page count: set page_size to a number"),
    ],
)
def test_a_server_that_pages_anyway_is_refused_not_cut_short(make_stack, counts_pages, says):
    stack = make_stack(
        MANY, connections=[{"page_size": "all"}], simulator={"max_page_size": 5, "report_number_of_pages": counts_pages}
    )
    stack.poll()
    status = stack.pollers[0].status().accounts
    assert status.snapshot is None and says in status.last_error
    assert stack.value("ibanera_poll_failures_total", connection="c0", reason="malformed") == 1


def test_the_whole_list_is_still_bounded_by_max_response_size(make_stack):
    stack = make_stack(MANY, connections=[{"page_size": "all"}], config={"max_response_size": 4096})
    stack.poll()
    assert stack.value("ibanera_poll_failures_total", connection="c0", reason="too_large") == 1


def _page_size(value: object):
    data = {
        "connections": [{"name": "x", "username": "u", "password": "p", "totp_secret": "JBSWY3DP", "page_size": value}]
    }
    return parse_config(data, "t.yaml").connections[0].page_size


def test_page_size_all_in_the_config():
    assert _page_size("all") == "all" and _page_size(500) == 500
    for bad in ("ALL", "everything", 0, True):
        with pytest.raises(ConfigError, match=r"connections\[0\]\.page_size"):
            _page_size(bad)
