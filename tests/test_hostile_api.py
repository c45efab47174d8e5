"""Nothing the API side of the wire sends can stall, bloat, blind or lock the exporter.

Misbehaving peers are raw sockets (tests/scripted.py) where the simulator cannot
misbehave at that level; the lock-related cases use the simulator with its clock.
"""

from __future__ import annotations

import gzip
import json
import os
import resource
import socket
import threading
import time
import zlib
from decimal import Decimal

import pytest
from conftest import FAST_RETRY, FakeClock, account, connection_for
from scripted import (
    STAGES,
    Received,
    ScriptedServer,
    drip,
    envelope,
    fail_at_every_stage,
    good_login,
    one_account,
    reply,
    staged,
)

from exporter.api.client import IbaneraClient
from exporter.api.codes import OneTimeCodes
from exporter.api.memory import LoginMemory, LoginState
from exporter.config import Config, ConnectionConfig, RetryPolicy, Secret
from exporter.metrics import Exposition
from exporter.model import AccountBalance
from exporter.poller import ConnectionStatus, PartStatus, Poller, Snapshot
from exporter.simulator import Simulator
from exporter.totp import STEP_SECONDS, decode_secret, totp_at

BALANCES = "/api/v1/customer/accounts/balances"


def scripted_poller(
    server: ScriptedServer | str,
    *,
    request_timeout: float = 5.0,
    retry: RetryPolicy = FAST_RETRY,
    max_response_size: int = 16 * 1024 * 1024,
    clock: FakeClock | None = None,
    password: str = "p",
) -> Poller:
    """A poller of a scripted server (or of any base URL), on a fake clock."""
    connection = ConnectionConfig(
        name="hostile",
        base_url=server if isinstance(server, str) else server.url,
        username=Secret("u"),
        password=Secret(password),
        totp_secret=Secret("GEZDGNBVGY3TQOJQ"),
    )
    config = Config((connection,), request_timeout=request_timeout, retry=retry, max_response_size=max_response_size)
    # The waits for a fresh code step pass on a fake clock; the request deadline is real time.
    clock = clock or FakeClock()
    client = IbaneraClient(connection, config, memory=LoginMemory.first_contact(), clock=clock, sleep=clock.sleep)
    return Poller(client, 60, threading.Event())


def script(balances, login=good_login):
    def serve(request: Received, sock) -> None:
        if request.path.startswith("/api/v1/public/auth/login"):
            login(sock)
        elif request.path.startswith(BALANCES):
            balances(request, sock)
        else:
            reply(sock, 404, b"{}")

    return serve


# -- 1. a total deadline per request --------------------------------------------------------


@pytest.mark.parametrize("part", ["headers", "body"])
def test_a_drip_fed_reply_ends_at_the_request_timeout(serve, part):
    sent: list[int] = []
    body = one_account()
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()

    def balances(request, sock):
        if part == "headers":
            drip(sock, head + body, 0.05, sent)
        else:
            sock.sendall(head)
            drip(sock, body, 0.05, sent)

    server = serve(script(balances))
    poller = scripted_poller(server, request_timeout=0.5, retry=RetryPolicy(2, 0.01, 0.01))
    poller.poll_once()  # returns: before the deadline it never did
    status = poller.status()
    assert not status.accounts.up and status.polls == 1
    assert status.accounts.failures["timeout"] == 1
    assert status.client.requests[("accounts_balances", "timeout")] == 2  # both attempts, each cut at 0.5 s
    full = len(head + body) if part == "headers" else len(body)
    _wait_for(lambda: len(sent) == 2)  # the drips notice the closed socket at their next byte
    assert len(sent) == 2 and all(n < full / 2 for n in sent), sent  # the peer was left mid-drip


def _wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)


# -- 2. memory bounded whatever the encoding ----------------------------------------------------


