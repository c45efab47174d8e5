"""Poll and scrape costs at 100 to 100 000 asset accounts, against a floor and a baseline.

    .venv/bin/python bench/perf.py --json bench/results/perf.json
    .venv/bin/python bench/perf.py --sizes 100 1000 --scrapes 100      # a quick look

For each N the simulator runs in a child process (so CPU time measured here is the
exporter's own), serving N accounts in pages of 1000, and this reports:
- floor: fetching the same pages with bare httpx and json.loads(parse_float=Decimal);
- poll: the exporter's full poll with a warm token (fetch, validate, snapshot), and poll/floor;
- scrape: /metrics latency p50/p99 over many keep-alive scrapes, text and OpenMetrics,
  plain and gzip, and the body size;
- baseline: the same series the common way (a custom collector, generate_latest on every
  scrape, prometheus_client's own HTTP server), and scrape/baseline;
- memory: the exporter as its console script, RSS after the first poll and after many.
Loopback only; every loop is bounded.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path

import httpx
import pyotp
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from exporter.api.client import IbaneraClient
from exporter.api.memory import LoginMemory
from exporter.config import Config, ConnectionConfig, Secret
from exporter.metrics import Exposition
from exporter.poller import Poller, Snapshot
from exporter.simulator import BALANCES_PATH, LOGIN_PATH, SimAccount, Simulator
from exporter.web import WebContext, WebServer

PAGE_SIZE = 1000
SCRIPT = Path(sys.executable).parent / "ibanera-exporter"


def _accounts(count: int) -> list[SimAccount]:
    assets = [("USD", 2, "1234567.89"), ("EUR", 2, "98000.50"), ("BTC", 8, "3.12345678"), ("ETH", 8, "45.50000001")]
    return [
        SimAccount(
            10_000 + i,
            assets[i % 4][0],
            Decimal(assets[i % 4][2]),
            Decimal(assets[i % 4][2]),
            Decimal(0),
            suppressed=i % 97 == 0,
            places=assets[i % 4][1],
        )
        for i in range(count)
    ]


def _serve(count: int, pipe) -> None:
    simulator = Simulator(_accounts(count), token_lifetime=86400).start()
    pipe.send((simulator.url, simulator.username, simulator.password, simulator.totp_secret_base32))
    signal.sigwait({signal.SIGTERM})


def _timed(function, runs: int) -> tuple[float, float]:
    """Median wall and CPU seconds of `runs` calls."""
    walls, cpus = [], []
    for _ in range(runs):
        wall, cpu = time.perf_counter(), time.process_time()
        function()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


class _Floor:
    """The unavoidable part of a poll: the HTTP round trips and the JSON decoding."""

    def __init__(self, url: str, username: str, password: str, secret: str, count: int) -> None:
        self.totp = pyotp.TOTP(secret)
        self.http = httpx.Client(base_url=url, timeout=120)
        body = self.http.post(
            LOGIN_PATH, json={"username": username, "password": password, "otp": self.totp.now()}
        ).json()
        self.token = body["details"]["accessToken"]
        self.pages = max(1, -(-count // PAGE_SIZE))

    def fetch(self) -> None:
        for page in range(1, self.pages + 1):
            response = self.http.get(
                BALANCES_PATH,
                params={"pageNumber": page, "pageSize": PAGE_SIZE},
                headers={"Authorization": f"Bearer {self.token}", "otp": self.totp.now()},
            )
            json.loads(response.content, parse_float=Decimal)


class _BaselineCollector(Collector):
    """The common way: fresh gauge families from the snapshot on every scrape."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self):
        labels = ["connection", "asset_account_id", "asset"]
        families = {
            name: GaugeMetricFamily(name, name, labels=labels)
            for name in (
                "ibanera_total_balance",
                "ibanera_available_balance",
                "ibanera_pending_balance",
                "ibanera_account_suppressed",
            )
        }
        for a in self.snapshot.rows:
            values = ["bench", str(a.asset_account_id), a.asset]
            families["ibanera_total_balance"].add_metric(values, float(a.total))
            families["ibanera_available_balance"].add_metric(values, float(a.available))
            families["ibanera_pending_balance"].add_metric(values, float(a.pending))
            families["ibanera_account_suppressed"].add_metric(values, float(a.suppressed))
        yield from families.values()


