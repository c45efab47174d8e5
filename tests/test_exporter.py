"""Simulator -> client -> poller -> collector -> HTTP, all real, over loopback."""

import gzip
import zlib
from decimal import Decimal

import httpx
from conftest import account, samples
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from exporter.api.errors import POLL_FAILURE_REASONS
from exporter.config import Config, Secret
from exporter.metrics import Exposition
from exporter.metrics import balances as metrics_module
from exporter.simulator import Fault
from exporter.web import WebContext, WebServer

# The metric contract of design.md: name -> (type, labels).
ACCOUNT = {"connection", "asset_account_id", "asset"}
CONTRACT = {
    "ibanera_total_balance": ("gauge", ACCOUNT),
    "ibanera_available_balance": ("gauge", ACCOUNT),
    "ibanera_pending_balance": ("gauge", ACCOUNT),
    "ibanera_account_suppressed": ("gauge", ACCOUNT),
    "ibanera_asset_accounts": ("gauge", {"connection"}),
    "ibanera_up": ("gauge", {"connection"}),
    "ibanera_last_success_timestamp_seconds": ("gauge", {"connection"}),
    "ibanera_poll_duration_seconds": ("gauge", {"connection"}),
    "ibanera_polls": ("counter", {"connection"}),
    "ibanera_poll_failures": ("counter", {"connection", "reason"}),
    "ibanera_api_requests": ("counter", {"connection", "endpoint", "code"}),
    "ibanera_api_retries": ("counter", {"connection", "endpoint"}),
    "ibanera_logins": ("counter", {"connection"}),
    "ibanera_login_failures": ("counter", {"connection", "reason"}),
    "ibanera_token_expiry_timestamp_seconds": ("gauge", {"connection"}),
    "ibanera_balance_low_threshold": ("gauge", {"asset"}),
    "ibanera_poll_interval_seconds": ("gauge", set()),
    "ibanera_clock_offset_seconds": ("gauge", {"connection"}),
    "ibanera_render_failures": ("counter", {"connection"}),
    "ibanera_card_total_balance": ("gauge", {"connection", "card_id", "currency"}),
    "ibanera_card_available_balance": ("gauge", {"connection", "card_id", "currency"}),
    "ibanera_card_pending_balance": ("gauge", {"connection", "card_id", "currency"}),
    "ibanera_card_info": ("gauge", {"connection", "card_id", "card_last4", "customers_reference", "status"}),
    "ibanera_cards": ("gauge", {"connection"}),
    "ibanera_cards_up": ("gauge", {"connection"}),
    "ibanera_cards_last_success_timestamp_seconds": ("gauge", {"connection"}),
    "ibanera_card_poll_failures": ("counter", {"connection", "reason"}),
    "ibanera_card_low_threshold": ("gauge", {"currency"}),
    "ibanera_exporter_build_info": ("gauge", {"version"}),
}


def test_metric_names_types_and_labels_match_the_contract(make_stack):
    stack = make_stack(
        connections=[{"name": "good", "cards": True}, {"name": "refused", "password": Secret("wrong")}],
        config={"low_available_balance": {"USD": Decimal("50")}, "low_available_card_balance": {"EUR": Decimal("5")}},
    )
    stack.simulator.inject(Fault("http", endpoint="balances", status=503))  # one retry for "good"
    stack.poll()
    families = {
        f.name: f for f in text_string_to_metric_families(stack.get("/metrics").text) if f.name.startswith("ibanera_")
    }
    assert set(families) == set(CONTRACT)
    for name, (kind, labels) in CONTRACT.items():
        family = families[name]
        assert family.type == kind, name
        assert family.samples, name
        for sample in family.samples:
            assert set(sample.labels) == labels, (name, sample.labels)
            if kind == "counter":
                assert sample.name in (f"{name}_total", f"{name}_created"), sample.name
            else:
                assert not sample.name.endswith("_total"), sample.name


def test_help_names_the_api_field_and_the_poller(make_stack):
    stack = make_stack()
    stack.poll()
    helps = {f.name: f.documentation for f in text_string_to_metric_families(stack.get("/metrics").text)}
    assert helps["ibanera_total_balance"].startswith("totalBalance")
    assert helps["ibanera_account_suppressed"].count("bSuppressed") == 1
    assert "background poller every 1m" in helps["ibanera_available_balance"]


