"""The rule files are generated from exporter/rules/, for any scrape job's selector."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT
from test_dashboards import tool

from exporter import rules

SELECTOR = 'job="treasury-bank", env="prod"'


def test_the_shipped_rule_files_are_the_generated_ones():
    for name, text in rules.files().items():
        assert (ROOT / "dashboards" / name).read_text() == text, f"run: make rules ({name} is behind exporter/rules/)"


def generate(tmp_path, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "exporter.rules", "--output-dir", str(tmp_path), *args], check=True, cwd=ROOT, timeout=60
    )


def test_every_series_the_rules_read_is_filtered_by_the_selector(tmp_path):
    generate(tmp_path, "--selector", SELECTOR)
    exprs = [
        r["expr"]
        for name in ("alerts.yaml", "rules.yaml")
        for g in yaml.safe_load((tmp_path / name).read_text())["groups"]
        for r in g["rules"]
    ]
    for expr in exprs:
        # Raw metric names (recording rules' names have colons and are not read by these rules).
        for match in re.finditer(r"(?<![\w:])(ibanera_[a-z_]+|up)(?![\w:(])", expr):
            assert expr[match.end() :].startswith("{" + SELECTOR), (match.group(0), expr)
    result = subprocess.run(
        [tool("promtool"), "check", "rules", str(tmp_path / "alerts.yaml"), str(tmp_path / "rules.yaml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_for_another_job_fire_for_that_job_only(tmp_path):
    generate(tmp_path, "--selector", SELECTOR, "--dashboard-url", "https://grafana.internal/d/x")
    unit = {
        "rule_files": ["alerts.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": 'up{job="treasury-bank", env="prod", instance="a:10095"}', "values": "0x10"},
                    {"series": 'up{job="treasury-bank", env="staging", instance="b:10095"}', "values": "0x10"},
                    {"series": 'up{job="ibanera", instance="c:10095"}', "values": "0x10"},
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "7m",
                        "alertname": "IbaneraExporterDown",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "critical",
                                    "job": "treasury-bank",
                                    "env": "prod",
                                    "instance": "a:10095",
                                },
                                "exp_annotations": {
                                    "summary": "Prometheus cannot scrape the Ibanera exporter.",
                                    "description": "a:10095 (job treasury-bank) has not answered a scrape for 5 minutes: "
                                    "no Ibanera balance is being watched.",
                                    "runbook": "Check that the exporter process or pod runs and that its port is reachable from "
                                    "Prometheus; its log says why it stopped.",
                                    "dashboard_url": "https://grafana.internal/d/x",
                                },
                            }
                        ],
                    }
                ],
            }
        ],
    }
    (tmp_path / "unit.yaml").write_text(yaml.safe_dump(unit))
    result = subprocess.run(
        [tool("promtool"), "test", "rules", str(tmp_path / "unit.yaml")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "selector",
    [
        '{job="bank"}',  # braces: every expression would read up{{job="bank"}}
        'job="a"\ngroups: []',  # a new line: YAML of its own after the header comment
        "job=bank",
        "",
        'job="a"} or vector(1)',
        'job="{{ .Value }}"',  # template syntax in IbaneraExporterAbsent's description
    ],
)
def test_a_selector_that_is_not_label_matchers_writes_nothing(tmp_path, selector):
    result = subprocess.run(
        [sys.executable, "-m", "exporter.rules", "--output-dir", str(tmp_path), "--selector", selector],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 2 and "--selector" in result.stderr, result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_selector_with_regex_matchers_and_quotes_makes_valid_rules(tmp_path):
    generate(tmp_path, "--selector", """job=~"bank|treasury", env!="it's \\"staging\\"", instance!~'.*:9\\\\d+'""")
    result = subprocess.run(
        [tool("promtool"), "check", "rules", str(tmp_path / "alerts.yaml"), str(tmp_path / "rules.yaml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
