"""Fixtures: the embedded simulator and the exporter's parts wired as in the CLI, on loopback.

Tests drive polls by hand (`stack.poll()`) so that what they assert never depends on
a background thread's timing; the CLI tests cover the threads.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from rested import rested_storage
from scripted import ScriptedServer

from exporter.api.client import IbaneraClient
from exporter.config import Config, ConnectionConfig, RetryPolicy, Secret
from exporter.metrics import Exposition
from exporter.poller import Poller
from exporter.simulator import SimAccount, Simulator
from exporter.web import WebContext, WebServer

__all__ = ["rested_storage"]  # the tests import it from here

FAST_RETRY = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.05)


class FakeClock:
    """Unix time that moves only when a test says so; shared by simulator and client."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    sleep = advance  # what the client does while it waits: time passes, instantly


def account(id: int, asset: str = "USD", total="100.00", available=None, pending="0", suppressed=False) -> SimAccount:
    total = Decimal(total)
    return SimAccount(
        id, asset, total, Decimal(available) if available is not None else total, Decimal(pending), suppressed
    )


def connection_for(simulator: Simulator, **overrides) -> ConnectionConfig:
    base = ConnectionConfig(
        name="test",
        base_url=simulator.url,
        username=Secret(simulator.username),
        password=Secret(simulator.password),
        totp_secret=Secret(simulator.totp_secret_base32),
        page_size=10,
    )
    return replace(base, **overrides)


def samples(exposition: str) -> dict[tuple[str, frozenset], float]:
    """Parse an exposition with prometheus_client's own parser: {(name, labels): value}."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
    }


@dataclass
class Stack:
    simulator: Simulator
    config: Config
    clock: FakeClock
    pollers: list[Poller] = field(default_factory=list)
    server: WebServer | None = None
    http: httpx.Client = field(default_factory=httpx.Client)
    stop_event: threading.Event = field(default_factory=threading.Event)

    def start_polling(self) -> None:
        for poller in self.pollers:
            poller.start()

    def close(self) -> None:
        self.stop_event.set()
        self.http.close()
        self.server.stop()
        for poller in self.pollers:
            poller.join(2)
            poller.client.close()
        self.simulator.stop()

    def poll(self) -> None:
        for poller in self.pollers:
            poller.poll_once()

    def get(self, path: str, **kwargs) -> httpx.Response:
        return self.http.get(f"http://127.0.0.1:{self.server.port}{path}", **kwargs)

    def metrics(self) -> dict[tuple[str, frozenset], float]:
        response = self.get("/metrics")
        assert response.status_code == 200
        return samples(response.text)

    def value(self, name: str, **labels: str) -> float | None:
        return self.metrics().get((name, frozenset(labels.items())))

    def balances(self, name: str = "ibanera_available_balance") -> dict[str, float]:
        """{asset_account_id: value} for one balance metric."""
        return {dict(labels)["asset_account_id"]: v for (n, labels), v in self.metrics().items() if n == name}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def build_stack(clock, accounts=None, simulator=None, connections=({},), config=None) -> Stack:
    """Simulator + one client and poller per connection + collector + web server, on loopback."""
    sim = Simulator(accounts if accounts is not None else [account(1)], **{"clock": clock, **(simulator or {})}).start()
    conns = tuple(connection_for(sim, **{"name": f"c{i}", **c}) for i, c in enumerate(connections))
    cfg = Config(connections=conns, **{"retry": FAST_RETRY, **(config or {})})
    stack = Stack(sim, cfg, clock)
    for conn in conns:
        client = IbaneraClient(conn, cfg, stop_event=stack.stop_event, clock=clock, sleep=clock.sleep)
        stack.pollers.append(Poller(client, cfg.poll_interval, stack.stop_event))

    def statuses():
        return [p.status() for p in stack.pollers]

    exposition = Exposition(statuses, cfg, "test")
    stack.server = WebServer(("127.0.0.1", 0), WebContext(exposition, statuses, "/metrics", "test"))
    stack.server.start()
    return stack


@pytest.fixture
def make_stack(clock):
    """make_stack(accounts=[...], simulator={...}, connections=[{...}], config={...}) -> Stack."""
    started: list[Stack] = []

    def make(accounts=None, **kwargs) -> Stack:
        stack = build_stack(clock, accounts, **kwargs)
        started.append(stack)
        return stack

    yield make
    for stack in started:
        stack.close()


def required_tool(name: str, package: str) -> str:
    """The path of a program the test needs: without it, skip on a developer's machine, fail in CI."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} not found: install the Debian package '{package}' (apt-get install {package}; .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


SCRIPT = str(Path(sys.executable).parent / "ibanera-exporter")
ROOT = Path(__file__).resolve().parent.parent


class Running:
    """The console script as a daemon on a free port, found through its 'listening' log line."""

    def __init__(self, *args: str, env: dict | None = None) -> None:
        self.proc = subprocess.Popen(
            [SCRIPT, "--web.listen-address", "127.0.0.1:0", *args], stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT
        )
        self.lines: list[str] = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.lines.append(line)
            match = re.search(r"127\.0\.0\.1:(\d+)", line) if "listening" in line else None
            if match:
                self.url = f"http://127.0.0.1:{match.group(1)}"
                return
        self.proc.kill()  # never leave a daemon behind a failed test
        self.proc.wait(5)
        raise AssertionError(f"the exporter did not start listening: {self.lines}")

    def wait_ready(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if httpx.get(self.url + "/-/ready").status_code == 200:
                return
            time.sleep(0.1)
        raise AssertionError("never ready")

    def stop(self) -> tuple[int, float, str]:
        """SIGTERM; returns the exit code, the seconds it took, and everything it logged."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        _, rest = self.proc.communicate(timeout=10)
        return self.proc.returncode, time.monotonic() - started, "".join(self.lines) + rest


@pytest.fixture
def serve():
    """Starts raw-socket peers (tests/scripted.py) that misbehave on purpose; stops them after the test."""
    servers: list[ScriptedServer] = []

    def start(serve_script) -> ScriptedServer:
        server = ScriptedServer(serve_script)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
