"""The alert and recording rules, written once with the scrape job's selector as a parameter.

    python -m exporter.rules --selector 'job="ibanera"' --output-dir dashboards

writes alerts.yaml and rules.yaml for Prometheus's rule_files. The files shipped in
dashboards/ are this module's output for the default selector (a test keeps them equal), so
edit the rules here. The idea is the monitoring mixins' `selector` setting: every metric the
rules read is filtered by it, so the rules work for any job name and never pick up another
job's series.
"""

from .groups import alert_groups, recording_groups
from .output import files, main, render
from .promql import DEFAULT_DASHBOARD_URL, DEFAULT_SELECTOR, check_selector

__all__ = [
    "DEFAULT_DASHBOARD_URL",
    "DEFAULT_SELECTOR",
    "alert_groups",
    "check_selector",
    "files",
    "main",
    "recording_groups",
    "render",
]
