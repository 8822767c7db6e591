"""`hostkit doctor` on a systemd box (its own dockerd 20.10 and firewalld), as on a server."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "box"))

from boxlib import Box, running_box

from hostkit.catalogue import load_catalogue

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def box() -> Iterator[Box]:
    with running_box("hostkit-doctor") as b:
        yield b


def doctor(box: Box, args: str = "") -> dict[str, Any]:
    res = box.sh(f"hostkit doctor --format json {args}", check=False, timeout=300)
    assert res.stderr == "", res.stderr
    data: dict[str, Any] = json.loads(res.stdout)
    return {c["id"]: c for c in data["checks"]}


def start_docker(box: Box) -> None:
    box.sh("systemctl reset-failed docker.service docker.socket; "
           "systemctl start docker.socket docker.service && "
           "for i in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done")


def test_stopped_daemon_is_one_failure_and_its_dependents_skip(box: Box) -> None:
    box.sh("systemctl stop docker.socket docker.service")
    try:
        checks = doctor(box)
    finally:
        start_docker(box)
    daemon = checks["docker.daemon"]
    assert daemon["status"] == "fail"
    # systemd leaves the socket file behind when docker.socket stops: nobody listens on it
    assert daemon["summary"] in (
        "the Docker daemon does not answer on /var/run/docker.sock (connection refused)",
        "the Docker daemon does not answer on /var/run/docker.sock (no such file)",
    )
    dependents = [s.id for s in load_catalogue() if "docker.daemon" in s.needs]
    assert len(dependents) >= 11
    for check_id in dependents:
        assert checks[check_id]["status"] == "skip"
        # every unmet need is named: tls.served also needs tls.files (no certificate in the
        # box), the GPU checks gpu.driver (no NVIDIA driver)
        unmet = checks[check_id]["summary"].removeprefix("needs ").split(", ")
        assert "docker.daemon" in unmet, checks[check_id]
        assert set(unmet) <= {"docker.daemon", "tls.files", "gpu.driver"}, checks[check_id]
    assert [c for c in checks.values() if c["status"] == "error"] == []
    assert [i for i, c in checks.items() if "does not answer" in c["summary"]] == ["docker.daemon"]


def test_a_fresh_host_gets_a_busybox_probe_image_and_container_checks_give_a_verdict(box: Box) -> None:
    # the box has busybox-static and no images at all
    checks = doctor(box, "--only dns.container --only net.container-egress")
    for check_id in ("dns.container", "net.container-egress"):
        assert checks[check_id]["status"] in ("pass", "fail"), checks[check_id]
    tags = box.sh("docker images --filter label=org.hostkit.probe=1 --format '{{.Repository}}'").stdout
    assert tags.split() == ["hostkit/probe"]


def test_firewall_checks_ask_firewalld_over_dbus_in_milliseconds(box: Box) -> None:
    checks = doctor(box, "--only firewall")
    assert checks["firewall.running"]["status"] == "pass"
    assert "asked over D-Bus" in checks["firewall.running"]["summary"]
    assert checks["firewall.docker0-zone"]["status"] == "pass"
    # firewall-cmd takes 0.3-2 s a call here; over the bus each check is well under that
    assert max(c["duration_s"] for c in checks.values()) < 0.5, checks
