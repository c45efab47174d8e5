"""Config file pieces the tests and the benches write: a connection to a simulator, mounted secrets.

Kept out of conftest.py so that the benches can import it without pytest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exporter.simulator import Simulator


def connection_entry(simulator: Simulator, name: str = "c", **extra: Any) -> dict[str, Any]:
    """The keys that point a connection at `simulator` with its credentials, then `extra`."""
    return {
        "name": name,
        "base_url": simulator.url,
        "username": simulator.username,
        "password": simulator.password,
        "totp_secret": simulator.totp_secret_base32,
        **extra,
    }


def mounted_secrets(directory: Path) -> Path:
    """`directory` made to stand for /run/secrets/ as deploy/config.yaml reads it (made-up values)."""
    directory.mkdir()
    for name, value in {
        "ibanera_username": "u",
        "ibanera_password": "p",
        "ibanera_totp_secret": "JBSWY3DPEHPK3PXP",
    }.items():
        (directory / name).write_text(value + "\n")
        (directory / name).chmod(0o644)  # readable by the image's user 10001
    return directory
