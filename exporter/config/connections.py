"""One entry of `connections:`: the API user, its secrets, paging, TLS, cards and accounts."""

from __future__ import annotations

import re
from typing import Literal

from ..files import UnreadableFile, read_pem_bundle
from ..strict_yaml import shown, shown_key
from ..totp import SecretDecodeError, decode_secret
from .model import DEFAULT_BASE_URL, TOTP_SECRET_ENCODINGS, AccountConfig, CaBundle, ConnectionConfig
from .reader import Reader, Yaml, default, floor, type_name

_CONNECTION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")  # matched whole: `$` lets a final line break pass
_BASE_URL = re.compile(r"https?://[^/\s]+(/\S*)?", re.ASCII)
_SECRET_KEYS = ("username", "password", "totp_secret")
_CONNECTION_KEYS = {
    "name",
    "base_url",
    "totp_secret_encoding",
    "page_size",
    "max_pages",
    "ca_file",
    "tls_insecure_skip_verify",
    "cards",
    "cards_holder_name_label",
    "accounts",
} | {k for s in _SECRET_KEYS for k in (s, f"{s}_file")}


def read_connection(reader: Reader, data: object, key: str) -> ConnectionConfig:
    data = reader.mapping(data, key, _CONNECTION_KEYS, required={"name"})
    name = reader.string(data, "name", f"{key}.name")
    if not _CONNECTION_NAME.fullmatch(name):
        raise reader.error(f"{key}.name", f"{shown(name)} must be 1-63 letters, digits, '_', '.' or '-'")
    base_url = reader.string(data, "base_url", f"{key}.base_url", DEFAULT_BASE_URL).rstrip("/")
    if not _BASE_URL.fullmatch(base_url):
        raise reader.error(f"{key}.base_url", f"expected an http:// or https:// URL, got {shown(base_url)}")
    encoding = reader.string(
        data, "totp_secret_encoding", f"{key}.totp_secret_encoding", default(ConnectionConfig, "totp_secret_encoding")
    )
    if encoding not in TOTP_SECRET_ENCODINGS:
        raise reader.error(
            f"{key}.totp_secret_encoding", f"must be one of {', '.join(TOTP_SECRET_ENCODINGS)}, got {shown(encoding)}"
        )
    username, password, totp_secret = (reader.secret(data, s, key) for s in _SECRET_KEYS)
    try:
        decode_secret(totp_secret.reveal(), encoding)
    except SecretDecodeError as exc:
        raise reader.error(f"{key}.totp_secret", str(exc)) from None
    ca_file = None
    if "ca_file" in data:
        ca_path = reader.path(reader.string(data, "ca_file", f"{key}.ca_file"), f"{key}.ca_file")
        try:
            ca_file = CaBundle(ca_path, read_pem_bundle(ca_path))
        except UnreadableFile as exc:
            raise reader.error(f"{key}.ca_file", f"cannot read {ca_path}: {exc.reason}") from None
    flags = {}
    for flag in ("tls_insecure_skip_verify", "cards", "cards_holder_name_label"):
        flags[flag] = data.get(flag, False)
        if not isinstance(flags[flag], bool):
            raise reader.error(f"{key}.{flag}", f"expected true or false, got {type_name(flags[flag])}")
    if flags["cards_holder_name_label"] and not flags["cards"]:
        raise reader.error(f"{key}.cards_holder_name_label", "needs cards: true")
    return ConnectionConfig(
        ca_file=ca_file,
        **flags,
        accounts=read_accounts(reader, data.get("accounts", {}), f"{key}.accounts"),
        name=name,
        base_url=base_url,
        username=username,
        password=password,
        totp_secret=totp_secret,
        totp_secret_encoding=encoding,
        page_size=_read_page_size(reader, data, f"{key}.page_size"),
        max_pages=reader.integer(
            data, "max_pages", f"{key}.max_pages", default(ConnectionConfig, "max_pages"), 1, 1_000_000
        ),
    )


def _read_page_size(reader: Reader, data: Yaml, key: str) -> int | Literal["all"]:
    value = data.get("page_size")
    if value == "all":
        return "all"
    if isinstance(value, str):
        raise reader.error(key, f"expected a whole number from 1 to 10000, or all, got {shown(value)}")
    return reader.integer(data, "page_size", key, default(ConnectionConfig, "page_size"), 1, 10_000)


MAX_ACCOUNT_NAME_LENGTH = 100
_ACCOUNT_ID = re.compile(r"[0-9]{1,19}")
# The largest id a poll accepts (model.py): a larger one in the config could never match.
_MAX_ACCOUNT_ID = 2**63 - 1


def read_accounts(reader: Reader, data: object, key: str) -> dict[int, AccountConfig]:
    """`accounts:` of a connection: {asset account id: AccountConfig}.

    Keys are the API's ids, written as numbers or as quoted digits ("1001"), as YAML users do both.
    """
    if not isinstance(data, dict):
        raise reader.error(key, f"expected a mapping of asset account id to name and floor, got {type_name(data)}")
    result: dict[int, AccountConfig] = {}
    for raw_id, entry in data.items():
        account_key = f"{key}.{shown_key(raw_id)}"
        account_id = _account_id(reader, raw_id, account_key)
        if account_id in result:
            raise reader.error(account_key, f"account {account_id} is listed twice")
        result[account_id] = _read_account(reader, entry, account_key)
    return result


def _account_id(reader: Reader, raw_id: object, key: str) -> int:
    # bool is an int in Python, and YAML reads `yes:` as True: neither is an account id.
    account_id = None
    if isinstance(raw_id, int) and not isinstance(raw_id, bool):
        account_id = raw_id
    elif isinstance(raw_id, str) and _ACCOUNT_ID.fullmatch(raw_id):
        account_id = int(raw_id)
    if account_id is None or not 0 <= account_id <= _MAX_ACCOUNT_ID:
        raise reader.error(key, f"an asset account id is a whole number from 0 to 2^63-1, got {shown(raw_id)}")
    return account_id


def _read_account(reader: Reader, entry: object, key: str) -> AccountConfig:
    entry = reader.mapping(entry, key, {"name", "low_available_balance"})
    if not entry:
        raise reader.error(key, "set name, low_available_balance or both")
    name = entry.get("name")
    if name is not None:
        # A display name goes into labels, legends and alert summaries: one printable line.
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_ACCOUNT_NAME_LENGTH:
            raise reader.error(
                f"{key}.name", f"expected a name of 1-{MAX_ACCOUNT_NAME_LENGTH} characters, got {type_name(name)}"
            )
        if not name.isprintable():
            raise reader.error(f"{key}.name", "must be one line of printable characters")
        # "Payroll " and "Payroll" would be two label values, and the edit between them would
        # resolve a firing alert: refused rather than quietly trimmed.
        if name != name.strip():
            raise reader.error(f"{key}.name", f"must not start or end with a space, got {name!r}")
    low = None
    if "low_available_balance" in entry:
        low = floor(reader, entry["low_available_balance"], f"{key}.low_available_balance")
    return AccountConfig(name=name, low_available_balance=low)
