"""Slowloris against the exporter with its default limits, while a scraper scrapes.

    .venv/bin/python bench/slowloris.py --json bench/results/slowloris.json      # about 30 seconds

The exporter runs as its console script (`--demo`) in a child process. `--connections`
raw sockets connect, send a request line and then one header byte every `--trickle`
seconds, never finishing their headers; meanwhile one keep-alive client scrapes /metrics
(gzip) every 0.5 s. Reported: how long until the server had closed every slow connection,
the scrapes' worst latency and any failures, the exporter's peak threads and descriptors.
Loopback only; every loop is bounded.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from capacity import SCRIPT, _proc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--trickle", type=float, default=2.0, help="seconds between two header bytes")
    parser.add_argument("--limit", type=float, default=60.0, help="give up after this many seconds")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    process = subprocess.Popen(
        [str(SCRIPT), "--demo", "--web.listen-address", "127.0.0.1:0"], stderr=subprocess.PIPE, text=True
    )
    try:
        port = _port(process)
        scraper = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        slow = []
        for _ in range(args.connections):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"GET /metrics HTTP/1.1\r\nX-Slow: ")
            slow.append(sock)
        started = time.monotonic()
        open_socks = set(slow)
        latencies: list[float] = []
        failures = threads_max = fds_max = 0
        next_trickle = next_scrape = started
        poller = select.poll()  # not select(): more than 1024 descriptors
        by_fd = {sock.fileno(): sock for sock in slow}
        for sock in slow:
            poller.register(sock, select.POLLIN)
        while open_socks and time.monotonic() - started < args.limit:
            now = time.monotonic()
            if now >= next_trickle:
                next_trickle += args.trickle
                for sock in list(open_socks):
                    try:
                        sock.send(b"a")
                    except OSError:
                        open_socks.discard(sock)
                        poller.unregister(sock)
            if now >= next_scrape:
                next_scrape += 0.5
                began = time.perf_counter()
                try:
                    scraper.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
                    response = scraper.getresponse()
                    response.read()
                    if response.status != 200:
                        failures += 1
                except (OSError, http.client.HTTPException):
                    failures += 1
                    scraper.close()
                latencies.append(time.perf_counter() - began)
                _, threads, fds, _ = _proc(process.pid)
                threads_max, fds_max = max(threads_max, threads), max(fds_max, fds)
            for fd, _ in poller.poll(50):
                sock = by_fd[fd]
                try:
                    closed = not sock.recv(4096)
                except OSError:
                    closed = True
                if closed:
                    open_socks.discard(sock)
                    poller.unregister(sock)
        all_closed_after = time.monotonic() - started
        for sock in slow:
            sock.close()
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=10)
    result = {
        "connections": args.connections,
        "trickle_seconds": args.trickle,
        "still_open": len(open_socks),
        "all_closed_after_s": round(all_closed_after, 1),
        "scrapes": len(latencies),
        "scrape_failures": failures,
        "scrape_max_ms": round(max(latencies) * 1000, 1) if latencies else None,
        "threads_max": threads_max,
        "fds_max": fds_max,
    }
    print(json.dumps(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if not open_socks and not failures else 1


def _port(process: subprocess.Popen[str]) -> int:
    assert process.stderr is not None
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        match = re.search(r"msg=listening address=127\.0\.0\.1:(\d+)", line)
        if match:
            return int(match.group(1))
    raise RuntimeError("the exporter did not start")


if __name__ == "__main__":
    sys.exit(main())
