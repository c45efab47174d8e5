"""bcrypt checks of `Authorization: Basic`, cached."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping

import bcrypt


class BasicAuth:
    """bcrypt checks of `Authorization: Basic`, cached so that a scrape every 15 s stays cheap."""

    CACHE_SIZE = 256

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._good: OrderedDict[bytes, None] = (
            OrderedDict()
        )  # only successes: a cache of failures would speed up guessing
        self._dummies: dict[bytes, bytes] = {}

    def check(self, users: Mapping[str, bytes], header: str | None) -> bool:
        user, password = _credentials(header)
        if user is None:
            return False
        known_hash = users.get(user)
        known = known_hash is not None
        # An unknown user costs a bcrypt check like a known one, so timing does not tell names apart.
        hashed = known_hash if known_hash is not None else self._dummy(next(iter(users.values())))
        key = hashlib.sha256(user.encode() + b"\0" + password + b"\0" + hashed).digest()
        with self._lock:
            if key in self._good:
                self._good.move_to_end(key)
                return True
        try:
            matches = bcrypt.checkpw(password, hashed)
        except ValueError:  # bcrypt refuses passwords over 72 bytes: a wrong password, not an error
            matches = False
        if not matches or not known:
            return False
        with self._lock:
            self._good[key] = None
            if len(self._good) > self.CACHE_SIZE:
                self._good.popitem(last=False)
        return True

    def _dummy(self, like: bytes) -> bytes:
        cost = like[4:6]
        with self._lock:
            if cost not in self._dummies:
                self._dummies[cost] = bcrypt.hashpw(os.urandom(16), bcrypt.gensalt(rounds=int(cost)))
            return self._dummies[cost]


def _credentials(header: str | None) -> tuple[str | None, bytes]:
    scheme, _, encoded = (header or "").partition(" ")
    if scheme.lower() != "basic":  # auth schemes are case-insensitive (RFC 9110 11.1)
        return None, b""
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None, b""
    user, sep, password = decoded.partition(b":")
    if not sep:
        return None, b""
    try:
        return user.decode(), password
    except UnicodeDecodeError:
        return None, b""
