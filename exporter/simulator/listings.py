"""The two listings, GET /customer/accounts/balances and GET /customer/cards/balances.

Only the page asked for is turned into JSON rows: a server that did all of them for
every page would make the benchmark's floor (bench/perf.py) meaninglessly slow.
"""

from __future__ import annotations

from .faults import Fault
from .http import Envelope, Reply, envelope, error
from .state import Book, JsonRow, page_count, page_slice

CARDS_DEFAULT_PAGE_SIZE = 10  # documented server default
ACCOUNTS_DEFAULT_PAGE_SIZE = 10


class BadPaging(ValueError):
    """A paging parameter is not a positive whole number; the message is its name."""


def page_request(query: dict[str, list[str]], number_param: str, size_param: str, default_size: int) -> tuple[int, int]:
    """(page number, page size) from the query."""
    try:
        number = int(query.get(number_param, ["1"])[0])
        size = int(query.get(size_param, [str(default_size)])[0])
    except ValueError:
        raise BadPaging(number_param) from None
    if size < 1:
        raise BadPaging(size_param)
    if number < 1:
        raise BadPaging(number_param)
    return number, size


class Listings:
    """How the two listings page, and the faults that bend a page."""

    def __init__(self, book: Book, *, report_number_of_pages: bool, max_page_size: int | None) -> None:
        self._book = book
        self.report_number_of_pages = report_number_of_pages
        self.max_page_size = max_page_size  # a server that caps pageSize below what was asked
        self.endless_pages = False  # always one more page, of accounts never seen before
        self.unpaginated_requests = 0

    def balances(self, query: dict[str, list[str]], fault: Fault | None) -> Reply:
        accounts = self._book.accounts()
        if "pageNumber" not in query and "pageSize" not in query:  # documented: the whole list
            self.unpaginated_requests += 1
            if not self.max_page_size:
                return 200, envelope([a.to_json() for a in accounts])
            # A server that caps its pages answers with page 1 of that size instead.
        try:
            number, size = page_request(
                query, "pageNumber", "pageSize", self.max_page_size or ACCOUNTS_DEFAULT_PAGE_SIZE
            )
        except BadPaging as exc:
            return 400, error("Invalid", str(exc))
        if self.max_page_size:
            size = min(size, self.max_page_size)
        pages = page_count(len(accounts), size)
        served_number = max(1, number - 1) if fault is not None and fault.kind == "repeat" else number
        served = [a.to_json() for a in page_slice(accounts, served_number, size)]
        if self.endless_pages:
            pages = number + 1
            served = (
                [{**accounts[0].to_json(), "id": 10_000_000 + number * size + i} for i in range(size)]
                if accounts
                else []
            )
        if fault is not None and fault.kind == "empty":
            served = []
        elif fault is not None and fault.kind == "huge":
            served = [*served, {"padding": "x" * fault.size}]
        self._book.record_served(served)
        return 200, self._page(served, number, size, pages)

    def cards(self, query: dict[str, list[str]], fault: Fault | None) -> Reply:
        cards = self._book.cards()
        try:
            number, size = page_request(query, "PageNumber", "PageSize", CARDS_DEFAULT_PAGE_SIZE)
        except BadPaging as exc:
            return 400, error("Invalid", str(exc))
        served = (
            []
            if fault is not None and fault.kind == "empty"
            else [c.to_json() for c in page_slice(cards, number, size)]
        )
        return 200, self._page(served, number, size, page_count(len(cards), size))

    def _page(self, rows: list[JsonRow], number: int, size: int, pages: int) -> Envelope:
        page = envelope(rows, pageSize=size, pageNumber=number)
        if self.report_number_of_pages:
            page["numberOfPages"] = pages
        return page
