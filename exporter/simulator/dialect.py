"""The spellings of the Ibanera docs, any of which the simulated API can answer in.

The docs disagree with themselves (../shared/ibanera-api.md, "Dialects"), so a test picks
one per simulator, or one per page, and the client must read them all exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from .state import JsonRow, RawJson

_AMOUNTS = frozenset({"totalBalance", "availableBalance", "pendingBalance"})
_CODES = frozenset({"asset", "currency"})


@dataclass(frozen=True)
class SimDialect:
    pascal_case: bool = False  # every key, envelope included: TotalBalance, CardLast4, Status, PageNumber
    account_id_key: str = "id"  # or "assetAccountId", as the docs' field list calls it
    amounts_as_strings: bool = False  # "1234.56": .NET's decimal-as-string serializer setting
    customers_id_as_string: bool = False  # a card's customersID as "77"
    lower_case_codes: bool = False  # "currency": "usd"
    error_type: bool = False  # error items carry an extra errorType

    def reply(self, payload: dict[str, object]) -> dict[str, object]:
        """`payload` (as the docs' JSON samples spell it) in this dialect."""
        if self == AS_SAMPLES:  # the usual case, and the benchmark's: nothing to respell
            return payload
        details = payload.get("details")
        if isinstance(details, list):
            payload = {**payload, "details": [self._row(row) if isinstance(row, dict) else row for row in details]}
        errors = payload.get("errors")
        if self.error_type and isinstance(errors, list):
            payload = {**payload, "errors": [{**item, "errorType": "Validation"} for item in errors]}
        return _pascal_object(payload) if self.pascal_case else payload

    def _row(self, row: JsonRow) -> JsonRow:
        spelled: JsonRow = {}
        for key, value in row.items():
            if key == "id" and "asset" in row:  # an asset account's id (a card's id keeps its name)
                key = self.account_id_key
            if self.amounts_as_strings and key in _AMOUNTS and isinstance(value, Decimal):
                value = format(value, "f")
            elif self.lower_case_codes and key in _CODES and isinstance(value, str) and not isinstance(value, RawJson):
                value = value.lower()
            elif self.customers_id_as_string and key == "customersID" and isinstance(value, int):
                value = str(value)
            spelled[key] = value
        return spelled


AS_SAMPLES = SimDialect()  # the docs' JSON samples


def _pascal_object(obj: dict[str, object]) -> dict[str, object]:
    return {_pascal(key): _pascal_value(value) for key, value in obj.items()}


def _pascal_value(value: object) -> object:
    if isinstance(value, dict):
        return _pascal_object(value)
    if isinstance(value, list):
        return [_pascal_value(item) for item in value]
    return value


def _pascal(key: str) -> str:
    return key[:1].upper() + key[1:]
