"""Real Prometheus and Alertmanager processes on loopback, and a webhook receiver, for the tests and bench/.

Every wait is bounded and says what it last saw; every process started here is stopped by
whoever started it (the `stop()` methods are idempotent), also when a start fails.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def eventually(check: Callable[[], T], timeout: float = 20.0) -> T:
    """check() until it returns something truthy; what it returned last is in the failure."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.25)


class Daemon:
    """A server process with its log in `work`, ready once GET /-/ready answers 200."""

    def __init__(self, name: str, command: list[str], work: Path, port: int) -> None:
        self.name = name
        self.log_path = work / f"{name}.log"
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5)
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        if not eventually(self._ready, timeout=30):
            self.stop()
            raise AssertionError(f"{name} did not become ready within 30s: {self.log()}")

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.process.returncode}: {self.log()}")
        try:
            return self.http.get("/-/ready").status_code == 200
        except httpx.TransportError:
            return False

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> None:
        self.http.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


class Prometheus(Daemon):
    def __init__(self, binary: str, work: Path, config: dict[str, Any]) -> None:
        (work / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        super().__init__(
            "prometheus",
            [
                binary,
                f"--config.file={work / 'prometheus.yml'}",
                f"--storage.tsdb.path={work / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            work,
            port,
        )

    def query(self, expr: str) -> list[dict[str, Any]]:
        body = self.http.get("/api/v1/query", params={"query": expr}).json()
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def alerts(self, name: str) -> list[dict[str, Any]]:
        return [a for a in self.http.get("/api/v1/alerts").json()["data"]["alerts"] if a["labels"]["alertname"] == name]


class Alertmanager(Daemon):
    def __init__(self, binary: str, work: Path, config: dict[str, Any]) -> None:
        (work / "alertmanager.yml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        super().__init__(
            "alertmanager",
            [
                binary,
                f"--config.file={work / 'alertmanager.yml'}",
                f"--storage.path={work / 'alertmanager'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",  # no gossip port: one instance, on loopback only
                "--log.level=warn",
            ],
            work,
            self.port,
        )

    def alerts(self, name: str) -> list[dict[str, Any]]:
        """The alerts Alertmanager holds, with their status: active, or suppressed (inhibitedBy ...)."""
        response = self.http.get("/api/v2/alerts", params={"filter": f'alertname="{name}"'})
        response.raise_for_status()
        return list(response.json())


@dataclass(frozen=True)
class Notification:
    receiver: str  # the path the webhook was called on: one per receiver of the config
    payload: dict[str, Any]
    received_at: float  # time.monotonic()

    def alerts(self, name: str, status: str, **labels: str) -> list[dict[str, Any]]:
        return [
            a
            for a in self.payload["alerts"]
            if a["labels"]["alertname"] == name
            and a["status"] == status
            and all(a["labels"].get(k) == v for k, v in labels.items())
        ]


class Webhook:
    """An HTTP receiver on loopback that keeps every notification Alertmanager posts."""

    def __init__(self) -> None:
        self._received: list[Notification] = []
        self._changed = threading.Condition()
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                notification = Notification(self.path.strip("/"), json.loads(body), time.monotonic())
                with webhook._changed:
                    webhook._received.append(notification)
                    webhook._changed.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def received(self) -> list[Notification]:
        with self._changed:
            return list(self._received)

    def wait_for(
        self, matches: Callable[[Notification], bool], what: str, timeout: float = 60, since: int = 0
    ) -> Notification:
        """The first notification from the `since`-th on that `matches`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = next((n for n in self._received[since:] if matches(n)), None)
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [
                        (n.receiver, n.payload["status"], [a["labels"] for a in n.payload["alerts"]])
                        for n in self._received
                    ]
                    raise AssertionError(f"no notification {what} within {timeout}s; received: {seen}")
                self._changed.wait(left)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
