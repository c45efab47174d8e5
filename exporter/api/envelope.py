"""Ibanera's common response envelope: an HTTP reply -> its payload, or the error that says why not.

Success needs both HTTP 2xx and `status: "1"`. The JSON is read strictly: amounts become
Decimal straight from the text (never through float), NaN/Infinity are refused, and an
object with the same key twice is malformed rather than "last one wins", because which of
two balances is true cannot be known. Keys are matched case-insensitively (the docs show
both camelCase and PascalCase): an envelope comes back with its keys in lower case, and
two keys that differ only in case are as malformed as the same key twice.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Generic, TypeVar

from ..dialect import MAX_AMOUNT_DIGITS, KeysDifferInCase, Notes, fold_keys
from ..model import InvalidRow
from .errors import ApiRejected, MalformedResponse, RateLimited, ServerError, Unauthorized

JsonObject = dict[str, object]
Row = TypeVar("Row")

_MESSAGE_CODE = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # matched whole: `$` lets a final line break pass


class _DuplicateKey(ValueError):
    pass


class _NumberTooLong(ValueError):
    pass


# No number the API sends (ids, amounts of at most MAX_AMOUNT_DIGITS digits, counts) is
# longer; refusing longer ones as they are read keeps a reply of 10 000-digit numbers
# from costing more than its bytes, and says what was wrong.
MAX_NUMBER_CHARS = MAX_AMOUNT_DIGITS + 10


def _bounded(convert: Callable[[str], object]) -> Callable[[str], object]:
    def parse(text: str) -> object:
        if len(text) > MAX_NUMBER_CHARS:
            raise _NumberTooLong(f"a number has {len(text)} characters, more than {MAX_NUMBER_CHARS}")
        return convert(text)

    return parse


_parse_float, _parse_int = _bounded(Decimal), _bounded(int)


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not a number")


def _unique_keys(pairs: list[tuple[str, object]]) -> JsonObject:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _DuplicateKey("an object has the same key twice")
    return result


def loads_strict(content: bytes | bytearray) -> object:
    """JSON -> Python with Decimal numbers; ValueError for anything not strictly JSON."""
    try:
        return json.loads(
            content,
            parse_float=_parse_float,
            parse_int=_parse_int,
            parse_constant=_reject_constant,
            object_pairs_hook=_unique_keys,
        )
    except RecursionError:
        raise ValueError("nested too deeply") from None


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Retry-After is either delay-seconds or an HTTP-date (RFC 9110 section 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():  # ASCII digits only: "²" is a digit to isdigit() and not to float()
        return float(value) if value.isascii() and len(value) <= 9 else None
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError, OverflowError, IndexError):
        return None


def _errors(payload: JsonObject | None) -> tuple[tuple[str, str], ...]:
    """The (fieldName, messageCode) pairs of an error envelope, each cut to a safe token.

    Other keys of an error item (some samples add `errorType`) are ignored.
    """
    errors = payload.get("errors") if payload is not None else None
    if not isinstance(errors, list):
        return ()

    def token(value: object) -> str:
        return value if isinstance(value, str) and _MESSAGE_CODE.fullmatch(value) else "unrecognised"

    pairs = []
    for item in errors:
        try:
            error = fold_keys(item) if isinstance(item, dict) else None
        except KeysDifferInCase:
            error = None
        if error is not None:
            pairs.append(
                (token(error.get("fieldname")) if error.get("fieldname") else "", token(error.get("messagecode")))
            )
    return tuple(pairs)


def _folded(payload: object) -> JsonObject | None:
    """A JSON object with its keys in lower case; None when it is not an object."""
    return fold_keys(payload) if isinstance(payload, dict) else None


def decode_envelope(
    endpoint: str, status: int, headers: Mapping[str, str], content: bytes | bytearray, now: float
) -> JsonObject:
    """An HTTP reply -> the envelope of a success, or the ApiError that says what went wrong."""
    if status == 429 or status >= 500:
        retry_after = parse_retry_after(headers.get("Retry-After"), now)
        error = RateLimited if status == 429 else ServerError
        raise error(f"{endpoint}: HTTP {status}", retry_after)
    if status == 401:
        raise Unauthorized(f"{endpoint}: HTTP 401")
    try:
        payload = _folded(loads_strict(content))
    except ValueError as exc:  # KeysDifferInCase too
        if isinstance(exc, (_DuplicateKey, _NumberTooLong, KeysDifferInCase)) and 200 <= status < 300:
            raise MalformedResponse(f"{endpoint}: HTTP {status} but {exc}") from None
        payload = None
    if not 200 <= status < 300:
        errors = _errors(payload)
        codes = ", ".join(code for _, code in errors)
        raise ApiRejected(f"{endpoint}: HTTP {status}" + (f" ({codes})" if codes else ""), errors)
    if payload is None:
        content_type = headers.get("Content-Type", "no content type")[:40]  # the reply's words: kept short
        raise MalformedResponse(f"{endpoint}: HTTP {status} but the body is not a JSON object ({content_type!r})")
    if payload.get("status") == "1":
        return payload
    if payload.get("status") == "0":
        errors = _errors(payload)
        codes = ", ".join(code for _, code in errors)
        raise ApiRejected(f"{endpoint}: status 0 ({codes or 'no messageCode'})", errors)
    raise MalformedResponse(f'{endpoint}: the envelope has no status "1" or "0"')


@dataclass(frozen=True)
class Page(Generic[Row]):
    rows: tuple[Row, ...]  # validated
    number_of_pages: int | None  # None when the reply does not say
    served_size: int | None  # the page size the server says it used


def read_page(
    envelope: JsonObject, page: int, parse_row: Callable[[object, Notes], Row], notes: Notes | None = None
) -> Page[Row]:
    """One page of a listing, every row validated (the forms it used go into `notes`), or MalformedResponse."""
    try:
        envelope = fold_keys(envelope)  # as decode_envelope made it already; anything else, too
    except KeysDifferInCase as exc:
        raise MalformedResponse(f"page {page}: {exc}") from None
    notes = set() if notes is None else notes
    rows = envelope.get("details")
    if not isinstance(rows, list):
        raise MalformedResponse(f"page {page}: details is not a list")
    reported_page = envelope.get("pagenumber")
    if is_int(reported_page) and reported_page != page:
        raise MalformedResponse(f"page {page}: the server answered with page {reported_page}")
    parsed = []
    for row in rows:
        try:
            parsed.append(parse_row(row, notes))
        except InvalidRow as exc:
            raise MalformedResponse(f"page {page}: {exc}") from None
    number_of_pages = _paging(envelope, "numberofpages", "numberOfPages", page)
    served_size = _paging(envelope, "pagesize", "pageSize", page)
    if number_of_pages == 0 and parsed:
        raise MalformedResponse(f"page {page}: numberOfPages is 0, but the page has rows")
    return Page(rows=tuple(parsed), number_of_pages=number_of_pages, served_size=served_size if served_size else None)


def _paging(envelope: JsonObject, key: str, name: str, page: int) -> int | None:
    """A page count or size; None when the reply leaves it out.

    One that is there but unreadable ("3", 3.0, -1) is malformed rather than left out: the
    walk would then end at the first page that looks short, and the accounts after it
    would vanish from a list that looks whole.
    """
    value = envelope.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or not is_int(value) or value < 0:
        raise MalformedResponse(f"page {page}: {name} is not a whole number from 0")
    return value


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
