"""NVIDIA GPUs for users' containers: the container toolkit, installed per distro on request.

Observed and judged by the doctor's `gpu.*` checks (hostkit/probes/gpu.py); converged here
when bootstrap runs with `--gpu`. The toolkit's hook is all Docker's `--gpus` (and
DockerSpawner's `device_requests`) needs: Docker finds `nvidia-container-runtime-hook` on
PATH when a container asks for a GPU, so daemon.json stays as it is and Docker keeps running.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from hostkit.errors import HostkitError
from hostkit.facts import Facts
from hostkit.host import LocalHost
from hostkit.steps import Change

NVIDIA_REPO = "https://nvidia.github.io/libnvidia-container"
KEYRING = "/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg"
APT_LIST = "/etc/apt/sources.list.d/nvidia-container-toolkit.list"
YUM_REPO = "/etc/yum.repos.d/nvidia-container-toolkit.repo"
GPU_HOOK = "nvidia-container-runtime-hook"

_APT_REPO = (
    f"set -e; curl -fsSL {NVIDIA_REPO}/gpgkey | gpg --dearmor --yes -o {KEYRING}; "
    f"curl -fsSL {NVIDIA_REPO}/stable/deb/nvidia-container-toolkit.list | "
    f"sed 's#deb https://#deb [signed-by={KEYRING}] https://#g' > {APT_LIST}"
)


def toolkit_install_commands(family: str, package_manager: str) -> list[list[str]]:
    """NVIDIA's repository and the toolkit package, the way NVIDIA's install guide does it."""
    if family == "debian":
        return [["sh", "-c", _APT_REPO], ["apt-get", "update"],
                ["apt-get", "install", "-y", "--no-install-recommends",
                 "nvidia-container-toolkit"]]
    if family == "rhel" and package_manager in ("dnf", "yum"):
        return [["curl", "-fsSL", "-o", YUM_REPO,
                 f"{NVIDIA_REPO}/stable/rpm/nvidia-container-toolkit.repo"],
                [package_manager, "install", "-y", "nvidia-container-toolkit"]]
    raise HostkitError(f"cannot install the NVIDIA container toolkit on the {family} family",
                       "install nvidia-container-toolkit by hand (NVIDIA's install guide)")


def has_nvidia_driver(host: LocalHost) -> bool:
    return bool(host.which("nvidia-smi")) or host.exists("/proc/driver/nvidia/version")


class GpuToolkitStep:
    """With --gpu on a host with an NVIDIA driver: Docker can hand GPUs to containers."""

    name = "gpu-toolkit"
    title = "NVIDIA container toolkit"

    def __init__(self, enabled: bool = False) -> None:
        self.enabled = enabled

    def check(self, host: LocalHost, facts: Facts) -> list[Change]:
        if not has_nvidia_driver(host):
            self.title = "NVIDIA container toolkit: no NVIDIA driver here (nothing to do)"
            return []
        if host.which(GPU_HOOK):
            self.title = "NVIDIA container toolkit: installed (containers can ask for GPUs)"
            return []
        if not self.enabled:
            # a third party's repository is added only when asked for
            self.title = ("NVIDIA container toolkit: missing, so users' containers get no GPU "
                          "(--gpu installs it)")
            return []
        d = facts.distro()
        commands = toolkit_install_commands(d.family, d.package_manager or "")
        return [Change("install the NVIDIA container toolkit from NVIDIA's repository",
                       "\n".join("$ " + shlex.join(c) for c in commands))]

    def apply(self, host: LocalHost, facts: Facts, changes: Sequence[Change]) -> None:
        d = facts.distro()
        for command in toolkit_install_commands(d.family, d.package_manager or ""):
            host.run(command, timeout=1800, check=True, env={"DEBIAN_FRONTEND": "noninteractive"},
                     hint="the NVIDIA container toolkit could not be installed; see NVIDIA's "
                          "install guide for this distro")
