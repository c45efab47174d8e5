"""Reloading config.yaml (POST /-/reload, SIGHUP) like Prometheus, without needless logins."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from conftest import Running, account, rested_storage, samples
from test_security import HASH, PASSWORD

from exporter.api.client import IbaneraClient
from exporter.api.errors import Cancelled
from exporter.api.memory import LoginMemory
from exporter.config import Config, ConfigError, ConnectionConfig, load_config
from exporter.fleet import Fleet
from exporter.metrics import Exposition
from exporter.reload import Reloader
from exporter.simulator import Fault, Simulator
from exporter.simulator.facade import BALANCES_PATH
from exporter.totp import STEP_SECONDS
from exporter.web import WebContext, WebServer
from exporter.webconfig import WebConfigWatcher

PATIENCE = 15.0


def config_text(simulator: Simulator, names: tuple[str, ...] = ("a", "b"), **overrides: Any) -> str:
    connection = {
        "base_url": simulator.url,
        "username": simulator.username,
        "password_file": "password",
        "totp_secret": simulator.totp_secret_base32,
        "page_size": 10,
    }
    data = {
        "poll_interval": "1h",
        "connections": [{"name": n, **connection} for n in names],
        "thresholds": {"low_available_balance": {"USD": 100}},
    }
    for key, value in overrides.items():
        if key.startswith("connection_"):  # connection_b={"page_size": 5}: settings of one connection
            data["connections"] = [
                {**c, **value} if c["name"] == key[len("connection_") :] else c for c in data["connections"]
            ]
        else:
            data[key] = value
    return yaml.safe_dump(data)


def fresh_simulator_client(connection: ConnectionConfig, config: Config, stop_event: threading.Event) -> IbaneraClient:
    """A client that logs in at once: no process ever used this simulator's codes (as in --demo).

    The wait for the next code step after a restart is then the fleet's alone, which is what
    these tests look at."""
    return IbaneraClient(connection, config, memory=LoginMemory.first_contact(), stop_event=stop_event)


class Exporter:
    """Fleet, reloader, exposition and web server wired as the CLI wires them, over one config file."""

    def __init__(self, path: Path, clock: Any = time.time, web_config: WebConfigWatcher | None = None) -> None:
        config = load_config(path)
        self.fleet = Fleet(config, fresh_simulator_client, clock=clock)
        exposition = Exposition(self.fleet.statuses, config, "test")
        reloader = Reloader(lambda: load_config(path), self.fleet, exposition)
        exposition.registry.register(reloader)
        context = WebContext(exposition, self.fleet.statuses, "/metrics", "test", reload=reloader.reload)
        self.server = WebServer(("127.0.0.1", 0), context, web_config)
        self.url = f"http://127.0.0.1:{self.server.port}"
        self.server.start()
        self.fleet.start()

    def wait_until(self, check: Any, what: str) -> None:
        deadline = time.monotonic() + PATIENCE
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.05)
        raise AssertionError(f"never: {what}")

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        return samples(httpx.get(self.url + "/metrics").text)

    def series(self, name: str) -> dict[str, float]:
        return {
            dict(labels).get("connection") or dict(labels).get("asset", ""): value
            for (n, labels), value in self.metrics().items()
            if n == name
        }

    def reload(self, **kwargs: Any) -> httpx.Response:
        return httpx.post(self.url + "/-/reload", **kwargs)

    def stop(self) -> None:
        self.server.stop()
        self.fleet.stop(2)


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    with Simulator([account(1), account(2, "EUR")]) as sim:
        yield sim


@pytest.fixture
def setup(tmp_path, simulator):
    """setup(**config overrides, clock=..., web_config=...) -> (Exporter, config path), ready."""
    started: list[Exporter] = []
    (tmp_path / "password").write_text(simulator.password + "\n")

    def make(clock: Any = time.time, web_config: WebConfigWatcher | None = None, **overrides: Any):
        path = tmp_path / "config.yaml"
        path.write_text(config_text(simulator, **overrides))
        exporter = Exporter(path, clock, web_config)
        started.append(exporter)
        exporter.wait_until(lambda: all(s.accounts.snapshot for s in exporter.fleet.statuses()), "a first good poll")
        return exporter, path

    yield make
    for exporter in started:
        exporter.stop()


def test_unchanged_connections_keep_poller_token_and_snapshot_and_thresholds_apply_at_once(setup, simulator):
    exporter, path = setup()
    before = {s.name: s.accounts.snapshot for s in exporter.fleet.statuses()}
    reloaded_before = exporter.series("ibanera_config_last_reload_success_timestamp_seconds")[""]
    assert simulator.logins_succeeded == 2
    time.sleep(0.01)
    path.write_text(config_text(simulator, thresholds={"low_available_balance": {"USD": 5, "BTC": 1}}))
    response = exporter.reload()
    assert (response.status_code, response.text) == (200, "Reloaded.\n")
    assert exporter.series("ibanera_balance_low_threshold") == {"USD": 5.0, "BTC": 1.0}
    assert simulator.logins_succeeded == 2  # no new login
    assert all(s.accounts.snapshot is before[s.name] for s in exporter.fleet.statuses())  # the very same snapshots
    assert exporter.series("ibanera_config_last_reload_successful") == {"": 1.0}
    assert exporter.series("ibanera_config_last_reload_success_timestamp_seconds")[""] > reloaded_before


def test_a_removed_connection_stops_and_its_series_vanish_a_new_one_starts(setup, simulator):
    # c has b's API user, so it waits for the next code step: a clock just before one keeps that short.
    exporter, path = setup(clock=lambda: 1000 * STEP_SECONDS - 0.5)
    assert set(exporter.series("ibanera_up")) == {"a", "b"}
    path.write_text(config_text(simulator, names=("a", "c")))
    assert exporter.reload().status_code == 200
    assert "b" not in exporter.series("ibanera_up")
    assert not any(("connection", "b") in labels for _, labels in exporter.metrics())
    exporter.wait_until(lambda: exporter.series("ibanera_up") == {"a": 1.0, "c": 1.0}, "connection c polled")
    assert simulator.logins_succeeded == 3  # c logged in; a did not again


@pytest.mark.parametrize(
    "change, name",
    [
        ({"connection_b": {"page_size": 1}}, "b"),
        ({"connection_b": {"name": "b2"}}, "b2"),  # renamed: a new connection, but the same API user
    ],
)
def test_a_changed_connection_restarts_after_the_next_code_step(setup, simulator, change, name):
    # A clock half a second before a step: the restart waits 0.5 s + the margin, then logs in.
    exporter, path = setup(clock=lambda: 1000 * STEP_SECONDS - 0.5)
    a_snapshot = next(s.accounts.snapshot for s in exporter.fleet.statuses() if s.name == "a")
    path.write_text(config_text(simulator, **change))
    assert exporter.reload().status_code == 200
    assert simulator.logins_succeeded == 2  # not yet: the old client may have used this step's code
    exporter.wait_until(lambda: simulator.logins_succeeded == 3, f"{name} logged in")
    exporter.wait_until(lambda: exporter.series("ibanera_up").get(name) == 1.0, f"{name} polled")
    assert next(s.accounts.snapshot for s in exporter.fleet.statuses() if s.name == "a") is a_snapshot
    assert simulator.logins_succeeded == 3


def test_a_changed_connection_does_not_start_before_the_next_code_step(setup, simulator):
    # A clock just past a step: the restarted connection must wait some 32 s for the next one.
    # Within the second and a half looked at here it must not even read the server's clock
    # (GET /, the first thing a new client does), let alone log in with this step's code.
    exporter, path = setup(clock=lambda: 1000 * STEP_SECONDS + 1)
    probes = simulator.requests["/"]
    path.write_text(config_text(simulator, connection_b={"page_size": 1}))
    assert exporter.reload().status_code == 200
    window = time.monotonic() + 1.5
    while time.monotonic() < window:
        assert simulator.requests["/"] == probes and simulator.logins_succeeded == 2, "b started at once"
        time.sleep(0.05)


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"poll_interval": "soon"}, "poll_interval"),
        ({"connection_b": {"password_file": "missing"}}, "connections[1].password_file"),
        ({"connection_a": {"colour": "red"}}, "connections[0].colour"),
        ({"thresholds": {"low_available_balance": {"USD": "lots"}}}, "thresholds.low_available_balance"),
        # a's new client is built, then b's cannot be (its CA file is not a certificate): neither changes
        ({"connection_a": {"page_size": 2}, "connection_b": {"ca_file": "password"}}, "connection b: cannot be set up"),
    ],
)
def test_a_bad_file_is_refused_with_the_key_and_the_old_config_keeps_running(setup, simulator, overrides, key):
    exporter, path = setup()
    path.write_text(config_text(simulator, **overrides))
    response = exporter.reload()
    assert response.status_code == 500 and key in response.text and simulator.password not in response.text
    assert exporter.series("ibanera_config_last_reload_successful") == {"": 0.0}
    assert exporter.series("ibanera_balance_low_threshold") == {"USD": 100.0}
    assert exporter.series("ibanera_up") == {"a": 1.0, "b": 1.0} and simulator.logins_succeeded == 2
    path.write_text(config_text(simulator))
    assert exporter.reload().status_code == 200
    assert exporter.series("ibanera_config_last_reload_successful") == {"": 1.0}


def test_an_empty_or_truncated_file_is_refused(setup, simulator):
    exporter, path = setup()
    for text in ("", config_text(simulator)[:40]):
        path.write_text(text)
        assert exporter.reload().status_code == 500
        assert exporter.series("ibanera_up") == {"a": 1.0, "b": 1.0}


@pytest.mark.parametrize(
    "target, file, reason",
    [
        ("fifo", "config.yaml", "not a regular file"),  # read_text would wait for a writer: the reload, forever
        ("fifo", "password", "not a regular file"),
        ("/dev/zero", "config.yaml", "not a regular file"),  # read until memory runs out
        ("huge", "config.yaml", "larger than"),
        ("dir", "config.yaml", "not a regular file"),
    ],
)
def test_a_config_or_secret_file_replaced_by_a_fifo_a_device_or_a_huge_file_is_refused_at_once(
    setup, simulator, tmp_path, target, file, reason
):
    exporter, _ = setup()
    saved = (tmp_path / file).read_text()
    replaced = tmp_path / file
    replaced.unlink()
    if target == "fifo":
        os.mkfifo(replaced)
    elif target == "huge":
        replaced.write_text(saved + "#" * (5 * 1024 * 1024))
    elif target == "dir":
        replaced.mkdir()
    else:
        replaced.symlink_to(target)
    try:
        response = exporter.reload(timeout=PATIENCE)
        assert response.status_code == 500 and reason in response.text
        assert exporter.series("ibanera_up") == {"a": 1.0, "b": 1.0} and simulator.logins_succeeded == 2
    finally:
        if target == "fifo":  # a reader still blocked on it (without the fix) is let go
            with contextlib.suppress(OSError):
                os.close(os.open(replaced, os.O_WRONLY | os.O_NONBLOCK))
    (replaced.rmdir if target == "dir" else replaced.unlink)()
    replaced.write_text(saved)
    assert exporter.reload().status_code == 200


def test_reload_takes_post_only_and_the_same_auth_as_metrics(setup, tmp_path):
    (tmp_path / "web.yml").write_text(yaml.safe_dump({"basic_auth_users": {"prometheus": HASH}}))
    exporter, _ = setup(web_config=WebConfigWatcher(tmp_path / "web.yml"))
    auth = ("prometheus", PASSWORD)
    assert exporter.reload().status_code == 401
    response = httpx.get(exporter.url + "/-/reload", auth=auth)
    assert (response.status_code, response.headers["Allow"]) == (405, "POST")
    assert httpx.put(exporter.url + "/-/reload", auth=auth).status_code == 405
    assert exporter.reload(auth=auth).status_code == 200


def test_sighup_reloads_and_never_exits_sigterm_still_does(tmp_path, simulator):
    (tmp_path / "password").write_text(simulator.password)
    path = tmp_path / "config.yaml"
    path.write_text(config_text(simulator, names=("a",)))
    daemon = Running("--config.file", str(path), "--storage.path", rested_storage(tmp_path / "state", "a"))
    try:
        daemon.wait_ready()
        path.write_text(config_text(simulator, names=("a",), thresholds={"low_available_balance": {"USD": 7}}))
        for _ in range(20):  # a storm of SIGHUPs
            daemon.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + PATIENCE
        while time.monotonic() < deadline:
            metrics = samples(httpx.get(daemon.url + "/metrics").text)
            if metrics.get(("ibanera_balance_low_threshold", frozenset({("asset", "USD")}))) == 7:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("SIGHUP did not reload the thresholds")
        path.write_text("poll_interval: [\n")
        daemon.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + PATIENCE
        while samples(httpx.get(daemon.url + "/metrics").text)[("ibanera_config_last_reload_successful", frozenset())]:
            assert time.monotonic() < deadline, "the bad file was not refused"
            time.sleep(0.1)
        assert daemon.proc.poll() is None
    finally:
        code, _, log = daemon.stop()
    assert code == 0
    assert "config reloaded" in log and "config not reloaded" in log and "not valid YAML" in log
    assert simulator.logins_succeeded == 1  # every reload kept the connection and its token
    assert simulator.password not in log


def test_a_stopped_client_sends_no_further_request(tmp_path, simulator):
    """A reload hands a changed connection's API user to a new client, which waits for the next
    one-time-code step: the old client's abandoned poll must not go on to its next page (or to a
    login) with a code of that step when its request in flight comes back."""
    (tmp_path / "password").write_text(simulator.password)
    path = tmp_path / "config.yaml"
    path.write_text(config_text(simulator, names=("a",), connection_a={"page_size": 1}))  # two accounts: two pages
    config = load_config(path)
    stop = threading.Event()
    client = fresh_simulator_client(config.connections[0], config, stop)
    client.fetch_balances()
    asked = simulator.requests[BALANCES_PATH]
    simulator.inject(Fault("delay", "balances", delay=1.0))
    outcome: list[BaseException | None] = []

    def poll() -> None:
        try:
            client.fetch_balances()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=poll)
    thread.start()
    deadline = time.monotonic() + PATIENCE
    while simulator.requests[BALANCES_PATH] == asked:  # page 1 is in flight, in its delay
        assert time.monotonic() < deadline, "page 1 never asked for"
        time.sleep(0.01)
    stop.set()
    thread.join(PATIENCE)
    client.close()
    assert isinstance(outcome[0], Cancelled)
    assert simulator.requests[BALANCES_PATH] == asked + 1 and simulator.logins_succeeded == 1


def test_a_new_account_name_or_floor_keeps_the_poller_token_and_snapshot(setup, simulator):
    # Names and floors are read at each scrape, not by the poller: restarting it would drop the
    # connection's balance series until its next poll (resolving its low-balance alerts) and log in again.
    exporter, path = setup(connection_a={"accounts": {1: {"name": "Old"}}})
    before = {s.name: s.accounts.snapshot for s in exporter.fleet.statuses()}
    path.write_text(config_text(simulator, connection_a={"accounts": {1: {"name": "New", "low_available_balance": 5}}}))
    assert exporter.reload().status_code == 200
    assert all(s.accounts.snapshot is before[s.name] for s in exporter.fleet.statuses())
    assert simulator.logins_succeeded == 2
    info = {dict(labels)["name"] for name, labels in exporter.metrics() if name == "ibanera_account_info"}
    assert info == {"New"}


def test_a_file_nested_too_deeply_is_refused_and_the_reload_metric_says_so(setup, simulator):
    exporter, path = setup()
    path.write_text(config_text(simulator) + "deep: " + "[" * 20000 + "]" * 20000 + "\n")
    response = exporter.reload()
    assert response.status_code == 500 and "nested too deeply" in response.text
    assert exporter.series("ibanera_config_last_reload_successful") == {"": 0.0}
    assert exporter.series("ibanera_up") == {"a": 1.0, "b": 1.0}


def test_an_unexpected_error_in_a_reload_is_a_refused_reload_not_the_end_of_the_process(caplog):
    # The SIGHUP loop catches ConfigError only: any other error from a reload (the RecursionError
    # of a deep YAML file was one) ended the main loop and the process, with the metric still 1.
    def load() -> Config:
        raise RecursionError("maximum recursion depth exceeded")

    reloader = Reloader(load, fleet=None, exposition=None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="RecursionError"):
        reloader.reload()
    values = {metric.name: metric.samples[0].value for metric in reloader.collect()}
    assert values["ibanera_config_last_reload_successful"] == 0
    assert "config not reloaded" in caplog.text