def _gzip_bomb(inflated: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b"\0" * (1 << 20)
    return b"".join(compressor.compress(block) for _ in range(inflated >> 20)) + compressor.flush()


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@pytest.mark.parametrize("kind", ["bomb", "stacked", "unknown"])
def test_compressed_replies_cannot_inflate_past_max_response_size(serve, kind):
    if kind == "bomb":  # about 1 MB on the wire, 1 GiB inflated
        body, encoding = _gzip_bomb(1 << 30), "gzip"
    elif kind == "stacked":  # 2 kB that would inflate twice
        body, encoding = gzip.compress(gzip.compress(b"\0" * (256 << 20), 9), 9), "gzip, gzip"
    else:
        body, encoding = b"whatever", "br"
    server = serve(script(lambda request, sock: reply(sock, 200, body, {"Content-Encoding": encoding})))
    poller = scripted_poller(server, max_response_size=1 << 20)
    before = _peak_rss()
    poller.poll_once()
    status = poller.status()
    assert not status.accounts.up
    expected = "too_large" if kind == "bomb" else "malformed"
    assert status.accounts.failures[expected] == 1, status.accounts.last_error
    if kind != "bomb":
        assert "Content-Encoding" in (status.accounts.last_error or "")
    # httpx alone inflates the whole chunk or stack: hundreds of MB. Bounded: a few MB.
    assert _peak_rss() - before < 64 << 20


def test_a_gzip_reply_within_the_limit_is_read_exactly(serve):
    body = gzip.compress(one_account("12345678901.23"))
    server = serve(script(lambda request, sock: reply(sock, 200, body, {"Content-Encoding": "gzip"})))
    poller = scripted_poller(server)
    poller.poll_once()
    snapshot = poller.status().accounts.snapshot
    assert snapshot is not None and snapshot.rows[0].total == Decimal("12345678901.23")
    assert "gzip" in server.received[-1].headers["accept-encoding"]


# -- 3. tokens checked before use, never printed ------------------------------------------------

BAD_TOKENS = ["good-token ", "tok\r\nX-Injected: 1", "", "t" * 9000, "tökén", "tab\there"]


@pytest.mark.parametrize("token", BAD_TOKENS, ids=["trailing space", "CRLF", "empty", "too long", "not ASCII", "tab"])
def test_a_malformed_token_fails_the_poll_and_is_never_printed(serve, token, caplog):
    server = serve(
        script(lambda request, sock: reply(sock, 200, one_account()), login=lambda sock: good_login(sock, token=token))
    )
    poller = scripted_poller(server)
    with caplog.at_level("DEBUG"):
        poller.poll_once()
        poller.poll_once()
    status = poller.status()
    assert status.accounts.failures["malformed"] == 2 and status.accounts.failures["login_refused"] == 0
    assert sum(status.client.login_failures.values()) == 0  # not a refused login: no pause
    assert status.logins_paused_until is None and status.token_expires_at is None
    assert [r.path for r in server.received].count("/api/v1/public/auth/login") == 2  # the next poll logged in again
    assert not any(r.path.startswith(BALANCES) for r in server.received)  # the token was never sent
    if token.strip():
        assert token.strip()[:20] not in caplog.text + (status.accounts.last_error or "")


@pytest.mark.parametrize("expires_in", ["0", "0.5", "604801", "1e400", "-60", '"3600"', "true"])
def test_an_unusable_token_lifetime_is_malformed(serve, expires_in):
    def login(sock):
        body = f'{{"id": 0, "status": "1", "errors": [], "details": {{"accessToken": "t", "expiresIn": {expires_in}}}}}'
        reply(sock, 200, body.encode())

    server = serve(script(lambda request, sock: reply(sock, 200, one_account()), login=login))
    poller = scripted_poller(server)
    poller.poll_once()
    status = poller.status()
    assert status.accounts.failures["malformed"] == 1 and status.token_expires_at is None


# -- 4. strict JSON; one bad value never blinds /metrics ------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"id": 0, "status": "1", "errors": [], "details": [{"id": 1, "asset": "USD", "totalBalance": 1,'
        b' "totalBalance": 999, "availableBalance": 1, "pendingBalance": 0, "bSuppressed": false}]}',
        b'{"id": 0, "status": "1", "status": "1", "errors": [], "details": []}',
        b'{"id": 0, "status": "1", "errors": [], "details": [{"id": 1, "asset": "\\ud800", "totalBalance": 1,'
        b' "availableBalance": 1, "pendingBalance": 0, "bSuppressed": false}]}',
        b'{"id": 0, "status": "1", "errors": [], "details": [{"id": 1, "asset": "US\\u0007D", "totalBalance": 1,'
        b' "availableBalance": 1, "pendingBalance": 0, "bSuppressed": false}]}',
    ],
    ids=["duplicate amount", "duplicate status", "lone surrogate", "control character"],
)
def test_duplicate_keys_and_unprintable_labels_are_malformed(serve, body):
    server = serve(script(lambda request, sock: reply(sock, 200, body)))
    poller = scripted_poller(server)
    poller.poll_once()
    assert poller.status().accounts.failures["malformed"] == 1


