"""The whole bootstrap in a box, stack included: the hub answers over HTTPS from outside.

Needs the stack's images on this machine (`hostkit stack build` makes them); they are
loaded into the box's own dockerd, since there is no registry to pull from.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from boxlib import Box, build_image

pytestmark = [pytest.mark.integration, pytest.mark.slow]

def _stack_images() -> dict[str, str]:
    """The tags `hostkit stack build` gives the images, from the pinned versions."""
    from hostkit.images import parse_versions, stack_assets_dir

    v = parse_versions((stack_assets_dir() / "versions.env").read_text())
    return {
        "HOSTKIT_HUB_IMAGE": f"hostkit/jupyterhub:{v['JUPYTERHUB_VERSION']}",
        "HOSTKIT_NGINX_IMAGE": f"hostkit/nginx:{v['DEBIAN_SUITE']}",
        "HOSTKIT_NOTEBOOK_IMAGE": "hostkit/singleuser:full",
    }


IMAGES = _stack_images()


def _have(image: str) -> bool:
    return (
        subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=False).returncode
        == 0
    )


@pytest.fixture(scope="module")
def box() -> Iterator[Box]:
    if os.geteuid() != 0:
        pytest.skip("needs root and a local dockerd")
    if not all(_have(i) for i in IMAGES.values()):
        # the product's own registry-less build; later stack tests reuse its cached images
        subprocess.run([sys.executable, "-m", "hostkit", "stack", "build"], check=True,
                       cwd=Path(__file__).resolve().parents[2], timeout=3600)
    missing = [i for i in IMAGES.values() if not _have(i)]
    assert not missing, f"`hostkit stack build` did not make {missing}"
    build_image()
    b = Box(f"hostkit-stack-{os.getpid()}")
    b.start()
    try:
        b.install_hostkit()
        b.seed_docker_content()
        for image in IMAGES.values():
            b.load_image(image)
        yield b
    finally:
        if not os.environ.get("HOSTKIT_KEEP_BOX"):
            b.remove()


def test_bootstrap_deploys_the_stack_and_the_hub_answers_over_https(box: Box) -> None:
    sets = " ".join(f"--stack-arg=--set={k}={v}" for k, v in IMAGES.items())
    start = time.monotonic()
    res = box.sh(
        f"hostkit bootstrap --data-root /srv/docker --yes --dns {box.resolver()} "
        f"--probe-image hostkit-tiny:1 --stack-arg=--no-build {sets}",
        check=False,
        timeout=1800,
    )
    elapsed = time.monotonic() - start
    print(f"\nbootstrap with stack: {elapsed:.0f}s\n{res.stdout[-3000:]}\n{res.stderr[-2000:]}")
    assert "certs, .env and the stack (hostkit stack up)" in res.stdout
    assert "hostkit doctor" in res.stdout
    assert box.docker_root() == "/srv/docker"
    # the box's address on this host's network: `hostname -I` inside it lists its own inner
    # bridges first, which from out here may be this host's own gateways
    ip = subprocess.run(
        ["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", box.name],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the stack's certificate is self-signed on purpose
    with urllib.request.urlopen(f"https://{ip}:9090/hub/api", context=ctx, timeout=30) as resp:
        assert resp.status == 200
        assert b'"version"' in resp.read()
    assert res.returncode == 0, res.stdout[-3000:]
    assert "stack changed" in res.stdout
    assert "doctor ok" in res.stdout

    # a later plain `hostkit doctor` judges the host by what bootstrap recorded
    doctor = box.sh("hostkit doctor --format json", check=False)
    statuses = {c["id"]: c["status"] for c in json.loads(doctor.stdout)["checks"]}
    assert statuses["daemon.dns"] == "pass"
    assert statuses["daemon.data-root"] == "pass"
    assert statuses["firewall.public-port"] == "pass"
    assert statuses["storage.volume-sources"] == "pass"
    assert statuses["stack.https"] == "pass"

    # converged: the host steps change nothing and Docker is not restarted
    before = box.sh("systemctl show -p ExecMainStartTimestamp docker.service").stdout
    again = box.sh(
        f"hostkit bootstrap --data-root /srv/docker --yes --dns {box.resolver()} "
        f"--probe-image hostkit-tiny:1 --stack-arg=--no-build {sets}",
        check=False,
        timeout=1800,
    )
    assert again.returncode == 0, again.stdout[-3000:]
    assert "changed=0" in again.stdout
    assert box.sh("systemctl show -p ExecMainStartTimestamp docker.service").stdout == before
