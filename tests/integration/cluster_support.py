"""Three systemd boxes as one Docker Swarm: what the cluster test and the cluster bench share.

`running_cluster()` starts a manager and two workers (each with its own dockerd and
firewalld) on one user-defined bridge network, loads the stack's images into the manager and
lets the manager log in to the workers with a key; the swarm itself is formed by hostkit
(`form_cluster`, or the test's own steps), and `stack_up` deploys the stack on it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "box"))

from boxlib import REPO, Box, running_box, sh
from stack_support import HubUser

# The single-user image on the workers: the 1.9 GB notebook base runs the same
# jupyterhub-singleuser, and the 3.6 GB full image only makes the copies slower.
NOTEBOOK_IMAGE = os.environ.get("HOSTKIT_CLUSTER_TEST_IMAGE", "hostkit/notebook-base:bookworm")
PORT = 9090
ADMIN_PASSWORD = "Admin-cluster-" + hashlib.sha256(str(os.getpid()).encode()).hexdigest()[:10]


def versions() -> dict[str, str]:
    from hostkit.images import parse_versions, stack_assets_dir

    return parse_versions((stack_assets_dir() / "versions.env").read_text())


def hub_image_with_this_trees_scripts() -> str:
    """The built hub image with this tree's docker-api proxy and hubctl on top (one COPY
    layer, under a test tag: the shared tag is left as it is)."""
    base = f"hostkit/jupyterhub:{versions()['JUPYTERHUB_VERSION']}"
    scripts = ("hostkit_dockerproxy.py", "hostkit_hubctl.py")
    digest = hashlib.sha256(b"".join((REPO / "stack" / s).read_bytes() for s in scripts)).hexdigest()[:12]
    tag = f"hostkit-test/jupyterhub-cluster:{digest}"
    dockerfile = f"FROM {base}\nCOPY {' '.join(scripts)} /srv/hostkit/\n"
    sh(["flock", "/tmp/hostkit-build.lock", "docker", "build", "-q", "-t", tag, "-f", "-",
        str(REPO / "stack")], input_bytes=dockerfile.encode(), timeout=600)
    return tag


@dataclass
class Cluster:
    manager: Box
    workers: list[Box]
    images: dict[str, str]
    users: dict[str, HubUser] = field(default_factory=dict)

    @property
    def boxes(self) -> list[Box]:
        return [self.manager, *self.workers]

    def hostkit(self, args: str, *, check: bool = True,
                timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        return self.manager.sh(f"hostkit {args}", check=check, timeout=timeout)

    def status(self) -> dict[str, dict[str, object]]:
        nodes = json.loads(self.hostkit("cluster status --format json").stdout)["nodes"]
        return {str(n["hostname"]): n for n in nodes}


def join_command(init_output: str) -> str:
    for line in init_output.splitlines():
        if line.strip().startswith("hostkit cluster join "):
            return line.strip()
    raise AssertionError(f"no join command in:\n{init_output}")


def stack_images(notebook_image: str = NOTEBOOK_IMAGE) -> dict[str, str]:
    return {"HOSTKIT_HUB_IMAGE": hub_image_with_this_trees_scripts(),
            "HOSTKIT_NGINX_IMAGE": f"hostkit/nginx:{versions()['DEBIAN_SUITE']}",
            "HOSTKIT_NOTEBOOK_IMAGE": notebook_image}


def use_this_machines_resolver(box: Box) -> None:
    """On a user-defined network a box resolves through the outer Docker's 127.0.0.11, which
    lives on NAT rules in the box's own namespace; the box's firewalld and dockerd restarts
    wipe them, and then the node itself resolves nothing (a real server has a resolver of
    its own). The box is given this machine's upstream resolver instead."""
    servers = [line.split()[1] for line in Path("/etc/resolv.conf").read_text().splitlines()
               if line.startswith("nameserver") and not line.split()[1].startswith("127.")]
    box.sh(f"printf 'nameserver %s\\n' {' '.join(servers[:3])} > /etc/resolv.conf")


@contextlib.contextmanager
def running_cluster(notebook_image: str = NOTEBOOK_IMAGE, timings: dict[str, float] | None = None,
                    prefix: str = "hostkit-cl") -> Iterator[Cluster]:
    """Three booted boxes (manager, worker1, worker2), the stack's images in the manager, and
    the manager's ssh key on the workers; removed afterwards unless HOSTKIT_KEEP_BOX is set."""
    timings = {} if timings is None else timings
    images = stack_images(notebook_image)
    network = f"{prefix}-net-{os.getpid()}"
    sh(["docker", "network", "create", network])
    try:
        with contextlib.ExitStack() as stack:
            start = time.monotonic()
            manager = stack.enter_context(running_box(f"{prefix}-manager", network=network,
                                                      hostname="manager"))
            workers = [stack.enter_context(running_box(f"{prefix}-{name}", network=network,
                                                       hostname=name))
                       for name in ("worker1", "worker2")]
            timings["three_boxes_s"] = time.monotonic() - start
            for box in (manager, *workers):
                use_this_machines_resolver(box)
            for image in images.values():
                timings[f"load_into_manager:{image}"] = manager.load_image(image)
            # the manager logs in to the workers with a key, as an admin sets it up
            manager.sh("mkdir -p /root/.ssh && ssh-keygen -q -t ed25519 -N '' -f /root/.ssh/id_ed25519")
            key = manager.sh("cat /root/.ssh/id_ed25519.pub").stdout.strip()
            for w in workers:
                w.sh(f"mkdir -p /root/.ssh && echo '{key}' >> /root/.ssh/authorized_keys && "
                     "chmod 600 /root/.ssh/authorized_keys && systemctl enable --now ssh")
            yield Cluster(manager, workers, images)
    finally:
        if not os.environ.get("HOSTKIT_KEEP_BOX"):
            sh(["docker", "network", "rm", network], check=False)


def form_cluster(cluster: Cluster) -> None:
    """`cluster init` on the manager, `join` on each worker, `sync-images`: as an admin does."""
    addrs = " ".join(f"--peer {b.address()}" for b in cluster.boxes)
    init = cluster.hostkit(f"cluster init --advertise-addr {cluster.manager.address()} {addrs} "
                           "--no-encrypt --yes")
    for w in cluster.workers:
        w.sh(f"{join_command(init.stdout)} --data-root /srv/docker --yes", timeout=900)
    cluster.hostkit(f"cluster sync-images --image {cluster.images['HOSTKIT_NOTEBOOK_IMAGE']}")


def stack_up(box: Box, images: dict[str, str], settings: dict[str, str]) -> None:
    """`hostkit stack up` in a box with these images and settings (the admin's password known)."""
    sets = " ".join(f"--set {k}={v}" for k, v in {**images, **settings}.items())
    res = box.sh(f"HOSTKIT_ADMIN_PASSWORD={ADMIN_PASSWORD} hostkit stack up --no-build --port {PORT} "
                 f"--hostname {box.hostname} {sets}", check=False, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
