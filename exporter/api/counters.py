"""The request, retry and login counters of one client, read by every scrape."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass

# The `endpoint` label: these three, and "clock" (the probe before a login, on requests
# only: it is never retried).
RETRIED_ENDPOINTS = ("login", "accounts_balances", "cards_balances")
# The documented messageCodes by which Ibanera refuses credentials: only these count as a
# refused login (pause, ibanera_login_failures_total, max_login_refusals). Anything else
# a login meets (a redirect, a 403, an error page, `Required`) is a failed request.
CREDENTIAL_REFUSALS = ("Account_Locked", "Account_Not_Verified", "Account_Suppressed", "Username_Or_Password_Incorrect")


@dataclass(frozen=True)
class ClientCounts:
    """A consistent copy of a client's counters, for one scrape."""

    requests: dict[tuple[str, str], int]
    retries: dict[str, int]
    logins: int
    login_failures: dict[str, int]


class ClientCounters:
    """Written by the poller thread, read by scrapes: every access holds the lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[tuple[str, str]] = Counter()
        self._retries: Counter[str] = Counter(dict.fromkeys(RETRIED_ENDPOINTS, 0))
        self._logins = 0
        # Every reason and endpoint starts at 0, so that the first one is an increase alerts can see.
        self._login_failures: Counter[str] = Counter(dict.fromkeys(CREDENTIAL_REFUSALS, 0))

    def request(self, endpoint: str, code: str) -> None:
        with self._lock:
            self._requests[(endpoint, code)] += 1

    def retry(self, endpoint: str) -> None:
        with self._lock:
            self._retries[endpoint] += 1

    def login(self) -> None:
        with self._lock:
            self._logins += 1

    def login_failure(self, refusal: str) -> None:
        """`refusal` is one of CREDENTIAL_REFUSALS."""
        with self._lock:
            self._login_failures[refusal] += 1

    def snapshot(self) -> ClientCounts:
        with self._lock:
            return ClientCounts(dict(self._requests), dict(self._retries), self._logins, dict(self._login_failures))
