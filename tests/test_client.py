"""IbaneraClient against the simulator over loopback HTTP."""

from decimal import Decimal

import httpx
import pytest
from conftest import FAST_RETRY, account, connection_for

from exporter.api.client import IbaneraClient
from exporter.api.envelope import parse_retry_after
from exporter.api.errors import (
    ApiRejected,
    LoginPaused,
    LoginRefused,
    MalformedResponse,
    TooManyPages,
    TransientError,
    Unauthorized,
)
from exporter.config import Config, Secret
from exporter.simulator import BALANCES_PATH, CARDS_PATH, LOGIN_PATH, Fault, Simulator
from exporter.totp import decode_secret, totp_at


@pytest.fixture
def simulator(clock):
    with Simulator([account(i) for i in range(1, 4)], clock=clock) as sim:
        yield sim


@pytest.fixture
def make_client(clock):
    clients = []

    def make(sim, retry=FAST_RETRY, login_backoff=900.0, **overrides):
        connection = connection_for(sim, **overrides)
        config = Config((connection,), request_timeout=2.0, retry=retry, login_backoff=login_backoff)
        client = IbaneraClient(connection, config, clock=clock, sleep=clock.sleep)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def ids(result):
    return [a.asset_account_id for a in result.rows]


def test_logs_in_once_and_reuses_the_token(simulator, make_client):
    client = make_client(simulator)
    for _ in range(3):
        assert ids(client.fetch_balances()) == [1, 2, 3]
    assert simulator.logins_succeeded == 1
    assert client.counters.snapshot().logins == 1


def test_token_is_renewed_by_a_new_login_shortly_before_it_expires(simulator, make_client, clock):
    client = make_client(simulator)
    client.fetch_balances()
    expires_at = client.token_expires_at
    assert expires_at == pytest.approx(clock.now + simulator.token_lifetime)
    clock.advance(simulator.token_lifetime - 120)  # still well inside its lifetime
    client.fetch_balances()
    assert simulator.logins_succeeded == 1
    clock.advance(90)  # 30 s left: inside the renewal margin
    client.fetch_balances()
    assert simulator.logins_succeeded == 2
    assert client.token_expires_at > expires_at
    assert simulator.requests[LOGIN_PATH] == 2  # no 401 was needed to notice


def test_a_revoked_token_gets_exactly_one_new_login(simulator, make_client):
    client = make_client(simulator)
    client.fetch_balances()
    simulator.revoke_tokens()
    assert ids(client.fetch_balances()) == [1, 2, 3]
    assert simulator.logins_succeeded == 2
    counts = client.counters.snapshot().requests
    assert counts[("accounts_balances", "401")] == 1


def test_a_second_401_after_the_new_login_fails_the_poll(simulator, make_client):
    client = make_client(simulator)
    client.fetch_balances()
    simulator.inject(Fault("http", endpoint="balances", status=401), times=2)
    with pytest.raises(Unauthorized):
        client.fetch_balances()
    assert simulator.logins_succeeded == 2


def test_every_request_carries_a_bearer_token_and_a_code(simulator, make_client):
    client = make_client(simulator)
    client.fetch_balances()
    # The simulator answers 401 without a valid token and 400 without a valid code, so
    # a successful multi-page walk is the proof; and each code it saw was 6 digits.
    assert all(len(code) == 6 and code.isdigit() for code in simulator.otp_codes_seen)
    assert len(simulator.otp_codes_seen) == 2  # the login body and the one balances page


@pytest.mark.parametrize("count, page_size, pages", [(25, 10, 3), (30, 10, 3), (0, 10, 1), (1, 1, 1), (10, 1, 10)])
def test_pagination_walks_every_page(clock, make_client, count, page_size, pages):
    with Simulator([account(i) for i in range(1, count + 1)], clock=clock) as sim:
        result = make_client(sim, page_size=page_size).fetch_balances()
        assert ids(result) == list(range(1, count + 1))
        assert result.pages == pages
        assert sim.requests[BALANCES_PATH] == pages