def test_balances_reach_the_gauges_exactly(make_stack):
    stack = make_stack(
        [
            account(1, "BTC", total="0.00000001", available="0.00000001"),
            account(2, "USD", total="12345678901.23", available="12345678900.00", pending="1.23"),
            account(3, "GBP", total="5", suppressed=True),
        ]
    )
    stack.poll()
    assert stack.balances("ibanera_total_balance") == {"1": 1e-08, "2": 12345678901.23, "3": 5.0}
    assert stack.balances("ibanera_available_balance")["2"] == 12345678900.00
    assert stack.balances("ibanera_pending_balance")["2"] == 1.23
    assert stack.balances("ibanera_account_suppressed") == {"1": 0.0, "2": 0.0, "3": 1.0}
    assert stack.value("ibanera_asset_accounts", connection="c0") == 3
    text = stack.get("/metrics").text
    assert 'ibanera_total_balance{asset="BTC",asset_account_id="1",connection="c0"} 1e-08' in text
    # Go's float formatting, as Prometheus writes it: the same float, not a rounded one.
    assert 'ibanera_total_balance{asset="USD",asset_account_id="2",connection="c0"} 1.234567890123e+10' in text


def test_no_balance_series_before_the_first_good_poll(make_stack):
    stack = make_stack()
    metrics = stack.metrics()
    assert not [
        k
        for k in metrics
        if k[0] in ("ibanera_total_balance", "ibanera_asset_accounts", "ibanera_last_success_timestamp_seconds")
    ]
    assert stack.value("ibanera_up", connection="c0") == 0


def test_a_failed_poll_keeps_the_last_good_data_and_sets_up_to_zero(make_stack):
    stack = make_stack([account(1, total="10"), account(2, total="20")])
    stack.poll()
    last_success = stack.value("ibanera_last_success_timestamp_seconds", connection="c0")
    stack.simulator.update_account(1, total=Decimal("999"))
    stack.simulator.inject(Fault("status0", endpoint="balances", message_code="Maintenance"))
    stack.poll()
    assert stack.value("ibanera_up", connection="c0") == 0
    assert stack.balances("ibanera_total_balance") == {"1": 10.0, "2": 20.0}
    assert stack.value("ibanera_last_success_timestamp_seconds", connection="c0") == last_success
    assert stack.value("ibanera_poll_failures_total", connection="c0", reason="rejected") == 1
    stack.poll()
    assert stack.value("ibanera_up", connection="c0") == 1
    assert stack.balances("ibanera_total_balance") == {"1": 999.0, "2": 20.0}
    assert stack.value("ibanera_polls_total", connection="c0") == 3


def test_a_failure_on_a_later_page_publishes_nothing_of_that_poll(make_stack):
    stack = make_stack([account(i, total="1") for i in range(1, 26)], connections=[{"page_size": 10}])
    stack.poll()
    for i in range(1, 26):
        stack.simulator.update_account(i, total=Decimal("2"))
    # Page 1 answers, page 2 answers, page 3 fails every retry.
    stack.simulator.inject(Fault("delay", endpoint="balances"), times=2)
    stack.simulator.inject(Fault("http", endpoint="balances", status=500), times=3)
    stack.poll()
    assert stack.value("ibanera_up", connection="c0") == 0
    assert set(stack.balances("ibanera_total_balance").values()) == {1.0}


def test_accounts_that_vanish_from_the_api_vanish_from_metrics(make_stack):
    stack = make_stack([account(1), account(2), account(3)])
    stack.poll()
    stack.simulator.remove_account(2)
    stack.poll()
    assert set(stack.balances()) == {"1", "3"}
    assert stack.value("ibanera_asset_accounts", connection="c0") == 2


def test_a_bad_row_rejects_the_poll_rather_than_hiding_an_account(make_stack):
    stack = make_stack([account(1), account(2, suppressed=True)])
    stack.poll()
    stack.simulator.update_account(2, suppressed=None)
    stack.poll()
    assert stack.value("ibanera_up", connection="c0") == 0
    assert stack.value("ibanera_poll_failures_total", connection="c0", reason="malformed") == 1
    assert stack.balances("ibanera_account_suppressed") == {"1": 0.0, "2": 1.0}


def test_wrong_password_makes_one_login_attempt_per_backoff(make_stack):
    stack = make_stack(connections=[{"password": Secret("wrong")}])
    for _ in range(10):
        stack.poll()
        stack.clock.advance(60)  # ten polls a minute apart: all inside the 15 minute pause
    assert stack.simulator.logins_failed == 1
    assert stack.value("ibanera_login_failures_total", connection="c0", reason="Username_Or_Password_Incorrect") == 1
    assert stack.value("ibanera_poll_failures_total", connection="c0", reason="login_refused") == 1
    assert stack.value("ibanera_poll_failures_total", connection="c0", reason="login_backoff") == 9
    stack.clock.advance(300)
    stack.poll()
    assert stack.simulator.logins_failed == 2


def test_connections_are_independent(make_stack):
    stack = make_stack(connections=[{"name": "ok"}, {"name": "bad", "password": Secret("wrong")}])
    stack.poll()
    assert stack.value("ibanera_up", connection="ok") == 1
    assert stack.value("ibanera_up", connection="bad") == 0
    assert stack.value("ibanera_asset_accounts", connection="ok") == 1


