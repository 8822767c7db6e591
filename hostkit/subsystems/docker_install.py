"""Distro support and the Docker Engine install: the first two steps of bootstrap."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from hostkit.distros import DistroInfo
from hostkit.errors import HostkitError, UsageError
from hostkit.facts import Facts
from hostkit.host import LocalHost
from hostkit.steps import Change
from hostkit.subsystems.docker_service import DockerService, docker_api_info


class DistroStep:
    """Refuse a distro hostkit does not know how to set up (unless --force)."""

    name = "distro"
    title = "distro is supported"

    def __init__(self, force: bool = False) -> None:
        self.force = force

    def check(self, host: LocalHost, facts: Facts) -> list[Change]:
        d = facts.distro()
        if not d.supported and not self.force:
            raise UsageError(f"{d.name}: {d.reason}",
                             "hostkit supports RHEL 8+/Rocky/Alma/CentOS Stream, Debian 11+ "
                             "and Ubuntu 20.04+; --force tries anyway")
        self.title = (f"distro is supported: {d.name} ({d.family} family, "
                      f"init {facts.init_system()})")
        if not d.supported:
            self.title += f" [--force: {d.reason}]"
        return []

    def apply(self, host: LocalHost, facts: Facts, changes: Sequence[Change]) -> None:
        """Nothing to apply: this step only checks."""


# ---- step 2: docker engine -------------------------------------------------------------

def _docker_repo_commands(distro_id: str, pm: str) -> list[list[str]]:
    """Docker's own repository for the RHEL family (docs.docker.com/engine/install)."""
    repo_os = {"rhel": "rhel", "fedora": "fedora"}.get(distro_id, "centos")
    url = f"https://download.docker.com/linux/{repo_os}/docker-ce.repo"
    if pm == "yum":
        return [["yum", "install", "-y", "yum-utils"],
                ["yum-config-manager", "--add-repo", url]]
    return [["dnf", "-y", "install", "dnf-plugins-core"],
            ["dnf", "config-manager", "--add-repo", url]]


def compose_packages(d: DistroInfo, source: str = "distro") -> list[str]:
    """The compose package to install: the v2 one each distro ships, v1 only where none exists.

    Docker's own repository has the plugin everywhere; Ubuntu (20.04+) packages v2 as
    `docker-compose-v2` in universe; Debian's `docker-compose` is v2 from 13 (trixie) on,
    and v1 (1.29) before, where no v2 package exists.
    """
    if source == "docker" or d.family == "rhel":
        return ["docker-compose-plugin"]
    if d.id == "ubuntu":
        return ["docker-compose-v2"]
    return ["docker-compose"]


def compose_install_hint(d: DistroInfo) -> str:
    """What to run when compose is missing: the same packages bootstrap would install."""
    packages = " ".join(compose_packages(d))
    if d.family == "rhel":
        return (f"hostkit bootstrap, or: {d.package_manager or 'dnf'} install -y {packages} "
                "(from Docker's repository, download.docker.com)")
    if d.family == "debian":
        note = " (compose v1: Debian 12 and older package no v2; --docker-source docker gives " \
               "the v2 plugin)" if d.id == "debian" and _major(d) < 13 else ""
        return f"hostkit bootstrap, or: apt-get install -y {packages}{note}"
    return "install Docker's compose plugin (docs.docker.com/compose/install)"


def _major(d: DistroInfo) -> int:
    text = d.version_id.split(".")[0]
    return int(text) if text.isdigit() else 0


class DockerInstallStep:
    """Docker Engine and compose installed, enabled at boot and running."""

    name = "docker-install"
    title = "Docker Engine and compose installed and running"

    def __init__(self, source: str = "distro") -> None:
        self.source = source

    def _compose_present(self, host: LocalHost) -> bool:
        if host.which("docker-compose"):
            return True
        if host.which("docker"):
            res = host.run(["docker", "compose", "version"], timeout=20)
            return res.ok
        return False

    def _install_commands(self, facts: Facts, need_engine: bool) -> list[list[str]]:
        d = facts.distro()
        compose = compose_packages(d, self.source)
        if d.family == "debian":
            engine = ["docker.io"] if self.source == "distro" else [
                "docker-ce", "docker-ce-cli", "containerd.io"]
            pkgs = [*engine, *compose] if need_engine else compose
            cmds = [["apt-get", "update"],
                    ["apt-get", "install", "-y", "--no-install-recommends", *pkgs]]
            if self.source == "docker":
                cmds.insert(0, ["sh", "-c", _DEBIAN_DOCKER_REPO.format(id=d.id)])
            return cmds
        if d.family == "rhel" and d.package_manager in ("dnf", "yum"):
            pm = d.package_manager
            engine = ["docker-ce", "docker-ce-cli", "containerd.io"]
            pkgs = [*engine, *compose] if need_engine else compose
            return [*_docker_repo_commands(d.id, pm), [pm, "install", "-y", *pkgs]]
        raise HostkitError(f"cannot install Docker on {d.name} ({d.family} family)",
                           "install Docker Engine and compose by hand, then run bootstrap again")

    def check(self, host: LocalHost, facts: Facts) -> list[Change]:
        changes: list[Change] = []
        have_engine = bool(host.which("dockerd"))
        have_compose = self._compose_present(host) if have_engine else False
        if not have_engine or not have_compose:
            cmds = self._install_commands(facts, need_engine=not have_engine)
            what = "Docker Engine and compose" if not have_engine else "compose"
            changes.append(Change(f"install {what}",
                                  "\n".join("$ " + shlex.join(c) for c in cmds)))
        if facts.init_system() == "systemd" and have_engine:
            res = host.run(["systemctl", "is-enabled", "docker.service"], timeout=20)
            if res.stdout.strip() not in ("enabled", "static", "enabled-runtime"):
                changes.append(Change("enable docker.service at boot"))
        if not have_engine or docker_api_info(host) is None:
            changes.append(Change("start Docker"))
        return changes

    def apply(self, host: LocalHost, facts: Facts, changes: Sequence[Change]) -> None:
        summaries = {c.summary for c in changes}
        if any(s.startswith("install ") for s in summaries):
            need_engine = not host.which("dockerd")
            for cmd in self._install_commands(facts, need_engine):
                host.run(cmd, timeout=1800, check=True,
                         env={"DEBIAN_FRONTEND": "noninteractive"},
                         hint="Docker could not be installed; fix the package manager "
                              "error above, or install Docker by hand")
        if facts.init_system() == "systemd":
            host.run(["systemctl", "enable", "docker.service"], timeout=60, check=True)
        service = DockerService(host, facts)
        if docker_api_info(host) is None:
            service.start()
            service.wait_api(90)


_DEBIAN_DOCKER_REPO = (
    "set -e; install -m 0755 -d /etc/apt/keyrings; "
    "curl -fsSL https://download.docker.com/linux/{id}/gpg -o /etc/apt/keyrings/docker.asc; "
    ". /etc/os-release; echo \"deb [arch=$(dpkg --print-architecture) "
    "signed-by=/etc/apt/keyrings/docker.asc] https://download.docker.com/linux/{id} "
    "$VERSION_CODENAME stable\" > /etc/apt/sources.list.d/docker.list"
)


