"""The figures behind README → Reliability's hostile-API rows, measured on this machine.

    .venv/bin/python bench/hostile.py --json bench/results/hostile.json

Loopback only, bounded in time (about a minute and a half). Each measurement runs in a
fresh subprocess, so that its peak RSS is its own:
- bomb: peak RSS above the baseline while a 1 GiB gzip bomb (about 1 MB on the wire) and a
  2 kB `Content-Encoding: gzip, gzip` reply are refused, with max_response_size 16 MiB;
- drip: seconds from the start of a reply drip-fed a byte every 50 ms to the poll ending
  with ibanera_up 0, for request_timeout 2s and 2 attempts;
- fds: open descriptors and threads before and after 100 polls failing at each stage;
- restart: the delay of the first login after `kill -9` and an immediate restart of the
  daemon, with and without --storage.path, against a simulator that refuses reused codes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the raw-socket peer and the rested login state the tests use
from entries import connection_entry  # noqa: E402 - found through the line above
from rested import rested_storage  # noqa: E402

SCRIPT = Path(sys.executable).parent / "ibanera-exporter"


def _poller(url: str, request_timeout: float = 10.0, attempts: int = 4, max_size: int = 16 << 20):
    from conftest import FakeClock

    from exporter.api.client import IbaneraClient
    from exporter.api.memory import LoginMemory
    from exporter.config import Config, ConnectionConfig, RetryPolicy, Secret
    from exporter.poller import Poller

    connection = ConnectionConfig(
        name="bench", base_url=url, username=Secret("u"), password=Secret("p"), totp_secret=Secret("GEZDGNBVGY3TQOJQ")
    )
    config = Config(
        (connection,),
        request_timeout=request_timeout,
        retry=RetryPolicy(attempts, 0.01, 0.01),
        max_response_size=max_size,
    )
    clock = FakeClock()
    client = IbaneraClient(connection, config, memory=LoginMemory.first_contact(), clock=clock, sleep=clock.sleep)
    return Poller(client, 60, threading.Event())


def _rss() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


def measure_bomb(kind: str) -> dict[str, float]:
    import gzip
    import zlib

    from scripted import ScriptedServer, good_login, one_account, reply

    def zeros_gzipped(size: int) -> bytes:  # made a megabyte at a time: the bench's own peak stays small
        compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        block = b"\0" * (1 << 20)
        return b"".join(compressor.compress(block) for _ in range(size >> 20)) + compressor.flush()

    if kind == "bomb":
        body, encoding = zeros_gzipped(1 << 30), "gzip"
    else:
        body, encoding = gzip.compress(zeros_gzipped(1 << 30), 9), "gzip, gzip"
    bomb = {"on": False}

    def serve(request, sock):
        if "auth/login" in request.path:
            good_login(sock)
        elif bomb["on"]:
            reply(sock, 200, body, {"Content-Encoding": encoding})
        else:
            reply(sock, 200, one_account())

    server = ScriptedServer(serve)
    poller = _poller(server.url)
    poller.poll_once()
    baseline = _rss()
    bomb["on"] = True
    poller.poll_once()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    server.stop()
    return {
        "wire_bytes": len(body),
        "baseline_mb": baseline / 1e6,
        "peak_mb": peak / 1e6,
        "peak_above_baseline_mb": (peak - baseline) / 1e6,
        "up": float(poller.status().accounts.up),
        "reason_too_large": poller.status().accounts.failures["too_large"],
        "reason_malformed": poller.status().accounts.failures["malformed"],
    }


def measure_drip() -> dict[str, float]:
    from scripted import ScriptedServer, drip, good_login, one_account

    sent: list[int] = []
    started: list[float] = []

    def serve(request, sock):
        if "auth/login" in request.path:
            good_login(sock)
            return
        body = one_account()
        started.append(time.monotonic())
        sock.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        drip(sock, body, 0.05, sent)

    server = ScriptedServer(serve)
    poller = _poller(server.url, request_timeout=2.0, attempts=2)
    poller.poll_once()
    ended = time.monotonic()
    server.stop()
    return {
        "seconds_to_up_0": ended - started[0],
        "request_timeout": 2.0,
        "attempts": 2,
        "up": float(poller.status().accounts.up),
        "timeouts": poller.status().accounts.failures["timeout"],
    }


def measure_fds() -> dict[str, float]:
    from scripted import STAGES, ScriptedServer, fail_at_every_stage, staged

    stage = {"now": "good"}
    server = ScriptedServer(staged(stage))
    poller = _poller(server.url, request_timeout=0.5, attempts=1)
    poller.poll_once()
    time.sleep(0.2)
    fds, threads = len(os.listdir("/proc/self/fd")), threading.active_count()
    for _ in fail_at_every_stage(poller, stage):
        pass
    time.sleep(0.5)
    result = {
        "stages": len(STAGES),
        "failing_polls": 100 * len(STAGES),
        "fds_before": fds,
        "fds_after": len(os.listdir("/proc/self/fd")),
        "threads_before": threads,
        "threads_after": threading.active_count(),
        "up_after": float(poller.status().accounts.up),
    }
    server.stop()
    return result


def measure_restart(with_storage: bool, in_the_next_step: bool) -> dict[str, float]:
    from decimal import Decimal

    from exporter.simulator import SimAccount, Simulator

    with (
        tempfile.TemporaryDirectory() as work,
        Simulator([SimAccount(1, "USD", Decimal(1), Decimal(1), Decimal(0))], reject_reused_otp=True) as simulator,
    ):
        config = Path(work, "config.yaml")
        config.write_text(
            json.dumps(
                {
                    "poll_interval": "1s",
                    "connections": [connection_entry(simulator, "bench")],
                }
            )
        )
        # The first daemon starts as after a long rest, so that it logs in at once.
        storage = rested_storage(Path(work, "state"), "bench")
        args = [str(SCRIPT), "--config.file", str(config), "--web.listen-address", "127.0.0.1:0"]
        first = subprocess.Popen([*args, "--storage.path", storage], stderr=subprocess.DEVNULL)
        if with_storage:
            args += ["--storage.path", storage]
        deadline = time.monotonic() + 100
        while simulator.logins_succeeded < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        first.send_signal(signal.SIGKILL)
        first.wait()
        if in_the_next_step:  # restarted once the step of the last login has passed
            step = int(time.time() // 30)
            while int(time.time() // 30) == step:
                time.sleep(0.01)
        restarted = time.monotonic()
        second = subprocess.Popen(args, stderr=subprocess.DEVNULL)
        while simulator.logins_succeeded < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        delay = time.monotonic() - restarted
        second.send_signal(signal.SIGTERM)
        second.wait(10)
        return {
            "first_login_delay_s": delay,
            "refused_logins": simulator.logins_failed,
            "logins": simulator.logins_succeeded,
        }


MEASUREMENTS = {
    "bomb": lambda: measure_bomb("bomb"),
    "stacked": lambda: measure_bomb("stacked"),
    "drip": measure_drip,
    "fds": measure_fds,
}
for _storage in (True, False):
    for _next in (False, True):
        MEASUREMENTS[f"restart_{'with' if _storage else 'without'}_storage_{'next_step' if _next else 'same_step'}"] = (
            lambda storage=_storage, later=_next: measure_restart(storage, later)
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--one", choices=MEASUREMENTS, help=argparse.SUPPRESS)  # a child process's measurement
    args = parser.parse_args()
    if args.one:
        logging.getLogger("exporter").setLevel(logging.CRITICAL)  # hundreds of failing polls, on purpose
        print(json.dumps(MEASUREMENTS[args.one]()))
        return
    results = {}
    for name in MEASUREMENTS:
        child = subprocess.run([sys.executable, __file__, "--one", name], capture_output=True, text=True, timeout=120)
        results[name] = json.loads(child.stdout.strip().splitlines()[-1])
        print(name, results[name], flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
