"""What the simulated bank holds: asset accounts and cards, the demo data, and the drift.

Accounts and cards are frozen rows, replaced and never changed in place, so a page can be
cut from a list read under the lock and turned into JSON after it is released.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, TypeVar

JsonRow = dict[str, object]
Amounts = tuple[object, object, object]  # (total, available, pending) as served


class RawJson(str):
    """Written into the JSON body as it is: NaN, Infinity, 1e400 and other things the API should not send."""


DROP = RawJson("")  # in SimAccount.raw: leave the field out of the row altogether


@dataclass(frozen=True)
class SimAccount:
    id: int
    asset: str
    total: Decimal
    available: Decimal
    pending: Decimal
    suppressed: bool = False
    places: int = 2  # decimal places the asset moves in (2 for fiat, 8 for BTC)
    raw: tuple[tuple[str, object], ...] = ()  # fields to send instead of the real ones (tests of bad rows)

    def to_json(self) -> JsonRow:
        row: JsonRow = {
            "id": self.id,
            "asset": self.asset,
            "totalBalance": self.total,
            "availableBalance": self.available,
            "pendingBalance": self.pending,
            "bSuppressed": self.suppressed,
        }
        row.update(self.raw)
        return {k: v for k, v in row.items() if v is not DROP}


@dataclass(frozen=True)
class SimCard:
    id: int
    currency: str
    total: Decimal
    available: Decimal
    pending: Decimal
    last4: str
    reference: str
    holder: str
    status: str = "Active"
    customers_id: int = 77

    def to_json(self) -> JsonRow:
        return {
            "id": self.id,
            "customersReference": self.reference,
            "cardHolderName": self.holder,
            "cardLast4": self.last4,
            "customersID": self.customers_id,
            "currency": self.currency,
            "totalBalance": self.total,
            "availableBalance": self.available,
            "pendingBalance": self.pending,
            "status": self.status,
        }


def demo_accounts() -> list[SimAccount]:
    d = Decimal
    return [
        SimAccount(1001, "USD", d("250000.00"), d("248500.00"), d("1500.00")),
        SimAccount(1002, "EUR", d("98000.50"), d("98000.50"), d("0.00")),
        SimAccount(1003, "GBP", d("12000.00"), d("12000.00"), d("0.00"), suppressed=True),
        SimAccount(1004, "USDC", d("40000.00"), d("39000.00"), d("1000.00")),
        SimAccount(1005, "BTC", d("3.12345678"), d("3.10000000"), d("0.02345678"), places=8),
        SimAccount(1006, "ETH", d("45.50000000"), d("45.50000000"), d("0.00000000"), places=8),
        SimAccount(1007, "USD", d("9200.00"), d("8700.00"), d("500.00")),
    ]


def demo_cards() -> list[SimCard]:
    d = Decimal
    return [
        SimCard(501, "USD", d("2500.00"), d("2350.00"), d("150.00"), "4242", "EMP-0001", "Ada Lovelace"),
        SimCard(502, "USD", d("180.00"), d("120.50"), d("59.50"), "1881", "EMP-0002", "Alan Turing"),
        SimCard(503, "EUR", d("900.00"), d("900.00"), d("0.00"), "0007", "EMP-0003", "Grace Hopper"),
        SimCard(504, "EUR", d("0.00"), d("0.00"), d("0.00"), "9999", "EMP-0004", "Ken Thompson", status="Blocked"),
    ]


Row = TypeVar("Row")


def page_slice(rows: Sequence[Row], number: int, size: int) -> Sequence[Row]:
    """Page `number` (from 1) of `size` rows."""
    return rows[(number - 1) * size : number * size]


def page_count(rows: int, size: int) -> int:
    """Pages of `size` it takes to list `rows` rows; an empty list is still one page."""
    return max(1, -(-rows // size))


class Book:
    """The accounts and cards, safe to steer from a test while the server answers."""

    def __init__(
        self, accounts: list[SimAccount], cards: list[SimCard], *, drift_every: float | None, clock: Callable[[], float]
    ) -> None:
        self._lock = threading.Lock()
        self._accounts = {a.id: a for a in accounts}
        self._ordered_cache: list[SimAccount] | None = None
        self._cards = {c.id: c for c in cards}
        self._drift_every = drift_every
        self._clock = clock
        self._last_drift = clock()
        self._random = random.Random(6238)
        # id -> every (total, available, pending) ever served for it, for checks that a
        # published number is one the API really sent (the soak run); None: not recorded.
        self.served: dict[int, set[Amounts]] | None = None

    def accounts(self) -> list[SimAccount]:
        """The accounts by id, the order pages follow, after any drift that is due."""
        with self._lock:
            self._drift()
            if self._ordered_cache is None:
                self._ordered_cache = sorted(self._accounts.values(), key=lambda a: a.id)
            return self._ordered_cache  # replaced, never changed in place: safe to read unlocked

    def cards(self) -> list[SimCard]:
        with self._lock:
            return sorted(self._cards.values(), key=lambda c: c.id)

    def set_accounts(self, accounts: list[SimAccount]) -> None:
        with self._lock:
            self._accounts = {a.id: a for a in accounts}
            self._ordered_cache = None

    def update_account(self, account_id: int, **changes: Any) -> None:
        with self._lock:
            self._accounts[account_id] = replace(self._accounts[account_id], **changes)
            self._ordered_cache = None

    def remove_account(self, account_id: int) -> None:
        with self._lock:
            del self._accounts[account_id]
            self._ordered_cache = None

    def set_cards(self, cards: list[SimCard]) -> None:
        with self._lock:
            self._cards = {c.id: c for c in cards}

    def update_card(self, card_id: int, **changes: Any) -> None:
        with self._lock:
            self._cards[card_id] = replace(self._cards[card_id], **changes)

    def record_served(self, rows: list[JsonRow]) -> None:
        if self.served is None:
            return
        with self._lock:
            for row in rows:
                row_id = row.get("id")
                if isinstance(row_id, int):
                    amounts = (row.get("totalBalance"), row.get("availableBalance"), row.get("pendingBalance"))
                    self.served.setdefault(row_id, set()).add(amounts)

    def served_values(self, account_id: int) -> set[Amounts]:
        with self._lock:
            return set((self.served or {}).get(account_id, ()))

    def _drift(self) -> None:
        """Balances that move over time, for the demo: a small random walk per account. Under the lock."""
        if not self._drift_every:
            return
        now = self._clock()
        while now - self._last_drift >= self._drift_every:
            self._last_drift += self._drift_every
            for account in list(self._accounts.values()):
                unit = Decimal(1).scaleb(-account.places)
                step = (account.total * Decimal(self._random.uniform(-0.004, 0.005))).quantize(unit)
                pending = max(Decimal(0), (account.total * Decimal(self._random.uniform(0, 0.01))).quantize(unit))
                total = max(Decimal(0), account.total + step)
                self._accounts[account.id] = replace(
                    account, total=total, pending=pending, available=max(Decimal(0), total - pending)
                )
            self._ordered_cache = None
