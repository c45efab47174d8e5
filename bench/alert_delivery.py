"""How long from a drained account to the webhook, through a real Prometheus and Alertmanager.

    .venv/bin/python bench/alert_delivery.py --rounds 5 --json bench/results/alert_delivery.json   (make bench-alerts)

The same loopback set-up as tests/test_alertmanager.py (tests/delivery.py): scrapes and rule
evaluations every second, every `for` cut to 1s, Alertmanager's group_wait and group_interval
1s. So the figures are the latency of the path itself; in production add the rule's `for`
(5m for IbaneraBalanceLow), up to one scrape and one evaluation interval, and group_wait.
Each round drains the account, waits for the firing notification, refills it and waits for
the resolved one. The last payload received is printed, to show what a receiver gets.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from delivery import PAYROLL, Delivery, set_available


def _seconds_to(delivery: Delivery, amount: str, status: str) -> float:
    """Set the balance; seconds until a new notification has the alert in `status`."""
    since = len(delivery.webhook.received())
    started = time.monotonic()
    set_available(delivery.stack, PAYROLL, amount)
    notification = delivery.webhook.wait_for(
        lambda n: bool(n.alerts("IbaneraBalanceLow", status, asset_account_id=str(PAYROLL))),
        f"with IbaneraBalanceLow {status}",
        since=since,
    )
    return notification.received_at - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    binaries = [shutil.which(name) for name in ("prometheus", "prometheus-alertmanager")]
    if not all(binaries):
        sys.exit("needs prometheus and prometheus-alertmanager (Debian packages prometheus, prometheus-alertmanager)")
    with tempfile.TemporaryDirectory() as work:
        delivery = Delivery.start(Path(work), *binaries)
        try:
            firing, resolved = [], []
            for _ in range(args.rounds):
                firing.append(_seconds_to(delivery, "20000", "firing"))
                resolved.append(_seconds_to(delivery, "60000", "resolved"))
            last = delivery.webhook.received()[-1]
        finally:
            delivery.stop()
    figures = {
        "rounds": args.rounds,
        "drain_to_firing_seconds": {"median": statistics.median(firing), "max": max(firing)},
        "refill_to_resolved_seconds": {"median": statistics.median(resolved), "max": max(resolved)},
        "last_payload": {"receiver": last.receiver, **last.payload},
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
