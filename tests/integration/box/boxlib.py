"""Run the systemd "box" (see build.sh) and work inside it: the test's stand-in for a server.

The run flags are the ones that work on a VM without CAP_SYS_RESOURCE (MACHINE.md):
--privileged fails there, so capabilities are granted one by one.
"""

from __future__ import annotations

import os
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
IMAGE = "hostkit-box:bookworm"

RUN_FLAGS = [
    "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
    "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
    "--security-opt", "systempaths=unconfined",
    "--device-cgroup-rule", "a *:* rwm", "--cgroupns=private",
    "--stop-signal", "SIGRTMIN+3", "--tmpfs", "/run", "--tmpfs", "/run/lock",
]


def sh(argv: list[str], *, check: bool = True, timeout: float = 600,
       input_bytes: Optional[bytes] = None) -> subprocess.CompletedProcess[str]:
    if input_bytes is not None:
        raw = subprocess.run(argv, input=input_bytes, capture_output=True, timeout=timeout,
                             check=False)
        res = subprocess.CompletedProcess(argv, raw.returncode,
                                          raw.stdout.decode("utf-8", "replace"),
                                          raw.stderr.decode("utf-8", "replace"))
    else:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and res.returncode != 0:
        raise AssertionError(f"{argv} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res


@contextmanager
def running_box(prefix: str, *, seed: bool = False, network: str = "",
                hostname: str = "hostkit-box") -> Iterator[Box]:
    """A booted box with this tree's hostkit installed (and the seed content if asked),
    removed afterwards unless HOSTKIT_KEEP_BOX is set: what a test module's fixture yields.

    Boxes given the same user-defined `network` reach each other (several servers)."""
    import pytest

    if os.geteuid() != 0:
        pytest.skip("needs root and a local dockerd")
    build_image()
    box = Box(f"{prefix}-{os.getpid()}", network=network, hostname=hostname)
    box.start()
    try:
        box.install_hostkit()
        if seed:
            box.seed_docker_content()
        yield box
    finally:
        if not os.environ.get("HOSTKIT_KEEP_BOX"):
            box.remove()


def build_image() -> float:
    """Build the box image if missing (serialised with other heavy builds); seconds taken."""
    start = time.monotonic()
    sh(["bash", str(HERE / "build.sh"), IMAGE], timeout=1800)
    return time.monotonic() - start


class Box:
    """One running box container with its own dockerd and firewalld."""

    def __init__(self, name: str, *, network: str = "", hostname: str = "hostkit-box") -> None:
        self.name = name
        self.network = network
        self.hostname = hostname
        # Docker's roots must be on volumes: overlay2 cannot run on the box's overlay root.
        self.volumes = [f"{name}-varlib", f"{name}-srv"]

    def start(self) -> None:
        sh(["docker", "rm", "-f", self.name], check=False)
        on_network = ["--network", self.network] if self.network else []
        sh(["docker", "run", "-d", "--name", self.name, "--hostname", self.hostname, *on_network,
            *RUN_FLAGS, "-v", f"{self.volumes[0]}:/var/lib", "-v", f"{self.volumes[1]}:/srv",
            IMAGE])
        self._wait_booted()

    def kill(self) -> None:
        """A power cut: the box's container killed from outside, its systemd and dockerd with it."""
        sh(["docker", "kill", self.name])

    def boot_again(self) -> None:
        """Start the killed box again: Docker's data is on its volumes, /etc in its layer."""
        sh(["docker", "start", self.name])
        self._wait_booted()

    def _wait_booted(self) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            state = self.sh("systemctl is-system-running || true").stdout.strip()
            if state in ("running", "degraded") and self.sh("docker info >/dev/null 2>&1",
                                                           check=False).returncode == 0:
                return
            time.sleep(1)
        raise AssertionError(f"box did not come up: {self.sh('systemctl --failed', check=False)}")

    def remove(self) -> None:
        sh(["docker", "rm", "-f", self.name], check=False)
        sh(["docker", "volume", "rm", "-f", *self.volumes], check=False)

    def sh(self, script: str, *, check: bool = True, timeout: float = 600,
           user: Optional[str] = None) -> subprocess.CompletedProcess[str]:
        argv = ["docker", "exec"]
        if user:
            argv += ["-u", user]
        return sh([*argv, self.name, "sh", "-c", script], check=check, timeout=timeout)

    def install_hostkit(self) -> None:
        """Copy the working tree in and pip-install it into the box's prepared venv."""
        with tempfile.NamedTemporaryFile(suffix=".tar") as tmp:
            with tarfile.open(tmp.name, "w") as tar:
                for item in ("hostkit", "stack", "checks", "pyproject.toml", "README.md"):
                    if (REPO / item).exists():
                        tar.add(REPO / item, arcname=item,
                                filter=lambda t: None if "__pycache__" in t.name else t)
            data = Path(tmp.name).read_bytes()
        sh(["docker", "exec", "-i", self.name, "sh", "-c",
            "rm -rf /src && mkdir -p /src && tar -C /src -x"], input_bytes=data)
        # The wheel's metadata wants a README; a tree without one still installs.
        self.sh("cd /src && { [ -f README.md ] || echo '# hostkit' > README.md; } && "
                "/opt/hostkit-venv/bin/pip install -q --no-deps --no-build-isolation /src && "
                "ln -sf /opt/hostkit-venv/bin/hostkit /usr/local/bin/hostkit", timeout=300)

    def seed_docker_content(self) -> None:
        """A tiny imported image, a named volume with known data, a restart=always container."""
        self.sh(
            "set -e; rm -rf /tmp/tiny; mkdir -p /tmp/tiny/bin /tmp/tiny/etc; "
            "cp /bin/busybox /tmp/tiny/bin/; "
            "for a in sh nslookup nc wget sleep cat sha256sum find sort xargs dd ln mkdir; do "
            "ln -s busybox /tmp/tiny/bin/$a; done; "
            "tar -C /tmp/tiny -c . | docker import - hostkit-tiny:1 >/dev/null; "
            "docker volume create hkdata >/dev/null; "
            "docker run --rm -v hkdata:/data hostkit-tiny:1 sh -c '"
            "dd if=/dev/urandom of=/data/blob bs=1M count=20 2>/dev/null; echo hello > /data/a;"
            " ln /data/a /data/hardlink; mkdir -p /data/d; echo x > /data/d/y'; "
            "docker run -d --name keeper --restart=always -v hkdata:/data hostkit-tiny:1 "
            "sleep 1000000 >/dev/null")

    def volume_checksum(self) -> str:
        return self.sh("docker run --rm -v hkdata:/data hostkit-tiny:1 sh -c "
                       "'cd /data && find . -type f | sort | xargs sha256sum'").stdout

    def address(self) -> str:
        """The box's address on its network, as this machine and the other boxes reach it."""
        fmt = "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"
        return sh(["docker", "inspect", "-f", fmt, self.name]).stdout.split()[0]

    def load_image(self, image: str) -> float:
        """`docker save | docker load` from this machine into the box; seconds taken."""
        start = time.monotonic()
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
        subprocess.run(["docker", "exec", "-i", self.name, "docker", "load", "-q"],
                       stdin=save.stdout, check=True, capture_output=True, timeout=1800)
        if save.wait() != 0:
            raise AssertionError(f"docker save {image} failed")
        return time.monotonic() - start

    def docker_root(self) -> str:
        return self.sh("docker info --format '{{.DockerRootDir}}'").stdout.strip()

    def resolver(self) -> str:
        """The box's own upstream resolver (8.8.8.8 may be unreachable from this network)."""
        for line in self.sh("cat /etc/resolv.conf").stdout.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                return parts[1]
        return "8.8.8.8"
