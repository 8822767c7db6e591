"""The Docker daemon as bootstrap drives it: is it answering, what does it hold, stop/start."""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Optional

from hostkit.errors import HostkitError
from hostkit.facts import Facts
from hostkit.host import LocalHost

log = logging.getLogger("hostkit.bootstrap")

DEFAULT_DOCKER_ROOT = "/var/lib/docker"


def docker_api_info(host: LocalHost, timeout: float = 15) -> Optional[dict[str, Any]]:
    """The daemon's `info` read now, or None when it does not answer.

    The doctor's reader (Facts, through the SDK) on a fresh Facts, so bootstrap's "is Docker
    up, on which root" and the doctor's verdicts come from the same API call.
    """
    try:
        info = Facts(host, docker_timeout=timeout).docker_info()
    except HostkitError:
        return None
    return info if isinstance(info, dict) and info.get("ServerVersion") else None


@dataclass(frozen=True)
class Inventory:
    """What Docker holds; compared before and after a relocation."""

    images: frozenset[str]
    containers: frozenset[str]
    volumes: frozenset[str]
    running_restart: frozenset[str]  # running containers that Docker restarts by itself


def docker_inventory(host: LocalHost) -> Inventory:
    def lines(argv: list[str]) -> frozenset[str]:
        res = host.run(argv, timeout=60, check=True)
        return frozenset(x.strip() for x in res.stdout.splitlines() if x.strip())

    containers = lines(["docker", "ps", "-aq", "--no-trunc"])
    restart: set[str] = set()
    if containers:
        res = host.run(["docker", "inspect", "--format",
                        "{{.Id}} {{.State.Running}} {{.HostConfig.RestartPolicy.Name}}",
                        *sorted(containers)], timeout=60, check=True)
        for line in res.stdout.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] == "true" and parts[2] in ("always", "unless-stopped"):
                restart.add(parts[0])
    return Inventory(lines(["docker", "image", "ls", "-aq", "--no-trunc"]), containers,
                     lines(["docker", "volume", "ls", "-q"]), frozenset(restart))


class DockerService:
    """Start, stop and wait for dockerd the way this host's init system does it."""

    def __init__(self, host: LocalHost, facts: Facts) -> None:
        self.host = host
        self.facts = facts
        self.init = facts.init_system()

    def _systemd_units(self) -> list[str]:
        # Stopping only the service lets any client call re-activate dockerd through the
        # socket in the middle of the copy, so the socket goes first when it exists.
        res = self.host.run(["systemctl", "list-unit-files", "docker.socket", "--no-legend"],
                            timeout=30)
        return ["docker.socket", "docker.service"] if "docker.socket" in res.stdout \
            else ["docker.service"]

    def stop(self) -> None:
        if self.init == "systemd":
            self.host.run(["systemctl", "stop", *self._systemd_units()], timeout=180, check=True,
                          hint="see `journalctl -u docker`")
        elif self.init == "sysvinit":
            self.host.run(["service", "docker", "stop"], timeout=180, check=True)
        else:
            raise HostkitError("cannot stop dockerd: no systemd and no init script",
                               "stop dockerd by hand, then run bootstrap again")
        self.facts.forget_docker()
        # dockerd may take a moment to release its root after the init system returns
        for _ in range(30):
            if docker_api_info(self.host, timeout=5) is None:
                return
            time.sleep(1)
        raise HostkitError("dockerd still answers after being stopped",
                           "is another dockerd running outside the init system?")

    def start(self) -> None:
        if self.init == "systemd":
            # a unit that failed several times is refused until its counter is reset
            self.host.run(["systemctl", "reset-failed", "docker.service", "docker.socket"],
                          timeout=30)
            self.host.run(["systemctl", "start", *self._systemd_units()], timeout=180,
                          check=True, hint="see `journalctl -u docker`")
        elif self.init == "sysvinit":
            self.host.run(["service", "docker", "start"], timeout=180, check=True)
        else:
            raise HostkitError("cannot start dockerd: no systemd and no init script",
                               "start dockerd by hand")
        self.facts.forget_docker()

    def restart(self) -> None:
        if self.init == "systemd":
            # docker.service allows 3 starts a minute: a rollback right after a change (or a
            # re-run) would be refused with start-limit-hit, so the counter is reset first
            self.host.run(["systemctl", "reset-failed", "docker.service", "docker.socket"],
                          timeout=30)
            self.host.run(["systemctl", "restart", "docker.service"], timeout=180, check=True,
                          hint="see `journalctl -u docker`")
            self.facts.forget_docker()
        else:
            self.stop()
            self.start()

    def daemon_reload(self) -> None:
        if self.init == "systemd":
            self.host.run(["systemctl", "daemon-reload"], timeout=60, check=True)

    def wait_api(self, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            info = docker_api_info(self.host, timeout=10)
            if info:
                return info
            if time.monotonic() > deadline:
                raise HostkitError(f"the Docker API did not answer within {timeout:g}s",
                                   f"see {self.journal_hint()}")
            # every second of polling granularity is a second of downtime after a restart
            time.sleep(0.25)

    def journal_hint(self) -> str:
        return "`journalctl -u docker -n 50`" if self.init == "systemd" else "/var/log/docker.log"

    def failure_tail(self) -> str:
        """The last lines dockerd logged, to say why it refused to start."""
        if self.init != "systemd":
            return ""
        try:
            res = self.host.run(["journalctl", "-u", "docker.service", "-n", "8", "--no-pager",
                                 "-o", "cat"], timeout=20)
        except HostkitError:
            return ""
        lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
        bad = [ln for ln in lines if re.search(r"(?i)fail|error|invalid|conflict", ln)]
        return (bad or lines or [""])[-1][:300]


