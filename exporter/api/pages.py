"""Walking a paginated listing: every page or nothing, never a partial list.

Account balances and card balances are walked by the same code; a `Listing` says where
each one lives, how its paging parameters are spelled and how its rows are read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from ..model import AccountBalance, CardBalance, parse_account, parse_card
from .envelope import JsonObject, read_page
from .errors import MalformedResponse, TooManyPages
from .transport import QueryParams

BALANCES_PATH = "/api/v1/customer/accounts/balances"
CARDS_PATH = "/api/v1/customer/cards/balances"

Row = TypeVar("Row")


@dataclass(frozen=True)
class Listing(Generic[Row]):
    """How one paginated endpoint is walked and its rows read."""

    endpoint: str  # the `endpoint` label
    path: str
    page_number_param: str
    page_size_param: str
    parse_row: Callable[[object], Row]
    row_id: Callable[[Row], int]


@dataclass(frozen=True)
class Listed(Generic[Row]):
    """Every row of a listing, from `pages` pages."""

    rows: tuple[Row, ...]
    pages: int


def accounts_listing() -> Listing[AccountBalance]:
    return Listing("accounts_balances", BALANCES_PATH, "pageNumber", "pageSize",
                   parse_account, lambda account: account.asset_account_id)


def cards_listing(keep_holder_name: bool) -> Listing[CardBalance]:
    # The cards endpoint spells its paging parameters with capitals, as documented. The
    # holder's name is personal data: read only when the config asks for it.
    return Listing("cards_balances", CARDS_PATH, "PageNumber", "PageSize",
                   lambda row: parse_card(row, keep_holder_name=keep_holder_name), lambda card: card.card_id)


GetPage = Callable[[str, str, QueryParams], JsonObject]


def fetch_all(listing: Listing[Row], get: GetPage, page_size: int, max_pages: int) -> Listed[Row]:
    """Every page of `listing`, fetched with `get(endpoint, path, params)`, or an ApiError."""
    rows: list[Row] = []
    seen_ids: set[int] = set()
    page = 1
    while True:
        if page > max_pages:
            raise TooManyPages(f"{listing.endpoint}: more than max_pages={max_pages} pages")
        envelope = get(listing.endpoint, listing.path, {listing.page_number_param: page, listing.page_size_param: page_size})
        try:
            result = read_page(envelope, page, listing.parse_row)
        except MalformedResponse as exc:
            raise MalformedResponse(f"{listing.endpoint} {exc}") from None
        for row in result.rows:
            row_id = listing.row_id(row)
            if row_id in seen_ids:
                # A repeated id means pages overlapped or repeated: which row is right is unknown.
                raise MalformedResponse(f"{listing.endpoint} page {page}: id {row_id} appears twice")
            seen_ids.add(row_id)
        rows.extend(result.rows)
        if result.number_of_pages is not None:
            if result.number_of_pages > max_pages:
                raise TooManyPages(f"{listing.endpoint}: the server reports {result.number_of_pages} pages, "
                                   f"more than max_pages={max_pages}")
            if page >= result.number_of_pages:
                break
            if not result.rows:
                raise MalformedResponse(f"{listing.endpoint} page {page} of {result.number_of_pages} is empty")
        # No page count: a short page is the last one. The server may cap the page size
        # below what we asked, so compare with the size it says it used.
        elif len(result.rows) < (result.served_size or page_size):
            break
        page += 1
    return Listed(tuple(rows), page)
