"""The README's lists, read from the README itself, held against what the exporter really does.

A list in the README (flags, metrics, label values, failure reasons, units) is a promise:
these tests read it from README.md, so that the README and the exporter cannot drift apart
in either direction, and check each entry over loopback HTTP where it is behaviour.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import socket
import subprocess
import time
from decimal import Decimal

import httpx
import pytest
from conftest import ROOT, SCRIPT, account
from entries import connection_entry
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from exporter.api.client import IbaneraClient
from exporter.api.errors import POLL_FAILURE_REASONS
from exporter.config import AccountConfig, ConfigError, RetryPolicy, Secret, load_config
from exporter.simulator import Fault, SimCard, Simulator

README = (ROOT / "README.md").read_text()
FIVE_ACCOUNTS = [account(i) for i in range(1, 6)]


def _section(start: str, end: str) -> str:
    text = README.split(start, 1)[1]
    return text.split(end, 1)[0]


def _listed(text: str) -> list[str]:
    """The `code` words of a sentence, leaving out those inside (parentheses)."""
    return re.findall(r"`([^`]+)`", re.sub(r"\([^()]*\)", "", text))


# -- the endpoint label ----------------------------------------------------------------


def documented_endpoints() -> set[str]:
    return set(_listed(_section("`endpoint` is ", "Poll failure reasons")))


def test_every_endpoint_label_value_is_documented_and_every_documented_one_is_emitted(make_stack):
    """Mutations: a new endpoint label (e.g. the clock probe counted as "probe") or an
    undocumented one -> the sets differ. The README said `login` or `accounts_balances`
    only: `clock` and `cards_balances` were emitted but not documented."""
    assert documented_endpoints() == {"login", "accounts_balances", "cards_balances", "clock"}
    stack = make_stack(
        [account(1)],
        simulator={"cards": [SimCard(1, "USD", Decimal(1), Decimal(1), Decimal(0), "0001", "R", "H")]},
        connections=[{"cards": True}],
    )
    before = stack.metrics()
    retries_at_start = {
        dict(labels)["endpoint"]: v for (n, labels), v in before.items() if n == "ibanera_api_retries_total"
    }
    assert retries_at_start == dict.fromkeys(retries_at_start, 0) and set(retries_at_start) <= documented_endpoints()
    for endpoint in ("login", "balances", "cards"):  # one retry on each endpoint that retries
        stack.simulator.inject(Fault("http", endpoint, status=503))
    stack.poll()
    assert stack.value("ibanera_up", connection="c0") == 1 and stack.value("ibanera_cards_up", connection="c0") == 1
    emitted = {
        dict(labels)["endpoint"]
        for (n, labels), v in stack.metrics().items()
        if n in ("ibanera_api_requests_total", "ibanera_api_retries_total") and v > 0
    }
    assert emitted == documented_endpoints()


# -- poll failure reasons --------------------------------------------------------------


def documented_reasons() -> list[str]:
    return _listed(_section("Poll failure reasons:", "## How it behaves"))


def test_the_readme_lists_exactly_the_poll_failure_reasons():
    """Mutation: a new error class with its own reason, or a renamed reason, not in the README."""
    assert sorted(documented_reasons()) == sorted(POLL_FAILURE_REASONS)
    assert len(set(POLL_FAILURE_REASONS)) == len(POLL_FAILURE_REASONS)


def _polls(times: int):
    def run(stack) -> None:
        for _ in range(times):
            stack.poll()
            stack.clock.advance(60)

    return run


def _faulted(fault: Fault, times: int, first_a_good_poll: bool = False):
    def run(stack) -> None:
        if first_a_good_poll:
            stack.poll()
            stack.clock.advance(60)
        stack.simulator.inject(fault, times=times)
        stack.poll()

    return run


def _a_bug(stack, monkeypatch) -> None:
    # No reply of the API may cause this one: it is the reason of a bug in the exporter,
    # so a bug is planted, in the client's one public listing call.
    def broken(self):
        raise RuntimeError("a bug")

    monkeypatch.setattr(IbaneraClient, "fetch_balances", broken)
    stack.poll()


WRONG = {"password": Secret("wrong")}
# reason -> (make_stack arguments, what to do)
REASONS = {
    "timeout": ({"config": {"request_timeout": 0.2}}, _faulted(Fault("delay", "balances", delay=0.5), 3)),
    "connection_error": ({}, _faulted(Fault("reset", "balances"), 3)),
    "http_429": ({}, _faulted(Fault("http", "balances", status=429), 3)),
    "http_5xx": ({}, _faulted(Fault("http", "balances", status=502), 3)),
    "unauthorized": ({}, _faulted(Fault("http", "balances", status=401), 2, first_a_good_poll=True)),
    "rejected": ({}, _faulted(Fault("status0", "balances", message_code="Maintenance"), 1)),
    "login_refused": ({"connections": [WRONG]}, _polls(1)),
    "login_backoff": ({"connections": [WRONG]}, _polls(2)),
    "logins_stopped": ({"connections": [WRONG], "config": {"max_login_refusals": 1, "login_backoff": 600}}, _polls(12)),
    "malformed": ({}, _faulted(Fault("html", "balances"), 1)),
    "too_many_pages": (
        {"accounts": [account(i) for i in range(1, 4)], "connections": [{"page_size": 1, "max_pages": 2}]},
        _polls(1),
    ),
    "too_large": ({"config": {"max_response_size": 1024}}, _faulted(Fault("huge", "balances", size=2048), 1)),
    "internal": ({}, _a_bug),
}


def test_every_reason_has_an_end_to_end_case():
    assert set(REASONS) == set(POLL_FAILURE_REASONS)


@pytest.mark.parametrize("reason", list(REASONS))
def test_every_poll_failure_reason_is_produced_end_to_end(make_stack, monkeypatch, reason):
    """Each reason over loopback from a simulator fault (`internal` from a planted bug) to
    ibanera_poll_failures_total. Mutation: any error class's `reason` renamed, or a fault
    classified as another (e.g. TooManyPages raised as plain MalformedResponse)."""
    arguments, run = REASONS[reason]
    arguments = {**arguments, "connections": [{"name": "c0", **c} for c in arguments.get("connections", [{}])]}
    stack = make_stack(arguments.pop("accounts", [account(1)]), **arguments)
    if run is _a_bug:
        run(stack, monkeypatch)
    else:
        run(stack)
    failures = {
        dict(labels)["reason"]: v for (n, labels), v in stack.metrics().items() if n == "ibanera_poll_failures_total"
    }
    assert failures[reason] >= 1
    assert stack.value("ibanera_up", connection="c0") == 0
    assert stack.pollers[0].status().accounts.last_error


def test_every_failure_counter_starts_at_zero_for_every_reason_cards_too(make_stack):
    """ "Both failure counters are exported at 0 for every reason from the start": the card
    twin too. Mutation: the card PollPart starts with an empty Counter."""
    stack = make_stack(connections=[{"cards": True}])
    metrics = stack.metrics()  # before any poll
    for family in ("ibanera_poll_failures_total", "ibanera_card_poll_failures_total"):
        reasons = {dict(labels)["reason"]: v for (n, labels), v in metrics.items() if n == family}
        assert reasons == dict.fromkeys(POLL_FAILURE_REASONS, 0), family


# -- the metric tables -----------------------------------------------------------------


def documented_metrics() -> dict[str, tuple[str, set[str], set[str]]]:
    """{family name: (type, labels, optional labels)} from the README's metric tables."""
    found: dict[str, tuple[str, set[str], set[str]]] = {}
    labels: set[str] = set()
    for line in _section("## Metrics", "## How it behaves").splitlines():
        match = re.match(r"\| `(ibanera_\w+)` \| (\w+)[^|]*\|([^|]*)\|", line)
        if not match:
            continue
        name, kind, label_text = match.groups()
        optional = set(re.findall(r"\(\+ (\w+) if asked\)", label_text))
        label_text = re.sub(r"\([^()]*\)", "", label_text).strip()
        if label_text != "same":
            labels = {word.strip() for word in label_text.split(",") if word.strip()}
        found[name.removesuffix("_total") if kind == "counter" else name] = (kind, set(labels), optional)
    return found


