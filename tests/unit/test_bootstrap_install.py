"""Distro check and Docker installation, per family."""

from __future__ import annotations

from pathlib import Path

import pytest
from bootstrap_sim import SimHost

from hostkit.errors import HostkitError, UsageError
from hostkit.facts import Facts
from hostkit.subsystems.docker_install import DistroStep, DockerInstallStep


def test_unsupported_distro_is_refused_with_a_hint_unless_forced(tmp_path: Path) -> None:
    sim = SimHost(tmp_path, distro="arch")
    with pytest.raises(UsageError) as err:
        DistroStep().check(sim, Facts(sim))
    assert "--force" in err.value.hint
    forced = DistroStep(force=True)
    assert forced.check(sim, Facts(sim)) == []
    assert "--force" in forced.title


def test_docker_on_an_unknown_family_is_not_installable(tmp_path: Path) -> None:
    sim = SimHost(tmp_path, distro="arch")
    sim.binaries -= {"dockerd", "docker", "docker-compose"}
    with pytest.raises(HostkitError, match="cannot install Docker"):
        DockerInstallStep().check(sim, Facts(sim))


def test_debian_installs_the_distro_packages(tmp_path: Path) -> None:
    sim = SimHost(tmp_path, distro="debian-12")
    sim.binaries -= {"dockerd", "docker", "docker-compose"}
    changes = DockerInstallStep().check(sim, Facts(sim))
    assert changes[0].summary == "install Docker Engine and compose"
    assert "apt-get install -y --no-install-recommends docker.io docker-compose" in changes[0].diff
    assert changes[-1].summary == "start Docker"


def test_rhel_family_uses_dockers_repository(tmp_path: Path) -> None:
    sim = SimHost(tmp_path, distro="rocky-9")
    sim.binaries -= {"dockerd", "docker", "docker-compose"}
    diff = DockerInstallStep().check(sim, Facts(sim))[0].diff
    assert "dnf config-manager --add-repo https://download.docker.com/linux/centos/docker-ce.repo" \
        in diff
    assert "dnf install -y docker-ce docker-ce-cli containerd.io docker-compose-plugin" in diff


def test_centos7_uses_yum(tmp_path: Path) -> None:
    sim = SimHost(tmp_path, distro="centos-7")
    sim.binaries -= {"dockerd", "docker", "docker-compose"}
    diff = DockerInstallStep().check(sim, Facts(sim))[0].diff
    assert "yum-config-manager --add-repo" in diff


def test_installed_but_stopped_and_disabled_docker_is_enabled_and_started(tmp_path: Path) -> None:
    sim = SimHost(tmp_path)
    sim.running = False
    sim.enabled = "disabled"
    summaries = [c.summary for c in DockerInstallStep().check(sim, Facts(sim))]
    assert summaries == ["enable docker.service at boot", "start Docker"]
    DockerInstallStep().apply(sim, Facts(sim), [])
    assert sim.running
    assert DockerInstallStep().check(sim, Facts(sim)) == []


@pytest.mark.parametrize(("distro", "package"), [
    ("ubuntu-24.04", "docker-compose-v2"),
    ("ubuntu-20.04", "docker-compose-v2"),
    ("debian-13", "docker-compose"),
    ("debian-12", "docker-compose"),
    ("rocky-9", "docker-compose-plugin"),
])
def test_compose_is_the_v2_package_each_distro_ships_and_the_doctor_advises_the_same(
        tmp_path: Path, distro: str, package: str) -> None:
    from hostkit.subsystems.docker_install import compose_install_hint

    sim = SimHost(tmp_path, distro=distro)
    sim.binaries -= {"docker-compose"}
    facts = Facts(sim)
    diff = DockerInstallStep().check(sim, facts)[0].diff
    assert diff.split()[-1] == package
    hint = compose_install_hint(facts.distro())
    assert f"install -y {package}" in hint
    assert ("compose v1" in hint) == (distro == "debian-12")
