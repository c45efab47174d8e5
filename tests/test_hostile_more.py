"""More of what the API side of the wire can send, each case found failing by a hostile review.

Raw-socket peers (tests/scripted.py) on loopback, as in tests/test_hostile_api.py.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from email.utils import formatdate

import httpcore
import pytest
from conftest import FAST_RETRY, FakeClock, account
from scripted import Received, drip, envelope, good_login, one_account, reply
from test_hostile_api import BALANCES, _wait_for, script, scripted_poller

from exporter.api.client import IbaneraClient
from exporter.api.deadline import MAX_HUNG_LOOKUPS
from exporter.api.memory import LoginMemory
from exporter.config import Config, ConnectionConfig, RetryPolicy, Secret
from exporter.simulator import Simulator
from exporter.totp import decode_secret, totp_at

PASSWORD = "Hunter2Secret"


# -- a token with a trailing newline is still a malformed token -------------------------------------


@pytest.mark.parametrize("token", ["good-token\n", "good-token\r"])
def test_a_token_ending_in_a_line_break_is_malformed_and_never_sent(serve, token):
    server = serve(
        script(lambda request, sock: reply(sock, 200, one_account()), login=lambda sock: good_login(sock, token=token))
    )
    poller = scripted_poller(server)
    poller.poll_once()
    poller.poll_once()
    status = poller.status()
    assert status.accounts.failures["malformed"] == 2, status.accounts.last_error
    assert status.token_expires_at is None
    assert not any(r.path.startswith(BALANCES) for r in server.received)  # the token was never sent


def test_a_message_code_ending_in_a_line_break_is_not_echoed(serve):
    body = b'{"id": 0, "details": null, "status": "0", "errors": [{"fieldName": "", "messageCode": "Forged\\n"}]}'
    server = serve(script(lambda request, sock: reply(sock, 400, body)))
    poller = scripted_poller(server)
    poller.poll_once()
    error = poller.status().accounts.last_error or ""
    assert "unrecognised" in error and "Forged" not in error


def _exporter_logs(caplog) -> str:
    """Every log record of the exporter, its extra fields included (those are what the JSON log prints)."""
    return "\n".join(str(vars(r)) + r.getMessage() for r in caplog.records if r.name.startswith("exporter"))


# -- cookies: a reply cannot grow the client or the next request ------------------------------------


def test_cookies_set_by_replies_are_neither_kept_nor_sent_back(serve):
    def balances(request, sock):
        n = len(server.received)
        cookies = "\r\n".join(f"Set-Cookie: c{n}_{i}={'x' * 1000}; Path=/" for i in range(50))
        body = one_account()
        sock.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{cookies}\r\n\r\n".encode() + body)

    server = serve(script(balances))
    poller = scripted_poller(server)
    for _ in range(5):
        poller.poll_once()
    assert poller.status().accounts.up
    sent = [r for r in server.received if r.path.startswith(BALANCES)]
    assert len(sent) == 5 and not any("cookie" in r.headers for r in sent)


# -- Retry-After in any script ----------------------------------------------------------------------


@pytest.mark.parametrize("value", ["\u00b2", "\u2460", "1" * 30, "-5", "Tue, 24 Nov 99999 10:00:00 GMT"])
def test_an_odd_retry_after_is_still_a_retried_5xx(serve, value):
    def balances(request, sock):
        body = b"down"
        head = (
            f"HTTP/1.1 503 X\r\nContent-Length: {len(body)}\r\nRetry-After: {value}\r\n"
            f"Date: {formatdate(usegmt=True)}\r\n\r\n"
        )
        sock.sendall(head.encode("utf-8") + body)

    server = serve(script(balances))
    poller = scripted_poller(server)
    poller.poll_once()
    status = poller.status()
    assert status.accounts.failures["http_5xx"] == 1, status.accounts.last_error
    assert status.client.requests[("accounts_balances", "503")] == FAST_RETRY.max_attempts


# -- a pause is never longer than login_backoff from now ------------------------------------------------


def test_a_pause_from_a_clock_that_ran_ahead_is_capped_at_login_backoff(tmp_path, clock):
    # Written while the host's clock was a year ahead, then NTP put it right.
    state = {"last_code_step": None, "logins_paused_until": clock() + 365 * 86400, "refusals_in_a_row": 1}
    (tmp_path / "test.state.json").write_text(json.dumps(state))
    with Simulator([account(1)], clock=clock) as simulator:
        client = _client(simulator, clock, tmp_path)
        with pytest.raises(Exception, match="logins paused"):
            client.fetch_balances()
        clock.advance(Config(()).login_backoff + 1)
        client.fetch_balances()  # at most one login_backoff later
        assert simulator.logins_succeeded == 1
        client.close()


def test_a_pause_outlives_a_clock_jump_back_by_at_most_login_backoff(tmp_path, clock):
    with Simulator([account(1)], clock=clock) as simulator:
        client = _client(simulator, clock, tmp_path, password=Secret("wrong"))
        with pytest.raises(Exception, match="login refused"):
            client.fetch_balances()
        clock.now -= 86400  # the clock jumps a day back
        with pytest.raises(Exception, match="logins paused"):
            client.fetch_balances()
        clock.advance(Config(()).login_backoff + 1)
        with pytest.raises(Exception, match="login refused"):  # logging in again, not paused for a day
            client.fetch_balances()
        assert simulator.logins_failed == 2
        client.close()


def _client(simulator, clock, storage, **overrides) -> IbaneraClient:
    from conftest import connection_for

    connection = connection_for(simulator, **overrides)
    config = Config((connection,), retry=FAST_RETRY)
    memory = LoginMemory.open(storage, connection.name, clock(), config.login_backoff)
    return IbaneraClient(connection, config, memory=memory, clock=clock, sleep=clock.sleep)


# -- a state file that is not a regular file -----------------------------------------------------------


def test_a_fifo_in_place_of_the_state_file_does_not_hang_the_start(tmp_path):
    os.mkfifo(tmp_path / "test.state.json")
    opened: list[LoginMemory] = []
    thread = threading.Thread(
        target=lambda: opened.append(LoginMemory.open(tmp_path, "test", time.time(), 900)), daemon=True
    )
    thread.start()
    thread.join(10)
    if thread.is_alive():  # release the blocked open() so that the thread can end
        os.close(os.open(tmp_path / "test.state.json", os.O_WRONLY | os.O_NONBLOCK))
        thread.join(5)
        pytest.fail("opening a FIFO as the state file blocked the start")
    assert opened[0].state.logins_paused_until is not None  # untrustworthy: paused, as documented


# -- the clock offset: only from replies that are the server's own, fresh answer ----------------------


def test_a_cached_front_page_does_not_set_the_clock_of_the_first_login(serve):
    clock = FakeClock()
    login_codes: list[str] = []

    def serve_script(request: Received, sock) -> None:
        if request.path == "/":  # a CDN's copy, made 30 minutes ago
            reply(sock, 200, b"<html></html>", {"Age": "1800"}, date=clock() - 1800)
        elif "auth/login" in request.path:
            login_codes.append(json.loads(request.body)["otp"])
            good_login(sock, date=clock())
        else:
            reply(sock, 200, one_account(), date=clock())

    poller = scripted_poller(serve(serve_script), clock=clock, retry=RetryPolicy(1, 0.01, 0.01))
    poller.poll_once()
    key = decode_secret("GEZDGNBVGY3TQOJQ", "base32")
    assert login_codes and login_codes[0] != totp_at(key, clock() - 1800)
    offset = poller.status().clock_offset
    assert offset is None or abs(offset) < 60


def test_a_200_that_is_not_the_api_envelope_does_not_set_the_clock(serve):
    clock = FakeClock()

    def serve_script(request: Received, sock) -> None:
        if "auth/login" in request.path:
            good_login(sock, date=clock())
        elif request.path == "/":
            reply(sock, 404, b"", date=clock())
        else:  # a maintenance page served with 200, its Date 40 minutes off
            reply(sock, 200, b"<html>maintenance</html>", {"Content-Type": "text/html"}, date=clock() - 2400)

    poller = scripted_poller(serve(serve_script), clock=clock, retry=RetryPolicy(1, 0.01, 0.01))
    for _ in range(3):
        poller.poll_once()
    assert poller.status().accounts.failures["malformed"] == 3
    offset = poller.status().clock_offset
    assert offset is None or abs(offset) < 60


# -- secrets echoed by a reply never reach a log line or a page -----------------------------------------

ECHOES = {
    "messageCode": lambda request, sock: reply(
        sock,
        400,
        envelope(
            None, status="0", errors=[{"fieldName": "password", "messageCode": json.loads(request.body)["password"]}]
        ),
    ),
    "otp messageCode": lambda request, sock: reply(
        sock,
        400,
        envelope(
            None,
            status="0",
            errors=[{"fieldName": json.loads(request.body)["otp"], "messageCode": json.loads(request.body)["otp"]}],
        ),
    ),
    "Content-Type": lambda request, sock: reply(
        sock, 200, b"<html>", {"Content-Type": json.loads(request.body)["password"]}
    ),
}


@pytest.mark.parametrize("echo", list(ECHOES))
def test_a_reply_that_echoes_a_secret_does_not_print_it(serve, echo, caplog):
    sent: list[dict[str, str]] = []

    def serve_script(request: Received, sock) -> None:
        if "auth/login" in request.path:
            sent.append(json.loads(request.body))
            ECHOES[echo](request, sock)
        else:
            reply(sock, 404, b"{}")

    poller = scripted_poller(serve(serve_script), password=PASSWORD, retry=RetryPolicy(1, 0.01, 0.01))
    with caplog.at_level("DEBUG"):
        poller.poll_once()
    shown = _exporter_logs(caplog) + (poller.status().accounts.last_error or "")
    assert sent and PASSWORD not in shown and sent[0]["otp"] not in shown
    assert not poller.status().accounts.up


# -- a proxy from the environment is used, under the same total deadline -----------------------------


def test_an_https_proxy_from_the_environment_is_used_and_bounded_by_the_request_timeout(serve, monkeypatch):
    sent: list[int] = []
    body = one_account()

    def proxy(request: Received, sock) -> None:  # a forward proxy: absolute-form targets
        if "auth/login" in request.path:
            good_login(sock)
        elif "balances" in request.path:
            sock.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode())
            drip(sock, body, 0.05, sent)
        else:
            reply(sock, 404, b"{}")

    server = serve(proxy)
    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", server.url)
    poller = scripted_poller("http://ibanera.invalid", request_timeout=0.5, retry=RetryPolicy(2, 0.01, 0.01))
    poller.poll_once()
    status = poller.status()
    assert any(r.path.startswith("http://ibanera.invalid/api/v1/public/auth/login") for r in server.received)
    assert status.client.requests[("accounts_balances", "timeout")] == 2, status.accounts.last_error
    _wait_for(lambda: len(sent) == 2)
    assert len(sent) == 2 and all(n < len(body) / 2 for n in sent), sent


# -- a DNS lookup that never ends is under the same total deadline -------------------------------


def test_a_hung_dns_lookup_ends_at_the_request_timeout_and_holds_few_threads(monkeypatch):
    real_getaddrinfo = socket.getaddrinfo
    release = threading.Event()

    def getaddrinfo(host, *args, **kwargs):
        if host == "api.hangs.invalid":
            release.wait(30)  # a resolver that does not answer
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    poller = scripted_poller("http://api.hangs.invalid", request_timeout=0.3, retry=RetryPolicy(2, 0.01, 0.01))
    threads_before = threading.active_count()
    try:
        for _ in range(5):
            started = time.monotonic()
            poller.poll_once()  # returns: a lookup without an answer no longer holds it
            assert time.monotonic() - started < 10
        status = poller.status()
        assert status.polls == 5 and not status.accounts.up
        assert status.accounts.failures["timeout"] == 5, status.accounts.last_error
        assert status.client.logins == 0  # the probe's timeout ended each poll before a login
        # Each poll's clock probe hangs in its lookup, but only MAX_HUNG_LOOKUPS lookups ever hang at once.
        assert threading.active_count() - threads_before <= MAX_HUNG_LOOKUPS
    finally:
        release.set()
    _wait_for(lambda: threading.active_count() <= threads_before)
    assert threading.active_count() <= threads_before


def test_a_host_name_is_looked_up_and_each_of_its_addresses_tried():
    """localhost is ::1 and 127.0.0.1; the simulator listens on the second only."""
    with Simulator([account(1)]) as simulator:
        connection = ConnectionConfig(
            name="named",
            base_url=simulator.url.replace("127.0.0.1", "localhost"),
            username=Secret(simulator.username),
            password=Secret(simulator.password),
            totp_secret=Secret(simulator.totp_secret_base32),
        )
        client = IbaneraClient(connection, Config((connection,), request_timeout=5), memory=LoginMemory.first_contact())
        try:
            assert len(client.fetch_balances().rows) == 1
        finally:
            client.close()


def test_a_lookup_whose_thread_could_not_start_gives_its_slot_back(monkeypatch):
    """Out of threads (a pids limit) for a moment: each failed start kept a lookup slot, and
    after MAX_HUNG_LOOKUPS of them no name was ever looked up again until a restart."""
    from exporter.api import deadline as deadline_module

    real_start = threading.Thread.start

    def no_thread(self):
        if self.name.startswith("dns "):
            raise RuntimeError("can't start new thread")
        return real_start(self)

    monkeypatch.setattr(threading.Thread, "start", no_thread)
    for _ in range(MAX_HUNG_LOOKUPS + 1):
        with pytest.raises(httpcore.ConnectError, match="no thread"):
            deadline_module._resolve("localhost", 80, 0.2)
    monkeypatch.setattr(threading.Thread, "start", real_start)
    assert "127.0.0.1" in deadline_module._resolve("localhost", 80, 5.0)
