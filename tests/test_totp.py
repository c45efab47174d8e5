import base64

import pyotp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.totp import SecretDecodeError, decode_secret, totp_at

RFC6238_KEY = b"12345678901234567890"  # the SHA-1 seed of RFC 6238 Appendix B


@pytest.mark.parametrize(
    "unix_time, code",
    [
        (59, "94287082"),
        (1111111109, "07081804"),
        (1111111111, "14050471"),
        (1234567890, "89005924"),
        (2000000000, "69279037"),
        (20000000000, "65353130"),
    ],
)
def test_rfc6238_appendix_b_sha1_vectors(unix_time, code):
    assert totp_at(RFC6238_KEY, unix_time, digits=8) == code


def test_six_digit_codes_are_the_last_six_of_the_rfc_vectors():
    assert totp_at(RFC6238_KEY, 59) == "287082"


@given(key=st.binary(min_size=14, max_size=64), unix_time=st.integers(min_value=0, max_value=2**33))
def test_agrees_with_pyotp(key, unix_time):
    oracle = pyotp.TOTP(base64.b32encode(key).decode())
    assert totp_at(key, unix_time) == oracle.at(unix_time)


def test_codes_change_only_at_step_boundaries():
    assert totp_at(RFC6238_KEY, 60) == totp_at(RFC6238_KEY, 89.999)
    assert totp_at(RFC6238_KEY, 89.999) != totp_at(RFC6238_KEY, 90)


def test_base32_secret_in_groups_lower_case_and_unpadded():
    key = b"short"  # 40 bits: pyotp would refuse it, Ibanera may still issue it
    text = base64.b32encode(key).decode().rstrip("=")
    grouped = " ".join(text[i : i + 4] for i in range(0, len(text), 4)).lower()
    assert decode_secret(grouped, "base32") == key
    assert len(totp_at(decode_secret(grouped, "base32"), 1000)) == 6


def test_ascii_secret_is_the_raw_bytes():
    assert decode_secret("12345678901234567890", "ascii") == RFC6238_KEY
    assert totp_at(decode_secret("12345678901234567890", "ascii"), 59, digits=8) == "94287082"


@pytest.mark.parametrize(
    "secret, encoding, message",
    [
        ("not base32!", "base32", "not valid base32"),
        ("", "base32", "empty"),
        ("sécret", "ascii", "outside ASCII"),
        ("ABC", "hex", "unknown"),
    ],
)
def test_bad_secrets_are_refused_without_echoing_them(secret, encoding, message):
    with pytest.raises(SecretDecodeError, match=message) as info:
        decode_secret(secret, encoding)
    if secret:
        assert secret not in str(info.value)