def _scrapes(port: int, count: int, headers: dict) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    latencies, size = [], 0
    for _ in range(count):
        started = time.perf_counter()
        connection.request("GET", "/metrics", headers=headers)
        response = connection.getresponse()
        body = response.read()
        latencies.append(time.perf_counter() - started)
        assert response.status == 200, response.status
        size = len(body)
    connection.close()
    latencies.sort()
    return {
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, 2),
        "bytes": size,
    }


VARIANTS = {
    "text": {},
    "text+gzip": {"Accept-Encoding": "gzip"},
    "openmetrics": {"Accept": "application/openmetrics-text; version=1.0.0"},
    "openmetrics+gzip": {"Accept": "application/openmetrics-text; version=1.0.0", "Accept-Encoding": "gzip"},
}


def measure(count: int, scrapes: int) -> dict:
    parent, child = multiprocessing.Pipe()
    server = multiprocessing.Process(target=_serve, args=(count, child), daemon=True)
    server.start()
    url, username, password, secret = parent.recv()
    try:
        runs = 3 if count >= 100_000 else 5
        floor = _Floor(url, username, password, secret, count)
        floor.fetch()  # warm the connection
        floor_wall, floor_cpu = _timed(floor.fetch, runs)

        connection = ConnectionConfig(
            name="bench",
            base_url=url,
            username=Secret(username),
            password=Secret(password),
            totp_secret=Secret(secret),
            page_size=PAGE_SIZE,
        )
        stop = threading.Event()
        client_config = Config(connections=(connection,), request_timeout=120)
        client = IbaneraClient(connection, client_config, memory=LoginMemory.first_contact(), stop_event=stop)
        poller = Poller(client, 60, stop)
        poller.poll_once()  # log in, warm the connection
        poll_wall, poll_cpu = _timed(poller.poll_once, runs)
        assert poller.status().accounts.up and len(poller.status().accounts.snapshot.rows) == count

        def statuses():
            return [poller.status()]

        exposition = Exposition(statuses, Config(connections=(connection,)), "bench")
        web = WebServer(("127.0.0.1", 0), WebContext(exposition, statuses, "/metrics", "bench"))
        web.start()
        exporter = {name: _scrapes(web.port, scrapes, headers) for name, headers in VARIANTS.items()}
        web.stop()

        registry = CollectorRegistry()
        registry.register(_BaselineCollector(poller.status().accounts.snapshot))
        baseline_server, _ = start_http_server(0, addr="127.0.0.1", registry=registry)
        baseline_scrapes = max(5, scrapes // 10) if count >= 10_000 else scrapes
        baseline = {
            name: _scrapes(baseline_server.server_port, baseline_scrapes, VARIANTS[name])
            for name in ("text", "text+gzip")
        }
        baseline_server.shutdown()
        poller.client.close()
        return {
            "accounts": count,
            "floor": {"wall_s": round(floor_wall, 4), "cpu_s": round(floor_cpu, 4)},
            "poll": {
                "wall_s": round(poll_wall, 4),
                "cpu_s": round(poll_cpu, 4),
                "poll_over_floor_wall": round(poll_wall / floor_wall, 2),
                "poll_over_floor_cpu": round(poll_cpu / floor_cpu, 2),
            },
            "scrape": exporter,
            "baseline": baseline,
            "baseline_over_scrape_p50": round(baseline["text"]["p50_ms"] / exporter["text"]["p50_ms"], 1),
        }
    finally:
        server.terminate()
        server.join(10)


def memory(count: int, polls: int) -> dict:
    """RSS of the real exporter process after its first poll and after `polls` more."""
    parent, child = multiprocessing.Pipe()
    server = multiprocessing.Process(target=_serve, args=(count, child), daemon=True)
    server.start()
    url, username, password, secret = parent.recv()
    with tempfile.TemporaryDirectory() as work:
        config = {
            "poll_interval": "500ms",
            "request_timeout": "2m",
            "connections": [
                {
                    "name": "bench",
                    "base_url": url,
                    "username": username,
                    "password": password,
                    "totp_secret": secret,
                    "page_size": PAGE_SIZE,
                }
            ],
        }
        Path(work, "config.yaml").write_text(json.dumps(config))
        log = open(Path(work, "log"), "w")  # noqa: SIM115 - open for the daemon's whole life, closed below
        process = subprocess.Popen(
            [str(SCRIPT), "--config.file", str(Path(work, "config.yaml")), "--web.listen-address", "127.0.0.1:0"],
            stderr=log,
        )
        try:

            def polls_done() -> int:
                return Path(work, "log").read_text().count("poll succeeded")

            def wait_for(target: int) -> None:
                deadline = time.monotonic() + 60 + target * 10
                while polls_done() < target:
                    if time.monotonic() > deadline:
                        raise RuntimeError(Path(work, "log").read_text()[-2000:])
                    time.sleep(0.1)

            wait_for(2)
            first = _rss(process.pid)
            wait_for(2 + polls)
            last = _rss(process.pid)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(10)
            log.close()
            server.terminate()
            server.join(10)
    return {
        "accounts": count,
        "polls": polls,
        "rss_after_first_polls_mb": first,
        "rss_after_more_polls_mb": last,
        "growth_mb": round(last - first, 1),
    }


def _rss(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return round(int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024, 1)


def _print(results: list[dict], memories: list[dict]) -> None:
    print(
        f"{'accounts':>9} {'floor s':>8} {'poll s':>8} {'poll/floor':>10} {'cpu ratio':>9} "
        f"{'text p50':>9} {'p99':>8} {'gzip p50':>9} {'OM p50':>8} {'OM+gz p50':>9} {'baseline p50':>12} {'gain':>6} {'body':>10} {'gzip body':>10}"
    )
    for r in results:
        s = r["scrape"]
        print(
            f"{r['accounts']:>9} {r['floor']['wall_s']:>8.3f} {r['poll']['wall_s']:>8.3f} {r['poll']['poll_over_floor_wall']:>10} "
            f"{r['poll']['poll_over_floor_cpu']:>9} {s['text']['p50_ms']:>7.2f}ms {s['text']['p99_ms']:>6.2f}ms "
            f"{s['text+gzip']['p50_ms']:>7.2f}ms {s['openmetrics']['p50_ms']:>6.2f}ms {s['openmetrics+gzip']['p50_ms']:>7.2f}ms "
            f"{r['baseline']['text']['p50_ms']:>10.2f}ms {r['baseline_over_scrape_p50']:>5}x {s['text']['bytes']:>10} {s['text+gzip']['bytes']:>10}"
        )
    for m in memories:
        print(
            f"memory at {m['accounts']} accounts: {m['rss_after_first_polls_mb']} MB after 2 polls, "
            f"{m['rss_after_more_polls_mb']} MB after {m['polls']} more ({m['growth_mb']:+} MB)"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10_000, 100_000])
    parser.add_argument(
        "--scrapes", type=int, default=200, help="scrapes per variant (the baseline does fewer at 10k+)"
    )
    parser.add_argument("--memory-polls", type=int, default=50)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: list[dict] = []
    memories: list[dict] = []

    def save() -> None:  # after every measurement, so that a long run never loses what it measured
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(
                json.dumps({"machine": f"{os.cpu_count()} cores", "results": results, "memory": memories}, indent=2)
                + "\n"
            )

    for n in args.sizes:
        results.append(measure(n, args.scrapes))
        print(json.dumps(results[-1]), flush=True)
        save()
    for n in args.sizes:
        memories.append(memory(n, args.memory_polls if n == args.sizes[-1] else 5))
        print(json.dumps(memories[-1]), flush=True)
        save()
    _print(results, memories)
    return 0


if __name__ == "__main__":
    sys.exit(main())
