"""The access token of a login: checked before it is ever used, and when to renew it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal

from ..dialect import KeysDifferInCase, fold_keys
from ..totp import STEP_SECONDS
from .envelope import JsonObject
from .errors import MalformedResponse

# What a token may look like: printable ASCII without spaces (it goes into a header as
# it is), of a sane length. A JWT is one to two kilobytes. Matched whole (fullmatch): with
# `$`, a token ending in a line break would pass.
_TOKEN = re.compile(r"[\x21-\x7e]{1,8192}")
# expiresIn outside this range is not a lifetime we can plan renewals around.
MIN_TOKEN_LIFETIME = 1.0
MAX_TOKEN_LIFETIME = 7 * 86400.0
# A renewal login waits for nothing: it happens at the first request that finds a fresh
# one-time step (a login never reuses one) once the token is in its last minute (or last
# quarter, if shorter), and until then the current token serves. The window is at least a
# step and a margin long, so that a fresh step always begins in it while the token is good.
_RENEW_MARGIN = 60.0
_RENEW_WINDOW_FLOOR = STEP_SECONDS + 5.0


@dataclass(frozen=True)
class Token:
    value: str = field(repr=False)  # a secret: never in a repr, a log line or an error
    lifetime: float  # expiresIn, in seconds
    expires_at: float
    renew_at: float  # from here on, a request that finds a fresh one-time step logs in anew


def read_token(envelope: JsonObject, sent_at: float) -> Token:
    """The token of a login reply, or MalformedResponse saying what is wrong with it (never the token)."""
    details = envelope.get("details")
    try:  # keys in either case, like every reply
        details = fold_keys(details) if isinstance(details, dict) else {}
    except KeysDifferInCase as exc:
        raise MalformedResponse(f"login: details: {exc}") from None
    token = details.get("accesstoken")
    lifetime = details.get("expiresin")
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        raise MalformedResponse(
            "login: details.accessToken is missing, empty, longer than 8192 characters, or "
            "not printable ASCII without spaces"
        )
    if (
        isinstance(lifetime, bool)
        or not isinstance(lifetime, (int, Decimal))
        or not (MIN_TOKEN_LIFETIME <= lifetime <= MAX_TOKEN_LIFETIME)
    ):
        raise MalformedResponse("login: details.expiresIn is not a number of seconds from 1 to 604800 (7 days)")
    seconds = float(lifetime)
    # Lifetime counts from before the request was sent: the token can only be younger.
    renew_window = max(min(_RENEW_MARGIN, seconds / 4), min(_RENEW_WINDOW_FLOOR, seconds))
    return Token(token, seconds, sent_at + seconds, sent_at + seconds - renew_window)
