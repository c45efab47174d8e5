# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test bench soak venv clean rules

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

venv: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'

demo: venv
	$(BIN)/ibanera-exporter --demo

test: venv
	$(BIN)/pytest

bench: venv  # about 12 minutes; figures in README "Performance"
	$(BIN)/python bench/perf.py --json bench/results/perf.json

soak: venv  # 10 minutes; figures in README "Reliability"
	$(BIN)/python bench/soak.py --seconds 600 --fault-rate 0.2 --json bench/results/soak.json

rules: venv  # dashboards/alerts.yaml, rules.yaml and the PrometheusRule, from exporter/rules.py
	$(BIN)/python -m exporter.rules --output-dir dashboards
	$(BIN)/python deploy/kubernetes/generate_prometheusrule.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
