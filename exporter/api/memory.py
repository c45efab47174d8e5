"""What a connection must remember across restarts so that a restart never risks the lock.

After `kill -9`, an OOM kill or a crash loop, a new process must not log in with a code
from a 30 s step the old one already used (a server that refuses reused codes counts
that refusal towards Ibanera's lock), nor forget a login pause or that logins were
stopped. Under `--storage.path DIR` this lives in `DIR/<connection>.state.json`, written
atomically (temporary file, fsync, rename, fsync of the folder) before the step it
records is used. It never holds a secret: two numbers and a time.

Without a file to read, nobody can say which step the previous process used last, so
the first code waits for the next step (at most 30 s).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..files import UnreadableFile, read_small_file
from ..totp import STEP_SECONDS

log = logging.getLogger("exporter.api")

_MAX_STATE_BYTES = 4096


class StateFileError(Exception):
    """The state file exists but cannot be trusted. The message names the file."""


@dataclass(frozen=True)
class LoginState:
    last_code_step: int | None = None  # the newest 30 s step a code was sent from
    logins_paused_until: float | None = None  # unix time
    refusals_in_a_row: int = 0


class LoginMemory:
    """The login state of one connection, kept in a file when there is a place for it."""

    def __init__(self, state: LoginState, path: Path | None, *, refusals_known: bool = True) -> None:
        self._state = state
        self._path = path
        self._write_failed = False
        # False when the file could not be trusted: how many refusals came in a row is unknown.
        self.refusals_known = refusals_known

    @classmethod
    def open(cls, directory: Path | None, connection: str, now: float, login_backoff: float) -> LoginMemory:
        """The remembered state; a missing or unreadable file is taken in the safest way."""
        path = directory / f"{connection}.state.json" if directory else None
        unknown_step = int(now // STEP_SECONDS)  # nobody can say it was not used: wait for the next
        if path is None or not path.exists():
            log.info(
                "no remembered login state: the first one-time code waits for the next 30 s step (at most 30 s)",
                extra={"connection": connection, "state_file": str(path) if path else "none"},
            )
            return cls(LoginState(last_code_step=unknown_step), path)
        try:
            state = _read(path)
        except StateFileError as exc:
            log.error(
                "the login state file cannot be trusted: logins pause for login_backoff, as after a refusal, "
                "and the next refusal stops them",
                extra={"connection": connection, "error": str(exc)},
            )
            state = LoginState(last_code_step=unknown_step, logins_paused_until=now + login_backoff)
            return cls(state, path, refusals_known=False)
        log.info(
            "login state restored",
            extra={"connection": connection, "state_file": str(path), "refusals_in_a_row": state.refusals_in_a_row},
        )
        return cls(state, path)

    @classmethod
    def first_contact(cls) -> LoginMemory:
        """For a server no process has ever used the codes of: the built-in simulator."""
        return cls(LoginState(), None)

    @property
    def state(self) -> LoginState:
        return self._state

    @property
    def path(self) -> Path | None:
        return self._path

    def remember_step(self, step: int) -> None:
        """Called before a code from `step` is sent."""
        self._set(replace(self._state, last_code_step=step))

    def remember_logins(self, paused_until: float | None, refusals_in_a_row: int) -> None:
        self._set(replace(self._state, logins_paused_until=paused_until, refusals_in_a_row=refusals_in_a_row))

    def _set(self, new: LoginState) -> None:
        if new == self._state:
            return
        self._state = new
        if self._path is not None:
            self._write(new, self._path)

    def _write(self, state: LoginState, path: Path) -> None:
        try:
            fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as file:
                    json.dump(asdict(state), file)
                    file.flush()
                    os.fsync(file.fileno())
                os.replace(temporary, path)
            except BaseException:
                os.unlink(temporary)
                raise
            folder = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
        except OSError as exc:
            # Polling goes on: only a crash within the same 30 s step could then reuse a code.
            if not self._write_failed:
                log.error(
                    "cannot write the login state file; a restart may not know the last step used",
                    extra={"state_file": str(path), "error": exc.strerror or type(exc).__name__},
                )
            self._write_failed = True
        else:
            self._write_failed = False


def _read(path: Path) -> LoginState:
    try:
        raw = read_small_file(path, _MAX_STATE_BYTES)
    except UnreadableFile as exc:
        raise StateFileError(str(exc)) from None
    try:
        data = json.loads(raw)
    except ValueError:
        raise StateFileError(f"{path}: not JSON") from None
    if not isinstance(data, dict) or set(data) != {"last_code_step", "logins_paused_until", "refusals_in_a_row"}:
        raise StateFileError(f"{path}: not a login state")
    step, paused, refusals = data["last_code_step"], data["logins_paused_until"], data["refusals_in_a_row"]
    if not (step is None or _whole(step)) or not (paused is None or _number(paused)) or not _whole(refusals):
        raise StateFileError(f"{path}: a value has the wrong type")
    return LoginState(step, float(paused) if paused is not None else None, refusals)


def _whole(value: object) -> bool:
    return type(value) is int and value >= 0


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1e11  # before 5138
