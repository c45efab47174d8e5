"""The container image: built with podman (`make image`) and run the way the Kubernetes Deployment runs it.

Needs podman, runc and debootstrap (Debian packages; .ci/run installs them). Without them these
tests skip with a plain message on a developer's machine, and fail in CI.
"""

from __future__ import annotations

import errno
import json
import re
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest
import yaml
from conftest import ROOT, required_tool
from entries import mounted_secrets

# A tag per checkout: clones side by side on one machine share podman's store, and must not
# run each other's image.
IMAGE = f"localhost/ibanera-exporter:test-{re.sub(r'[^a-z0-9_.-]', '-', ROOT.name.lower())}"
DEPLOYMENT = ROOT / "deploy" / "kubernetes" / "deployment.yaml"
# This machine kind refuses podman's default rlimits for a container ("error setting rlimits
# for ready process: operation not permitted"); these lower ones are accepted.
HOST_LIMITS = ["--ulimit=nofile=4096:4096", "--ulimit=nproc=4096:4096"]


def podman(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [required_tool("podman", "podman"), "--runtime", "runc", *args], capture_output=True, text=True, timeout=timeout
    )
    if check:
        assert result.returncode == 0, f"podman {' '.join(args)}: {result.stderr}"
    return result


@pytest.fixture(scope="module")
def image() -> str:
    for tool, package in (("podman", "podman"), ("runc", "runc"), ("debootstrap", "debootstrap")):
        required_tool(tool, package)
    build = subprocess.run(
        ["make", "--no-print-directory", "image", f"IMAGE={IMAGE}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return IMAGE


def deployment_flags() -> list[str]:
    """The Deployment's securityContext, as podman run flags: the test runs what Kubernetes would."""
    pod = yaml.safe_load(DEPLOYMENT.read_text())["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    security = container["securityContext"]
    flags = [f"--user={pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"]
    if security["readOnlyRootFilesystem"]:
        # Kubernetes gives no writable /tmp either: no tmpfs mounts.
        flags += ["--read-only", "--read-only-tmpfs=false"]
    flags += [f"--cap-drop={capability}" for capability in security["capabilities"]["drop"]]
    if not security["allowPrivilegeEscalation"]:
        flags.append("--security-opt=no-new-privileges")
    return flags


class Container:
    """`podman run -d` of the image with --demo on a loopback port; always removed."""

    def __init__(self, image: str) -> None:
        # --health-interval=disable: podman's timer needs systemd; the tests run the check themselves.
        self.id = podman(
            "run",
            "--detach",
            *deployment_flags(),
            *HOST_LIMITS,
            "--health-interval=disable",
            "--publish=127.0.0.1::10095",
            image,
            "--demo",
        ).stdout.strip()
        try:
            host_port = podman("port", self.id, "10095/tcp").stdout.strip()
            self.url = f"http://{host_port}"
        except BaseException:
            self.remove()
            raise

    def exec(self, *command: str) -> subprocess.CompletedProcess[str]:
        return podman("exec", self.id, *command, check=False)

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/-/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass  # not listening yet
            time.sleep(0.2)
        raise AssertionError(f"the container was not ready within {timeout}s: {self.logs()}")

    def logs(self) -> str:
        result = podman("logs", self.id, check=False)
        return result.stdout + result.stderr

    def remove(self) -> None:
        podman("rm", "--force", "--time=0", self.id, check=False)


@pytest.fixture(scope="module")
def container(image: str) -> Iterator[Container]:
    running = Container(image)
    try:
        running.wait_ready()
        yield running
    finally:
        running.remove()


def test_it_serves_metrics_and_becomes_ready(container):
    assert httpx.get(container.url + "/-/ready").text.strip() == "Ready."
    body = httpx.get(container.url + "/metrics").text
    assert body.count("\nibanera_available_balance{") == 7  # the demo's seven accounts
    assert 'ibanera_account_info{asset_account_id="1001",connection="demo",name="Payroll USD"} 1.0' in body


def test_the_images_healthcheck_passes(image, container):
    healthcheck = json.loads(podman("image", "inspect", "--format", "{{json .Config.Healthcheck}}", image).stdout)
    assert healthcheck["Test"][:2] == ["CMD", "python"] and "/-/healthy" in healthcheck["Test"][-1]
    result = podman("healthcheck", "run", container.id, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_process_runs_as_the_deployment_says(container):
    status = dict(line.split(":\t", 1) for line in container.exec("cat", "/proc/1/status").stdout.splitlines())
    assert status["Name"] == "ibanera-exporte"  # the exporter itself is PID 1 (the kernel keeps 15 characters)
    assert status["Uid"].split() == ["10001"] * 4 and status["Gid"].split() == ["10001"] * 4
    assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0 and int(status["CapBnd"], 16) == 0
    assert status["NoNewPrivs"].strip() == "1"
    # Its root file system, as the kernel sees it from the exporter's own mount namespace.
    (root,) = [
        line.split()
        for line in container.exec("cat", "/proc/1/mountinfo").stdout.splitlines()
        if line.split()[4] == "/"
    ]
    assert "ro" in root[5].split(","), root


@pytest.mark.parametrize("path", ["/probe", "/tmp/probe", "/var/tmp/probe"])
def test_nothing_in_the_container_can_write_to_its_file_system(container, path):
    # EROFS, not EACCES: the root file system is read-only, not merely owned by someone else
    # (/tmp and /var/tmp are writable by anyone on a writable file system).
    probe = (
        f"import os\ntry:\n    open({path!r}, 'a')\nexcept OSError as e:\n    print(e.errno)\nelse:\n    print('wrote')"
    )
    result = container.exec("python", "-c", probe)
    assert result.stdout.strip() == str(errno.EROFS), result.stdout + result.stderr


def test_the_storage_volume_is_the_one_place_it_can_write(image, container):
    declared = json.loads(podman("image", "inspect", "--format", "{{json .Config.Volumes}}", image).stdout)
    assert list(declared) == ["/var/lib/ibanera-exporter"]
    pod = yaml.safe_load(DEPLOYMENT.read_text())["spec"]["template"]["spec"]
    (container_spec,) = pod["containers"]
    mounts = {m["mountPath"]: m["name"] for m in container_spec["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/var/lib/ibanera-exporter"]]  # survives container restarts
    assert "--storage.path=/var/lib/ibanera-exporter" in container_spec["args"]
    probe = "open('/var/lib/ibanera-exporter/probe', 'w').write('x'); print('wrote')"
    result = container.exec("python", "-c", probe)
    assert result.stdout.strip() == "wrote", result.stdout + result.stderr


def test_the_shipped_config_checks_with_secrets_mounted(image, tmp_path):
    secrets = mounted_secrets(tmp_path / "secrets")
    result = podman(
        "run",
        "--rm",
        *deployment_flags(),
        *HOST_LIMITS,
        "--health-interval=disable",
        f"--volume={secrets}:/run/secrets:ro",
        image,
        "--config.file=/etc/ibanera-exporter/config.yaml",
        "--config.check",
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "connection default: https://public-api.ibanera.com" in result.stdout


def test_it_stops_cleanly(image):
    running = Container(image)
    try:
        running.wait_ready()
        podman("stop", "--time=10", running.id, timeout=30)  # SIGTERM; SIGKILL only after 10 s
        state = json.loads(podman("inspect", "--format", "{{json .State}}", running.id).stdout)
        logs = running.logs()
    finally:
        running.remove()
    assert state["ExitCode"] == 0, logs  # 137 would mean it had to be killed
    assert 'msg="shutting down" signal=SIGTERM' in logs and "msg=stopped" in logs, logs
