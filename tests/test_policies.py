"""Policies the README promises, each tested so that the test fails when the policy breaks.

Every test here was seen failing against a small, realistic change to exporter/ (the
mutation named in its docstring) before it was kept. They talk HTTP over loopback: to the
simulator, to a hostile stand-in of the API where the simulator cannot misbehave enough,
and to the exporter's own web server or console script.
"""

from __future__ import annotations

import email.utils
import json
import logging
import signal
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import trustme
from conftest import SCRIPT, Running, account, connection_for, rested_storage
from entries import connection_entry

from exporter.api.client import IbaneraClient
from exporter.api.memory import LoginMemory
from exporter.config import CaBundle, Config, ConfigError, RetryPolicy, Secret, load_config
from exporter.files import read_pem_bundle
from exporter.logs import LogfmtFormatter
from exporter.poller import Poller
from exporter.simulator import BALANCES_PATH, LOGIN_PATH, Fault, RawJson, Simulator

FIVE = [account(i, total=f"{i}.01", available=f"{i}.00", pending="0.01") for i in range(1, 6)]


def _wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# -- Retry-After is waited for ----------------------------------------------------------


@pytest.mark.parametrize("form", ["delay-seconds", "HTTP-date"])
def test_retry_after_is_waited_for_on_the_clock(make_stack, clock, form):
    """Mutation: Transport._wait returns the backoff only (Retry-After ignored) -> the fake
    clock moves by milliseconds, not by the 7 s the server asked for."""
    stack = make_stack(FIVE, config={"retry": RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=10.0)})
    stack.poll()  # the token: the poll below sends data requests only
    retry_after = "7" if form == "delay-seconds" else email.utils.formatdate(clock.now + 8, usegmt=True)
    stack.simulator.inject(Fault("http", "balances", status=429, retry_after=retry_after))
    before = clock.now
    stack.poll()
    assert stack.value("ibanera_up", connection="c0") == 1
    assert stack.value("ibanera_api_retries_total", connection="c0", endpoint="accounts_balances") == 1
    # An HTTP-date is whole seconds: 8 s from a clock with a fraction is more than 7 s away.
    assert clock.now - before >= 7.0


# -- which statuses are retried --------------------------------------------------------

RETRIED = [429, 500, 501, 502, 503, 504, 507]
NOT_RETRIED = [400, 403, 404, 405, 409, 410, 422]


@pytest.mark.parametrize("status", RETRIED + NOT_RETRIED)
def test_exactly_429_and_5xx_are_retried(make_stack, status):
    """Mutations: decode_envelope retries only (429, 500, 502, 503, 504) -> 501 and 507 fail
    the poll; retries every 4xx but 401 (`status >= 400`) -> 403, 404 ... are sent twice."""
    stack = make_stack(FIVE)
    stack.poll()
    stack.simulator.inject(Fault("http", "balances", status=status))
    before = stack.simulator.requests[BALANCES_PATH]
    stack.poll()
    sent = stack.simulator.requests[BALANCES_PATH] - before
    retries = stack.value("ibanera_api_retries_total", connection="c0", endpoint="accounts_balances")
    if status in RETRIED:
        assert (sent, retries, stack.value("ibanera_up", connection="c0")) == (2, 1, 1)
    else:
        assert (sent, retries, stack.value("ibanera_up", connection="c0")) == (1, 0, 0)
        assert stack.value("ibanera_poll_failures_total", connection="c0", reason="rejected") == 1
    assert (
        stack.value("ibanera_api_requests_total", connection="c0", endpoint="accounts_balances", code=str(status)) == 1
    )


# -- /-/ready --------------------------------------------------------------------------


def test_ready_stays_503_after_a_failed_first_poll_and_stays_200_after_a_good_one(make_stack):
    """Mutations: ready once a poll *ended* (`s.polls == 0`, or `s.last_poll_duration is None`)
    -> 200 after the failed first poll; ready while the last poll is up (`not s.accounts.up`)
    -> 503 again during an outage, which would take the only exporter out of its Service."""
    stack = make_stack(FIVE)
    stack.simulator.inject(Fault("http", "balances", status=503), times=3)
    stack.poll()
    assert stack.value("ibanera_poll_failures_total", connection="c0", reason="http_5xx") == 1
    response = stack.get("/-/ready")
    assert response.status_code == 503 and "c0" in response.text
    stack.poll()
    assert stack.get("/-/ready").status_code == 200
    stack.simulator.inject(Fault("http", "balances", status=503), times=3)
    stack.poll()
    assert stack.value("ibanera_up", connection="c0") == 0
    assert stack.get("/-/ready").status_code == 200


# -- ca_file ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cas() -> dict[str, trustme.CA]:
    return {"api": trustme.CA(), "other": trustme.CA()}


