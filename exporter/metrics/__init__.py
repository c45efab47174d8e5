"""Snapshots and health -> the /metrics body.

balances: the balance families, rendered once per set of snapshots; health: the families
built at every scrape; exposition: the cache, the body and its encodings.
"""

from .exposition import Exposition
from .health import HealthCollector

__all__ = ["Exposition", "HealthCollector"]
