# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test lint bench soak venv clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

venv: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'

demo: venv
	$(BIN)/ibanera-exporter --demo

lint: venv  # ruff (rules in pyproject.toml) and mypy --strict on exporter/
	$(BIN)/ruff check exporter tests bench deploy
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

bench: venv  # about 12 minutes; figures in README "Performance"
	$(BIN)/python bench/perf.py --json bench/results/perf.json

soak: venv  # 10 minutes; figures in README "Reliability"
	$(BIN)/python bench/soak.py --seconds 600 --fault-rate 0.2 --json bench/results/soak.json

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
