"""Asset-account and card balances as the API reports them, validated one row at a time.

Amounts are JSON numbers, decoded straight into Decimal (the client uses
json.loads(parse_float=Decimal)), or decimal strings read by one strict grammar
(exporter.dialect), so 0.00000001 BTC and 12345678901.23 USD stay exact until the single
conversion to float at the exposition edge. Keys are matched case-insensitively; apart
from the spellings the docs show (exporter.dialect), a row is read as strictly as ever.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from .dialect import (
    ACCOUNT_ID,
    AMOUNTS,
    CODES,
    KEYS,
    MAX_AMOUNT_DIGITS,
    BadAmount,
    JsonRow,
    KeysDifferInCase,
    Notes,
    code,
    decimal_string,
    fold_keys,
    key_case,
)

MAX_ASSET_LENGTH = 64


class InvalidRow(ValueError):
    """One account row cannot be trusted. The message names the field, never a secret."""


@dataclass(frozen=True, slots=True)
class AccountBalance:
    asset_account_id: int
    asset: str  # upper case: the API's codes are case-insensitive
    total: Decimal
    available: Decimal
    pending: Decimal
    suppressed: bool


# Above about 1.8e308 a float is +Inf; anything with 308 digits before the point is out.
_MAX_ADJUSTED_EXPONENT = 307


_AS_NUMBERS, _AS_STRINGS = (AMOUNTS, "as numbers"), (AMOUNTS, "as strings")


def _amount(row: JsonRow, field: str, notes: Notes) -> Decimal:
    """row[field] (field in the docs' spelling; the row's keys are folded) as an exact Decimal."""
    value = row.get(field.lower())
    # bool is an int in Python, and true is not an amount.
    if isinstance(value, Decimal):
        number = value
        notes.add(_AS_NUMBERS)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = Decimal(value)
        notes.add(_AS_NUMBERS)
    elif isinstance(value, str):
        try:
            number = decimal_string(value)
        except BadAmount as exc:
            raise InvalidRow(f"{field} is {exc}") from None
        notes.add(_AS_STRINGS)
    else:
        raise InvalidRow(f"{field} is {_describe(value)}, expected a number")
    # 1e400 is a valid JSON number and a finite Decimal, but +Inf as a float: not a balance.
    if not number.is_finite() or number.adjusted() > _MAX_ADJUSTED_EXPONENT:
        raise InvalidRow(f"{field} is not a finite number")
    if len(number.as_tuple().digits) > MAX_AMOUNT_DIGITS:
        raise InvalidRow(f"{field} has more than {MAX_AMOUNT_DIGITS} digits")
    # 1e-400 is one digit, but 400 decimal places written out: as a float it is 0 (or -0),
    # a number the API never said. A decimal string cannot have more places than digits.
    exponent = number.as_tuple().exponent  # an int: the number is finite
    if isinstance(exponent, int) and -exponent > MAX_AMOUNT_DIGITS:
        raise InvalidRow(f"{field} has more than {MAX_AMOUNT_DIGITS} decimal places")
    return number


def _describe(value: object) -> str:
    if value is None:
        return "missing or null"
    return f"a {type(value).__name__}"


def _object(row: object, notes: Notes) -> JsonRow:
    if not isinstance(row, dict):
        raise InvalidRow(f"row is {_describe(row)}, expected an object")
    notes.add((KEYS, key_case(row, "totalBalance")))
    try:
        return fold_keys(row)
    except KeysDifferInCase as exc:
        raise InvalidRow(str(exc)) from None


# Ids are .NET longs; a bigger one is not an id, and would make a huge label.
MAX_ID = 2**63 - 1


def _whole(value: object, field: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_ID:  # exact type: a bool is an int in Python
        raise InvalidRow(f"{field} is {_describe(value)}, expected a whole number from 0 to 2^63-1")
    return value


def _account_id(row: JsonRow, notes: Notes) -> int:
    """`id` in the docs' JSON samples, `assetAccountId` in their field list: either, or both if they agree."""
    if "assetaccountid" not in row:
        notes.add((ACCOUNT_ID, "as id"))
        return _whole(row.get("id"), "id")
    other = _whole(row["assetaccountid"], "assetAccountId")
    notes.add((ACCOUNT_ID, "as assetAccountId"))
    if "id" in row:
        if _whole(row["id"], "id") != other:
            raise InvalidRow(f"id {row['id']} and assetAccountId {other} differ")
        notes.add((ACCOUNT_ID, "as id"))
    return other