@pytest.mark.parametrize("count", [25, 30])
def test_pagination_without_numberOfPages_stops_on_a_short_page(clock, make_client, count):
    with Simulator([account(i) for i in range(1, count + 1)], clock=clock, report_number_of_pages=False) as sim:
        result = make_client(sim, page_size=10).fetch_balances()
        assert ids(result) == list(range(1, count + 1))
        # An exact multiple of the page size costs one more, empty, page.
        assert sim.requests[BALANCES_PATH] == count // 10 + 1


def test_a_server_that_caps_pageSize_is_followed_not_cut_short(clock, make_client):
    with Simulator(
        [account(i) for i in range(1, 26)], clock=clock, report_number_of_pages=False, max_page_size=5
    ) as sim:
        assert ids(make_client(sim, page_size=10).fetch_balances()) == list(range(1, 26))


def test_max_pages_guards_against_a_server_that_never_ends(clock, make_client):
    with Simulator([account(i) for i in range(1, 51)], clock=clock, report_number_of_pages=False) as sim:
        with pytest.raises(TooManyPages):
            make_client(sim, page_size=10, max_pages=3).fetch_balances()
        assert sim.requests[BALANCES_PATH] == 3


def test_amounts_keep_every_digit(clock, make_client):
    rows = [
        account(1, "BTC", total="0.00000001", pending="0.00000001", available="0"),
        account(2, "USD", total="12345678901.23"),
        account(3, "ETH", total="1.123456789012345678"),
    ]
    with Simulator(rows, clock=clock) as sim:
        accounts = make_client(sim).fetch_balances().rows
    assert accounts[0].total == Decimal("0.00000001") and accounts[0].available == Decimal("0")
    assert accounts[1].total == Decimal("12345678901.23")
    assert accounts[2].total == Decimal("1.123456789012345678")


def test_status_zero_is_an_error_with_its_message_codes(simulator, make_client):
    client = make_client(simulator)
    client.fetch_balances()
    simulator.inject(Fault("status0", endpoint="balances", message_code="Something_Went_Wrong"))
    with pytest.raises(ApiRejected) as info:
        client.fetch_balances()
    assert info.value.codes == ("Something_Went_Wrong",)
    assert simulator.requests[BALANCES_PATH] == 2  # not retried


@pytest.mark.parametrize("kind", ["html", "truncated"])
def test_a_body_that_is_not_the_envelope_is_malformed_and_not_retried(simulator, make_client, kind):
    client = make_client(simulator)
    client.fetch_balances()
    simulator.inject(Fault(kind, endpoint="balances"))
    with pytest.raises(MalformedResponse):
        client.fetch_balances()
    assert simulator.requests[BALANCES_PATH] == 2


def test_transient_failures_are_retried_and_counted(simulator, make_client):
    client = make_client(simulator)
    simulator.inject(Fault("http", endpoint="balances", status=503), times=2)
    assert ids(client.fetch_balances()) == [1, 2, 3]
    counts = client.counters.snapshot()
    assert counts.retries == {"accounts_balances": 2, "login": 0, "cards_balances": 0}
    assert counts.requests[("accounts_balances", "503")] == 2


def test_retries_stop_at_max_attempts(simulator, make_client):
    client = make_client(simulator)
    simulator.inject(Fault("http", endpoint="balances", status=502), times=5)
    with pytest.raises(TransientError) as info:
        client.fetch_balances()
    assert info.value.reason == "http_5xx"
    assert simulator.requests[BALANCES_PATH] == FAST_RETRY.max_attempts


def test_retry_after_longer_than_max_backoff_gives_up_at_once(simulator, make_client):
    client = make_client(simulator)
    simulator.inject(Fault("http", endpoint="balances", status=429, retry_after="120"))
    with pytest.raises(TransientError) as info:
        client.fetch_balances()
    assert info.value.reason == "http_429" and info.value.retry_after == 120
    assert simulator.requests[BALANCES_PATH] == 1


