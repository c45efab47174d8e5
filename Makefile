# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

# The image, built and run without a Docker engine: podman with runc (crun fails on this
# machine kind's cgroups) on a local Debian base (.ci/base-image), unless PYTHON_IMAGE names one.
IMAGE      ?= localhost/ibanera-exporter:dev
BASE_IMAGE ?= localhost/ibanera-base:bookworm
PODMAN     ?= podman --runtime runc
# pip in the build trusts the host's CA bundle too, for networks that intercept TLS.
CA_BUNDLE  ?= /etc/ssl/certs/ca-certificates.crt

.PHONY: demo test lint bench bench-alerts soak venv clean rules image image-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

venv: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'

demo: venv
	$(BIN)/ibanera-exporter --demo

lint: venv  # ruff (rules and format in pyproject.toml) and mypy --strict on exporter/
	$(BIN)/ruff check exporter tests bench deploy
	$(BIN)/ruff format --check exporter tests bench deploy
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

bench: venv  # about 12 minutes; figures in README "Performance"
	$(BIN)/python bench/perf.py --json bench/results/perf.json

bench-alerts: venv  # about a minute; figures in README "Dashboards and alerts"
	$(BIN)/python bench/alert_delivery.py --rounds 5 --json bench/results/alert_delivery.json

soak: venv  # 10 minutes; figures in README "Reliability"
	$(BIN)/python bench/soak.py --seconds 600 --fault-rate 0.2 --json bench/results/soak.json

rules: venv  # dashboards/alerts.yaml, rules.yaml and the PrometheusRule, from exporter/rules/
	$(BIN)/python -m exporter.rules --output-dir dashboards
	$(BIN)/python deploy/kubernetes/generate_prometheusrule.py

image:  # --format docker: the OCI format has no HEALTHCHECK
	$(if $(PYTHON_IMAGE),,.ci/base-image $(BASE_IMAGE))
	$(PODMAN) build --format docker --build-arg PYTHON_IMAGE=$(or $(PYTHON_IMAGE),$(BASE_IMAGE)) \
	  $(if $(wildcard $(CA_BUNDLE)),--volume $(CA_BUNDLE):/etc/ssl/certs/ca-certificates.crt:ro) \
	  --tag $(IMAGE) .

image-test: venv  # builds the image (make image, tagged per checkout) and runs it as the Kubernetes Deployment does
	$(BIN)/pytest -q tests/test_image.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
