"""Write prometheusrule.yaml: the rules of exporter/rules/ as a Prometheus Operator PrometheusRule.

    python deploy/kubernetes/generate_prometheusrule.py     (or: make rules)

exporter/rules/ is the source, as for dashboards/alerts.yaml and rules.yaml; the test suite
fails when this file falls behind it.
"""

from pathlib import Path

import yaml

from exporter.rules import alert_groups, recording_groups

TARGET = Path(__file__).with_name("prometheusrule.yaml")


def prometheus_rule() -> dict:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "ibanera-exporter", "labels": {"app.kubernetes.io/name": "ibanera-exporter"}},
        "spec": {"groups": alert_groups() + recording_groups()},
    }


if __name__ == "__main__":
    header = "# Generated from exporter/rules/ by deploy/kubernetes/generate_prometheusrule.py: edit the rules there.\n"
    TARGET.write_text(header + yaml.safe_dump(prometheus_rule(), sort_keys=False, width=120))
