"""Walking a paginated listing: every page or nothing, never a partial list.

Account balances and card balances are walked by the same code; a `Listing` says where
each one lives, how its paging parameters are spelled and how its rows are read. The
docs say the balances come unpaginated when neither paging parameter is sent: with
page_size None the walk is that one request, and a reply that looks cut short is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from ..dialect import Dialect, Notes
from ..model import AccountBalance, CardBalance, parse_account, parse_card
from .envelope import JsonObject, Page, read_page
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
    parse_row: Callable[[object, Notes], Row]
    row_id: Callable[[Row], int]


@dataclass(frozen=True)
class Listed(Generic[Row]):
    """Every row of a listing, from `pages` pages."""

    rows: tuple[Row, ...]
    pages: int
    dialect: Dialect  # the forms the rows arrived in
    served_size: int | None  # the page size the server said it used on page 1, if it said


def accounts_listing() -> Listing[AccountBalance]:
    return Listing(
        "accounts_balances",
        BALANCES_PATH,
        "pageNumber",
        "pageSize",
        parse_account,
        lambda account: account.asset_account_id,
    )


def cards_listing(keep_holder_name: bool) -> Listing[CardBalance]:
    # The cards endpoint spells its paging parameters with capitals, as documented. The
    # holder's name is personal data: read only when the config asks for it.
    return Listing(
        "cards_balances",
        CARDS_PATH,
        "PageNumber",
        "PageSize",
        lambda row, notes: parse_card(row, keep_holder_name, notes),
        lambda card: card.card_id,
    )


GetPage = Callable[[str, str, QueryParams | None], JsonObject]


def fetch_all(listing: Listing[Row], get: GetPage, page_size: int | None, max_pages: int) -> Listed[Row]:
    """Every page of `listing`, fetched with `get(endpoint, path, params)`, or an ApiError.

    page_size None: the whole list in one request without paging parameters.
    """
    rows: list[Row] = []
    seen_ids: set[int] = set()
    notes: Notes = set()
    first_served_size: int | None = None
    page = 1
    while True:
        if page > max_pages:
            raise TooManyPages(f"{listing.endpoint}: more than max_pages={max_pages} pages")
        params = None if page_size is None else {listing.page_number_param: page, listing.page_size_param: page_size}
        envelope = get(listing.endpoint, listing.path, params)
        try:
            result = read_page(envelope, page, listing.parse_row, notes)
        except MalformedResponse as exc:
            raise MalformedResponse(f"{listing.endpoint} {exc}") from None
        if page == 1:
            first_served_size = result.served_size
        for row in result.rows:
            row_id = listing.row_id(row)
            if row_id in seen_ids:
                # A repeated id means pages overlapped or repeated: which row is right is unknown.
                raise MalformedResponse(f"{listing.endpoint} page {page}: id {row_id} appears twice")
            seen_ids.add(row_id)
        rows.extend(result.rows)
        if page_size is None:
            _check_whole(listing.endpoint, result)
            break
        if result.number_of_pages is not None:
            if result.number_of_pages > max_pages:
                raise TooManyPages(
                    f"{listing.endpoint}: the server reports {result.number_of_pages} pages, "
                    f"more than max_pages={max_pages}"
                )
            if page >= result.number_of_pages:
                break
            if not result.rows:
                raise MalformedResponse(f"{listing.endpoint} page {page} of {result.number_of_pages} is empty")
        # No page count: a short page is the last one. The server may cap the page size
        # below what we asked, so compare with the size it says it used.
        elif len(result.rows) < (result.served_size or page_size):
            break
        page += 1
    return Listed(tuple(rows), page, Dialect(frozenset(notes)), first_served_size)


def _check_whole(endpoint: str, result: Page[Row]) -> None:
    """The reply to a request without paging parameters must be the whole list, not page 1 of it."""
    if result.number_of_pages is not None and result.number_of_pages > 1:
        raise MalformedResponse(
            f"{endpoint}: asked for the whole list (page_size: all), the server answered page 1 of "
            f"{result.number_of_pages}: set page_size to a number"
        )
    # No page count, but a page size that the rows fill: the list may have been cut there.
    if result.number_of_pages is None and result.served_size is not None and len(result.rows) >= result.served_size:
        raise MalformedResponse(
            f"{endpoint}: asked for the whole list (page_size: all), the server answered a full "
            f"page of {result.served_size} without a page count: set page_size to a number"
        )
