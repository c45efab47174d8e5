"""The configuration as frozen dataclasses, and the one error type of reading it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Literal

DEFAULT_BASE_URL = "https://public-api.ibanera.com"
# Ibanera locks an account for 10 minutes after too many failed logins. A pause shorter
# than that could let the exporter itself keep the account locked.
MIN_LOGIN_BACKOFF = 600.0
# How many refused logins in a row lock an Ibanera account is not documented. Stopping
# after three means the exporter alone can never take an account there.
DEFAULT_MAX_LOGIN_REFUSALS = 3
TOTP_SECRET_ENCODINGS = ("base32", "ascii")
# A page of 1000 accounts is about 150 kB; a reply far past that is not a balances page.
DEFAULT_MAX_RESPONSE_SIZE = 16 * 1024 * 1024


class ConfigError(Exception):
    """The configuration cannot be used. The message is safe to print."""


class Secret:
    """A string that never shows itself in repr(), str() or f-strings."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4
    initial_backoff: float = 1.0
    max_backoff: float = 30.0


@dataclass(frozen=True)
class AccountConfig:
    """How a treasury team knows one asset account: its display name and its own floor."""

    name: str | None = None
    low_available_balance: Decimal | None = None  # overrides the asset's threshold


@dataclass(frozen=True)
class CaBundle:
    """A CA bundle as read with the config: a reload sees new contents at the same path, and
    the client is built from these very bytes, not from a file that may have changed since."""

    path: Path
    pem: str = field(repr=False)  # ASCII only, as ssl's cadata takes it (files.read_pem_bundle)


@dataclass(frozen=True)
class ConnectionConfig:
    name: str
    username: Secret
    password: Secret
    totp_secret: Secret
    base_url: str = DEFAULT_BASE_URL
    totp_secret_encoding: str = "base32"
    # Accounts (and cards) per request; "all": the balances in one request without paging
    # parameters, which the docs say returns the whole list (cards always page).
    page_size: int | Literal["all"] = 100
    # A server that keeps answering "there is another page" must not keep us polling forever.
    max_pages: int = 1000
    ca_file: CaBundle | None = None  # CA bundle for the API's certificate instead of the system's
    tls_insecure_skip_verify: bool = False
    cards: bool = False  # also poll GET /customer/cards/balances
    cards_holder_name_label: bool = False  # card holders' names are personal data
    accounts: Mapping[int, AccountConfig] = field(default_factory=dict)  # by asset account id


@dataclass(frozen=True)
class Config:
    connections: tuple[ConnectionConfig, ...]
    poll_interval: float = 60.0
    request_timeout: float = 10.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    login_backoff: float = 900.0
    max_login_refusals: int = DEFAULT_MAX_LOGIN_REFUSALS
    max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE
    low_available_balance: Mapping[str, Decimal] = field(default_factory=dict)
    low_available_card_balance: Mapping[str, Decimal] = field(default_factory=dict)  # by currency
