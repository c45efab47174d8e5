"""RFC 6238 time-based one-time passwords, as Ibanera uses them (SHA-1, 6 digits, 30 s).

Written out rather than taken from pyotp because pyotp refuses secrets shorter than
112 bits and knows no raw-ASCII secrets, and a real Ibanera shared secret may be either.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct

STEP_SECONDS = 30
DIGITS = 6


class SecretDecodeError(ValueError):
    """The shared secret cannot be decoded. The message never contains the secret."""


def decode_secret(secret: str, encoding: str) -> bytes:
    """The HMAC key for a shared secret: base32 (Google Authenticator style) or raw ASCII."""
    if encoding == "ascii":
        try:
            key = secret.encode("ascii")
        except UnicodeEncodeError:
            raise SecretDecodeError("the TOTP secret has characters outside ASCII") from None
    elif encoding == "base32":
        # Authenticator apps show secrets in groups, in either case, without padding.
        text = "".join(secret.split()).upper().rstrip("=")
        try:
            key = base64.b32decode(text + "=" * (-len(text) % 8))
        except (binascii.Error, ValueError):
            raise SecretDecodeError(
                "the TOTP secret is not valid base32 (letters A-Z and digits 2-7); "
                "set totp_secret_encoding: ascii if it is a plain-text secret"
            ) from None
    else:
        raise SecretDecodeError(f"unknown TOTP secret encoding {encoding!r}")
    if not key:
        raise SecretDecodeError("the TOTP secret is empty")
    return key


def totp_at(key: bytes, unix_time: float, digits: int = DIGITS, step: int = STEP_SECONDS) -> str:
    """The code for the step that contains unix_time (RFC 6238 section 4, HOTP of RFC 4226)."""
    counter = int(unix_time // step)
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**digits).zfill(digits)
