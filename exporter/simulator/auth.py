"""Who may ask: the login, Bearer tokens that expire, one-time codes, and the lock.

Codes are checked with pyotp, the library of Ibanera's own Python sample and no code of
the client's, so every end-to-end test also checks our RFC 6238 implementation. Like
Ibanera, the simulator locks the account for ten minutes after a few failed logins, and
tests read how many logins failed and when.
"""

from __future__ import annotations

import base64
import secrets
import threading
from collections.abc import Callable, Mapping

import pyotp

from .http import Reply, envelope, error

LOCK_AFTER_FAILED_LOGINS = 5
LOCK_SECONDS = 600
STEP_SECONDS = 30


class Auth:
    """Logins, tokens and codes of the one API user. Every method may be called from any thread."""

    def __init__(
        self,
        *,
        username: str,
        password: str,
        totp_secret: bytes,
        token_lifetime: int,
        reject_reused_otp: bool,
        clock: Callable[[], float],
    ) -> None:
        self.username = username
        self.password = password
        # pyotp wants base32 text; the key bytes are the same whatever encoding the client is told.
        self._totp = pyotp.TOTP(base64.b32encode(totp_secret).decode())
        self.token_lifetime = token_lifetime
        self.reject_reused_otp = reject_reused_otp  # a code is good for one request only
        self._clock = clock
        self._lock = threading.Lock()
        self._used_codes: set[tuple[int, str]] = set()
        self._tokens: dict[str, float] = {}  # token -> when it expires
        self._failed_in_a_row = 0
        self._locked_until = 0.0
        self.logins_succeeded = 0
        self.logins_failed = 0
        self.failed_login_times: list[float] = []
        self.issued_tokens: list[str] = []
        self.otp_codes_seen: list[str] = []
        self.otp_rejections = 0

    @property
    def totp_secret_base32(self) -> str:
        secret: str = self._totp.secret
        return secret

    @property
    def locked(self) -> bool:
        with self._lock:
            return self._clock() < self._locked_until

    def revoke_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()

    def login(self, body: object, refuse_code: bool = False) -> Reply:
        """POST /public/auth/login with `body` as json.loads read it."""
        fields = ("username", "password", "otp")
        if not isinstance(body, dict) or not all(isinstance(body.get(k), str) and body.get(k) for k in fields):
            return 400, error("Required")
        username, password, code = (str(body[k]) for k in fields)
        with self._lock:
            now = self._clock()
            if now < self._locked_until:
                self.logins_failed += 1
                return 400, error("Account_Locked")
            self.otp_codes_seen.append(code)
            ok = (
                secrets.compare_digest(username, self.username)
                and secrets.compare_digest(password, self.password)
                and self._code_ok(code, now)
                and not refuse_code
            )
            if not ok:
                self.logins_failed += 1
                self.failed_login_times.append(now)
                self._failed_in_a_row += 1
                if self._failed_in_a_row >= LOCK_AFTER_FAILED_LOGINS:
                    self._locked_until = now + LOCK_SECONDS
                return 400, error("Username_Or_Password_Incorrect")
            self._failed_in_a_row = 0
            self.logins_succeeded += 1
            token = secrets.token_urlsafe(32)
            self._tokens[token] = now + self.token_lifetime
            self.issued_tokens.append(token)
        return 200, envelope({"accessToken": token, "expiresIn": self.token_lifetime})

    def authorize(self, headers: Mapping[str, str], refuse_code: bool = False) -> Reply | None:
        """None when the Bearer token and the otp header are good, else the refusal. Header names in lower case."""
        auth = headers.get("authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else ""
        with self._lock:
            now = self._clock()
            expires_at = self._tokens.get(token)
            if expires_at is None or now >= expires_at:
                return 401, error("Unauthorized")
            code = headers.get("otp", "")
            self.otp_codes_seen.append(code)
            if not self._code_ok(code, now) or refuse_code:
                self.otp_rejections += 1
                return 400, error("Invalid_Otp", "otp")
        return None

    def _code_ok(self, code: str, now: float) -> bool:
        """Called under the lock. pyotp checks the code, with one step of leeway each way."""
        if not self._totp.verify(code, for_time=now, valid_window=1):
            return False
        if self.reject_reused_otp:
            key = (int(now // STEP_SECONDS), code)
            if key in self._used_codes:
                return False
            self._used_codes.add(key)
        return True
