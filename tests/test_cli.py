"""The console script in a subprocess: --demo end to end, config errors, signals."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import httpx
import pytest
from conftest import ROOT, SCRIPT, Running, samples

ENV = {
    **os.environ,
    "IBANERA_USERNAME": "alice-the-user",
    "IBANERA_PASSWORD": "pa55-Very-Secret",
    "IBANERA_TOTP_SECRET": "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
}
SECRETS = [ENV["IBANERA_PASSWORD"], ENV["IBANERA_TOTP_SECRET"]]


def run(*args: str, env=ENV) -> subprocess.CompletedProcess:
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, env=env, timeout=30, cwd=ROOT)


def test_demo_end_to_end_then_sigterm():
    exporter = Running("--demo", env=ENV)
    try:
        assert httpx.get(exporter.url + "/-/healthy").status_code == 200
        exporter.wait_ready()
        metrics = samples(httpx.get(exporter.url + "/metrics").text)
        accounts = {
            dict(labels)["asset_account_id"]: v
            for (n, labels), v in metrics.items()
            if n == "ibanera_account_suppressed"
        }
        assert len(accounts) == 7 and accounts["1003"] == 1.0
        assert metrics[("ibanera_up", frozenset({("connection", "demo")}))] == 1
        assert (
            metrics[
                (
                    "ibanera_total_balance",
                    frozenset({("connection", "demo"), ("asset_account_id", "1005"), ("asset", "BTC")}),
                )
            ]
            > 0
        )
        page = httpx.get(exporter.url + "/").text
        assert "<td>demo</td><td>up</td>" in page and "<td>up, 4 cards</td>" in page
    finally:
        code, seconds, log = exporter.stop()
    assert code == 0 and seconds < 2.5
    assert "poll succeeded" in log and "pages=2" in log and "msg=stopped" in log
    assert "Traceback" not in log


def test_json_logs_are_one_object_per_line():
    exporter = Running("--demo", "--log.format", "json", env=ENV)
    try:
        exporter.wait_ready()
    finally:
        code, _, log = exporter.stop()
    records = [json.loads(line) for line in log.splitlines()]
    assert code == 0
    assert {"ts", "level", "logger", "msg"} <= set(records[0])
    assert any(r["msg"] == "poll succeeded" and r["accounts"] == 7 for r in records)


def test_config_check_lists_the_accounts_map():
    result = run("--demo", "--config.check")
    assert result.returncode == 0, result.stderr
    assert "    account 1001: 'Payroll USD', floor 50000\n    account 1002: 'Suppliers EUR'\n" in result.stdout


def test_config_check_on_the_shipped_config():
    result = run("--config.check")
    assert result.returncode == 0, result.stderr
    assert "config.yaml: configuration is valid" in result.stdout
    assert "connection default: https://public-api.ibanera.com" in result.stdout
    assert "USD < 10000" in result.stdout
    for secret in [*SECRETS, ENV["IBANERA_USERNAME"]]:
        assert secret not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "config, says",
    [
        (
            "connections: [{name: x, username: u, password: p, totp_secret: JBSWY3DP, colour: red}]",
            "connections[0].colour: unknown key",
        ),
        ("connections: [{name: x, username: u, password: p}]", "connections[0].totp_secret: is required"),
        (
            "connections: [{name: x, username: u, password_file: /nonexistent, totp_secret: JBSWY3DP}]",
            "connections[0].password_file: cannot read /nonexistent",
        ),
        (
            "connections: [{name: x, username: u, password: '${IBANERA_PASSWORD}', totp_secret: 'pa55-Very-Secret'}]",
            "connections[0].totp_secret: the TOTP secret is not valid base32",
        ),
        (
            "poll_interval: often\nconnections: [{name: x, username: u, password: p, totp_secret: JBSWY3DP}]",
            "poll_interval: expected a duration",
        ),
        (  # a NUL, an ANSI escape and a CR in a value reach the terminal as escapes, never raw
            'connections: [{name: x, username: u, password_file: "/pw\\0\\e[31m\\r", totp_secret: JBSWY3DP}]',
            "connections[0].password_file: cannot read /pw\\x00\\x1b[31m\\r",
        ),
    ],
)
def test_config_errors_are_one_clear_line_and_exit_2(tmp_path, config, says):
    path = tmp_path / "config.yaml"
    path.write_text(config)
    result = run("--config.file", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ibanera-exporter: error: {path}: {says}"), lines
    assert lines[0].isprintable(), lines
    assert "Traceback" not in result.stderr
    for secret in SECRETS:
        assert secret not in result.stderr + result.stdout


def test_missing_config_file():
    result = run("--config.file", "/nonexistent/config.yaml")
    assert result.returncode == 2
    assert "cannot read the config file: No such file or directory" in result.stderr


@pytest.mark.parametrize("flag, value", [("--web.listen-address", "nohost"), ("--web.telemetry-path", "metrics")])
def test_bad_flags_exit_2(flag, value):
    result = run("--demo", flag, value)
    assert result.returncode == 2 and flag in result.stderr and "Traceback" not in result.stderr


def test_a_port_in_use_is_a_clear_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("--demo", "--web.listen-address", f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_version_and_help():
    assert re.match(r"ibanera-exporter, version \d+\.\d+\.\d+ \(python 3", run("--version").stdout)
    help_text = run("--help").stdout
    for flag in [
        "--config.file",
        "--web.listen-address",
        "--web.telemetry-path",
        "--log.level",
        "--log.format",
        "--config.check",
        "--demo",
        "--version",
    ]:
        assert flag in help_text


def test_python_dash_m_runs_the_same_program():
    result = subprocess.run([sys.executable, "-m", "exporter", "--version"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stdout.startswith("ibanera-exporter, version")


# Runs the daemon in-process until it logs "listening", then lists the simulator's modules
# and pyotp among those loaded, and stops it the way an operator would (SIGTERM).
_LOADED_AT_START = """
import json, logging, os, signal, sys
from exporter import cli

class AtListening(logging.Handler):
    def emit(self, record):
        if record.getMessage() == "listening":
            print(json.dumps([m for m in sys.modules if m == "pyotp" or m.startswith("exporter.simulator")]), flush=True)
            os.kill(os.getpid(), signal.SIGTERM)

logging.getLogger("exporter.cli").addHandler(AtListening())
sys.exit(cli.main(sys.argv[1:] + ["--web.listen-address", "127.0.0.1:0"]))
"""


@pytest.mark.parametrize(
    "args, loaded",
    [
        (("--config.file", "config.yaml"), False),
        # The same probe sees them when they are loaded: it would notice an eager import.
        (("--demo",), True),
    ],
)
def test_the_daemon_loads_the_simulator_and_pyotp_only_under_demo(args, loaded):
    result = subprocess.run(
        [sys.executable, "-c", _LOADED_AT_START, *args], capture_output=True, text=True, env=ENV, timeout=30, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    modules = set(json.loads(result.stdout))
    if loaded:
        assert {"exporter.simulator", "exporter.simulator.auth", "pyotp"} <= modules
    else:
        assert modules == set()