def test_the_metric_tables_are_what_metrics_serves(make_stack):
    """Every documented family is served with its type and labels, and nothing undocumented
    is. Mutations: a label renamed or added, a family renamed, a counter served as a gauge."""
    documented = documented_metrics()
    assert len(documented) == 31
    stack = make_stack(
        [account(1)],
        simulator={"cards": [SimCard(1, "USD", Decimal(1), Decimal(1), Decimal(0), "0001", "R", "Ann")]},
        connections=[
            {
                "cards": True,
                "cards_holder_name_label": True,
                "accounts": {1: AccountConfig(name="Payroll", low_available_balance=Decimal(1))},
            }
        ],
        config={"low_available_balance": {"USD": Decimal(1)}, "low_available_card_balance": {"USD": Decimal(1)}},
    )
    stack.poll()
    served = {
        f.name: f for f in text_string_to_metric_families(stack.get("/metrics").text) if f.name.startswith("ibanera_")
    }
    assert set(served) == set(documented)
    for name, (kind, labels, optional) in documented.items():
        assert served[name].type == kind, name
        assert served[name].samples, name
        for sample in served[name].samples:
            assert labels <= set(sample.labels) <= labels | optional, (name, sample.labels)


# -- the command line ------------------------------------------------------------------


def documented_flags() -> set[str]:
    return set(re.findall(r"^\| `(--[a-z.-]+)", _section("## Command line", "Exit codes"), re.MULTILINE))


