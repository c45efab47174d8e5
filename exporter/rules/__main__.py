"""`python -m exporter.rules`: write alerts.yaml and rules.yaml."""

from .output import main

main()
