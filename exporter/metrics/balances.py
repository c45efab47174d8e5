"""The balance families: every connection's last good snapshots written as exposition text.

Rendered once per set of snapshots (see exposition.py), so written by hand for speed rather
than through prometheus_client's objects. The text format and OpenMetrics write gauges the
same way, so one rendering serves both. Decimal becomes float here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from prometheus_client.utils import floatToGoString

from ..config import format_duration
from ..model import AccountBalance, CardBalance
from ..poller import ConnectionStatus

Row = TypeVar("Row")

# name, HELP, value of an account.
BALANCE_FAMILIES: tuple[tuple[str, str, Callable[[AccountBalance], float]], ...] = (
    ("ibanera_total_balance", "totalBalance of the asset account, in units of the asset.", lambda a: float(a.total)),
    (
        "ibanera_available_balance",
        "availableBalance (total minus incoming pending amounts) of the asset account, in units of the asset.",
        lambda a: float(a.available),
    ),
    (
        "ibanera_pending_balance",
        "pendingBalance (sum of pending transaction amounts) of the asset account, in units of the asset.",
        lambda a: float(a.pending),
    ),
    (
        "ibanera_account_suppressed",
        "1 if use of the asset account is currently disabled (bSuppressed), else 0.",
        lambda a: 1.0 if a.suppressed else 0.0,
    ),
)


def refreshed_note(poll_interval: float) -> str:
    """Said in the HELP of every series that comes from the poller."""
    return f"Refreshed by a background poller every {format_duration(poll_interval)}."


def _go_float(value: float) -> str:
    """A sample value as Prometheus writes it (prometheus_client's floatToGoString, typed)."""
    text: str = floatToGoString(value)  # type: ignore[no-untyped-call]
    return text


def _label_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


CARD_FAMILIES: tuple[tuple[str, str, Callable[[CardBalance], float]], ...] = (
    ("ibanera_card_total_balance", "totalBalance of the card, in units of its currency.", lambda c: float(c.total)),
    (
        "ibanera_card_available_balance",
        "availableBalance of the card, in units of its currency.",
        lambda c: float(c.available),
    ),
    (
        "ibanera_card_pending_balance",
        "pendingBalance of the card, in units of its currency.",
        lambda c: float(c.pending),
    ),
)


CARD_INFO = ("ibanera_card_info", "Descriptive fields of a card, always 1.")


def render_balances(
    statuses: Sequence[ConnectionStatus], refreshed: str, on_failure: Callable[[str, Exception], None]
) -> bytes:
    """The balance families of every connection's last good snapshots, in exposition format.

    Each connection is rendered on its own: one whose rows cannot be written (whatever a
    snapshot holds) loses its balance series and is reported to `on_failure`, and the
    others, and the health part, are served as usual.
    """
    headers = [(name, help_text) for name, help_text, _ in BALANCE_FAMILIES]
    if any(s.cards is not None for s in statuses):
        headers += [(name, help_text) for name, help_text, _ in CARD_FAMILIES] + [CARD_INFO]
    samples: dict[str, list[bytes]] = {name: [] for name, _ in headers}
    for status in statuses:
        try:
            rendered = _connection_samples(status)
        except Exception as exc:
            on_failure(status.name, exc)
            continue
        for name, chunk in rendered.items():
            samples[name].append(chunk)
    body = bytearray()
    for name, help_text in headers:
        body += f"# HELP {name} {help_text} {refreshed}\n# TYPE {name} gauge\n".encode()
        body += b"".join(samples[name])
    return bytes(body)


def _connection_samples(status: ConnectionStatus) -> dict[str, bytes]:
    """The sample lines of one connection, by family name, encoded (UTF-8, strictly)."""
    connection = _label_value(status.name)
    rendered: dict[str, bytes] = {}
    accounts = status.accounts.snapshot.rows if status.accounts.snapshot else ()
    account_rows = [
        (f'{{asset="{_label_value(a.asset)}",asset_account_id="{a.asset_account_id}",connection="{connection}"}} ', a)
        for a in accounts
    ]
    _gauges(BALANCE_FAMILIES, account_rows, rendered)
    if status.cards is not None:
        cards = status.cards.snapshot.rows if status.cards.snapshot else ()
        card_rows = [
            (f'{{card_id="{c.card_id}",connection="{connection}",currency="{_label_value(c.currency)}"}} ', c)
            for c in cards
        ]
        _gauges(CARD_FAMILIES, card_rows, rendered)
        # The descriptive fields live in an _info series, so that a change of status does not
        # break the balance series; the holder's name only where the config asked for it.
        info = []
        for c in cards:
            holder = "" if c.holder_name is None else f'card_holder_name="{_label_value(c.holder_name)}",'
            info.append(
                f'ibanera_card_info{{card_id="{c.card_id}",{holder}card_last4="{_label_value(c.card_last4)}",'
                f'connection="{connection}",customers_reference="{_label_value(c.customers_reference)}",'
                f'status="{_label_value(c.status)}"}} 1.0\n'
            )
        rendered[CARD_INFO[0]] = "".join(info).encode()
    return rendered


def _gauges(
    families: tuple[tuple[str, str, Callable[[Row], float]], ...],
    rows: list[tuple[str, Row]],
    rendered: dict[str, bytes],
) -> None:
    """One sample per (rendered labels, row) for each gauge family."""
    for name, _, value in families:
        rendered[name] = "".join(f"{name}{labels}{_go_float(value(row))}\n" for labels, row in rows).encode()
