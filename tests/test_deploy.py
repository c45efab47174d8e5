"""The container image and the Kubernetes manifests, proven as far as this machine allows.

The image is built and run with podman in tests/test_image.py; here it is linted by hadolint
and its install steps are performed outside a container. The manifests are validated offline
(core kinds with kubernetes-validate, Prometheus Operator kinds against their CRD schemas).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from conftest import ROOT
from entries import mounted_secrets

KUBERNETES = ROOT / "deploy" / "kubernetes"
SCHEMAS = ROOT.parent / "shared" / "schemas"
BIN = Path(sys.executable).parent
CORE_MANIFESTS = ["configmap.yaml", "credentials-template.yaml", "deployment.yaml", "service.yaml"]


def test_hadolint_passes_the_dockerfile():
    result = subprocess.run([str(BIN / "hadolint"), str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


def test_the_image_install_steps_work(tmp_path):
    """The Dockerfile's RUN steps: build the wheel, install it into a fresh venv, run it."""
    wheels, venv = tmp_path / "wheels", tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(wheels), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", *map(str, wheels.glob("*.whl"))],
        check=True,
        capture_output=True,
        timeout=600,
    )
    version = subprocess.run(
        [str(venv / "bin" / "ibanera-exporter"), "--version"], capture_output=True, text=True, check=True
    )
    assert version.stdout.startswith("ibanera-exporter, version")
    # The image's config, with /run/secrets/ pointed at files made here.
    secrets = mounted_secrets(tmp_path / "run-secrets")
    config = tmp_path / "config.yaml"
    config.write_text((ROOT / "deploy" / "config.yaml").read_text().replace("/run/secrets/", f"{secrets}/"))
    check = subprocess.run(
        [str(venv / "bin" / "ibanera-exporter"), "--config.file", str(config), "--config.check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr
    assert "connection default: https://public-api.ibanera.com" in check.stdout


def test_the_dockerfile_runs_as_non_root_with_a_healthcheck_and_the_documented_config():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.count("\nFROM ") + dockerfile.startswith("FROM ") >= 2  # multi-stage
    assert "USER 10001" in dockerfile and "EXPOSE 10095" in dockerfile and "PYTHONUNBUFFERED=1" in dockerfile
    healthcheck = dockerfile.split("\nHEALTHCHECK", 1)[1].split("\nENTRYPOINT", 1)[0]
    assert "python" in healthcheck and "/-/healthy" in healthcheck and "curl" not in healthcheck
    assert "/etc/ibanera-exporter/config.yaml" in dockerfile
    assert (ROOT / ".dockerignore").exists()


@pytest.mark.parametrize("manifest", CORE_MANIFESTS)
def test_core_manifests_validate_strictly(manifest):
    result = subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", "--quiet", str(KUBERNETES / manifest)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _crd_schema(name: str) -> dict:
    path = SCHEMAS / f"monitoring.coreos.com_{name}.yaml"
    if not path.exists():
        message = f"{path} is missing: the Prometheus Operator CRD schemas come from ../shared/schemas"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    crd = yaml.safe_load(path.read_text())
    return next(v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"] if v["name"] == "v1")


@pytest.mark.parametrize(
    "manifest, crd", [("servicemonitor.yaml", "servicemonitors"), ("prometheusrule.yaml", "prometheusrules")]
)
def test_prometheus_operator_manifests_match_their_crds(manifest, crd):
    document = yaml.safe_load((KUBERNETES / manifest).read_text())
    # The documents are validated, not the schema: the CRDs hold Go regular expressions
    # ((?i) mid-pattern) that Python's re refuses, and the metaschema check would trip on them.
    validator = jsonschema.Draft7Validator(_crd_schema(crd))
    validator.validate(document)
    bad = {
        **document,
        "spec": {**document["spec"], "endpoints" if crd == "servicemonitors" else "groups": "not a list"},
    }
    with pytest.raises(jsonschema.ValidationError):  # the validator really checks
        validator.validate(bad)


def test_the_prometheusrule_is_the_rule_files():
    sys.path.insert(0, str(KUBERNETES))
    try:
        from generate_prometheusrule import prometheus_rule
    finally:
        sys.path.pop(0)
    assert yaml.safe_load((KUBERNETES / "prometheusrule.yaml").read_text()) == prometheus_rule(), (
        "run: python deploy/kubernetes/generate_prometheusrule.py"
    )


def test_the_deployment_is_locked_down():
    deployment = yaml.safe_load((KUBERNETES / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert deployment["spec"]["replicas"] == 1
    assert pod["securityContext"]["runAsNonRoot"] is True
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
    assert container["readinessProbe"]["httpGet"]["path"] == "/-/ready"
    assert container["resources"]["limits"]["memory"] and container["resources"]["requests"]["cpu"]
    config = yaml.safe_load(yaml.safe_load((KUBERNETES / "configmap.yaml").read_text())["data"]["config.yaml"])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    for key in ("username_file", "password_file", "totp_secret_file"):
        assert config["connections"][0][key].startswith(mounts["credentials"] + "/")
    secret = yaml.safe_load((KUBERNETES / "credentials-template.yaml").read_text())
    assert all(v.startswith("REPLACE_WITH_") for v in secret["stringData"].values())
