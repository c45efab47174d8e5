"""An embedded stand-in for the Ibanera Customer API, for `--demo` and the tests.

It is the other side of the wire, written from the API documentation and sharing no
code with the client. What it speaks: POST /api/v1/public/auth/login,
GET /api/v1/customer/accounts/balances and GET /api/v1/customer/cards/balances
(paginated), Bearer tokens that expire, an `otp` header checked on every private
request, the common response envelope, and locking after repeated failed logins.
Tests steer it through its methods: change accounts, revoke tokens, queue faults.

Its rooms: state (accounts, cards, demo data, drift, page slicing), auth (logins,
tokens, one-time codes with pyotp, the lock), faults (queued faults and chaos),
listings (the two paginated endpoints), dialect (the docs' spellings), http (JSON bytes, envelopes, the server), and
facade (Simulator). Only `--demo` and the tests import this package: the daemon never
loads it, nor pyotp.
"""

from .dialect import SimDialect
from .facade import BALANCES_PATH, CARDS_PATH, LOGIN_PATH, Simulator
from .faults import CHAOS_FAULTS, Fault
from .state import DROP, RawJson, SimAccount, SimCard, demo_accounts, demo_cards

__all__ = [
    "BALANCES_PATH",
    "CARDS_PATH",
    "CHAOS_FAULTS",
    "DROP",
    "LOGIN_PATH",
    "Fault",
    "RawJson",
    "SimAccount",
    "SimCard",
    "SimDialect",
    "Simulator",
    "demo_accounts",
    "demo_cards",
]
