"""firewalld: docker0 in the zone this Docker version expects, and the public port open."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

from hostkit.errors import HostkitError
from hostkit.facts import Facts, version_tuple
from hostkit.host import CommandResult, LocalHost
from hostkit.settings import DEFAULTS
from hostkit.steps import Change, StepNotReady


class FirewalldStep:
    """docker0 in the right zone for this Docker version, and the public port open (none on
    a cluster's worker: nginx runs on the manager only)."""

    name = "firewalld"
    title = "firewalld zones and the public port"

    def __init__(self, port: Optional[int] = DEFAULTS.public_port) -> None:
        self.port = port
        if port is None:
            self.title = "firewalld zones (no public port on this node)"

    def _fw(self, host: LocalHost, *args: str) -> CommandResult:
        return host.run(["firewall-cmd", *args], timeout=60)

    def _q(self, host: LocalHost, *args: str) -> bool:
        return self._fw(host, *args).ok

    def check(self, host: LocalHost, facts: Facts) -> list[Change]:
        if not host.which("firewall-cmd"):
            self.title = "firewalld: not installed (nothing to do)"
            return []
        if not self._fw(host, "--state").ok:
            self.title = "firewalld: not running (nothing to do)"
            return []
        installed = facts.dockerd_version()  # the daemon's, else `dockerd --version`
        if installed is None:
            raise StepNotReady("firewalld zones are checked once Docker is installed")
        version = ".".join(str(part) for part in installed)
        changes = self._docker0_changes(host, version)
        if self.port is None:
            return changes
        zone = self._default_zone(host)
        port = f"{self.port}/tcp"
        if not self._q(host, "--permanent", f"--zone={zone}", f"--query-port={port}"):
            changes.append(Change(f"open {port} in zone {zone} (permanent)",
                                  f"+ {zone}: port {port}"))
        if not self._q(host, f"--zone={zone}", f"--query-port={port}"):
            changes.append(Change(f"open {port} in zone {zone} (runtime)"))
        return changes

    def _docker0_changes(self, host: LocalHost, version: str) -> list[Change]:
        changes: list[Change] = []
        if version_tuple(version) >= (20, 10):
            # Docker >= 20.10 puts docker0 in its own `docker` zone; docker0 in `trusted`
            # makes the next dockerd start fail with ZONE_CONFLICT (moby#41609).
            if self._q(host, "--permanent", "--zone=trusted", "--query-interface=docker0"):
                changes.append(Change("remove docker0 from the trusted zone (permanent)",
                                      f"- trusted: docker0   (Docker {version} owns a `docker` "
                                      "zone; ZONE_CONFLICT on next start)"))
            if self._q(host, "--zone=trusted", "--query-interface=docker0"):
                changes.append(Change("move docker0 from trusted to the docker zone (runtime)"))
        else:
            if not self._q(host, "--permanent", "--zone=trusted", "--query-interface=docker0"):
                changes.append(Change("add docker0 to the trusted zone (permanent)",
                                      "+ trusted: docker0"))
            if not self._q(host, "--zone=trusted", "--query-interface=docker0"):
                changes.append(Change("add docker0 to the trusted zone (runtime)"))
            if not self._q(host, "--permanent", "--zone=trusted", "--query-masquerade"):
                changes.append(Change("enable masquerade in the trusted zone (permanent)"))
            if not self._q(host, "--zone=trusted", "--query-masquerade"):
                changes.append(Change("enable masquerade in the trusted zone (runtime)"))
        return changes

    def _default_zone(self, host: LocalHost) -> str:
        res = self._fw(host, "--get-default-zone")
        return res.stdout.strip() or "public"

    def apply(self, host: LocalHost, facts: Facts, changes: Sequence[Change]) -> None:
        zone = self._default_zone(host)
        port = f"{self.port}/tcp"
        runtime_zones = self._fw(host, "--get-zones").stdout.split()
        # Never `firewall-cmd --reload`: before Docker 28.3.3 it wiped Docker's own rules
        # (moby#50443). Each change is made twice instead, permanent and runtime.
        table: dict[str, list[str]] = {
            "remove docker0 from the trusted zone (permanent)":
                ["--permanent", "--zone=trusted", "--remove-interface=docker0"],
            "move docker0 from trusted to the docker zone (runtime)":
                ["--zone=docker", "--change-interface=docker0"] if "docker" in runtime_zones
                else ["--zone=trusted", "--remove-interface=docker0"],
            "add docker0 to the trusted zone (permanent)":
                ["--permanent", "--zone=trusted", "--add-interface=docker0"],
            "add docker0 to the trusted zone (runtime)":
                ["--zone=trusted", "--change-interface=docker0"],
            "enable masquerade in the trusted zone (permanent)":
                ["--permanent", "--zone=trusted", "--add-masquerade"],
            "enable masquerade in the trusted zone (runtime)":
                ["--zone=trusted", "--add-masquerade"],
            f"open {port} in zone {zone} (permanent)":
                ["--permanent", f"--zone={zone}", f"--add-port={port}"],
            f"open {port} in zone {zone} (runtime)": [f"--zone={zone}", f"--add-port={port}"],
        }
        for ch in changes:
            args = table.get(ch.summary)
            if args is None:
                raise HostkitError(f"firewalld: do not know how to '{ch.summary}'")
            host.run(["firewall-cmd", *args], timeout=60, check=True)