def test_the_flag_table_is_the_command_line():
    """Mutation: a flag added, renamed or dropped in flags.parser and not in the README (or back)."""
    help_text = subprocess.run([SCRIPT, "--help"], capture_output=True, text=True, timeout=30).stdout
    assert documented_flags() == set(re.findall(r"(?<![\w-])(--[a-z][a-z.-]+)", help_text)) - {"--help"}
    assert len(documented_flags()) == 14


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_until_healthy(args: list[str], then=lambda url: None) -> tuple[int, str]:
    """The console script on a free port: wait for /-/healthy, do `then(url)`, SIGTERM; (code, log)."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [SCRIPT, "--web.listen-address", f"127.0.0.1:{port}", *args], stderr=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            assert time.monotonic() < deadline and proc.poll() is None, "the exporter never became healthy"
            try:
                if httpx.get(url + "/-/healthy").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        then(url)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, log = proc.communicate(timeout=10)
    return proc.returncode, log


@pytest.fixture(scope="module")
def insecure_config(tmp_path_factory):
    """A connection with TLS verification off, so that a warn line appears at every start."""
    with Simulator([account(1)]) as simulator:
        path = tmp_path_factory.mktemp("levels") / "config.yaml"
        path.write_text(json.dumps({"connections": [connection_entry(simulator, "c", tls_insecure_skip_verify=True)]}))
        yield str(path)


@pytest.mark.parametrize(
    "level, shown",
    [("debug", {"debug", "info", "warn"}), ("info", {"info", "warn"}), ("warn", {"warn"}), ("error", set())],
)
def test_log_levels_filter_as_documented(insecure_config, level, shown):
    """Mutations: setup_logging ignores --log.level, or maps `warn` to INFO."""
    code, log = _run_until_healthy(
        ["--config.file", insecure_config, "--log.level", level], then=lambda url: httpx.get(url + "/metrics")
    )
    assert code == 0
    levels = set(re.findall(r"^ts=\S+ level=(\w+)", log, re.MULTILINE))
    assert levels == shown, log


def test_the_telemetry_path_moves_the_metrics():
    """Mutation: the web server serves the metrics at /metrics whatever --web.telemetry-path says."""

    def check(url: str) -> None:
        assert "ibanera_exporter_build_info" in httpx.get(url + "/custom/path").text
        assert httpx.get(url + "/metrics").status_code == 404
        assert 'href="/custom/path"' in httpx.get(url + "/").text

    code, _ = _run_until_healthy(["--demo", "--web.telemetry-path", "/custom/path"], then=check)
    assert code == 0


# -- configuration: units and ranges ---------------------------------------------------

MINIMAL = "connections: [{name: x, username: u, password: p, totp_secret: JBSWY3DP}]\n"


@pytest.mark.parametrize(
    "text, size",
    [
        ("512B", 512),
        ("2kB", 2000),
        ("3MB", 3_000_000),
        ("1GB", 10**9),
        ("2KiB", 2048),
        ("16MiB", 16 * 2**20),
        ("1GiB", 2**30),
        ("4096", 4096),
    ],
)
def test_every_size_unit_the_readme_lists(tmp_path, text, size):
    """Mutation: kB read as 1024 (or KiB as 1000), and so on for each unit."""
    assert set(re.findall(r"\b(K?i?B|[kMG]i?B)\b", README.split("max_response_size:")[1].split("\n")[0])) == {
        "B",
        "kB",
        "MB",
        "GB",
        "KiB",
        "MiB",
        "GiB",
    }
    path = tmp_path / "config.yaml"
    path.write_text(f"max_response_size: {text}\n{MINIMAL}")
    assert load_config(path).max_response_size == size


@pytest.mark.parametrize(
    "setting, key, good",
    [
        ("max_login_refusals: 0", "max_login_refusals", False),
        ("max_login_refusals: 1", "max_login_refusals", True),
        ("max_login_refusals: 10", "max_login_refusals", True),
        ("max_login_refusals: 11", "max_login_refusals", False),
        ("page_size: 10000", "connections[0].page_size", True),
        ("page_size: 10001", "connections[0].page_size", False),
        (f"name: {'n' * 63}", "connections[0].name", True),
        (f"name: {'n' * 64}", "connections[0].name", False),
        ("max_pages: 0", "connections[0].max_pages", False),
    ],
)
def test_the_documented_ranges(tmp_path, setting, key, good):
    """Mutations: the bounds of reader.integer calls or of the connection-name pattern moved."""
    path = tmp_path / "config.yaml"
    if key.startswith("connections"):
        path.write_text(
            MINIMAL.replace("{name: x", "{" + (setting if setting.startswith("name") else f"name: x, {setting}"))
        )
    else:
        path.write_text(f"{setting}\n{MINIMAL}")
    if good:
        load_config(path)
    else:
        with pytest.raises(ConfigError, match=re.escape(key)):
            load_config(path)


def test_the_readme_example_shows_the_defaults(tmp_path):
    """The values in the README's example config are the defaults a minimal config gets.
    Mutation: a default changed in config.py (e.g. max_pages, login_backoff) without the README."""
    import yaml

    example = yaml.safe_load(_section("## Configuration\n\n```yaml\n", "```"))
    path = tmp_path / "config.yaml"
    path.write_text(MINIMAL)
    config = load_config(path)
    (connection,) = config.connections
    durations = {"60s": 60.0, "10s": 10.0, "1s": 1.0, "30s": 30.0, "15m": 900.0}
    assert durations[example["poll_interval"]] == config.poll_interval
    assert durations[example["request_timeout"]] == config.request_timeout
    assert durations[example["login_backoff"]] == config.login_backoff
    retry = example["retry"]
    assert (retry["max_attempts"], durations[retry["initial_backoff"]], durations[retry["max_backoff"]]) == (
        config.retry.max_attempts,
        config.retry.initial_backoff,
        config.retry.max_backoff,
    )
    assert example["max_login_refusals"] == config.max_login_refusals
    assert example["max_response_size"] == "16MiB" and config.max_response_size == 16 * 2**20
    shown = example["connections"][0]
    for key in (
        "base_url",
        "totp_secret_encoding",
        "page_size",
        "max_pages",
        "cards",
        "cards_holder_name_label",
        "tls_insecure_skip_verify",
    ):
        assert shown[key] == getattr(connection, key), key


# -- behaviours the README states in passing ---------------------------------------------


def test_samples_carry_no_timestamps(make_stack):
    """ "They carry no timestamps: they are what the last good poll saw." Mutation: the
    balance rendering appends the poll's time to each sample."""
    stack = make_stack(
        [account(1), account(2)],
        simulator={"cards": [SimCard(1, "USD", Decimal(1), Decimal(1), Decimal(0), "0001", "R", "H")]},
        connections=[{"cards": True}],
    )
    stack.poll()
    for parse, accept in (
        (text_string_to_metric_families, "text/plain"),
        (parse_openmetrics, "application/openmetrics-text; version=1.0.0"),
    ):
        text = stack.get("/metrics", headers={"Accept": accept}).text
        ours = [s for f in parse(text) if f.name.startswith("ibanera_") for s in f.samples]
        assert len(ours) > 20
        assert [s for s in ours if s.timestamp is not None] == []


