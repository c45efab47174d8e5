"""How fresh the data stays when tokens are short: item 4 of issue 13, measured over a fake clock.

The exporter polls every second (start to start) against the simulator, over loopback
HTTP, with tokens that expire after --token-lifetime seconds. Time is a fake clock: it
moves by one second between poll starts and by whatever the client waits for (a fresh
one-time code), never by the HTTP round trips, so the figure is about waiting, not about
this machine's speed. Every second of the run is a sample; a sample is fresh when the last
good poll ended at most --fresh seconds before it. The run is repeated at several phases
of the token against the 30 s TOTP steps, which is where the variation comes from.

    .venv/bin/python bench/freshness.py                       # 40 s tokens, codes reusable
    .venv/bin/python bench/freshness.py --reject-reused-otp   # codes accepted only once
"""

from __future__ import annotations

import argparse
import bisect
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporter.api.client import IbaneraClient
from exporter.api.errors import ApiError
from exporter.api.memory import LoginMemory
from exporter.config import Config, ConnectionConfig, RetryPolicy, Secret
from exporter.simulator import SimAccount, Simulator


class FakeClock:
    def __init__(self, start: float) -> None:
        self.now = start
        self.waited = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.waited += seconds


def run(token_lifetime: int, seconds: int, phase: float, fresh: float, reject_reused_otp: bool) -> dict[str, float]:
    # Start `phase` seconds into a 30 s step, so that tokens and steps line up differently.
    clock = FakeClock((time.time() // 30 + 1) * 30 + phase)
    accounts = [SimAccount(1, "USD", Decimal("1.00"), Decimal("1.00"), Decimal("0"))]
    with Simulator(accounts, clock=clock, token_lifetime=token_lifetime, reject_reused_otp=reject_reused_otp) as sim:
        connection = ConnectionConfig(
            name="fresh",
            base_url=sim.url,
            username=Secret(sim.username),
            password=Secret(sim.password),
            totp_secret=Secret(sim.totp_secret_base32),
        )
        config = Config((connection,), retry=RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.05))
        # First contact: the first login goes out at once, at the phase chosen.
        client = IbaneraClient(connection, config, memory=LoginMemory.first_contact(), clock=clock, sleep=clock.sleep)
        start, good, polls, failed = clock.now, [], 0, 0
        next_start = start
        while clock.now < start + seconds:
            clock.now = max(clock.now, next_start)
            polls += 1
            try:
                client.fetch_balances()
                good.append(clock.now)
            except ApiError:
                failed += 1
            # As the poller does: start to start, and no burst to catch up after a slow poll.
            next_start = max(next_start + 1.0, clock.now)
        client.close()
        samples = range(int(start) + 1, int(start + seconds))
        # Fresh: the last good poll that ended by t ended at most `fresh` seconds before it.
        fresh_samples = sum(1 for t in samples if (i := bisect.bisect_right(good, t)) and t - good[i - 1] <= fresh)
        return {
            "phase": phase,
            "fresh_percent": 100.0 * fresh_samples / len(samples),
            "polls": polls,
            "failed_polls": failed,
            "logins": sim.logins_succeeded,
            "refused_logins": sim.logins_failed,
            "waited_seconds": clock.waited,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--token-lifetime", type=int, default=40)
    parser.add_argument("--seconds", type=int, default=600)
    parser.add_argument("--fresh", type=float, default=3.0, help="a sample is fresh when data is at most this old")
    parser.add_argument("--phases", type=float, nargs="+", default=[0, 5, 10, 15, 20, 25, 29.5])
    parser.add_argument("--reject-reused-otp", action="store_true")
    args = parser.parse_args()
    results = [
        run(args.token_lifetime, args.seconds, phase, args.fresh, args.reject_reused_otp) for phase in args.phases
    ]
    for r in results:
        print(
            f"phase {r['phase']:>4}s: fresh {r['fresh_percent']:5.1f} %  polls {r['polls']:>4}  failed {r['failed_polls']:>3}"
            f"  logins {r['logins']:>3}  refused logins {r['refused_logins']}  waited {r['waited_seconds']:.0f}s"
        )
    percents = [r["fresh_percent"] for r in results]
    print(
        f"fresh (≤ {args.fresh:g} s old at 1 s polls, {args.token_lifetime} s tokens): "
        f"{min(percents):.1f}–{max(percents):.1f} % of one-second samples; "
        f"refused logins: {sum(r['refused_logins'] for r in results)}"
    )


if __name__ == "__main__":
    main()