def _unit(row: JsonRow, field: str, notes: Notes) -> str:
    """The asset of an account or the currency of a card: a label value, so kept short."""
    value = row.get(field.lower())
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_ASSET_LENGTH:
        raise InvalidRow(f"{field} is {_describe(value)}, expected a short non-empty string")
    upper = code(_label_text(value, field))
    notes.add((CODES, "upper case" if upper == value.strip(" ") else "not upper case"))
    if value != value.strip(" "):
        notes.add((CODES, "with spaces around"))
    return upper


def _label_text(value: str, field: str) -> str:
    """A label value: control characters, lone surrogates and other unprintables are refused.

    A lone surrogate ("\\ud800" in the JSON) cannot be written as UTF-8 at all, and a
    control character in a label is not a name anybody gave an asset or a card.
    """
    if not value.isprintable():
        raise InvalidRow(f"{field} holds a control character or an unprintable code point")
    return value


def parse_account(value: object, notes: Notes | None = None) -> AccountBalance:
    """One element of `details` from GET /customer/accounts/balances; the forms it used go into `notes`."""
    notes = set() if notes is None else notes
    row = _object(value, notes)
    account_id = _account_id(row, notes)
    try:
        suppressed = row.get("bsuppressed")
        if not isinstance(suppressed, bool):
            raise InvalidRow(f"bSuppressed is {_describe(suppressed)}, expected true or false")
        return AccountBalance(
            asset_account_id=account_id,
            asset=_unit(row, "asset", notes),
            total=_amount(row, "totalBalance", notes),
            available=_amount(row, "availableBalance", notes),
            pending=_amount(row, "pendingBalance", notes),
            suppressed=suppressed,
        )
    except InvalidRow as exc:
        raise InvalidRow(f"account {account_id}: {exc}") from None


@dataclass(frozen=True, slots=True)
class CardBalance:
    card_id: int
    currency: str  # upper case, like assets
    total: Decimal
    available: Decimal
    pending: Decimal
    card_last4: str
    customers_reference: str
    status: str
    holder_name: str | None  # personal data: None unless the config asks for it


def _text(row: JsonRow, field: str) -> str:
    value = row.get(field.lower())
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > 256:
        raise InvalidRow(f"{field} is {_describe(value)}, expected a short string")
    return _label_text(value, field)


def parse_card(value: object, keep_holder_name: bool = False, notes: Notes | None = None) -> CardBalance:
    """One element of `details` from GET /customer/cards/balances.

    customersID is not read: the docs show it as a string and as a number, and the
    exporter has no use for it.
    """
    notes = set() if notes is None else notes
    row = _object(value, notes)
    card_id = _whole(row.get("id"), "id")
    try:
        return CardBalance(
            card_id=card_id,
            currency=_unit(row, "currency", notes),
            total=_amount(row, "totalBalance", notes),
            available=_amount(row, "availableBalance", notes),
            pending=_amount(row, "pendingBalance", notes),
            card_last4=_text(row, "cardLast4"),
            customers_reference=_text(row, "customersReference"),
            status=_text(row, "status"),
            holder_name=_text(row, "cardHolderName") if keep_holder_name else None,
        )
    except InvalidRow as exc:
        raise InvalidRow(f"card {card_id}: {exc}") from None
