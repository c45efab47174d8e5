"""The spellings the Ibanera docs show for one and the same reply, read exactly.

The docs disagree with themselves (../shared/ibanera-api.md, "Dialects"): keys in camelCase
or PascalCase, the account id as `id` or `assetAccountId`, amounts as JSON numbers or as
decimal strings (a .NET serializer setting), currency codes in lower case. Each form is
read here, and nothing looser: a decimal string has one strict grammar and a bounded
number of digits, and two keys that differ only in case are refused, because which of
the two is true cannot be known.

What a listing used is noted as it is read (`Notes`) and summed up in a `Dialect`, so the
log and --connection.check can say which forms a connection's API speaks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

# .NET's decimal holds 28-29 significant digits; ETH moves in 18 decimal places. Forty
# digits cover both with room, and nothing longer is a balance.
MAX_AMOUNT_DIGITS = 40
# A decimal string: an optional minus, no leading zeros, an optional fraction. No
# exponent, no plus sign, no spaces, no thousands separators, ASCII digits only ([0-9],
# not \d, which also matches the digits of other scripts).
_DECIMAL_STRING = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")
_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")

JsonRow = dict[str, object]  # a JSON object as json.loads made it


class KeysDifferInCase(ValueError):
    """Two keys of one object are the same but for case, e.g. totalBalance and TotalBalance."""


class BadAmount(ValueError):
    """A decimal string outside the grammar; the message says why, never more than a short excerpt."""


def fold_keys(obj: JsonRow) -> JsonRow:
    """The object with its keys in lower case. Only ASCII keys are folded: the keys read
    here are ASCII, and Unicode case folding would match, say, the Kelvin sign with k."""
    folded = {key.lower() if key.isascii() else key: value for key, value in obj.items()}
    if len(folded) != len(obj):  # rare: find the pair, in one pass
        seen: set[str] = set()
        for key in obj:
            name = key.lower() if key.isascii() else key
            if name in seen:
                raise KeysDifferInCase(f"two keys spell {name[:40]!r} in different cases")
            seen.add(name)
    return folded


def code(text: str) -> str:
    """An asset or currency code as exported and as thresholds are matched: ASCII upper case,
    without the spaces around it.

    Only a-z change, so that a code never turns into another script's letters (Unicode
    upper-casing makes 'ß' into 'SS'). Spaces go because a code from a fixed-width column
    arrives as "USD " and would otherwise be a label that no threshold joins.
    """
    text = text.strip(" ")
    return text.upper() if text.isascii() else text.translate(_ASCII_UPPER)


def decimal_string(text: str) -> Decimal:
    """An amount sent as a string ("1234.56", "-0.00000001") -> the exact Decimal, or BadAmount."""
    if len(text) > MAX_AMOUNT_DIGITS + 2:  # a sign and a point besides the digits
        raise BadAmount(f"a string of {len(text)} characters, more than an amount of {MAX_AMOUNT_DIGITS} digits")
    if not _DECIMAL_STRING.fullmatch(text):
        raise BadAmount(f"the string {text!r}, not a plain decimal number")
    digits = len(text) - text.startswith("-") - ("." in text)
    if digits > MAX_AMOUNT_DIGITS:
        raise BadAmount(f"a string of {digits} digits, more than {MAX_AMOUNT_DIGITS}")
    return Decimal(text)


# What a listing can show, aspect by aspect, in the order they are told.
KEYS, ACCOUNT_ID, AMOUNTS, CODES = "keys", "account id", "amounts", "codes"
_ASPECTS = (KEYS, ACCOUNT_ID, AMOUNTS, CODES)

Notes = set[tuple[str, str]]  # (aspect, form) pairs seen while one listing was read


def key_case(row: JsonRow, camel: str) -> str:
    """How `row` (not yet folded) spells the key `camel`, e.g. totalBalance."""
    if camel in row:
        return "camelCase"
    return "PascalCase" if camel[0].upper() + camel[1:] in row else "other case"


@dataclass(frozen=True)
class Dialect:
    """The forms one listing arrived in, e.g. {("amounts", "as strings"), ("keys", "PascalCase")}."""

    seen: frozenset[tuple[str, str]] = frozenset()

    def describe(self) -> str:
        """For people: 'keys camelCase, account id as id, amounts as numbers, codes upper case'."""
        parts = []
        for aspect in _ASPECTS:
            forms = sorted(form for seen_aspect, form in self.seen if seen_aspect == aspect)
            if forms:
                parts.append(f"{aspect} {' and '.join(forms)}")
        return ", ".join(parts) or "no rows to tell"
