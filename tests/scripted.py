"""A raw-socket HTTP peer that misbehaves on purpose, where the simulator cannot.

Each request is read (line, headers, body by Content-Length) and handed to a script,
which writes whatever bytes it likes to the socket: drip-fed, truncated, bombed.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import formatdate

from exporter.poller import Poller


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


Script = Callable[[Received, socket.socket], None]


def reply(
    sock: socket.socket, status: int, body: bytes, headers: dict[str, str] | None = None, date: float | None = None
) -> None:
    """An ordinary HTTP/1.1 answer with a Content-Length."""
    head = [
        f"HTTP/1.1 {status} X",
        f"Content-Length: {len(body)}",
        "Content-Type: application/json",
        f"Date: {formatdate(time.time() if date is None else date, usegmt=True)}",
    ]
    head += [f"{name}: {value}" for name, value in (headers or {}).items()]
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)


def envelope(details: object, **extra: object) -> bytes:
    return json.dumps({"id": 0, "details": details, "status": "1", "errors": [], **extra}).encode()


def good_login(
    sock: socket.socket, token: object = "good-token", expires_in: object = 3600, date: float | None = None
) -> None:
    reply(sock, 200, envelope({"accessToken": token, "expiresIn": expires_in}), date=date)


def one_account(total: str = "100.00") -> bytes:
    """A page with account 1 in USD, `total` written as a JSON number, exactly as given."""
    row = (
        f'{{"id": 1, "asset": "USD", "totalBalance": {total}, "availableBalance": {total}, '
        f'"pendingBalance": 0, "bSuppressed": false}}'
    )
    return (
        f'{{"id": 0, "status": "1", "errors": [], "details": [{row}], '
        f'"pageSize": 10, "pageNumber": 1, "numberOfPages": 1}}'
    ).encode()


@dataclass
class ScriptedServer:
    """Serves `script` on 127.0.0.1; `received` lists every request; stop() ends it."""

    script: Script
    received: list[Received] = field(default_factory=list)
    bytes_sent_before_close: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(5)
        self._listener.close()

    def _serve(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                continue
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        buffer = b""
        with conn:
            try:
                while not self._stopped.is_set():
                    while b"\r\n\r\n" not in buffer:
                        chunk = conn.recv(65536)
                        if not chunk:
                            return
                        buffer += chunk
                    head, buffer = buffer.split(b"\r\n\r\n", 1)
                    lines = head.decode("latin-1").split("\r\n")
                    method, target, _ = lines[0].split(" ", 2)
                    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
                    length = int(headers.get("content-length", "0"))
                    while len(buffer) < length:
                        buffer += conn.recv(65536)
                    body, buffer = buffer[:length], buffer[length:]
                    request = Received(method, target, headers, body)
                    self.received.append(request)
                    self.script(request, conn)
            except OSError:
                return


def drip(sock: socket.socket, data: bytes, every: float, record: list[int]) -> None:
    """Send `data` a byte at a time; record how many bytes went out before the peer left."""
    sent = 0
    try:
        for byte in data:
            sock.sendall(bytes([byte]))
            sent += 1
            time.sleep(every)
    except OSError:
        pass
    finally:
        record.append(sent)


# Ways for a balances reply to fail, one stage of reading it after another.
STAGES: dict[str, Callable[[socket.socket], None]] = {
    "headers": lambda sock: sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Le"),
    "body": lambda sock: sock.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n{"status": "1"'),
    "json": lambda sock: reply(sock, 200, b"{not json"),
    "row": lambda sock: reply(sock, 200, envelope([{"id": 1, "asset": "USD"}])),
    "date": lambda sock: reply(sock, 200, one_account(), {"Date": "Tue, 24 Nov 99999999999999999999 10:00:00 GMT"}),
    "encoding": lambda sock: reply(sock, 200, b"x" * 100, {"Content-Encoding": "br"}),  # refused before the body
}


def staged(stage: dict[str, str]) -> Script:
    """Logins succeed; balances fail at STAGES[stage["now"]], or succeed while it is "good"."""

    def serve(request: Received, sock: socket.socket) -> None:
        if "auth/login" in request.path:
            good_login(sock)
        elif request.path == "/" or stage["now"] == "good":
            reply(sock, 200 if stage["now"] == "good" else 404, one_account())
        else:
            STAGES[stage["now"]](sock)
            if stage["now"] in ("headers", "body"):
                sock.shutdown(socket.SHUT_RDWR)  # the peer leaves mid-reply

    return serve


def fail_at_every_stage(poller: Poller, stage: dict[str, str], polls: int = 100) -> Iterator[str]:
    """`polls` failing polls at each stage, then one good one; yields each stage's name after it."""
    for name in STAGES:
        stage["now"] = name
        for _ in range(polls):
            poller.poll_once()
        stage["now"] = "good"
        poller.poll_once()
        yield name