def _status(name: str, asset: str) -> ConnectionStatus:
    row = AccountBalance(1, asset, Decimal(5), Decimal(5), Decimal(0), False)
    accounts = PartStatus(Snapshot((row,), 1.0), True, {}, None)
    return ConnectionStatus(name, accounts, None, 1, 0.1, None, None, None, _no_counts())


def _no_counts():
    from exporter.api.counters import ClientCounters

    return ClientCounters().snapshot()


def test_a_snapshot_that_cannot_be_rendered_costs_only_its_own_series():
    statuses = [_status("broken", "\ud800"), _status("fine", "USD")]
    exposition = Exposition(lambda: statuses, Config((), poll_interval=60), "test")
    for gzipped in (False, True):
        body = exposition.render(gzipped=gzipped)
        text = (gzip.decompress(body) if gzipped else body).decode()
        assert 'ibanera_total_balance{asset="USD",asset_account_id="1",connection="fine"} 5.0' in text
        assert 'connection="broken"' in text.split("# HELP ibanera_up ")[1]  # its health is still served
        assert (
            "ibanera_total_balance{asset" not in text.split('connection="fine"')[0].split("ibanera_total_balance")[-1]
        )
        assert 'ibanera_render_failures_total{connection="broken"} 1.0' in text
        assert 'ibanera_render_failures_total{connection="fine"} 0.0' in text


# -- 5. the clock offset is not poisoned by one reply ----------------------------------------------


def _codes(clock) -> OneTimeCodes:
    return OneTimeCodes(b"key", "test", clock, lambda seconds: None, LoginMemory.first_contact())


@pytest.mark.parametrize(
    "date",
    [
        "Tue, 24 Nov 2100 10:00:00 GMT",
        "Tue, 24 Nov 99999999999999999999 10:00:00 GMT",
        "garbage",
        "",
        "Tue, 24 Nov 2026 10:00:00 GMT" + " " * 100,
    ],
)
def test_an_absurd_or_unparsable_date_is_ignored(date):
    codes = _codes(lambda: 1_795_000_000.0)
    codes.observe_date(date, 1_795_000_000.0)
    codes.observe_date(date, 1_795_000_000.0)
    assert codes.offset is None


def test_one_reply_never_sets_the_offset_two_agreeing_ones_do():
    now = 1_795_000_000.0
    codes = _codes(lambda: now)
    skewed = "Fri, 18 Nov 2026 10:55:00 GMT"  # 60 s behind
    from email.utils import parsedate_to_datetime

    offset = parsedate_to_datetime(skewed).timestamp() + 0.5 - now
    codes.observe_date(skewed, now)
    assert codes.offset is None
    codes.observe_date(skewed, now)
    assert codes.offset == pytest.approx(offset)
    codes.observe_date("Fri, 18 Nov 2026 12:00:00 GMT", now)  # one outlier among three
    assert codes.offset == pytest.approx(offset)


