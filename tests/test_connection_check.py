"""--connection.check through the console script: one login attempt, a table, a cause in words."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from decimal import Decimal

import pytest
from conftest import ROOT, SCRIPT, rested_storage
from entries import connection_entry

from exporter.api.pages import Listed
from exporter.check import CheckResult, _accounts_rows
from exporter.config import ConnectionConfig, Secret
from exporter.dialect import Dialect
from exporter.model import AccountBalance
from exporter.simulator import BALANCES_PATH, LOGIN_PATH, Fault, SimDialect, Simulator

PASSWORD = "pa55-Very-Secret-check"
TOTP_KEY = b"a-check-totp-secret!"


@pytest.fixture
def simulator():
    with Simulator(password=PASSWORD, totp_secret=TOTP_KEY) as sim:
        yield sim


def check(tmp_path, connections: list[dict], storage: str | None = None) -> subprocess.CompletedProcess:
    """The check as an operator runs it, with a --storage.path that lets its login go at once."""
    storage = storage or rested_storage(tmp_path / "state", *(c["name"] for c in connections))
    lines = ["connections:"]
    for c in connections:
        lines.append(f"  - name: {c['name']}")
        lines.extend(f"    {key}: {value}" for key, value in c.items() if key != "name")
    (tmp_path / "config.yaml").write_text("\n".join(lines) + "\n")
    env = {**os.environ, "CHECK_PASSWORD": PASSWORD}
    return subprocess.run(
        [SCRIPT, "--config.file", str(tmp_path / "config.yaml"), "--connection.check", "--storage.path", storage],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=ROOT,
    )


def connection(sim: Simulator, name: str = "treasury", **extra: object) -> dict:
    return connection_entry(sim, name, password="${CHECK_PASSWORD}", **extra)


def no_secrets(result: subprocess.CompletedProcess, sim: Simulator) -> None:
    out = result.stdout + result.stderr
    assert "Traceback" not in out
    for secret in (PASSWORD, sim.totp_secret_base32, *sim.issued_tokens, *sim.otp_codes_seen):
        assert secret not in out


def test_a_good_connection_prints_its_table_and_exits_0(tmp_path, simulator):
    result = check(tmp_path, [connection(simulator, page_size=5, cards="true")])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        "connection treasury: OK",
        "  accounts        7 in 2 pages",
        "  assets          BTC, ETH, EUR, GBP, USD, USDC",
        "  suppressed      1 (1003)",
        "  page size       asked 5, the server used 5",
        "  dialect         keys camelCase, account id as id, amounts as numbers, codes upper case",
        "  cards           4 in 1 page",
        "  card dialect    keys camelCase, amounts as numbers, codes upper case",
        result.stdout.splitlines()[8],  # the clock offset, measured
        "  token lifetime  1h",
        "  login attempts  1",
    ]
    assert result.stdout.splitlines()[8].startswith("  clock offset    ")
    assert simulator.requests[LOGIN_PATH] == 1 and simulator.logins_succeeded == 1
    no_secrets(result, simulator)


def test_a_refused_login_is_named_with_what_to_check_and_exits_1(tmp_path, simulator):
    result = check(tmp_path, [{**connection(simulator), "password": "not-the-password"}])
    assert result.returncode == 1
    assert "connection treasury: FAILED" in result.stdout
    assert "  cause           login refused (Username_Or_Password_Incorrect)" in result.stdout
    assert (
        "  hint            check the username, the password and the TOTP secret, totp_secret_encoding (base32 "
        "now; ascii if the secret is plain text), and the clock offset: "
    ) in result.stdout
    assert simulator.requests[LOGIN_PATH] == 1 and simulator.logins_failed == 1  # exactly one attempt
    no_secrets(result, simulator)


def test_a_pause_recorded_by_the_daemon_stops_the_check_before_any_login(tmp_path, simulator):
    state = tmp_path / "state"
    state.mkdir()
    paused_until = time.time() + 600
    (state / "treasury.state.json").write_text(
        json.dumps({"last_code_step": 1, "logins_paused_until": paused_until, "refusals_in_a_row": 1})
    )
    result = check(tmp_path, [connection(simulator)], storage=str(state))
    assert result.returncode == 1
    assert "  cause           logins paused after a refused login, next attempt at " in result.stdout
    assert "so that the account is not locked: fix the credentials and wait" in result.stdout
    assert simulator.requests[LOGIN_PATH] == 0


def test_a_refusal_is_recorded_for_the_daemon_that_follows(tmp_path, simulator):
    result = check(tmp_path, [{**connection(simulator), "password": "not-the-password"}])
    assert result.returncode == 1
    state = json.loads((tmp_path / "state" / "treasury.state.json").read_text())
    assert state["refusals_in_a_row"] == 1 and state["logins_paused_until"] > time.time()
    again = check(tmp_path, [connection(simulator)], storage=str(tmp_path / "state"))
    assert again.returncode == 1 and "logins paused" in again.stdout
    assert simulator.requests[LOGIN_PATH] == 1  # the second check did not try


@pytest.mark.parametrize(
    "fault, cause, hint",
    [
        (Fault("http", "balances", status=401), "a second login is not tried", None),
        (Fault("http", "login", status=503), "login: HTTP 503", "the API is having trouble"),
    ],
)
def test_never_a_second_login_attempt(tmp_path, simulator, fault, cause, hint):
    simulator.inject(fault, times=3)
    result = check(tmp_path, [connection(simulator)])
    assert result.returncode == 1 and cause in result.stdout
    assert hint is None or hint in result.stdout
    assert simulator.requests[LOGIN_PATH] == 1  # not retried, not renewed, not repeated after a 401
    no_secrets(result, simulator)


def test_the_dialect_and_the_unpaginated_list_are_reported(tmp_path, simulator):
    simulator.set_dialect(SimDialect(pascal_case=True, amounts_as_strings=True, lower_case_codes=True))
    result = check(tmp_path, [connection(simulator, page_size="all")])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "  page size       all: the whole list in one request" in result.stdout
    assert (
        "  dialect         keys PascalCase, account id as id, amounts as strings, codes not upper case" in result.stdout
    )
    assert simulator.unpaginated_requests == 1 and simulator.requests[BALANCES_PATH] == 1
    assert 'msg="the API\'s dialect"' in result.stderr  # the log says it too


def test_an_unresolvable_host_is_named(tmp_path, simulator):
    result = check(
        tmp_path,
        [
            connection(simulator, name="good"),
            {**connection(simulator, name="typo"), "base_url": "https://api.example.invalid"},
        ],
    )
    assert result.returncode == 1  # one connection failed
    assert "connection good: OK" in result.stdout and "connection typo: FAILED" in result.stdout
    assert "the name api.example.invalid does not resolve: check base_url" in result.stdout
    assert simulator.requests[LOGIN_PATH] == 1  # the good one's


def test_the_daemon_gives_the_same_hint_in_its_log_and_on_its_landing_page(make_stack, caplog):
    stack = make_stack(connections=[{"password": Secret("not-the-password"), "totp_secret_encoding": "base32"}])
    stack.poll()
    hint = "check the username, the password and the TOTP secret, totp_secret_encoding (base32 now; ascii if the secret"
    logged = [r.error for r in caplog.records if r.getMessage() == "poll failed"]
    assert len(logged) == 1 and hint in logged[0] and "the clock offset: " in logged[0]
    assert hint in stack.get("/").text


def test_the_table_never_sends_an_api_string_raw_to_the_terminal():
    # The model refuses unprintable codes today; the table must not depend on it (an escape
    # sequence in an asset would clear or rewrite the operator's terminal).
    listed = Listed(
        (AccountBalance(1, "\x1b[2J\x1b]0;pwned\x07", Decimal(1), Decimal(1), Decimal(0), False),), 1, Dialect(), None
    )
    rows = _accounts_rows(
        listed, ConnectionConfig(name="t", username=Secret("u"), password=Secret("p"), totp_secret=Secret("JBSWY3DP"))
    )
    table = CheckResult("t", tuple(rows)).table()
    assert "\x1b" not in table and "\x07" not in table and "\\x1b[2J" in table


def test_a_host_that_cannot_be_reached_costs_no_login_and_no_code_step(tmp_path, simulator):
    # The clock probe finds nothing listening: the login is not tried, no code step is taken
    # (so nothing recorded under --storage.path) and the check does not wait for a fresh step.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    storage = tmp_path / "fresh-state"
    storage.mkdir()
    down = {**connection(simulator, name="down"), "base_url": f"http://127.0.0.1:{port}"}
    result = check(tmp_path, [down], storage=str(storage))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "connection down: FAILED" in result.stdout
    assert "  login attempts  0" in result.stdout
    assert f"127.0.0.1:{port} refused the connection: check base_url" in result.stdout
    assert list(storage.iterdir()) == []  # no step was taken, so none is remembered
    no_secrets(result, simulator)