def test_ready_only_after_every_connection_had_a_good_poll(make_stack):
    stack = make_stack(connections=[{"name": "a"}, {"name": "b"}])
    assert stack.get("/-/healthy").status_code == 200
    response = stack.get("/-/ready")
    assert response.status_code == 503 and "a, b" in response.text
    stack.pollers[0].poll_once()
    assert stack.get("/-/ready").status_code == 503
    stack.pollers[1].poll_once()
    assert stack.get("/-/ready").status_code == 200


def test_landing_page_shows_status_and_no_secret(make_stack):
    stack = make_stack(connections=[{"name": "ok"}, {"name": "bad", "password": Secret("wrong-pass-XYZ")}])
    stack.poll()
    page = stack.get("/").text
    assert 'href="/metrics"' in page and "Version test" in page
    assert "<td>ok</td><td>up</td>" in page and "<td>bad</td><td>down</td>" in page
    assert "login refused (Username_Or_Password_Incorrect)" in page
    for secret in [
        "wrong-pass-XYZ",
        stack.simulator.password,
        stack.simulator.totp_secret_base32,
        *stack.simulator.issued_tokens,
        *stack.simulator.otp_codes_seen,
    ]:
        assert secret not in page


def test_unknown_paths_are_404(make_stack):
    assert make_stack().get("/nope").status_code == 404


def test_gzip_and_openmetrics(make_stack):
    stack = make_stack()
    stack.poll()
    url = f"http://127.0.0.1:{stack.server.port}/metrics"
    with stack.http.stream("GET", url, headers={"Accept-Encoding": "gzip"}) as zipped:
        assert zipped.headers["Content-Encoding"] == "gzip"
        raw = b"".join(zipped.iter_raw())
    balances = {k: v for k, v in samples(gzip.decompress(raw).decode()).items() if k[0] == "ibanera_total_balance"}
    assert balances == {k: v for k, v in stack.metrics().items() if k[0] == "ibanera_total_balance"} != {}
    om = stack.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert om.headers["Content-Type"].startswith("application/openmetrics-text")
    names = {f.name for f in parse_openmetrics(om.text)}
    assert {"ibanera_total_balance", "ibanera_polls"} <= names


def test_a_failing_collector_answers_500_and_the_server_lives_on():
    def broken_statuses():
        raise RuntimeError("a bug")

    exposition = Exposition(broken_statuses, Config(connections=()), "test")
    server = WebServer(("127.0.0.1", 0), WebContext(exposition, lambda: [], "/metrics", "test"))
    server.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}") as http:
            assert http.get("/metrics").status_code == 500
            assert http.get("/-/healthy").status_code == 200
    finally:
        server.stop()


def test_failure_counters_start_at_zero_for_every_reason(make_stack):
    stack = make_stack()
    stack.poll()
    metrics = stack.metrics()
    poll_reasons = {
        dict(labels)["reason"]: v for (n, labels), v in metrics.items() if n == "ibanera_poll_failures_total"
    }
    login_reasons = {
        dict(labels)["reason"]: v for (n, labels), v in metrics.items() if n == "ibanera_login_failures_total"
    }
    assert set(poll_reasons) == set(POLL_FAILURE_REASONS) and set(poll_reasons.values()) == {0}
    assert set(login_reasons) == {
        "Username_Or_Password_Incorrect",
        "Account_Not_Verified",
        "Account_Locked",
        "Account_Suppressed",
    }
    assert set(login_reasons.values()) == {0}
    assert stack.value("ibanera_poll_interval_seconds") == 60


def test_gzip_body_is_one_stream_that_any_client_decodes_whole(make_stack):
    stack = make_stack([account(i) for i in range(1, 50)])
    stack.poll()
    url = f"http://127.0.0.1:{stack.server.port}/metrics"
    for _ in range(2):  # a fresh render, then the cached one
        with stack.http.stream("GET", url, headers={"Accept-Encoding": "gzip"}) as response:
            raw = b"".join(response.iter_raw())
        decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        text = decoder.decompress(raw).decode()
        assert decoder.eof and decoder.unused_data == b""  # not a multi-member file
        assert "ibanera_total_balance{" in text and "python_gc_collections_total{" in text  # both parts
        assert samples(text)[("ibanera_up", frozenset({("connection", "c0")}))] == 1


def test_balances_render_once_per_poll_not_per_scrape(make_stack, monkeypatch):
    renders = []
    original = metrics_module.render_balances
    monkeypatch.setattr(metrics_module, "render_balances", lambda *a: renders.append(1) or original(*a))
    stack = make_stack([account(1), account(2)])
    stack.poll()
    for headers in ({}, {"Accept-Encoding": "gzip"}, {"Accept": "application/openmetrics-text; version=1.0.0"}, {}):
        assert stack.get("/metrics", headers=headers).status_code == 200
    assert len(renders) == 1
    stack.simulator.update_account(1, total=Decimal("7"))
    stack.poll()
    assert stack.balances("ibanera_total_balance")["1"] == 7.0
    assert len(renders) == 2
