"""Soak: the exporter against a faulty simulator for a while, scraped without pause.

    .venv/bin/python bench/soak.py --seconds 600 --fault-rate 0.2 --json bench/results/soak.json

Loopback only, bounded in time. The exporter runs as its console script in a subprocess
(so its RSS and file descriptors are its own); the simulator runs here, answers a share
`--fault-rate` of requests with a random fault (5xx, 429, resets, slow replies, truncated
or HTML bodies, status "0", 401, refused codes, empty and repeated pages), lets tokens
expire every minute and moves every balance every half second. Every scrape is parsed, and
every balance checked against the values the simulator really served for that account.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from exporter.simulator import SimAccount, Simulator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from entries import connection_entry
from rested import rested_storage

SCRIPT = Path(sys.executable).parent / "ibanera-exporter"
BALANCES = ("ibanera_total_balance", "ibanera_available_balance", "ibanera_pending_balance")


@dataclass
class SoakReport:
    seconds: float
    fault_rate: float
    accounts: int
    polls: int
    poll_failures: int
    faults_injected: int
    logins: int
    scrapes: int
    scrape_errors: int
    wrong_values: int
    rss_start_mb: float
    rss_max_mb: float
    rss_end_mb: float
    fds_start: int  # open descriptors after the first good poll, before any fault
    fds_end: int  # the same, after the faults stop and two polls succeed: a leak shows here
    exit_code: int
    shutdown_seconds: float


def _accounts(count: int) -> list[SimAccount]:
    assets = [("USD", 2), ("EUR", 2), ("USDC", 2), ("BTC", 8), ("ETH", 8)]
    d = Decimal
    return [
        SimAccount(5000 + i, assets[i % 5][0], d(1000 + i), d(900 + i), d(100), places=assets[i % 5][1])
        for i in range(count)
    ]


def _rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _listening_url(log_path: Path, deadline: float) -> str:
    while time.monotonic() < deadline:
        match = re.search(r"msg=listening address=127\.0\.0\.1:(\d+)", log_path.read_text())
        if match:
            return f"http://127.0.0.1:{match.group(1)}"
        time.sleep(0.05)
    raise RuntimeError(f"the exporter did not start: {log_path.read_text()[-2000:]}")


def run(seconds: float, fault_rate: float, accounts: int, workdir: Path) -> SoakReport:
    simulator = Simulator(_accounts(accounts), token_lifetime=60, drift_every=0.5).start()
    simulator.record_served()
    config = {
        "poll_interval": "1s",
        "request_timeout": "1s",
        "retry": {"max_attempts": 3, "initial_backoff": "100ms", "max_backoff": "500ms"},
        "connections": [connection_entry(simulator, "soak", page_size=10)],
    }
    (workdir / "config.yaml").write_text(json.dumps(config))
    log_path = workdir / "exporter.log"
    with open(log_path, "w") as log:
        # Remembered login state from long ago: the first login need not wait for a fresh code step.
        process = subprocess.Popen(
            [
                str(SCRIPT),
                "--config.file",
                str(workdir / "config.yaml"),
                "--web.listen-address",
                "127.0.0.1:0",
                "--storage.path",
                rested_storage(workdir / "state", "soak"),
            ],
            stderr=log,
        )
    http = httpx.Client(timeout=5)
    try:
        url = _listening_url(log_path, time.monotonic() + 15)
        while http.get(url + "/-/ready").status_code != 200:
            time.sleep(0.05)
        fds_start = _fds(process.pid)
        simulator.chaos(fault_rate)
        started = time.monotonic()
        rss_start = rss_max = _rss_mb(process.pid)
        scrapes = scrape_errors = wrong_values = 0
        last_sample = 0.0
        metrics: dict = {}
        while (now := time.monotonic()) - started < seconds:
            if now - last_sample >= 0.5:
                last_sample = now
                rss_max = max(rss_max, _rss_mb(process.pid))
            scrapes += 1
            try:
                metrics = _scrape(http, url)
            except (httpx.HTTPError, ValueError):
                scrape_errors += 1
                continue
            wrong_values += _count_wrong(metrics, simulator)
        rss_end = _rss_mb(process.pid)
        simulator.chaos(0)
        polls_then = _total(metrics, "ibanera_polls_total")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            metrics = _scrape(http, url)
            if _total(metrics, "ibanera_polls_total") >= polls_then + 2 and _total(metrics, "ibanera_up") == 1:
                break
            time.sleep(0.1)
        fds_end = _fds(process.pid)
        report_numbers = {key: _total(metrics, f"ibanera_{key}_total") for key in ("polls", "poll_failures", "logins")}
    finally:
        stop_started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        exit_code = process.wait(10)
        shutdown_seconds = time.monotonic() - stop_started
        http.close()
        simulator.stop()
    return SoakReport(
        seconds=seconds,
        fault_rate=fault_rate,
        accounts=accounts,
        faults_injected=sum(simulator.faults_served.values()),
        scrapes=scrapes,
        scrape_errors=scrape_errors,
        wrong_values=wrong_values,
        rss_start_mb=round(rss_start, 1),
        rss_max_mb=round(rss_max, 1),
        rss_end_mb=round(rss_end, 1),
        fds_start=fds_start,
        fds_end=fds_end,
        exit_code=exit_code,
        shutdown_seconds=round(shutdown_seconds, 2),
        **report_numbers,
    )


def _scrape(http: httpx.Client, url: str) -> dict:
    response = http.get(url + "/metrics")
    response.raise_for_status()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(response.text)
        for s in f.samples
    }


def _total(metrics: dict, name: str) -> int:
    return int(sum(v for (n, _), v in metrics.items() if n == name))


def _count_wrong(metrics: dict, simulator: Simulator) -> int:
    """Balances whose (total, available, pending) the simulator never served together for that account."""
    published: dict[str, dict[str, float]] = {}
    for (name, labels), value in metrics.items():
        if name in BALANCES:
            published.setdefault(dict(labels)["asset_account_id"], {})[name] = value
    wrong = 0
    for account_id, values in published.items():
        triple = tuple(values.get(name) for name in BALANCES)
        served = {tuple(float(x) for x in t) for t in simulator.served_values(int(account_id))}
        wrong += triple not in served
    return wrong


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--fault-rate", type=float, default=0.2)
    parser.add_argument("--accounts", type=int, default=40)
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        report = run(args.seconds, args.fault_rate, args.accounts, Path(workdir))
    for key, value in asdict(report).items():
        print(f"{key:>18}  {value}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(asdict(report), indent=2) + "\n")
    healthy = report.scrape_errors == 0 and report.wrong_values == 0 and report.exit_code == 0
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
