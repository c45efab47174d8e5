"""Refused logins: a pause after each, a stop after `max_login_refusals` in a row.

Ibanera locks an account after a few failed logins, and a monitoring tool must never lock
its owner out of their bank: the pause and the count live in the login memory, so that a
restart keeps them.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .errors import LoginPaused, LoginsStopped
from .memory import LoginMemory


class LoginGate:
    def __init__(
        self, memory: LoginMemory, *, login_backoff: float, max_login_refusals: int, clock: Callable[[], float]
    ) -> None:
        self._memory = memory
        self._login_backoff = login_backoff
        self._max_login_refusals = max_login_refusals
        self._clock = clock
        self._paused_until = memory.state.logins_paused_until
        # Unknown (a state file that could not be trusted): the worst short of stopping, so
        # that a lost count never buys more refusals towards the lock than max_login_refusals.
        known = memory.state.refusals_in_a_row
        self._refusals_in_a_row = known if memory.refusals_known else max(known, max_login_refusals - 1)
        if not memory.refusals_known:
            # Written at once: the login's code step, written before the login is sent, would
            # otherwise write the file's 0 and make it one a restart trusts.
            memory.remember_logins(self._paused_until, self._refusals_in_a_row)

    @property
    def paused_until(self) -> float | None:
        return self._paused_until

    def check(self) -> None:
        """Raises LoginsStopped or LoginPaused when a login must not be sent now."""
        now = self._clock()
        if self._refusals_in_a_row >= self._max_login_refusals:
            where = f" and delete {self._memory.path}" if self._memory.path else ""
            raise LoginsStopped(
                f"logins stopped after {self._refusals_in_a_row} refused logins in a row, so that the account is "
                f"not locked: fix the credentials{where}, then restart the exporter"
            )
        if self._paused_until is not None and self._paused_until > now + self._login_backoff:
            # Set by a clock that ran ahead (or read from a file it wrote) and has since gone
            # back: a pause never lasts longer than login_backoff from now.
            self._set(now + self._login_backoff, self._refusals_in_a_row)
        if self._paused_until is not None and now < self._paused_until:
            raise LoginPaused(f"logins paused after a refused login, next attempt at {iso(self._paused_until)}")

    def accepted(self) -> None:
        self._set(None, 0)

    def refused(self) -> str:
        """Counts a credential refusal; says what happens next, for the log line."""
        self._set(self._clock() + self._login_backoff, self._refusals_in_a_row + 1)
        if self._refusals_in_a_row >= self._max_login_refusals:
            return f"that is {self._refusals_in_a_row} in a row: no more logins until the exporter is restarted"
        assert self._paused_until is not None
        return f"no new login before {iso(self._paused_until)}"

    def _set(self, paused_until: float | None, refusals_in_a_row: int) -> None:
        self._paused_until = paused_until
        self._refusals_in_a_row = refusals_in_a_row
        self._memory.remember_logins(paused_until, refusals_in_a_row)


def iso(unix_time: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix_time))
