"""Prometheus exporter for the balances of Ibanera asset accounts."""

__version__ = "0.1.0"