def test_a_401_dated_2100_does_not_move_the_codes_of_the_next_login(serve):
    year_2100 = 4_102_444_800.0
    answers = iter([("ok", None), ("401", year_2100), ("ok", None)])
    login_codes: list[str] = []

    def login(request, sock):
        login_codes.append(json.loads(request.body)["otp"])
        good_login(sock)

    def balances(request, sock):
        kind, date = next(answers)
        if kind == "401":
            reply(sock, 401, b'{"status": "0"}', date=date)
        else:
            reply(sock, 200, one_account())

    def serve_script(request: Received, sock) -> None:
        if request.path == "/":
            reply(sock, 404, b"{}")
        else:
            (login if "auth/login" in request.path else balances)(request, sock)

    server = serve(serve_script)
    poller = scripted_poller(server)
    poller.poll_once()
    poller.poll_once()  # a 401 dated 2100, then one new login
    assert poller.status().accounts.up and len(login_codes) == 2
    key = decode_secret("GEZDGNBVGY3TQOJQ", "base32")
    now = time.time()
    near_now = {totp_at(key, now + step * STEP_SECONDS) for step in (-1, 0, 1)}
    assert login_codes[1] in near_now and login_codes[1] != totp_at(key, year_2100)
    offset = poller.status().clock_offset  # real-time Date headers against a fake clock that waited: seconds
    assert offset is None or abs(offset) < 60


def test_a_host_that_was_down_is_probed_again_before_the_login_once_it_is_up(serve):
    # The clock probe fails on a refused connection; the probe is not done until it got
    # through, so the first login after the host comes back is still preceded by it.
    hole = socket.socket()  # bound, not listening: every connection is refused
    hole.bind(("127.0.0.1", 0))
    poller = scripted_poller(f"http://127.0.0.1:{hole.getsockname()[1]}")
    poller.poll_once()
    status = poller.status()
    assert status.accounts.failures["connection_error"] == 1 and status.client.logins == 0
    hole.listen()
    hole.settimeout(0.2)
    server = serve(script(lambda request, sock: reply(sock, 200, one_account())))
    server._listener.close()
    server._listener = hole  # the scripted server now answers on the port that refused
    poller.poll_once()
    assert poller.status().accounts.up
    assert [r.path for r in server.received][:3] == ["/", "/", "/api/v1/public/auth/login"]


def test_a_proxy_that_cannot_reach_the_host_fails_the_clock_probe_before_a_login(serve, monkeypatch):
    # HTTPS_PROXY answers CONNECT with a 502: nothing of the API answers, as with a refused
    # connection. The probe took it for an answer, and every poll tried the login (three
    # attempts, each with a one-time code step taken) through a proxy that could not reach it.
    proxy = serve(lambda request, sock: reply(sock, 502, b"upstream unreachable"))
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    poller = scripted_poller("https://api.unreachable.example")
    poller.poll_once()
    status = poller.status()
    assert status.accounts.failures["connection_error"] == 1 and status.client.logins == 0
    assert [r.method for r in proxy.received] == ["CONNECT"]


# -- 6. an unexpected reply costs one poll, not the process's resources ----------------------------


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_hundred_failing_polls_at_every_stage_leave_fds_and_threads_flat(serve):
    stage = {"now": "good"}
    server = serve(staged(stage))
    # A leaked response keeps its pooled connection: the pool runs dry and polls time out.
    poller = scripted_poller(server, retry=RetryPolicy(1, 0.01, 0.01), request_timeout=0.5)
    poller.poll_once()
    assert poller.status().accounts.up
    fds, threads = _open_fds(), threading.active_count()
    for name in fail_at_every_stage(poller, stage):
        assert poller.status().accounts.up, f"the first good reply after 100 {name} failures was not polled"
    _wait_for(lambda: threading.active_count() <= threads)  # the scripted peer's threads end with their sockets
    assert _open_fds() <= fds and threading.active_count() <= threads
    status = poller.status()
    assert status.polls == 1 + len(STAGES) * 101
    sent = sum(1 for r in server.received if r.path.startswith(BALANCES))
    assert sum(v for (endpoint, _), v in status.client.requests.items() if endpoint == "accounts_balances") == sent


# -- 7. only a credential refusal counts as a refused login ----------------------------------------

NOT_REFUSALS = {
    "redirect": lambda sock: reply(sock, 302, b"", {"Location": "https://maintenance.example/"}),
    "403 page": lambda sock: reply(sock, 403, b"<html>Forbidden</html>", {"Content-Type": "text/html"}),
    "503 page": lambda sock: reply(sock, 503, b"<html>Down for maintenance</html>"),
    "401": lambda sock: reply(sock, 401, b""),
    "Required": lambda sock: reply(
        sock,
        400,
        b'{"id": 0, "details": null, "status": "0", "errors": [{"fieldName": "otp", "messageCode": "Required"}]}',
    ),
}


