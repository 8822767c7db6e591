"""A dockerd with live-restore refuses swarm mode (`docker swarm init` fails): `hostkit
cluster init` says so, with the fix, before it changes anything. Real dockerd in a box."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "box"))

from boxlib import Box, running_box

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LIVE_RESTORE_ON = r"""python3 - <<'P'
import json, os
path = '/etc/docker/daemon.json'
config = json.load(open(path)) if os.path.exists(path) else {}
config['live-restore'] = True
os.makedirs('/etc/docker', exist_ok=True)
json.dump(config, open(path, 'w'))
P
systemctl restart docker
"""


@pytest.fixture(scope="module")
def box() -> Iterator[Box]:
    with running_box("hostkit-liverestore") as b:
        b.sh(LIVE_RESTORE_ON, timeout=180)
        yield b


def test_dockerd_itself_refuses_swarm_mode_with_live_restore(box: Box) -> None:
    assert box.sh("docker info -f '{{.LiveRestoreEnabled}}'").stdout.strip() == "true"
    res = box.sh("docker swarm init --advertise-addr 127.0.0.1", check=False)
    assert res.returncode != 0
    assert "live-restore" in res.stderr


def test_cluster_init_names_live_restore_and_the_fix_before_any_change(box: Box) -> None:
    res = box.sh("hostkit cluster init --advertise-addr 127.0.0.1 --dry-run", check=False)
    said = res.stdout + res.stderr
    assert res.returncode != 0, said
    assert "live-restore" in said
    assert "daemon.json" in said
    assert box.sh("docker info -f '{{.Swarm.LocalNodeState}}'").stdout.strip() == "inactive"
