"""bootstrap --gpu: the NVIDIA container toolkit, per distro, only where a driver runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from bootstrap_sim import SimHost

from hostkit.facts import Facts
from hostkit.subsystems.gpu import GpuToolkitStep


def _gpu_host(tmp_path: Path, distro: str, *, hook: bool = False) -> SimHost:
    sim = SimHost(tmp_path, distro=distro)
    sim.binaries |= {"nvidia-smi"} | ({"nvidia-container-runtime-hook"} if hook else set())
    return sim


def test_a_host_without_an_nvidia_driver_needs_nothing(tmp_path: Path) -> None:
    sim = SimHost(tmp_path)
    step = GpuToolkitStep(enabled=True)
    assert step.check(sim, Facts(sim)) == []
    assert "no NVIDIA driver" in step.title


def test_without_gpu_the_missing_toolkit_is_said_not_installed(tmp_path: Path) -> None:
    sim = _gpu_host(tmp_path, "debian-12")
    step = GpuToolkitStep(enabled=False)
    assert step.check(sim, Facts(sim)) == []
    assert "--gpu installs it" in step.title


def test_an_installed_toolkit_is_ok(tmp_path: Path) -> None:
    sim = _gpu_host(tmp_path, "ubuntu-24.04", hook=True)
    step = GpuToolkitStep(enabled=True)
    assert step.check(sim, Facts(sim)) == []
    assert "installed" in step.title


@pytest.mark.parametrize(("distro", "expected"), [
    ("debian-12", ["nvidia.github.io/libnvidia-container/stable/deb/nvidia-container-toolkit.list",
                   "apt-get install -y --no-install-recommends nvidia-container-toolkit"]),
    ("ubuntu-24.04", ["signed-by=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg",
                      "apt-get install -y --no-install-recommends nvidia-container-toolkit"]),
    ("rocky-9", ["-o /etc/yum.repos.d/nvidia-container-toolkit.repo https://nvidia.github.io/"
                 "libnvidia-container/stable/rpm/nvidia-container-toolkit.repo",
                 "dnf install -y nvidia-container-toolkit"]),
])
def test_with_gpu_the_plan_installs_the_toolkit_from_nvidias_repository(
        tmp_path: Path, distro: str, expected: list[str]) -> None:
    sim = _gpu_host(tmp_path, distro)
    (change,) = GpuToolkitStep(enabled=True).check(sim, Facts(sim))
    for text in expected:
        assert text in change.diff
    # the hook is all Docker needs: no daemon.json change, no Docker restart
    assert not change.disruptive