@pytest.mark.parametrize("answer", list(NOT_REFUSALS))
def test_a_login_answered_without_a_credential_refusal_is_a_failed_request(serve, answer):
    server = serve(script(lambda request, sock: reply(sock, 200, one_account()), login=NOT_REFUSALS[answer]))
    poller = scripted_poller(server)
    for _ in range(4):  # more than max_login_refusals
        poller.poll_once()
    status = poller.status()
    assert not status.accounts.up and status.accounts.failures["login_refused"] == 0
    assert status.accounts.failures["login_backoff"] == 0 and status.accounts.failures["logins_stopped"] == 0
    assert sum(status.client.login_failures.values()) == 0 and status.logins_paused_until is None
    logins = [r for r in server.received if "auth/login" in r.path]
    attempts = FAST_RETRY.max_attempts if answer == "503 page" else 1
    assert len(logins) == 4 * attempts  # every poll tried again, with the normal policy


@pytest.mark.parametrize(
    "code", ["Username_Or_Password_Incorrect", "Account_Locked", "Account_Not_Verified", "Account_Suppressed"]
)
def test_a_credential_refusal_pauses_logins(serve, code):
    refusal = envelope(None, status="0", errors=[{"fieldName": "", "messageCode": code, "errorType": "Auth"}])
    server = serve(
        script(lambda request, sock: reply(sock, 200, one_account()), login=lambda sock: reply(sock, 400, refusal))
    )
    poller = scripted_poller(server)
    poller.poll_once()
    poller.poll_once()
    status = poller.status()
    assert status.accounts.failures["login_refused"] == 1 and status.accounts.failures["login_backoff"] == 1
    assert status.client.login_failures[code] == 1 and status.logins_paused_until is not None
    assert len([r for r in server.received if "auth/login" in r.path]) == 1


# -- 8. a restart never risks the lock ---------------------------------------------------------------


def _restartable(simulator, clock, storage, **overrides):
    """A new process's client: built from the same storage folder, on the same clock."""
    connection = connection_for(simulator, **overrides)
    config = Config((connection,), retry=FAST_RETRY)
    memory = LoginMemory.open(storage, connection.name, clock(), config.login_backoff)
    return IbaneraClient(connection, config, memory=memory, clock=clock, sleep=clock.sleep)


