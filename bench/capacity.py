"""Capacity of the exporter's HTTP server: many concurrent keep-alive scrapers, as Prometheus scrapes.

    .venv/bin/python bench/capacity.py --json bench/results/capacity.json          # both runs, about 1 minute
    .venv/bin/python bench/capacity.py --scrapers 50 --seconds 5 --no-auth-run      # a quick look

The exporter runs as its console script in a child process (so its CPU time and thread
count are its own), polling the embedded simulator once (N accounts, one page); then
`--scrapers` threads each open one keep-alive connection at the same moment and scrape
/metrics with `Accept-Encoding: gzip` every `--interval` seconds (0: back to back) for
`--seconds`, with a 10 s client time-out (Prometheus's default scrape_timeout). Reported:
failed connects, failed or non-200 requests, reconnects, latency p50/p99/max, the
exporter's CPU (share of one core), its thread count and descriptors at the peak, RSS.
A second run does the same with basic auth on (a bcrypt hash of cost 10, as htpasswd -B
makes it; successful checks are cached). Loopback only; every loop is bounded.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path

import bcrypt

from exporter.simulator import SimAccount, Simulator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from entries import connection_entry
from rested import rested_storage

SCRIPT = Path(sys.executable).parent / "ibanera-exporter"
CLIENT_TIMEOUT = 10.0


@dataclass(frozen=True)
class Result:
    auth: bool
    scrapers: int
    accounts: int
    seconds: float
    interval: float
    requests: int
    failed_connects: int
    failed_requests: int
    reconnects: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    cpu_share_of_one_core: float
    threads_max: int
    fds_max: int
    rss_mb_end: float


def _accounts(count: int) -> list[SimAccount]:
    assets = ["USD", "EUR", "GBP", "USDC", "BTC"]
    return [
        SimAccount(7000 + i, assets[i % 5], Decimal(1000 + i), Decimal(900 + i), Decimal(100)) for i in range(count)
    ]


def _proc(pid: int) -> tuple[float, int, int, float]:
    """CPU seconds, threads, open descriptors, RSS MB of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    status = Path(f"/proc/{pid}/status").read_text()
    threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    rss = int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return cpu, threads, len(os.listdir(f"/proc/{pid}/fd")), rss


class _Scraper(threading.Thread):
    def __init__(
        self, port: int, headers: dict[str, str], start: threading.Event, stop_at: list[float], interval: float
    ) -> None:
        super().__init__(daemon=True)
        self.latencies: list[float] = []
        self.failed_connect = False
        self.failures = 0
        self.reconnects = 0
        self._port, self._headers, self._start, self._stop_at, self._interval = port, headers, start, stop_at, interval

    def run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self._port, timeout=CLIENT_TIMEOUT)
        self._start.wait()
        try:
            connection.connect()
        except OSError:
            self.failed_connect = True
            return
        next_at = time.monotonic() + random.uniform(0, self._interval)  # Prometheus spreads its targets too
        while (now := time.monotonic()) < self._stop_at[0]:
            if next_at > now:
                time.sleep(min(next_at - now, self._stop_at[0] - now))
                continue
            next_at += self._interval
            if connection.sock is None:
                self.reconnects += 1
            started = time.perf_counter()
            try:
                connection.request("GET", "/metrics", headers=self._headers)
                response = connection.getresponse()
                body = response.read()
                ok = response.status == 200 and len(body) > 0
            except (OSError, http.client.HTTPException):
                ok = False
                connection.close()
            if ok:
                self.latencies.append(time.perf_counter() - started)
            else:
                self.failures += 1
        connection.close()


