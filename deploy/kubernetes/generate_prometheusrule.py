"""Write prometheusrule.yaml from dashboards/alerts.yaml and dashboards/rules.yaml.

    python deploy/kubernetes/generate_prometheusrule.py

The rule files are the source; the test suite fails when this file falls behind them.
"""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
TARGET = Path(__file__).with_name("prometheusrule.yaml")


def prometheus_rule() -> dict:
    groups = [g for name in ("alerts.yaml", "rules.yaml")
              for g in yaml.safe_load((ROOT / "dashboards" / name).read_text())["groups"]]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "ibanera-exporter", "labels": {"app.kubernetes.io/name": "ibanera-exporter"}},
        "spec": {"groups": groups},
    }


if __name__ == "__main__":
    header = "# Generated from dashboards/alerts.yaml and dashboards/rules.yaml by generate_prometheusrule.py: edit those.\n"
    TARGET.write_text(header + yaml.safe_dump(prometheus_rule(), sort_keys=False, width=120))