def test_after_kill_9_the_next_process_never_reuses_the_last_step(tmp_path, clock):
    with Simulator([account(1)], clock=clock, reject_reused_otp=True) as simulator:
        first = _restartable(simulator, clock, tmp_path)
        first.fetch_balances()  # logs in and uses a step; then the process is killed, mid-step
        step = int(clock() // STEP_SECONDS)
        clock.advance(0.5)  # restarted at once, within the same 30 s step
        second = _restartable(simulator, clock, tmp_path)
        second.fetch_balances()
        assert simulator.logins_failed == 0 and simulator.logins_succeeded == 2
        assert int(clock() // STEP_SECONDS) > step  # it waited for a fresh step
        state = json.loads((tmp_path / "test.state.json").read_text())
        assert set(state) == {"last_code_step", "logins_paused_until", "refusals_in_a_row"}  # never a secret
        for client in (first, second):
            client.close()


def test_without_remembered_state_the_first_login_still_waits_for_a_fresh_step(clock):
    with Simulator([account(1)], clock=clock, reject_reused_otp=True) as simulator:
        first = _restartable(simulator, clock, None)
        first.fetch_balances()
        second = _restartable(simulator, clock, None)  # no --storage.path: it cannot know, so it waits
        second.fetch_balances()
        assert simulator.logins_failed == 0
        # What the memory prevents: a process that assumed first contact would reuse the step.
        clock.advance(STEP_SECONDS)
        third, fourth = (
            IbaneraClient(
                first.connection,
                Config((first.connection,), retry=FAST_RETRY),
                memory=LoginMemory.first_contact(),
                clock=clock,
                sleep=clock.sleep,
            )
            for _ in range(2)
        )
        third.fetch_balances()
        with pytest.raises(Exception, match="login refused"):
            fourth.fetch_balances()
        for client in (first, second, third, fourth):
            client.close()


def test_a_login_pause_and_logins_stopped_survive_a_restart(tmp_path, clock):
    with Simulator([account(1)], clock=clock) as simulator:
        for _ in range(3):  # three refusals in a row, each after the pause of the one before
            client = _restartable(simulator, clock, tmp_path, password=Secret("wrong"))
            with pytest.raises(Exception, match="login refused"):
                client.fetch_balances()
            client.close()
            again = _restartable(simulator, clock, tmp_path, password=Secret("wrong"))
            with pytest.raises(Exception, match=r"logins paused|logins stopped"):
                again.fetch_balances()  # restarted inside the pause: no login sent
            again.close()
            clock.advance(901)
        assert simulator.logins_failed == 3
        restarted = _restartable(simulator, clock, tmp_path)  # even with the right password now
        with pytest.raises(Exception, match=r"logins stopped .* delete .*test\.state\.json"):
            restarted.fetch_balances()
        restarted.close()
        assert simulator.logins_failed == 3 and simulator.logins_succeeded == 0


@pytest.mark.parametrize("content", [b"{not json", b"", b'{"last_code_step": "1"}', b"x" * 10000])
def test_an_untrustworthy_state_file_pauses_logins(tmp_path, clock, content):
    (tmp_path / "test.state.json").write_bytes(content)
    with Simulator([account(1)], clock=clock) as simulator:
        client = _restartable(simulator, clock, tmp_path, password=Secret("wrong"))
        with pytest.raises(Exception, match="logins paused"):
            client.fetch_balances()
        assert simulator.logins_failed == 0 and simulator.logins_succeeded == 0
        # How many refusals came before is unknown: after the pause, one refusal stops logins
        # (a count lost with the file must not buy max_login_refusals more towards the lock).
        clock.advance(901)
        with pytest.raises(Exception, match="no more logins until the exporter is restarted"):
            client.fetch_balances()
        with pytest.raises(Exception, match="logins stopped after 3 refused logins"):
            client.fetch_balances()
        client.close()
        assert simulator.logins_failed == 1


def test_an_untrustworthy_state_file_is_not_made_trustworthy_by_the_login_step(tmp_path, clock):
    # The code step of the first login is written before the login is sent: with it went the
    # file's refusals_in_a_row, 0, though the gate took it as one short of the stop. A process
    # killed with that login in flight left a file a restart trusted: a lost count again.
    from exporter.api.refusals import LoginGate

    (tmp_path / "test.state.json").write_bytes(b"{not json")
    memory = LoginMemory.open(tmp_path, "test", clock(), 900.0)
    LoginGate(memory, login_backoff=900.0, max_login_refusals=3, clock=clock)
    memory.remember_step(int(clock() // STEP_SECONDS) + 1)  # the login's code, then kill -9
    restarted = LoginMemory.open(tmp_path, "test", clock(), 900.0)
    gate = LoginGate(restarted, login_backoff=900.0, max_login_refusals=3, clock=clock)
    assert "no more logins" in gate.refused()


def test_a_clock_set_back_during_the_wait_for_a_fresh_step_does_not_reuse_the_step():
    # NTP steps the wall clock back while a login waits for the next 30 s step: when the
    # sleep ends, the clock is still in the step already used. The login must wait again.
    now = [1_795_000_005.0]  # 15 s into a step
    set_back = [10.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds - set_back.pop() if set_back else seconds  # the clock went back 10 s, once

    memory = LoginMemory(LoginState(last_code_step=int(now[0] // STEP_SECONDS)), None)
    used = memory.state.last_code_step
    codes = OneTimeCodes(b"key", "test", lambda: now[0], sleep, memory)
    code = codes.for_login()
    assert int(now[0] // STEP_SECONDS) > used
    assert code == totp_at(b"key", now[0])
    assert memory.state.last_code_step == int(now[0] // STEP_SECONDS)
