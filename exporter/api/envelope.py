"""Ibanera's common response envelope: an HTTP reply -> its payload, or the error that says why not.

Success needs both HTTP 2xx and `status: "1"`. The JSON is read strictly: amounts become
Decimal straight from the text (never through float), NaN/Infinity are refused, and an
object with the same key twice is malformed rather than "last one wins", because which of
two balances is true cannot be known.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Generic, TypeVar

from ..model import InvalidRow
from .errors import ApiRejected, MalformedResponse, RateLimited, ServerError, Unauthorized

JsonObject = dict[str, object]
Row = TypeVar("Row")

_MESSAGE_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class _DuplicateKey(ValueError):
    pass


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not a number")


def _unique_keys(pairs: list[tuple[str, object]]) -> JsonObject:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _DuplicateKey("an object has the same key twice")
    return result


def loads_strict(content: bytes) -> object:
    """JSON -> Python with Decimal numbers; ValueError for anything not strictly JSON."""
    try:
        return json.loads(content, parse_float=Decimal, parse_constant=_reject_constant,
                          object_pairs_hook=_unique_keys)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Retry-After is either delay-seconds or an HTTP-date (RFC 9110 section 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value) if len(value) <= 9 else None
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError, OverflowError, IndexError):
        return None


def _errors(payload: object) -> tuple[tuple[str, str], ...]:
    """The (fieldName, messageCode) pairs of an error envelope, each cut to a safe token."""
    errors = payload.get("errors") if isinstance(payload, dict) else None
    if not isinstance(errors, list):
        return ()

    def token(value: object) -> str:
        return value if isinstance(value, str) and _MESSAGE_CODE.match(value) else "unrecognised"

    return tuple(
        (token(e.get("fieldName")) if e.get("fieldName") else "", token(e.get("messageCode")))
        for e in errors if isinstance(e, dict)
    )


def decode_envelope(endpoint: str, status: int, headers: Mapping[str, str], content: bytes, now: float) -> JsonObject:
    """An HTTP reply -> the envelope of a success, or the ApiError that says what went wrong."""
    if status == 429 or status >= 500:
        retry_after = parse_retry_after(headers.get("Retry-After"), now)
        error = RateLimited if status == 429 else ServerError
        raise error(f"{endpoint}: HTTP {status}", retry_after)
    if status == 401:
        raise Unauthorized(f"{endpoint}: HTTP 401")
    try:
        payload = loads_strict(content)
    except ValueError as exc:
        if isinstance(exc, _DuplicateKey) and 200 <= status < 300:
            raise MalformedResponse(f"{endpoint}: HTTP {status} but {exc}") from None
        payload = None
    if not 200 <= status < 300:
        errors = _errors(payload)
        codes = ", ".join(code for _, code in errors)
        raise ApiRejected(f"{endpoint}: HTTP {status}" + (f" ({codes})" if codes else ""), errors)
    if not isinstance(payload, dict):
        content_type = headers.get("Content-Type", "no content type")
        raise MalformedResponse(f"{endpoint}: HTTP {status} but the body is not a JSON object ({content_type!r})")
    if payload.get("status") == "1":
        return payload
    if payload.get("status") == "0":
        errors = _errors(payload)
        codes = ", ".join(code for _, code in errors)
        raise ApiRejected(f"{endpoint}: status 0 ({codes or 'no messageCode'})", errors)
    raise MalformedResponse(f"{endpoint}: the envelope has no status \"1\" or \"0\"")


@dataclass(frozen=True)
class Page(Generic[Row]):
    rows: tuple[Row, ...]  # validated
    number_of_pages: int | None  # None when the reply does not say
    served_size: int | None  # the page size the server says it used


def read_page(envelope: JsonObject, page: int, parse_row: Callable[[object], Row]) -> Page[Row]:
    """One page of a paginated listing, every row validated, or MalformedResponse."""
    rows = envelope.get("details")
    if not isinstance(rows, list):
        raise MalformedResponse(f"page {page}: details is not a list")
    reported_page = envelope.get("pageNumber")
    if is_int(reported_page) and reported_page != page:
        raise MalformedResponse(f"page {page}: the server answered with page {reported_page}")
    parsed = []
    for row in rows:
        try:
            parsed.append(parse_row(row))
        except InvalidRow as exc:
            raise MalformedResponse(f"page {page}: {exc}") from None
    number_of_pages = envelope.get("numberOfPages")
    served_size = envelope.get("pageSize")
    return Page(
        rows=tuple(parsed),
        number_of_pages=number_of_pages if isinstance(number_of_pages, int) and is_int(number_of_pages) else None,
        served_size=served_size if isinstance(served_size, int) and is_int(served_size) and served_size > 0 else None,
    )


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
