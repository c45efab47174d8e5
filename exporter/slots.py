"""The open client connections of the HTTP server: capped, and at the cap the oldest idle
one makes room for a new one, so that holding connections open costs an attacker more
than it costs the scrapers."""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass, field

log = logging.getLogger("exporter.httpserver")

_LIMIT_WARNING_INTERVAL = 60.0  # the limit is logged at most once a minute


@dataclass
class Connection:
    sock: socket.socket
    client: str
    # Not answering a whole request (waiting for one, or still reading it): may be closed to make room.
    idle: bool = True
    since: float = field(default_factory=time.monotonic)
    closing: bool = False  # closed to make room; its thread has yet to finish


class Slots:
    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._lock = threading.Condition()
        self._connections: dict[int, Connection] = {}
        self._next_limit_warning = 0.0
        self._closed_for_room = 0

    def add(self, sock: socket.socket, client: str) -> Connection:
        connection = Connection(sock, client)
        with self._lock:
            self._connections[id(connection)] = connection
        return connection

    def forget(self, connection: Connection) -> None:
        with self._lock:
            self._connections.pop(id(connection), None)
            self._lock.notify()

    def set_idle(self, connection: Connection, idle: bool) -> None:
        with self._lock:
            connection.idle = idle
            connection.since = time.monotonic()

    def set_done(self, connection: Connection) -> None:
        """Its last answer has gone out (it lingers until the client closes): the first to make room."""
        with self._lock:
            connection.idle = True
            connection.since = float("-inf")

    def shut_down_all(self) -> None:
        with self._lock:
            for connection in self._connections.values():
                _shutdown(connection.sock)

    def make_room(self, wait: float) -> bool:
        """True when a connection may be accepted; at the cap, closes the oldest idle one, or
        waits up to `wait` seconds for a slot and returns False."""
        victim = None
        with self._lock:
            if len(self._connections) < self._cap:
                return True
            # One at a time: the one being closed frees its slot when its thread ends.
            if not any(c.closing for c in self._connections.values()):
                idle = [c for c in self._connections.values() if c.idle]
                if idle:
                    victim = min(idle, key=lambda c: c.since)
                    victim.closing = True
                    self._closed_for_room += 1
            now = time.monotonic()
            warn = now >= self._next_limit_warning
            if warn:
                self._next_limit_warning = now + _LIMIT_WARNING_INTERVAL
                closed, self._closed_for_room = self._closed_for_room, 0
        # Outside the lock: a slow log sink (a full stderr pipe) must not stop every connection.
        if victim is not None:
            _shutdown(victim.sock)
        if warn:
            log.warning(
                "connection limit reached: closing the oldest idle connections to make room",
                extra={"max_connections": self._cap, "closed_since_last_warning": closed},
            )
        with self._lock:
            self._lock.wait_for(lambda: len(self._connections) < self._cap, wait)
        return False


def _shutdown(sock: socket.socket) -> None:
    """Wakes the connection's thread out of a blocking read; it then closes the socket itself."""
    try:
        # The plain socket's shutdown, also for a TLS socket: SSLSocket.shutdown would drop its
        # SSL object under the feet of the thread reading from it.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass
