"""What goes wrong on purpose: queued faults for one test, and chaos for the soak run."""

from __future__ import annotations

import random
import threading
from collections import Counter, deque
from dataclasses import dataclass

from .http import Answer, envelope, error, json_answer, json_bytes
from .state import JsonRow


@dataclass(frozen=True)
class Fault:
    """What to do instead of answering normally, for requests to `endpoint` (None: any).

    kind: "http" (answer `status`, with `retry_after` if set, and an error envelope),
    "status0" (HTTP 200 with status "0" and `message_code`), "html" (HTTP 200 with an
    HTML maintenance page), "truncated" (HTTP 200 with half a JSON body),
    "delay" (sleep `delay` seconds, then answer normally), "reset" (close the connection),
    "otp" (HTTP 400 refusing the one-time code), and for balances only: "empty" (the page
    with no rows), "repeat" (the rows of the previous page, as this page), "huge" (a valid
    page padded past `size` bytes).
    """

    kind: str
    endpoint: str | None = None
    status: int = 503
    retry_after: str | None = None
    message_code: str = "General_Error"
    delay: float = 0.0
    size: int = 0


# Faults answered in place of the endpoint; the others change how the endpoint answers.
ANSWERED_INSTEAD = frozenset({"http", "status0", "html", "truncated", "reset"})

# What `chaos` mode picks from: every fault a real network and gateway produce, none that
# refuses credentials (a refused login pauses logins for login_backoff, stalling a soak).
CHAOS_FAULTS = (
    Fault("http", status=500),
    Fault("http", status=502),
    Fault("http", status=503),
    Fault("http", status=504),
    Fault("http", status=429),
    Fault("http", status=429, retry_after="0"),
    Fault("reset"),
    Fault("delay", delay=0.2),
    Fault("truncated"),
    Fault("html"),
    Fault("status0", "balances", message_code="Maintenance"),
    Fault("http", "balances", status=401),
    Fault("otp", "balances"),
    Fault("empty", "balances"),
    Fault("repeat", endpoint="balances"),
)


class FaultQueue:
    """Faults queued by tests, served in order, and chaos at a rate."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queued: deque[Fault] = deque()
        self._chaos_rate = 0.0
        self._random = random.Random(6238)
        self.served: Counter[str] = Counter()  # by kind

    def inject(self, fault: Fault, times: int = 1) -> None:
        with self._lock:
            self._queued.extend([fault] * times)

    def chaos(self, rate: float) -> None:
        with self._lock:
            self._chaos_rate = rate

    def take(self, endpoint: str) -> Fault | None:
        """The fault for this request to `endpoint`, if any."""
        with self._lock:
            chosen = next((f for f in self._queued if f.endpoint in (None, endpoint)), None)
            if chosen is not None:
                self._queued.remove(chosen)
            elif self._chaos_rate and self._random.random() < self._chaos_rate:
                chosen = self._random.choice([f for f in CHAOS_FAULTS if f.endpoint in (None, endpoint)])
            if chosen is not None:
                self.served[chosen.kind] += 1
            return chosen


def fault_answer(fault: Fault, rows: list[JsonRow]) -> Answer:
    """The answer of a fault in ANSWERED_INSTEAD; `rows` feed the truncated body."""
    if fault.kind == "http":
        headers = (("Retry-After", fault.retry_after),) if fault.retry_after is not None else ()
        return json_answer(fault.status, error(f"HTTP_{fault.status}"), headers)
    if fault.kind == "status0":
        return json_answer(200, error(fault.message_code))
    if fault.kind == "html":
        return Answer(200, b"<html><body><h1>Down for maintenance</h1></body></html>", "text/html")
    if fault.kind == "truncated":
        body = json_bytes(envelope(rows))
        return Answer(200, body[: len(body) // 2])
    if fault.kind == "reset":
        return Answer(0, b"", reset=True)
    raise ValueError(f"unknown fault kind {fault.kind!r}")