def _https_simulator(ca: trustme.CA, host: str) -> Simulator:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(host).configure_cert(context)
    return Simulator([account(1)], ssl_context=context).start()


@pytest.mark.parametrize(
    "trusted, cert_for, system, works",
    [
        ("api", "127.0.0.1", "other", True),  # ca_file is trusted
        ("other", "127.0.0.1", "api", False),  # and only it: the system store is not
        ("api", "someone.else.example", "api", False),  # and the host name is still checked
    ],
    ids=["the CA of ca_file", "another CA, even a system-trusted one", "the right CA, the wrong host"],
)
def test_ca_file_is_trusted_and_only_it(cas, tmp_path, monkeypatch, trusted, cert_for, system, works):
    """Mutations in api/http_client.tls_verification: ignore ca_file (`return True`) -> the first
    case fails; add ca_file to the system store (create_default_context() then
    load_verify_locations(ca_file)) -> the second; `verify=False` whenever ca_file is set,
    or check_hostname=False -> the second and third."""
    for name, ca in cas.items():
        # Named in UTF-8 before its PEM block, as curl's CA bundle names each CA.
        (tmp_path / f"{name}.pem").write_bytes("# Főtanúsítvány\n".encode() + ca.cert_pem.bytes())
    # The "system" store, as httpx and OpenSSL read it: a CA that does sign the API's certificate.
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / f"{system}.pem"))
    simulator = _https_simulator(cas["api"], cert_for)
    bundle = tmp_path / f"{trusted}.pem"
    connection = connection_for(simulator, ca_file=CaBundle(bundle, read_pem_bundle(bundle)))
    client = IbaneraClient(
        connection,
        Config((connection,), request_timeout=5, retry=RetryPolicy(1, 0.01, 0.01)),
        memory=LoginMemory.first_contact(),
    )
    try:
        if works:
            assert len(client.fetch_balances().rows) == 1
        else:
            with pytest.raises(Exception, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
                client.fetch_balances()
            assert simulator.requests[LOGIN_PATH] == 0 and simulator.logins_succeeded == 0  # nothing was sent
    finally:
        client.close()
        simulator.stop()


# -- the landing page escapes what comes from the API and the config --------------------

SCRIPT_TAG = "<script>alert(1)</script>"


class HostileApi:
    """An API stand-in that answers every request with one fixed reply (what the simulator cannot)."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        reply = (status, headers, body)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                code, extra, content = reply
                self.send_response(code)
                for name, value in {**extra, "Content-Length": str(len(content))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = _answer

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_landing_page_escapes_error_text_from_the_api(tmp_path):
    """Mutation: web._landing_page writes the cells without html.escape -> the API's
    Content-Type, quoted in the last error, becomes a live <script> on the page."""
    api = HostileApi(200, {"Content-Type": f"text/html; x={SCRIPT_TAG}"}, b"<html>maintenance</html>")
    config = tmp_path / "config.yaml"
    config.write_text(
        json.dumps(
            {
                "connections": [
                    {
                        "name": "hostile",
                        "base_url": api.url,
                        "username": "u",
                        "password": "p",
                        "totp_secret": "JBSWY3DPEHPK3PXP",
                    }
                ]
            }
        )
    )
    exporter = Running("--config.file", str(config), "--storage.path", rested_storage(tmp_path / "state", "hostile"))
    try:
        _wait_for(lambda: "&lt;script&gt;" in httpx.get(exporter.url + "/").text)
        page = httpx.get(exporter.url + "/").text
    finally:
        exporter.stop()
        api.stop()
    assert "<td>hostile</td><td>down</td>" in page  # the row under test really is there
    assert "<script" not in page


def test_landing_page_escapes_the_telemetry_path():
    """Mutation: the landing page writes --web.telemetry-path into its link unescaped."""
    exporter = Running("--demo", "--web.telemetry-path", f'/m"><b>{SCRIPT_TAG}')
    try:
        page = httpx.get(exporter.url + "/").text
    finally:
        exporter.stop()
    assert 'href="/m&quot;&gt;&lt;b&gt;&lt;script&gt;' in page
    assert "<script" not in page and "<b>" not in page


# -- shutdown --------------------------------------------------------------------------


def test_a_shutdown_during_a_retry_back_off_sends_no_further_request():
    """Mutation: Transport._sleep_unless_stopped waits on the stop event but does not raise
    Cancelled -> the back-off ends at once and the remaining attempts go out (and the poll
    is counted as failed), all still within the shutdown deadline the other tests check."""
    with Simulator(FIVE) as simulator:
        simulator.inject(Fault("http", "balances", status=503), times=5)
        stop = threading.Event()
        connection = connection_for(simulator)
        config = Config((connection,), request_timeout=5, retry=RetryPolicy(5, 20.0, 30.0))
        poller = Poller(
            IbaneraClient(connection, config, memory=LoginMemory.first_contact(), stop_event=stop), 60, stop
        )
        poller.start()
        _wait_for(lambda: simulator.faults_served["http"] >= 1)
        stop.set()
        poller.join(5)
        assert not poller.is_alive()
        assert simulator.requests[BALANCES_PATH] == 1 and simulator.requests[LOGIN_PATH] == 1
        assert sum(poller.status().accounts.failures.values()) == 0  # a shutdown is not a failed poll


def _config_file(tmp_path, simulator, **top) -> str:
    config = {
        "poll_interval": "1m",
        "request_timeout": "20s",
        "retry": {"max_attempts": 5, "initial_backoff": "20s", "max_backoff": "30s"},
        **top,
        "connections": [connection_entry(simulator, "c")],
    }
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(config))
    return str(path)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_and_sigint_both_exit_cleanly_during_a_retry_back_off(tmp_path, signum):
    """Mutation: cli._serve installs its handler for SIGTERM only -> SIGINT ends the process
    with a KeyboardInterrupt traceback and a non-zero code."""
    with Simulator(FIVE) as simulator:
        simulator.inject(Fault("http", "balances", status=503), times=5)
        exporter = Running(
            "--config.file",
            _config_file(tmp_path, simulator),
            "--storage.path",
            rested_storage(tmp_path / "state", "c"),
        )
        _wait_for(lambda: simulator.faults_served["http"] >= 1)
        exporter.proc.send_signal(signum)
        _, rest = exporter.proc.communicate(timeout=10)
        log = "".join(exporter.lines) + rest
        assert simulator.requests[BALANCES_PATH] == 1
    assert exporter.proc.returncode == 0, log
    assert f"signal={signum.name}" in log and "msg=stopped" in log and "Traceback" not in log


# -- polls are spaced start to start -----------------------------------------------------


class RecordingStop(threading.Event):
    """The poller's stop event, recording how long each pause between polls was meant to be."""

    def __init__(self, pauses: int) -> None:
        super().__init__()
        self.waits: list[float] = []
        self._pauses = pauses

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        if len(self.waits) >= self._pauses:
            self.set()
        return super().wait(timeout)


def _run_poller(stack, interval: float, pauses: int) -> list[float]:
    stop = RecordingStop(pauses)
    poller = Poller(stack.pollers[0].client, interval, stop)
    poller.start()
    poller.join(10)
    assert not poller.is_alive()
    assert poller.status().polls == pauses
    return stop.waits


def test_a_slow_poll_shortens_the_pause_after_it(make_stack):
    """Mutation: Poller._run waits the whole interval after each poll (end to start, e.g.
    `self._stop_event.wait(self._interval)`) -> the pause after a 0.3 s poll is 0.5 s."""
    stack = make_stack(FIVE)
    stack.simulator.inject(Fault("delay", "balances", delay=0.3))
    (pause,) = _run_poller(stack, interval=0.5, pauses=1)
    # The poll took at least 0.3 s on the monotonic clock, so start to start leaves at most 0.2 s.
    assert 0 <= pause <= 0.5 - 0.3


def test_a_poll_longer_than_the_interval_is_not_followed_by_a_burst(make_stack):
    """Mutation: drop `if next_start < now: next_start = now` in Poller._run -> the pause
    after an overlong poll is negative (the schedule tries to catch up with back-to-back polls)."""
    stack = make_stack(FIVE)
    stack.simulator.inject(Fault("delay", "balances", delay=0.4))
    first, second = _run_poller(stack, interval=0.2, pauses=2)
    assert first == 0  # the next poll starts at once, and the schedule restarts from there
    assert 0 < second <= 0.2


# -- pagination ------------------------------------------------------------------------


def test_a_first_page_reporting_more_than_max_pages_stops_the_poll_at_once(make_stack):
    """Mutation: drop the numberOfPages > max_pages check in pages.fetch_all -> the poll
    walks max_pages pages before it is refused (existing tests only see endless pages)."""
    stack = make_stack([account(i) for i in range(1, 26)], connections=[{"page_size": 2, "max_pages": 5}])
    stack.poll()
    assert stack.simulator.requests[BALANCES_PATH] == 1
    assert stack.value("ibanera_poll_failures_total", connection="c0", reason="too_many_pages") == 1
    assert "13 pages" in stack.pollers[0].status().accounts.last_error


# -- a bad row's log line --------------------------------------------------------------


@pytest.mark.parametrize(
    "field, raw",
    [
        ("totalBalance", None),
        ("availableBalance", "12.50 "),
        ("pendingBalance", 1e400),
        ("bSuppressed", "false"),
        ("asset", ""),
    ],
)
def test_a_bad_rows_log_line_names_the_account_and_the_field(make_stack, caplog, field, raw):
    """Mutations: model.parse_account re-raises without `account {id}:`; pages.fetch_all
    re-raises a row error without its text -> the line names neither."""
    value = RawJson("1e400") if raw == 1e400 else raw
    stack = make_stack([account(1), account(4217, total="3")])
    stack.poll()
    stack.simulator.update_account(4217, raw=((field, value),))
    with caplog.at_level(logging.WARNING, logger="exporter"):
        stack.poll()
    lines = [LogfmtFormatter().format(r) for r in caplog.records if r.getMessage() == "poll failed"]
    assert len(lines) == 1
    assert "reason=malformed" in lines[0] and "4217" in lines[0] and field in lines[0]


# -- logins ----------------------------------------------------------------------------


def test_a_short_token_is_renewed_35_seconds_before_it_expires(make_stack, clock):
    """Mutation: session._accept_token renews a fixed minute early (drops the quarter and the
    35 s floor) -> a 120 s token is renewed after 60 s instead of at the first fresh step
    after 85 s."""
    stack = make_stack(FIVE, simulator={"token_lifetime": 120})
    stack.poll()
    logged_in_at = stack.pollers[0].status().token_expires_at - 120  # the lifetime counts from here
    clock.advance(logged_in_at + 80 - clock.now)
    stack.poll()
    assert stack.simulator.logins_succeeded == 1
    clock.advance(31)  # 111 s: inside the last 35 s, and a step no request has used
    stack.poll()
    assert stack.simulator.logins_succeeded == 2 and stack.simulator.requests[LOGIN_PATH] == 2


def test_max_login_refusals_is_the_configured_number(make_stack, clock):
    """Mutation: Session compares with the default 3 instead of max_login_refusals."""
    stack = make_stack(FIVE, connections=[{"password": Secret("wrong")}], config={"max_login_refusals": 2})
    for _ in range(4):
        stack.poll()
        clock.advance(901)  # past login_backoff every time
    assert stack.simulator.logins_failed == 2
    assert stack.value("ibanera_poll_failures_total", connection="c0", reason="logins_stopped") == 2


# -- durations must be finite ----------------------------------------------------------

MINIMAL_CONNECTIONS = "connections: [{name: x, username: u, password: p, totp_secret: JBSWY3DP}]\n"


def _duration_setting(key: str, value: str) -> str:
    if key == "retry.initial_backoff":  # max_backoff may not be shorter than it
        return f"retry: {{initial_backoff: {value}, max_backoff: {value}}}"
    top, _, inner = key.partition(".")
    return f"{top}: {{{inner}: {value}}}" if inner else f"{key}: {value}"


@pytest.mark.parametrize(
    "key", ["poll_interval", "request_timeout", "login_backoff", "retry.initial_backoff", "retry.max_backoff"]
)
@pytest.mark.parametrize("value, shown", [(".inf", "inf"), ("1.0e+400", "inf"), ("25h", "'25h'"), ("86401", "86401")])
def test_durations_must_be_finite_and_at_most_a_day(tmp_path, key, value, shown):
    """The bug: `poll_interval: .inf` was accepted, and Event.wait(inf) killed the poller thread.
    Mutation: parse_duration without the upper bound (the code before the fix)."""
    path = tmp_path / "config.yaml"
    path.write_text(f"{_duration_setting(key, value)}\n{MINIMAL_CONNECTIONS}")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: {key}: must be at most 24h, got {shown}"


def test_an_infinite_poll_interval_is_a_config_error_on_the_command_line(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(f"poll_interval: .inf\n{MINIMAL_CONNECTIONS}")
    result = subprocess.run([SCRIPT, "--config.file", str(path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr == f"ibanera-exporter: error: {path}: poll_interval: must be at most 24h, got inf\n"


def test_a_day_is_still_a_valid_duration(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(f"poll_interval: 24h\nlogin_backoff: 1d\nretry: {{max_backoff: 86400}}\n{MINIMAL_CONNECTIONS}")
    config = load_config(path)
    assert config.poll_interval == config.login_backoff == config.retry.max_backoff == 86400


def test_a_log_value_never_carries_a_control_character_raw():
    # A CR would let a value forge a log line where CR ends one; an ANSI escape recolours a terminal.
    record = logging.LogRecord("exporter", logging.WARNING, __file__, 1, "poll failed", None, None)
    record.error = 'refused\r\nlevel=info msg="all good"\x1b[32m\x00\u2028'
    record.reason = "a\rb\x1b[2J"  # nothing that asks for quotes: it must be escaped all the same
    line = LogfmtFormatter().format(record)
    assert line.isprintable(), line
    assert 'reason="a\\rb\\x1b[2J"' in line
    assert 'error="refused\\r\\nlevel=info msg=\\"all good\\"\\x1b[32m\\x00\\u2028"' in line
