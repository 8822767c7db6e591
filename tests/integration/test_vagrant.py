"""The Vagrantfile is valid, and its docker-provider machine provisions with hostkit."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from boxlib import build_image

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "VAGRANT_CHECKPOINT_DISABLE": "1"}


def vagrant(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["vagrant", *args], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_vagrantfile_validates_for_every_machine() -> None:
    proc = vagrant("validate", "--ignore-provider")
    assert proc.returncode == 0, proc.stdout + proc.stderr


# The box's disks (Vagrantfile): named volumes outlive `vagrant destroy`, like a server's
# disks; a second run would find Docker's old root in /srv/docker, which bootstrap rightly
# refuses to overwrite. Each run starts from empty disks and leaves none behind.
BOX_VOLUMES = ("hostkit-vagrant-varlib", "hostkit-vagrant-srv")


def _remove_box_volumes() -> None:
    subprocess.run(["docker", "volume", "rm", "-f", *BOX_VOLUMES], capture_output=True, check=False)


def test_docker_provider_box_comes_up_and_runs_bootstrap_and_doctor() -> None:
    build_image()
    vagrant("destroy", "-f", "box")
    _remove_box_volumes()
    try:
        up = vagrant("up", "box", "--provider=docker")
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-2000:]
        status = vagrant("ssh", "box", "-c", "sudo /opt/hostkit-venv/bin/hostkit doctor --format json "
                         "--only daemon --only docker.daemon >/tmp/d.json; "
                         "python3 -c \"import json; d=json.load(open('/tmp/d.json')); "
                         "print({c['id']: c['status'] for c in d['checks']})\"")
        assert status.returncode == 0, status.stdout + status.stderr
        assert "'docker.daemon': 'pass'" in status.stdout
        assert "'daemon.logging': 'pass'" in status.stdout  # bootstrap wrote daemon.json
    finally:
        vagrant("destroy", "-f", "box")
        _remove_box_volumes()
