"""One-time codes: which 30 s step to use, on whose clock.

Two disciplines keep codes from counting against the account:
- a login always uses a step no earlier request used: if the server refuses reused codes,
  a refused *login* would count towards Ibanera's lock;
- data requests may share a step until the server refuses a reused code twice in a row;
  from then on, until the next login, every request waits for a fresh step.

The server's clock is learned from `Date` headers, so that a host whose clock is off
does not send codes the server refuses. One reply never decides it: the offset is the
median of the last three samples and is adopted only when two of them agree, samples
come only from successful replies (and from the clock probe, below), and a Date that is
unparsable or implausibly far from our clock is ignored.
"""

from __future__ import annotations

import logging
import statistics
from collections import deque
from collections.abc import Callable
from email.utils import parsedate_to_datetime

from ..totp import STEP_SECONDS, totp_at
from .memory import LoginMemory

# Below this, a difference is the noise of whole-second Date headers: trust our own clock.
CLOCK_OFFSET_TOLERANCE = 2.0
# A server clock further from ours than this is a broken or hostile header, not a skew
# worth following (TLS certificates would already fail on a host that far off).
MAX_PLAUSIBLE_OFFSET = 3600.0
_SAMPLES = 3
# A remembered step further ahead than this came from a clock that has since moved back:
# waiting for it could take hours, so only the next step is waited for.
_MAX_STEPS_AHEAD = 10

log = logging.getLogger("exporter.api")


def date_header_time(value: str | None) -> float | None:
    """The unix time of an HTTP Date header, or None when it is missing or unparsable."""
    if not value or len(value) > 64:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, OverflowError, IndexError):
        return None


class OneTimeCodes:
    """The TOTP codes of one connection. Used by one poller thread only."""

    def __init__(
        self,
        key: bytes,
        connection: str,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        memory: LoginMemory,
    ) -> None:
        self._key = key
        self._memory = memory
        self._connection = connection
        self._clock = clock
        self._sleep = sleep
        self._samples: deque[float] = deque(maxlen=_SAMPLES)
        self._offset: float | None = None  # server time minus ours
        self._last_step = memory.state.last_code_step
        self._last_reused = False
        self._reused_refusals = 0  # in a row
        self._force_fresh = False
        # Whether one code may serve several requests is undocumented: assume it may, until
        # the API refuses reused codes twice in a row.
        self._fresh_per_request = False

    # -- the server's clock -----------------------------------------------------------

    @property
    def offset(self) -> float | None:
        return self._offset

    def observe_date(self, date_header: str | None, sent_at: float) -> None:
        """One sample of the server's clock from a reply that deserves trust."""
        server_time = date_header_time(date_header)
        if server_time is None:
            return
        # Date is truncated to the second: its true value is half a second later on average.
        sample = server_time + 0.5 - (sent_at + self._clock()) / 2
        if abs(sample) > MAX_PLAUSIBLE_OFFSET:
            log.warning(
                "ignoring an implausible Date header from the API",
                extra={"connection": self._connection, "offset": f"{sample:.0f}s"},
            )
            return
        self._samples.append(sample)
        agreeing = [s for s in self._samples if sum(abs(s - o) <= CLOCK_OFFSET_TOLERANCE for o in self._samples) >= 2]
        if agreeing:
            self._offset = statistics.median(agreeing)

    def server_time(self) -> float:
        offset = self._offset or 0.0
        return self._clock() + (offset if abs(offset) > CLOCK_OFFSET_TOLERANCE else 0.0)

    # -- which step ---------------------------------------------------------------------

    def fresh_step_available(self) -> bool:
        """Whether a code from a step no request has used can be had now, without waiting."""
        return self._wait(fresh=True) == 0.0

    def request_wait(self) -> float:
        """How long the next for_request() will wait for its code, in seconds."""
        return self._wait(fresh=self._fresh_per_request or self._force_fresh)

    def for_login(self) -> str:
        """A code from a step no request has used yet (waiting for one if need be)."""
        return self._code(fresh=True)

    def for_request(self) -> str:
        code = self._code(fresh=self._fresh_per_request or self._force_fresh)
        self._force_fresh = False  # only a request uses it up: a login between keeps it owed
        return code

    def new_token(self) -> None:
        # Learn again with every token: even two refusals may have been chance, and the
        # lesson makes every later request wait for a fresh 30 s step.
        self._fresh_per_request = False

    @property
    def last_was_reused(self) -> bool:
        return self._last_reused

    def reused_code_refused(self) -> None:
        """The server refused a code from a step used before: the retry must use a fresh one."""
        self._reused_refusals += 1
        if self._reused_refusals >= 2 and not self._fresh_per_request:
            self._fresh_per_request = True
            log.info(
                "the API refuses one-time codes used twice; until the next login every request waits for a fresh code",
                extra={"connection": self._connection},
            )
        self._force_fresh = True

    def reused_code_accepted(self) -> None:
        if self._last_reused:
            self._reused_refusals = 0

    def _wait(self, fresh: bool) -> float:
        now = self.server_time()
        step = int(now // STEP_SECONDS)
        last = self._last_step
        if last is not None and last > step + _MAX_STEPS_AHEAD:  # _code resets it: only the next step is waited for
            last = step
        if fresh and last is not None and step <= last:
            return (last + 1) * STEP_SECONDS - now + 0.05
        return 0.0

    def _code(self, fresh: bool) -> str:
        step = int(self.server_time() // STEP_SECONDS)
        if self._last_step is not None and self._last_step > step + _MAX_STEPS_AHEAD:
            log.warning(
                "the last step used is far ahead of the clock; waiting for the next step only",
                extra={"connection": self._connection},
            )
            self._last_step = step
        # Until the clock says the step is fresh: a clock set back during a sleep (NTP) would
        # otherwise end the wait inside the step already used.
        while wait := self._wait(fresh):
            log.info(
                "waiting for a fresh one-time code", extra={"connection": self._connection, "wait": f"{wait:.1f}s"}
            )
            self._sleep(wait)
        now = self.server_time()
        step = int(now // STEP_SECONDS)
        last = self._last_step
        self._last_reused = last is not None and step <= last
        if last is None or step > last:
            self._memory.remember_step(step)  # before the code leaves: a crash after it must know
            self._last_step = step
        return totp_at(self._key, now)