def documented_login_refusals() -> set[str]:
    row = next(line for line in README.splitlines() if line.startswith("| `ibanera_login_failures_total`"))
    return set(_listed(row.split("by `messageCode`:", 1)[1]))


def test_login_failure_reasons_are_the_documented_credential_refusals(make_stack):
    """Mutations: a messageCode added to (or dropped from) CREDENTIAL_REFUSALS, or an
    undocumented refusal counted (and pausing logins) as a refused login."""
    assert documented_login_refusals() == {
        "Username_Or_Password_Incorrect",
        "Account_Not_Verified",
        "Account_Locked",
        "Account_Suppressed",
    }
    stack = make_stack()
    stack.simulator.inject(Fault("status0", "login", message_code="Some_New_Refusal"))
    stack.poll()
    failures = {
        dict(labels)["reason"]: v for (n, labels), v in stack.metrics().items() if n == "ibanera_login_failures_total"
    }
    assert failures == dict.fromkeys(documented_login_refusals(), 0)
    assert stack.value("ibanera_poll_failures_total", connection="c0", reason="rejected") == 1
    stack.poll()  # no login pause: the next poll logs in
    assert stack.value("ibanera_up", connection="c0") == 1 and stack.simulator.logins_succeeded == 1
    stack.simulator.inject(Fault("otp", "login"))  # the simulator's Username_Or_Password_Incorrect
    stack.simulator.revoke_tokens()
    stack.poll()
    assert stack.value("ibanera_login_failures_total", connection="c0", reason="Username_Or_Password_Incorrect") == 1