def test_retry_after_is_waited_for(simulator, make_client):
    client = make_client(simulator)
    client.fetch_balances()
    simulator.inject(Fault("http", endpoint="balances", status=429, retry_after="0"))
    assert ids(client.fetch_balances()) == [1, 2, 3]
    assert client.counters.snapshot().retries == {"accounts_balances": 1, "login": 0, "cards_balances": 0}


def test_parse_retry_after():
    assert parse_retry_after("7", now=0) == 7
    assert parse_retry_after("Thu, 01 Jan 1970 00:01:40 GMT", now=40) == 60
    assert parse_retry_after("soon", now=0) is None and parse_retry_after(None, now=0) is None


def test_a_connection_reset_is_transient(simulator, make_client):
    client = make_client(simulator)
    simulator.inject(Fault("reset", endpoint="balances"))
    assert ids(client.fetch_balances()) == [1, 2, 3]
    assert client.counters.snapshot().retries == {"accounts_balances": 1, "login": 0, "cards_balances": 0}


def test_a_refused_login_pauses_logins_for_login_backoff(simulator, make_client, clock):
    client = make_client(simulator, password=Secret("wrong"), login_backoff=900.0)
    with pytest.raises(LoginRefused, match="Username_Or_Password_Incorrect") as info:
        client.fetch_balances()
    assert "wrong" not in str(info.value)
    for _ in range(5):  # five polls inside the pause: not one more login
        clock.advance(60)
        with pytest.raises(LoginPaused):
            client.fetch_balances()
    assert simulator.logins_failed == 1
    clock.advance(900 - 300)
    with pytest.raises(LoginRefused):
        client.fetch_balances()
    assert simulator.logins_failed == 2
    failures = client.counters.snapshot().login_failures
    assert failures["Username_Or_Password_Incorrect"] == 2 and sum(failures.values()) == 2


def test_a_refused_login_is_not_retried_even_within_one_poll(simulator, make_client):
    client = make_client(simulator, password=Secret("wrong"))
    with pytest.raises(LoginRefused):
        client.fetch_balances()
    assert simulator.requests[LOGIN_PATH] == 1


def test_a_login_that_hits_a_5xx_is_retried(simulator, make_client):
    client = make_client(simulator)
    simulator.inject(Fault("http", endpoint="login", status=503))
    assert ids(client.fetch_balances()) == [1, 2, 3]
    assert simulator.logins_succeeded == 1 and simulator.logins_failed == 0


def test_ascii_secrets_work_end_to_end(clock, make_client):
    key = b"an-ascii-shared-secret"
    with Simulator([account(1)], clock=clock, totp_secret=key) as sim:
        client = make_client(sim, totp_secret=Secret(key.decode()), totp_secret_encoding="ascii")
        assert ids(client.fetch_balances()) == [1]


@pytest.mark.parametrize(
    "path, query, field",
    [
        (BALANCES_PATH, "pageNumber=1&pageSize=0", "pageSize"),
        (BALANCES_PATH, "pageNumber=x&pageSize=5", "pageNumber"),
        (CARDS_PATH, "PageNumber=0", "PageNumber"),
        (CARDS_PATH, "PageSize=-1", "PageSize"),
    ],
)
def test_the_simulator_refuses_bad_paging_naming_the_parameter(simulator, make_client, clock, path, query, field):
    client = make_client(simulator)
    client.fetch_balances()  # a token
    code = totp_at(decode_secret(simulator.totp_secret_base32, "base32"), clock.now)
    response = httpx.get(
        f"{simulator.url}{path}?{query}",
        headers={"Authorization": f"Bearer {simulator.issued_tokens[-1]}", "otp": code},
    )
    assert response.status_code == 400
    assert response.json()["errors"] == [{"fieldName": field, "messageCode": "Invalid"}]
