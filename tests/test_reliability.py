"""Never wrong, never down: every fault the simulator can inject, bad rows, skewed clocks."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
import time
from decimal import Decimal

import pytest
from conftest import ROOT, FakeClock, Running, account, build_stack, connection_for, rested_storage
from entries import connection_entry
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics

from exporter.api.client import IbaneraClient
from exporter.api.envelope import Page, decode_envelope, read_page
from exporter.api.errors import ApiError, MalformedResponse
from exporter.api.memory import LoginMemory
from exporter.config import Config, RetryPolicy, Secret
from exporter.model import AccountBalance, parse_account, parse_card
from exporter.poller import Poller
from exporter.simulator import DROP, Fault, RawJson, Simulator

FIVE = [account(i, total=f"{i}.01", available=f"{i}.00", pending="0.01") for i in range(1, 6)]
EXPECTED = {str(i): float(Decimal(f"{i}.00")) for i in range(1, 6)}


def fresh(stack) -> None:
    """One good poll, then make every balance different so stale data would show, and let a
    poll interval pass (so the next poll's one-time code is a fresh one)."""
    stack.poll()
    assert stack.value("ibanera_up", connection="c0") == 1
    for i in range(1, 6):
        stack.simulator.update_account(i, available=Decimal(f"{i}.00") + 100)
    stack.clock.advance(60)


# -- transient faults ----------------------------------------------------------------

TRANSIENT = {
    "http 500": (Fault("http", "balances", status=500), "http_5xx"),
    "http 502": (Fault("http", "balances", status=502), "http_5xx"),
    "http 503": (Fault("http", "balances", status=503), "http_5xx"),
    "http 504": (Fault("http", "balances", status=504), "http_5xx"),
    "429 without Retry-After": (Fault("http", "balances", status=429), "http_429"),
    "429 with Retry-After": (Fault("http", "balances", status=429, retry_after="0"), "http_429"),
    "connection reset": (Fault("reset", "balances"), "connection_error"),
    "slow past the timeout": (Fault("delay", "balances", delay=0.5), "timeout"),
}


@pytest.mark.parametrize("fault, reason", TRANSIENT.values(), ids=TRANSIENT.keys())
def test_transient_faults_within_the_retry_budget_are_absorbed(make_stack, fault, reason):
    stack = make_stack(FIVE, connections=[{"page_size": 2}], config={"request_timeout": 0.2})
    stack.simulator.inject(fault, times=2)  # max_attempts is 3
    stack.poll()
    assert stack.value("ibanera_up", connection="c0") == 1
    assert stack.balances() == EXPECTED
    assert stack.value("ibanera_api_retries_total", connection="c0", endpoint="accounts_balances") == 2


@pytest.mark.parametrize("fault, reason", TRANSIENT.values(), ids=TRANSIENT.keys())
def test_transient_faults_beyond_the_budget_fail_the_poll_and_keep_the_data(make_stack, fault, reason):
    stack = make_stack(FIVE, connections=[{"page_size": 2}], config={"request_timeout": 0.2})
    fresh(stack)
    stack.simulator.inject(fault, times=3)
    stack.poll()
    assert stack.value("ibanera_up", connection="c0") == 0
    assert stack.value("ibanera_poll_failures_total", connection="c0", reason=reason) == 1
    assert stack.balances() == EXPECTED
    stack.poll()
    assert stack.value("ibanera_up", connection="c0") == 1
    assert stack.balances() == {k: v + 100 for k, v in EXPECTED.items()}


def test_a_revoked_token_costs_one_login_and_no_failed_poll(make_stack):
    stack = make_stack(FIVE)
    stack.poll()
    stack.simulator.revoke_tokens()
    stack.poll()
    assert stack.value("ibanera_up", connection="c0") == 1
    assert stack.simulator.logins_succeeded == 2 and stack.simulator.logins_failed == 0


# -- permanent faults ----------------------------------------------------------------

PERMANENT = {
    "truncated JSON": (Fault("truncated", "balances"), "malformed"),
    "HTML maintenance page with 200": (Fault("html", "balances"), "malformed"),
    "status 0 with a messageCode": (Fault("status0", "balances", message_code="Maintenance"), "rejected"),
    "HTTP 400": (Fault("http", "balances", status=400), "rejected"),
    "empty details on page 2 of 3": (Fault("empty", "balances"), "malformed"),
    "page 2 repeats page 1": (Fault("repeat", "balances"), "malformed"),
    "OTP refused": (Fault("otp", "balances"), "rejected"),
}


@pytest.mark.parametrize("fault, reason", PERMANENT.values(), ids=PERMANENT.keys())
def test_permanent_faults_fail_the_poll_at_once_and_keep_the_data(make_stack, fault, reason):
    stack = make_stack(FIVE, connections=[{"page_size": 2}])
    fresh(stack)
    if fault.kind in ("empty", "repeat"):
        stack.simulator.inject(Fault("delay", "balances"))  # page 1 answers normally
    stack.simulator.inject(fault)
    requests_before = stack.simulator.requests["/api/v1/customer/accounts/balances"]
    stack.poll()
    assert stack.value("ibanera_up", connection="c0") == 0
    assert stack.value("ibanera_poll_failures_total", connection="c0", reason=reason) == 1
    assert stack.value("ibanera_api_retries_total", connection="c0", endpoint="accounts_balances") == 0
    assert stack.balances() == EXPECTED
    pages_asked = stack.simulator.requests["/api/v1/customer/accounts/balances"] - requests_before
    assert pages_asked == (2 if fault.kind in ("empty", "repeat") else 1)


def test_never_ending_pagination_is_cut_at_max_pages(make_stack):
    stack = make_stack(FIVE, connections=[{"page_size": 2, "max_pages": 20}])
    fresh(stack)
    stack.simulator.endless_pages = True
    stack.poll()
    assert stack.value("ibanera_poll_failures_total", connection="c0", reason="too_many_pages") == 1
    assert stack.balances() == EXPECTED


def test_a_reply_over_max_response_size_is_refused(make_stack):
    stack = make_stack(FIVE, config={"max_response_size": 64 * 1024})
    fresh(stack)
    stack.simulator.inject(Fault("huge", "balances", size=100 * 1024))
    stack.poll()
    assert stack.value("ibanera_poll_failures_total", connection="c0", reason="too_large") == 1
    # The refused reply was still an answer: counted once, under its status code.
    assert stack.value("ibanera_api_requests_total", connection="c0", endpoint="accounts_balances", code="200") == 2
    assert stack.balances() == EXPECTED
    stack.poll()
    assert stack.value("ibanera_up", connection="c0") == 1


# -- bad rows ------------------------------------------------------------------------

REJECTED_ROWS = {
    "missing totalBalance": {"totalBalance": DROP},
    "null availableBalance": {"availableBalance": None},
    "amount as a string with an exponent": {"pendingBalance": "1e5"},
    "NaN literal": {"totalBalance": RawJson("NaN")},
    "Infinity literal": {"totalBalance": RawJson("Infinity")},
    "string NaN": {"totalBalance": "NaN"},
    "too large for a float": {"totalBalance": RawJson("1e400")},
    "bSuppressed as a string": {"bSuppressed": "false"},
    "bSuppressed as a number": {"bSuppressed": 0},
    "id as a string": {"id": "3"},
    "id as a fraction": {"id": RawJson("3.5")},
    "duplicate id": {"id": 2},
    "empty asset": {"asset": ""},
    "missing asset": {"asset": DROP},
}


@pytest.mark.parametrize("raw", REJECTED_ROWS.values(), ids=REJECTED_ROWS.keys())
def test_a_bad_row_rejects_the_poll_and_publishes_nothing_wrong(make_stack, raw):
    """Rejecting the poll keeps every account visible (a skipped suppressed account would
    silently resolve its alert) and flips ibanera_up, which pages someone."""
    stack = make_stack(FIVE)
    fresh(stack)
    stack.simulator.update_account(3, raw=tuple(raw.items()))
    stack.poll()
    assert stack.value("ibanera_up", connection="c0") == 0
    assert stack.value("ibanera_poll_failures_total", connection="c0", reason="malformed") == 1
    assert stack.balances() == EXPECTED


def test_a_negative_pending_balance_is_published_as_reported(make_stack):
    # Outgoing pending transfers may well be negative; the exporter reports, it does not judge.
    stack = make_stack([account(1, total="10", available="10", pending="-2.5")])
    stack.poll()
    assert stack.balances("ibanera_pending_balance") == {"1": -2.5}


@pytest.mark.parametrize(
    "asset, exported",
    [
        ('US"D', 'US"D'),
        ("US\\D", "US\\D"),
        ("us dollar", "US DOLLAR"),
        # codes are upper-cased in ASCII only: no letter changes script or length
        ("Ünïcödé € ß", "ÜNïCöDé € ß"),
        ("{}=,", "{}=,"),
    ],
)
def test_odd_asset_names_are_escaped_and_parse_back_exactly(make_stack, asset, exported):
    stack = make_stack([account(1, asset=asset, total="1.5")])
    stack.poll()
    labels = [dict(found) for (n, found) in stack.metrics() if n == "ibanera_total_balance"]
    assert labels == [{"connection": "c0", "asset_account_id": "1", "asset": exported}]
    om = stack.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}).text
    om_assets = [
        s.labels["asset"] for f in parse_openmetrics(om) if f.name == "ibanera_total_balance" for s in f.samples
    ]
    assert om_assets == [exported]