def test_each_attempt_carries_a_code_computed_just_before_it_is_sent(make_stack):
    """Two 30 s Retry-After waits put the third attempt two steps after the first: a code
    computed once per request (mutation: the otp header built outside Session's build())
    is refused by the server, even if a retry with a fresh code then rescues the poll."""
    stack = make_stack(FIVE_ACCOUNTS, config={"retry": RetryPolicy(3, 0.01, 30.0)})
    stack.poll()
    stack.simulator.inject(Fault("http", "balances", status=503, retry_after="30"), times=2)
    before = stack.clock.now
    stack.poll()
    assert stack.clock.now - before >= 60
    assert stack.value("ibanera_up", connection="c0") == 1
    assert stack.simulator.otp_rejections == 0


def test_waiting_for_a_fresh_code_is_said_in_an_info_line(make_stack, caplog):
    """Mutation: the "waiting for a fresh one-time code" line logged at debug."""
    stack = make_stack(FIVE_ACCOUNTS, connections=[{"page_size": 2}], simulator={"reject_reused_otp": True})
    with caplog.at_level(logging.INFO, logger="exporter"):
        stack.poll()
    assert stack.value("ibanera_up", connection="c0") == 1
    waits = [r for r in caplog.records if r.getMessage() == "waiting for a fresh one-time code"]
    assert waits and all(r.levelno == logging.INFO for r in waits)