def run(accounts: int, scrapers: int, seconds: float, interval: float, auth: bool, work: Path) -> Result:
    simulator = Simulator(_accounts(accounts), token_lifetime=86400).start()
    config = {
        "poll_interval": "1h",
        "connections": [connection_entry(simulator, "bench", page_size=max(accounts, 1))],
    }
    (work / "config.yaml").write_text(json.dumps(config))
    # Remembered login state from long ago: the first login need not wait for a fresh code step.
    args = [
        str(SCRIPT),
        "--config.file",
        str(work / "config.yaml"),
        "--web.listen-address",
        "127.0.0.1:0",
        "--storage.path",
        rested_storage(work / "state", "bench"),
    ]
    headers = {"Accept-Encoding": "gzip", "Accept": "text/plain;version=0.0.4"}
    if auth:
        password = "bench-password"
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()
        (work / "web.yml").write_text(json.dumps({"basic_auth_users": {"prometheus": hashed}}))
        args += ["--web.config.file", str(work / "web.yml")]
        headers["Authorization"] = "Basic " + base64.b64encode(f"prometheus:{password}".encode()).decode()
    log_path = work / f"exporter-{'auth' if auth else 'plain'}.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(args, stderr=log)
    try:
        port = _wait_listening(log_path, process)
        _wait_ready(port, headers)
        start = threading.Event()
        stop_at = [0.0]
        threads = [_Scraper(port, headers, start, stop_at, interval) for _ in range(scrapers)]
        for thread in threads:
            thread.start()
        cpu_before = _proc(process.pid)[0]
        threads_max = fds_max = 0
        began = time.monotonic()
        stop_at[0] = began + seconds
        start.set()  # every scraper connects at once: a burst, as after a Prometheus restart
        while time.monotonic() < stop_at[0]:
            _, threads_now, fds_now, _ = _proc(process.pid)
            threads_max, fds_max = max(threads_max, threads_now), max(fds_max, fds_now)
            time.sleep(0.25)
        for thread in threads:
            thread.join(CLIENT_TIMEOUT + 5)
        cpu, _, _, rss = _proc(process.pid)
        elapsed = time.monotonic() - began
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)
        simulator.stop()
    latencies = sorted(latency for thread in threads for latency in thread.latencies)
    # inclusive: the p99 of a few samples lies between them, never past the slowest (exclusive extrapolates)
    quantiles = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else [0.0] * 99
    return Result(
        auth=auth,
        scrapers=scrapers,
        accounts=accounts,
        seconds=seconds,
        interval=interval,
        requests=len(latencies) + sum(t.failures for t in threads),
        failed_connects=sum(t.failed_connect for t in threads),
        failed_requests=sum(t.failures for t in threads),
        reconnects=sum(t.reconnects for t in threads),
        p50_ms=round(statistics.median(latencies) * 1000, 2) if latencies else 0.0,
        p99_ms=round(quantiles[98] * 1000, 2),
        max_ms=round(latencies[-1] * 1000, 2) if latencies else 0.0,
        cpu_share_of_one_core=round((cpu - cpu_before) / elapsed, 2),
        threads_max=threads_max,
        fds_max=fds_max,
        rss_mb_end=round(rss, 1),
    )


def _wait_listening(log_path: Path, process: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and process.poll() is None:
        match = re.search(r"msg=listening address=127\.0\.0\.1:(\d+)", log_path.read_text())
        if match:
            return int(match.group(1))
        time.sleep(0.05)
    raise RuntimeError(f"the exporter did not start: {log_path.read_text()[-2000:]}")


def _wait_ready(port: int, headers: dict[str, str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", "/-/ready", headers=headers)
        if connection.getresponse().status == 200:
            connection.close()
            return
        connection.close()
        time.sleep(0.1)
    raise RuntimeError("the exporter never became ready")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scrapers", type=int, default=200)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--interval", type=float, default=1.0, help="seconds between a scraper's scrapes; 0: back to back"
    )
    parser.add_argument("--no-auth-run", action="store_true", help="skip the run with basic auth")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as work:
        for auth in (False,) if args.no_auth_run else (False, True):
            result = run(args.accounts, args.scrapers, args.seconds, args.interval, auth, Path(work))
            results.append(asdict(result))
            print(json.dumps(asdict(result)), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(r["failed_connects"] == 0 and r["failed_requests"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