# -- the parsers, with arbitrary input ------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.decimals(allow_nan=False) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
row_fields = st.fixed_dictionaries(
    {},
    optional={
        "id": json_values,
        "asset": json_values,
        "totalBalance": json_values,
        "availableBalance": json_values,
        "pendingBalance": json_values,
        "bSuppressed": json_values,
        "currency": json_values,
        "cardLast4": json_values,
        "status": json_values,
        "customersReference": json_values,
        "cardHolderName": json_values,
    },
)


def _dumps(value) -> bytes:
    return json.dumps(value, default=str).encode()


@settings(max_examples=300)
@given(
    status=st.sampled_from([200, 201, 204, 400, 401, 403, 404, 429, 500, 503]),
    body=st.one_of(
        st.binary(max_size=200),
        json_values.map(_dumps),
        st.fixed_dictionaries({"status": json_values, "errors": json_values, "details": json_values}).map(_dumps),
    ),
    retry_after=st.none() | st.text(max_size=30),
)
def test_decode_envelope_returns_an_envelope_or_raises_its_own_errors(status, body, retry_after):
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    try:
        envelope = decode_envelope("balances", status, headers, body, now=0.0)
    except ApiError as exc:
        assert str(exc)
        return
    assert 200 <= status < 300 and envelope["status"] == "1"


