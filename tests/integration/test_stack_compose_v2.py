"""The compose file works with compose v2 too (this host has only docker-compose v1).

Debian trixie packages compose v2 (`docker-compose` 2.x): it runs in a container made from
the locally built Debian base, talks to this host's dockerd through its socket, and brings
up a stack that hostkit prepared (files, certs, .env) in a directory mounted at the same
path, so the bind mounts resolve on the host.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from stack_support import Deployment, HubUser, hostkit, new_deployment

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _compose_v2(dep: Deployment, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    directory = str(dep.directory)
    script = (
        "set -e; apt-get update -qq >/dev/null; "
        "apt-get install -y -qq --no-install-recommends docker-compose >/dev/null; "
        f"docker-compose version; cd {directory}; docker-compose {' '.join(args)}"
    )
    return subprocess.run(
        [
            "docker", "run", "--rm",
            "-v", "/var/run/docker.sock:/var/run/docker.sock",
            "-v", f"{directory}:{directory}",
            "hostkit/debian:trixie", "bash", "-c", script,
        ],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    dep = new_deployment(tmp_path_factory.mktemp("v2"))
    dep.admin_password = ""  # let hostkit generate it: it is shown once
    proc = dep.up()  # builds (or finds) the images, writes the files, proves v1
    prefix = "admin password (shown once, not stored): "
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith(prefix)]
    dep.admin_password = line[len(prefix) :]
    assert dep.admin_password not in (dep.directory / ".env").read_text()
    hostkit("stack", "down", "--deploy-dir", str(dep.directory))
    try:
        yield dep
    finally:
        _compose_v2(dep, "down", "--remove-orphans")
        subprocess.run(["docker", "volume", "rm", "-f", f"{dep.prefix}-hub-data"], check=False)


def test_compose_v2_brings_the_stack_up_and_the_generated_admin_password_works(
    prepared: Deployment,
) -> None:
    proc = _compose_v2(prepared, "up", "-d", "--wait", "--wait-timeout", "300")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Docker Compose version v2" in proc.stdout or "version 2." in proc.stdout
    deadline = time.monotonic() + 60
    while True:
        try:
            r = requests.get(f"{prepared.url}/hub/api", verify=False, timeout=10)  # noqa: S501 - self-signed
            break
        except requests.ConnectionError:
            assert time.monotonic() < deadline
            time.sleep(2)
    assert r.status_code == 200
    assert "version" in r.json()
    assert HubUser(prepared, "admin", prepared.admin_password).login()
    # hostkit's own status reads the stack v2 started (same project, same labels)
    status = hostkit("stack", "status", "--deploy-dir", str(prepared.directory), check=False)
    assert status.returncode == 0, status.stdout + status.stderr
    assert Path(prepared.directory, ".env").stat().st_mode & 0o777 == 0o600
