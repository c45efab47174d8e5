"""--connection.check: one login per connection, every page read once, a table for a person.

It goes through the same IbaneraClient, Session and login memory (--storage.path) as the
daemon, so every guard of the logins applies (a recorded pause included, and its login's
step and any refusal are recorded for the daemon that follows), and it asks the session for exactly
one login request: never retried, never renewed, and a token that is refused or runs out
ends the check rather than leading to a second login. What it prints names config keys,
hosts and counts, never a secret.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .api.client import IbaneraClient
from .api.errors import ApiError, LoginRefused
from .api.hints import clock_words, failure_hint
from .api.memory import LoginMemory
from .api.pages import Listed
from .config import Config, ConnectionConfig, format_duration
from .model import AccountBalance

# Long lists are cut: the table is for a person reading a terminal.
_LISTED = 12


@dataclass(frozen=True)
class CheckResult:
    connection: str
    rows: tuple[tuple[str, str], ...]  # (what, value): what was learnt, even when the check failed
    cause: str | None = None  # None: the connection works
    hint: str | None = None

    @property
    def ok(self) -> bool:
        return self.cause is None

    def table(self) -> str:
        rows = [*self.rows]
        if self.cause is not None:
            rows.append(("cause", self.cause))
        if self.hint:
            rows.append(("hint", self.hint))
        width = max((len(what) for what, _ in rows), default=0)
        lines = [f"connection {self.connection}: {'OK' if self.ok else 'FAILED'}"]
        lines.extend(f"  {what.ljust(width)}  {value}" for what, value in rows)
        return "\n".join(lines)


def check_connection(connection: ConnectionConfig, config: Config, memory: LoginMemory) -> CheckResult:
    rows: list[tuple[str, str]] = []
    client = None
    try:
        client = IbaneraClient(connection, config, memory=memory, one_login=True)
        accounts = client.fetch_balances()
        rows.extend(_accounts_rows(accounts, connection))
        if connection.cards:
            cards = client.fetch_cards()
            rows.append(("cards", f"{len(cards.rows)} in {cards.pages} page{'s' if cards.pages != 1 else ''}"))
            rows.append(("card dialect", cards.dialect.describe()))
        else:
            rows.append(("cards", "not read (cards: false)"))
    except LoginRefused as exc:
        return CheckResult(
            connection.name, (*rows, *_session_rows(client)), f"login refused ({exc.message_code})", exc.hint
        )
    except ApiError as exc:
        return CheckResult(connection.name, (*rows, *_session_rows(client)), str(exc), failure_hint(exc, connection))
    except OSError as exc:  # ca_file that is not a CA bundle, and the like: about the host's files
        return CheckResult(connection.name, tuple(rows), f"{type(exc).__name__}: {exc}", "check ca_file")
    except Exception as exc:  # a bug: say which, never a traceback (its text might hold anything)
        return CheckResult(connection.name, tuple(rows), f"internal error: {type(exc).__name__}", "please report it")
    finally:
        if client is not None:
            client.close()
    return CheckResult(connection.name, (*rows, *_session_rows(client)))


def _accounts_rows(accounts: Listed[AccountBalance], connection: ConnectionConfig) -> list[tuple[str, str]]:
    suppressed = [str(a.asset_account_id) for a in accounts.rows if a.suppressed]
    if connection.page_size == "all":
        page_size = "all: the whole list in one request"
    else:
        served = "did not say" if accounts.served_size is None else f"used {accounts.served_size}"
        page_size = f"asked {connection.page_size}, the server {served}"
    return [
        ("accounts", f"{len(accounts.rows)} in {accounts.pages} page{'s' if accounts.pages != 1 else ''}"),
        ("assets", _cut(sorted({a.asset for a in accounts.rows})) or "none"),
        ("suppressed", f"{len(suppressed)}" + (f" ({_cut(suppressed)})" if suppressed else "")),
        ("page size", page_size),
        ("dialect", accounts.dialect.describe()),
    ]


def _session_rows(client: IbaneraClient | None) -> list[tuple[str, str]]:
    if client is None:
        return []
    lifetime = client.token_lifetime
    return [
        ("clock offset", clock_words(client.clock_offset)),
        ("token lifetime", "no token" if lifetime is None else format_duration(lifetime)),
        ("login attempts", str(client.counters.snapshot().logins)),
    ]


def _cut(items: Sequence[str]) -> str:
    # Names come from the API: control characters are shown escaped, never sent to the terminal.
    shown = ", ".join(item[:64] if item.isprintable() else ascii(item[:64]) for item in items[:_LISTED])
    return shown + (f" and {len(items) - _LISTED} more" if len(items) > _LISTED else "")


def check_all(config: Config, memory: Callable[[ConnectionConfig], LoginMemory]) -> tuple[str, bool]:
    """The tables of every connection, and whether all of them work."""
    results = [check_connection(connection, config, memory(connection)) for connection in config.connections]
    return "\n\n".join(result.table() for result in results), all(result.ok for result in results)


def describe_config(config: Config, source: str) -> str:
    """--config.check: what would be polled, and how, in words; never a secret."""
    lines = [
        f"{source}: configuration is valid",
        f"  poll every {format_duration(config.poll_interval)}, request timeout {format_duration(config.request_timeout)}, "
        f"{config.retry.max_attempts} attempts per request with backoff {format_duration(config.retry.initial_backoff)}"
        f"..{format_duration(config.retry.max_backoff)}, login pause after a refusal {format_duration(config.login_backoff)}",
    ]
    for c in config.connections:
        lines.append(
            f"  connection {c.name}: {c.base_url}, "
            + (
                "all accounts in one request, "
                if c.page_size == "all"
                else f"{c.page_size} accounts per page (at most {c.max_pages} pages), "
            )
            + f"TOTP secret {c.totp_secret_encoding}, username/password/totp_secret set"
            + (f", card balances too{' with holder names' if c.cards_holder_name_label else ''}" if c.cards else "")
        )
        for account_id, account in sorted(c.accounts.items()):
            floor = f"floor {account.low_available_balance}" if account.low_available_balance is not None else ""
            lines.append(
                f"    account {account_id}: " + ", ".join(w for w in (account.name and repr(account.name), floor) if w)
            )
    thresholds = ", ".join(f"{asset} < {amount}" for asset, amount in sorted(config.low_available_balance.items()))
    lines.append(f"  low available balance thresholds: {thresholds or 'none'}")
    if config.low_available_card_balance:
        cards = ", ".join(f"{c} < {amount}" for c, amount in sorted(config.low_available_card_balance.items()))
        lines.append(f"  low available card balance thresholds: {cards}")
    return "\n".join(lines)