@settings(max_examples=300)
@given(
    envelope=st.fixed_dictionaries(
        {"status": st.just("1")},
        optional={
            "details": st.lists(row_fields, max_size=5) | json_values,
            "pageNumber": json_values,
            "numberOfPages": json_values,
            "pageSize": json_values,
        },
    ),
    page=st.integers(min_value=1, max_value=5),
    cards=st.booleans(),
)
def test_read_page_returns_valid_rows_or_raises_malformed(envelope, page, cards):
    try:
        result = read_page(
            envelope, page, (lambda row, notes: parse_card(row, notes=notes)) if cards else parse_account
        )
    except MalformedResponse:
        return
    assert isinstance(result, Page)
    for row in result.rows:
        row_id = row.card_id if cards else row.asset_account_id
        assert type(row_id) is int and row_id >= 0
        if isinstance(row, AccountBalance):
            assert isinstance(row.suppressed, bool) and row.asset
        for amount in (row.total, row.available, row.pending):
            assert isinstance(amount, Decimal) and float(amount) not in (float("inf"), float("-inf"))


# -- clocks and one-time codes --------------------------------------------------------


@pytest.mark.parametrize("skew", [300.0, -120.0])
def test_a_skewed_server_clock_is_measured_and_followed(skew):
    ours = FakeClock()
    stack = build_stack(ours, FIVE, simulator={"clock": lambda: ours.now + skew})
    try:
        stack.poll()
        assert stack.value("ibanera_up", connection="c0") == 1
        assert stack.simulator.logins_failed == 0
        assert stack.value("ibanera_clock_offset_seconds", connection="c0") == pytest.approx(skew, abs=1.0)
    finally:
        stack.close()


def test_a_server_that_refuses_reused_codes_gets_a_fresh_one_per_request(make_stack):
    stack = make_stack(FIVE, connections=[{"page_size": 2}], simulator={"reject_reused_otp": True})
    stack.poll()
    assert stack.value("ibanera_up", connection="c0") == 1
    assert stack.balances() == EXPECTED
    assert stack.simulator.otp_rejections == 2  # one refusal may be chance; the second teaches
    stack.poll()
    stack.poll()
    assert stack.simulator.otp_rejections == 2 and stack.simulator.logins_failed == 0
    codes = stack.simulator.otp_codes_seen
    assert len(codes[-3:]) == len(set(codes[-3:]))


def test_no_fault_ever_gets_the_account_locked(make_stack):
    """Whatever happens, Ibanera never sees enough failed logins to lock the account."""
    stack = make_stack(FIVE, connections=[{"page_size": 2}], config={"request_timeout": 0.2})
    stack.simulator.chaos(0.4)
    for poll in range(150):
        if poll % 7 == 0:
            stack.simulator.revoke_tokens()
        if poll % 40 == 0:
            stack.simulator.inject(Fault("otp", "login"))  # the next login's code is refused
        stack.poll()
        assert not stack.simulator.locked
        stack.clock.advance(60)
    times = stack.simulator.failed_login_times
    assert len(times) == 4, "every injected refusal reached a login"
    assert all(later - earlier >= 900 for earlier, later in itertools.pairwise(times))
    assert stack.value("ibanera_polls_total", connection="c0") == 150
    assert stack.simulator.logins_succeeded >= 10


