"""Renewals never stall a poll: with short tokens the current one serves until a fresh step comes.

Time is the fake clock: it moves one second per poll, and by whatever the client waits for
a fresh one-time code (its `sleep`), which is what these tests watch. The freshness figure
itself comes from bench/freshness.py.
"""

from __future__ import annotations

import pytest
from conftest import FAST_RETRY, account, connection_for

from exporter.api.client import IbaneraClient
from exporter.api.memory import LoginMemory
from exporter.config import Config
from exporter.simulator import Simulator

POLLS = 150


@pytest.fixture
def client_of(clock):
    """client_of(simulator) -> an IbaneraClient on the fake clock whose waits land in clock.waits.

    First contact: no step was used before, so the first login is sent at once, at the phase
    the test chose (a client without remembered state would wait for the next step first).
    """
    clients = []
    clock.waits = []
    advance = clock.advance

    def sleep(seconds: float) -> None:
        clock.waits.append(seconds)
        advance(seconds)

    def make(sim: Simulator) -> IbaneraClient:
        connection = connection_for(sim)
        client = IbaneraClient(
            connection,
            Config((connection,), retry=FAST_RETRY),
            memory=LoginMemory.first_contact(),
            clock=clock,
            sleep=sleep,
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def _at_phase(clock, phase: float) -> None:
    """Move the clock to `phase` seconds into a 30 s TOTP step, so that tokens and steps line up as chosen."""
    clock.now = (clock.now // 30 + 1) * 30 + phase


@pytest.mark.parametrize("phase", [0.5, 10, 25])
def test_40_second_tokens_are_renewed_without_a_poll_ever_waiting(client_of, clock, phase):
    _at_phase(clock, phase)
    with Simulator([account(1)], clock=clock, token_lifetime=40) as sim:
        client = client_of(sim)
        for _ in range(POLLS):
            client.fetch_balances()  # raises if the poll fails
            clock.advance(1)
        assert clock.waits == []  # not one wait for a fresh code, so not one stalled poll
        assert sim.logins_failed == 0
        assert sim.logins_succeeded <= POLLS // 30 + 2  # a login per 30 s step at most: no extra logins
        assert ("accounts_balances", "401") not in client.counters.snapshot().requests


def test_codes_accepted_only_once_make_polls_slower_and_never_refuse_a_login(client_of, clock):
    _at_phase(clock, 10)
    with Simulator([account(1)], clock=clock, token_lifetime=40, reject_reused_otp=True) as sim:
        client = client_of(sim)
        for _ in range(12):
            client.fetch_balances()
            clock.advance(1)
        assert sim.otp_rejections > 0  # the server did refuse reused codes: the test tests something
        assert clock.waits  # and polls waited for fresh codes: slower, as they must be
        assert sim.logins_failed == 0 and not sim.locked


def test_a_due_renewal_waits_for_a_fresh_step_while_the_token_serves(client_of, clock):
    # One-hour tokens: renewal is due in the last minute. Logged in at 2 s into a step, so the
    # token ends 2 s into one too, and 61 s before the end is 1 s into a step.
    _at_phase(clock, 2)
    with Simulator([account(1)], clock=clock) as sim:
        client = client_of(sim)
        client.fetch_balances()
        clock.advance(3600 - 61)
        client.fetch_balances()  # 61 s left: not due; this poll uses the step
        clock.advance(2)
        client.fetch_balances()  # 59 s left: due, but this step is used: the token serves, nobody waits
        assert sim.logins_succeeded == 1
        clock.advance(27)
        client.fetch_balances()  # a new step: the renewal takes it
        assert sim.logins_succeeded == 2
        clock.advance(1)
        client.fetch_balances()  # and the new token serves
        assert sim.logins_succeeded == 2
        assert clock.waits == []
