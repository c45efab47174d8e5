"""Asset-account and card balances as the API reports them, validated one row at a time.

Amounts arrive as JSON numbers and are decoded straight into Decimal (the client uses
json.loads(parse_float=Decimal)), so 0.00000001 BTC and 12345678901.23 USD stay exact
until the single conversion to float at the exposition edge.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

MAX_ASSET_LENGTH = 64

JsonRow = dict[str, object]  # one element of a reply's `details`, as json.loads made it


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


def _amount(row: JsonRow, field: str) -> Decimal:
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


def _object(row: object) -> JsonRow:
    if not isinstance(row, dict):
        raise InvalidRow(f"row is {_describe(row)}, expected an object")
    return row


def _row_id(row: JsonRow) -> int:
    row_id = row.get("id")
    if type(row_id) is not int or row_id < 0:  # exact type: a bool is an int in Python
        raise InvalidRow(f"id is {_describe(row_id)}, expected a non-negative integer")
    return row_id


def _unit(row: JsonRow, field: str) -> str:
    """The asset of an account or the currency of a card: a label value, so kept short."""
    value = row.get(field)
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_ASSET_LENGTH:
        raise InvalidRow(f"{field} is {_describe(value)}, expected a short non-empty string")
    return _label_text(value, field)


def _label_text(value: str, field: str) -> str:
    """A label value: control characters, lone surrogates and other unprintables are refused.

    A lone surrogate ("\\ud800" in the JSON) cannot be written as UTF-8 at all, and a
    control character in a label is not a name anybody gave an asset or a card.
    """
    if not value.isprintable():
        raise InvalidRow(f"{field} holds a control character or an unprintable code point")
    return value


def parse_account(value: object) -> AccountBalance:
    """One element of `details` from GET /customer/accounts/balances."""
    row = _object(value)
    account_id = _row_id(row)
    try:
        suppressed = row.get("bSuppressed")
        if not isinstance(suppressed, bool):
            raise InvalidRow(f"bSuppressed is {_describe(suppressed)}, expected true or false")
        return AccountBalance(
            asset_account_id=account_id,
            asset=_unit(row, "asset"),
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


def _text(row: JsonRow, field: str) -> str:
    value = row.get(field)
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > 256:
        raise InvalidRow(f"{field} is {_describe(value)}, expected a short string")
    return _label_text(value, field)


def parse_card(value: object, keep_holder_name: bool = False) -> CardBalance:
    """One element of `details` from GET /customer/cards/balances."""
    row = _object(value)
    card_id = _row_id(row)
    try:
        return CardBalance(
            card_id=card_id,
            currency=_unit(row, "currency"),
            total=_amount(row, "totalBalance"),
            available=_amount(row, "availableBalance"),
            pending=_amount(row, "pendingBalance"),
            card_last4=_text(row, "cardLast4"),
            customers_reference=_text(row, "customersReference"),
            status=_text(row, "status"),
            holder_name=_text(row, "cardHolderName") if keep_holder_name else None,
        )
    except InvalidRow as exc:
        raise InvalidRow(f"card {card_id}: {exc}") from None