def test_credentials_that_stay_wrong_stop_logins_before_the_account_locks(make_stack):
    stack = make_stack(FIVE, connections=[{"password": Secret("wrong")}])
    for _ in range(24 * 60):  # a day of polls, a minute apart
        stack.poll()
        stack.clock.advance(60)
    assert stack.simulator.logins_failed == 3 and not stack.simulator.locked
    assert stack.value("ibanera_poll_failures_total", connection="c0", reason="logins_stopped") > 1000
    last_error = stack.pollers[0].status().accounts.last_error
    assert "3 refused logins in a row" in last_error and "restart" in last_error


def test_a_good_login_resets_the_count_of_refusals(make_stack):
    stack = make_stack(FIVE)
    for _ in range(5):  # five refusals, each followed by a good login: never three in a row
        stack.simulator.inject(Fault("otp", "login"))
        stack.simulator.revoke_tokens()
        stack.poll()
        stack.clock.advance(901)
        stack.poll()
        assert stack.value("ibanera_up", connection="c0") == 1
    assert stack.simulator.logins_failed == 5 and not stack.simulator.locked


# -- shutdown ------------------------------------------------------------------------


def _config_for(simulator, path, **top) -> str:
    config = {
        "poll_interval": "1m",
        "request_timeout": "20s",
        "retry": {"max_attempts": 5, "initial_backoff": "20s", "max_backoff": "30s"},
        **top,
        "connections": [connection_entry(simulator, "slow")],
    }
    path.write_text(json.dumps(config))  # JSON is YAML
    return str(path)


def _wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.parametrize(
    "fault",
    [Fault("delay", "balances", delay=15), Fault("http", "balances", status=503)],
    ids=["during a slow request", "during a retry sleep"],
)
def test_sigterm_exits_cleanly_within_two_seconds(tmp_path, fault):
    with Simulator(FIVE) as simulator:
        simulator.inject(fault, times=5)
        exporter = Running(
            "--config.file",
            _config_for(simulator, tmp_path / "config.yaml"),
            "--storage.path",
            rested_storage(tmp_path / "state", "slow"),
        )
        _wait_for(lambda: simulator.requests["/api/v1/customer/accounts/balances"] >= 1)
        time.sleep(0.3)  # inside the slow reply, or inside the 20s back-off
        code, seconds, log = exporter.stop()
    assert code == 0 and seconds < 2.0, log
    assert "msg=stopped" in log and "Traceback" not in log


def test_a_poller_thread_leaves_a_retry_sleep_at_once():
    with Simulator(FIVE) as simulator:
        simulator.inject(Fault("http", "balances", status=503), times=5)
        stop = threading.Event()
        connection = connection_for(simulator)
        config = Config((connection,), request_timeout=5, retry=RetryPolicy(5, 20.0, 30.0))
        client = IbaneraClient(connection, config, memory=LoginMemory.first_contact(), stop_event=stop)
        poller = Poller(client, 60, stop)
        poller.start()
        _wait_for(lambda: simulator.requests["/api/v1/customer/accounts/balances"] >= 1)
        started = time.monotonic()
        stop.set()
        poller.join(2)
        assert not poller.is_alive() and time.monotonic() - started < 1.0
        assert poller.status().polls == 1


# -- soak ----------------------------------------------------------------------------


def test_a_30_second_soak_under_20_percent_faults(tmp_path):
    """The short version of bench/soak.py: its long runs are in the README."""
    out = tmp_path / "soak.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak.py"), "--seconds", "30", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    report = json.loads(out.read_text())
    assert result.returncode == 0, result.stdout + result.stderr
    assert report["scrape_errors"] == 0 and report["wrong_values"] == 0
    assert report["fds_end"] <= report["fds_start"]
    # Throughput is not asserted: a refused one-time code costs a wait of up to 30 s for a
    # fresh one. Polls going on after the faults is what matters here.
    assert report["scrapes"] > 100 and report["polls"] >= 3
    assert report["faults_injected"] > 0  # the run really was under fire
    assert report["exit_code"] == 0 and report["shutdown_seconds"] < 2


def test_a_single_refusal_of_a_reused_code_costs_one_retry_not_the_mode(make_stack):
    stack = make_stack(FIVE, connections=[{"page_size": 2}])
    stack.poll()
    stack.simulator.inject(Fault("otp", "balances"))
    stack.poll()  # page 1 reuses the previous poll's step: refused once, retried with a fresh code
    assert stack.value("ibanera_up", connection="c0") == 1
    requests = stack.simulator.requests["/api/v1/customer/accounts/balances"]
    stack.poll()
    assert stack.simulator.requests["/api/v1/customer/accounts/balances"] - requests == 3
    codes = stack.simulator.otp_codes_seen[-3:]
    assert len(set(codes)) == 1  # back to one code for the whole poll: no waiting per page
