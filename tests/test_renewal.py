"""Renewals never stall a poll: with short tokens the current one serves until a fresh step comes.

Time is the fake clock: it moves one second per poll, and by whatever the client waits for
a fresh one-time code (its `sleep`), which is what these tests watch. The freshness figure
itself comes from bench/freshness.py.
"""

from __future__ import annotations

import pytest
from conftest import account

POLLS = 150


def _at_phase(clock, phase: float) -> None:
    """Move the clock to `phase` seconds into a 30 s TOTP step, so that tokens and steps line up as chosen."""
    clock.now = (clock.now // 30 + 1) * 30 + phase


def _waits(clock) -> list[float]:
    waits: list[float] = []
    advance = clock.sleep

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        advance(seconds)

    clock.sleep = sleep
    return waits


@pytest.mark.parametrize("phase", [0.5, 10, 25])
def test_40_second_tokens_are_renewed_without_a_poll_ever_waiting(make_stack, clock, phase):
    _at_phase(clock, phase)
    waits = _waits(clock)
    stack = make_stack([account(1)], simulator={"token_lifetime": 40})
    for _ in range(POLLS):
        stack.poll()
        assert stack.value("ibanera_up", connection="c0") == 1
        clock.advance(1)
    assert waits == []  # not one wait for a fresh code, so not one stalled poll
    sim = stack.simulator
    assert sim.logins_failed == 0
    assert sim.logins_succeeded <= POLLS // 30 + 2  # a login per 30 s step at most: no extra logins
    assert stack.value("ibanera_api_requests_total", connection="c0", endpoint="accounts_balances", code="401") is None


def test_codes_accepted_only_once_make_polls_slower_and_never_refuse_a_login(make_stack, clock):
    _at_phase(clock, 10)
    stack = make_stack([account(1)], simulator={"token_lifetime": 40, "reject_reused_otp": True})
    for _ in range(12):
        stack.poll()
        assert stack.value("ibanera_up", connection="c0") == 1
        clock.advance(1)
    sim = stack.simulator
    assert sim.otp_rejections > 0  # the server did refuse reused codes: the test tests something
    assert sim.logins_failed == 0 and not sim.locked


def test_a_due_renewal_waits_for_a_fresh_step_while_the_token_serves(make_stack, clock):
    # One-hour tokens: renewal is due in the last minute. Logged in at 2 s into a step, so the
    # token ends 2 s into one too, and 61 s before the end is 1 s into a step.
    _at_phase(clock, 2)
    waits = _waits(clock)
    stack = make_stack([account(1)])
    stack.poll()
    clock.advance(3600 - 61)
    stack.poll()  # 61 s left: not due; this poll uses the step
    clock.advance(2)
    stack.poll()  # 59 s left: due, but this step is used: the token serves, nobody waits
    assert stack.simulator.logins_succeeded == 1
    clock.advance(27)
    stack.poll()  # a new step: the renewal takes it
    assert stack.simulator.logins_succeeded == 2
    clock.advance(1)
    stack.poll()  # and the new token serves
    assert stack.simulator.logins_succeeded == 2
    assert waits == [] and stack.value("ibanera_up", connection="c0") == 1
