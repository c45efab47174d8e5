"""A --storage.path that lets a daemon under test (or a bench) log in at once.

Kept out of conftest.py so that the benches can import it without pytest.
"""

from __future__ import annotations

import json
from pathlib import Path


def rested_storage(directory: Path, *connections: str) -> str:
    """A --storage.path whose state says the last codes were sent long ago (step 1, in 1970).

    With it a daemon under test logs in at once instead of waiting for the next 30 s step,
    as a daemon without remembered state must.
    """
    directory.mkdir(parents=True, exist_ok=True)
    for name in connections:
        state = {"last_code_step": 1, "logins_paused_until": None, "refusals_in_a_row": 0}
        (directory / f"{name}.state.json").write_text(json.dumps(state))
    return str(directory)
