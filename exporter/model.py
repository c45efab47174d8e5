"""Asset-account and card balances as the API reports them, validated one row at a time.

Amounts arrive as JSON numbers and are decoded straight into Decimal (the client uses
json.loads(parse_float=Decimal)), so 0.00000001 BTC and 12345678901.23 USD stay exact
until the single conversion to float at the exposition edge.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

MAX_ASSET_LENGTH = 64


class InvalidRow(ValueError):
    """One account row cannot be trusted. The message names the field, never a secret."""


@dataclass(frozen=True, slots=True)
class AccountBalance:
    asset_account_id: int
    asset: str
    total: Decimal
    available: Decimal
    pending: Decimal
    suppressed: bool


# Above about 1.8e308 a float is +Inf; anything with 308 digits before the point is out.
_MAX_ADJUSTED_EXPONENT = 307


def _amount(row: dict, field: str) -> Decimal:
    value = row.get(field)
    # Exact type checks: bool is an int in Python, and "100.00" as a string is not what
    # the API documents; both would be a guess, so both are refused.
    if type(value) is int:
        value = Decimal(value)
    elif type(value) is not Decimal:
        raise InvalidRow(f"{field} is {_describe(value)}, expected a number")
    # 1e400 is a valid JSON number and a finite Decimal, but +Inf as a float: not a balance.
    if not value.is_finite() or value.adjusted() > _MAX_ADJUSTED_EXPONENT:
        raise InvalidRow(f"{field} is not a finite number")
    return value


def _describe(value: object) -> str:
    if value is None:
        return "missing or null"
    return f"a {type(value).__name__}"


def parse_account(row: object) -> AccountBalance:
    """One element of `details` from GET /customer/accounts/balances."""
    if not isinstance(row, dict):
        raise InvalidRow(f"row is {_describe(row)}, expected an object")
    account_id = row.get("id")
    if isinstance(account_id, bool) or not isinstance(account_id, int) or account_id < 0:
        raise InvalidRow(f"id is {_describe(account_id)}, expected a non-negative integer")
    asset = row.get("asset")
    if not isinstance(asset, str) or not asset.strip() or len(asset) > MAX_ASSET_LENGTH:
        raise InvalidRow(f"account {account_id}: asset is {_describe(asset)}, expected a short non-empty string")
    suppressed = row.get("bSuppressed")
    if not isinstance(suppressed, bool):
        raise InvalidRow(f"account {account_id}: bSuppressed is {_describe(suppressed)}, expected true or false")
    try:
        return AccountBalance(
            asset_account_id=account_id,
            asset=asset,
            total=_amount(row, "totalBalance"),
            available=_amount(row, "availableBalance"),
            pending=_amount(row, "pendingBalance"),
            suppressed=suppressed,
        )
    except InvalidRow as exc:
        raise InvalidRow(f"account {account_id}: {exc}") from None


@dataclass(frozen=True, slots=True)
class CardBalance:
    card_id: int
    currency: str
    total: Decimal
    available: Decimal
    pending: Decimal
    card_last4: str
    customers_reference: str
    status: str
    holder_name: str | None  # personal data: None unless the config asks for it


def _text(row: dict, field: str, card_id: int) -> str:
    value = row.get(field)
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > 256:
        raise InvalidRow(f"card {card_id}: {field} is {_describe(value)}, expected a short string")
    return value


def parse_card(row: object, keep_holder_name: bool = False) -> CardBalance:
    """One element of `details` from GET /customer/cards/balances."""
    if not isinstance(row, dict):
        raise InvalidRow(f"row is {_describe(row)}, expected an object")
    card_id = row.get("id")
    if type(card_id) is not int or card_id < 0:
        raise InvalidRow(f"id is {_describe(card_id)}, expected a non-negative integer")
    currency = row.get("currency")
    if not isinstance(currency, str) or not currency.strip() or len(currency) > MAX_ASSET_LENGTH:
        raise InvalidRow(f"card {card_id}: currency is {_describe(currency)}, expected a short non-empty string")
    try:
        return CardBalance(
            card_id=card_id,
            currency=currency,
            total=_amount(row, "totalBalance"),
            available=_amount(row, "availableBalance"),
            pending=_amount(row, "pendingBalance"),
            card_last4=_text(row, "cardLast4", card_id),
            customers_reference=_text(row, "customersReference", card_id),
            status=_text(row, "status", card_id),
            holder_name=_text(row, "cardHolderName", card_id) if keep_holder_name else None,
        )
    except InvalidRow as exc:
        message = str(exc)
        raise InvalidRow(message if message.startswith("card ") else f"card {card_id}: {message}") from None
