"""A simulated server for bootstrap's unit tests: files under a temp root, a Docker daemon,
systemd and firewalld as small state machines, and the real rsync on the temp root."""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
from fakes import ReplayedStreaming

from hostkit.daemon_config import command_conflicts, unit_settings
from hostkit.errors import HostkitError
from hostkit.facts import version_tuple
from hostkit.host import CommandResult

UNIT_FILE = "/lib/systemd/system/docker.service"
DROP_IN_DIR = "/etc/systemd/system/docker.service.d"
OS_RELEASE = Path(__file__).resolve().parent / "fixtures" / "os-release"


@dataclass
class Zone:
    interfaces: set[str] = field(default_factory=set)
    ports: set[str] = field(default_factory=set)
    masquerade: bool = False


class SimHost(ReplayedStreaming):
    """Answers the commands bootstrap runs from simulated state; records every call."""

    def __init__(self, root: Path, *, distro: str = "debian-12", docker_version: str = "20.10.24",
                 firewalld: bool = True) -> None:
        super().__init__(root)
        self.calls: list[tuple[str, ...]] = []
        self.binaries = {"docker", "dockerd", "docker-compose", "systemctl", "journalctl",
                         "rsync", "findmnt", "du", "df", "firewall-cmd", "ip", "service",
                         "apt-get", "dnf"}
        if not firewalld:
            self.binaries.discard("firewall-cmd")
        self.docker_version = docker_version
        self.running = True
        self.root_dir = "/var/lib/docker"
        self.enabled = "enabled"
        self.validate_supported = False
        self.validate_error = ""
        self.refuse_start: Callable[[dict[str, Any]], Optional[str]] = _refuse_bogus
        self.restarts = 0
        self.driver_status: list[list[str]] = [["Backing Filesystem", "extfs"]]
        self.fstype = "ext4"
        self.extra_mounts: list[tuple[str, str]] = []  # (target, fstype)
        self.avail = 10**12
        self.dead_resolvers: set[str] = set()  # resolvers that do not answer from this host
        self.unit = ("[Service]\nExecStart=/usr/sbin/dockerd -H fd:// "
                     "--containerd=/run/containerd/containerd.sock\n")
        self.permanent: dict[str, Zone] = {"public": Zone(), "trusted": Zone(), "docker": Zone()}
        self.runtime: dict[str, Zone] = {"public": Zone(), "trusted": Zone(),
                                         "docker": Zone({"docker0"})}
        self.images = {"sha256:" + "a" * 64}
        self.containers = {"c" * 64}
        self.volumes = {"hkdata"}
        self.files({"/proc/1/comm": "systemd\n",
                    "/etc/os-release": (OS_RELEASE / distro).read_text(),
                    "/var/lib/docker/volumes/hkdata/_data/file": "data\n",
                    "/var/lib/docker/image/overlay2/repositories.json": "{}\n",
                    f"/var/lib/docker/containers/{'c' * 64}/config.v2.json": json.dumps(
                        {"MountPoints": {"/data": {
                            "Source": "/var/lib/docker/volumes/hkdata/_data",
                            "Name": "hkdata", "Type": "volume"}}})})
        self.host_path("/srv").mkdir(parents=True, exist_ok=True)

    def docker(self, timeout: float = 10) -> Any:
        """The SDK's view of the simulated daemon: what `docker info` would say."""
        if not self.running:
            raise HostkitError("the Docker daemon does not answer: connection refused")
        return _SimDockerClient(self)

    # ---- helpers -----------------------------------------------------------------------
    @property
    def unit(self) -> str:
        return self.path(UNIT_FILE).read_text()

    @unit.setter
    def unit(self, text: str) -> None:
        self.files({UNIT_FILE: text})

    def unit_files(self) -> list[tuple[str, str]]:
        dropins = sorted(self.path(DROP_IN_DIR).glob("*.conf")) \
            if self.path(DROP_IN_DIR).exists() else []
        return [(UNIT_FILE, self.unit)] + [(f"{DROP_IN_DIR}/{p.name}", p.read_text())
                                           for p in dropins]

    def ask_dns(self, server: str, name: str, timeout: float = 3.0) -> str:
        self.calls.append(("dns", server, name))
        if server in self.dead_resolvers:
            raise HostkitError(f"{server} did not answer within {timeout:g}s")
        return "192.0.2.10"

    def host_path(self, p: str) -> Path:
        return self.path(p)

    def files(self, mapping: dict[str, str]) -> SimHost:
        for path, text in mapping.items():
            real = self.path(path)
            real.parent.mkdir(parents=True, exist_ok=True)
            real.write_text(text)
        return self

    def daemon_config(self) -> dict[str, Any]:
        p = self.path("/etc/docker/daemon.json")
        return json.loads(p.read_text()) if p.exists() and p.read_text().strip() else {}

    def which(self, name: str) -> Optional[str]:
        return f"/usr/bin/{name}" if name in self.binaries else None

    def is_root(self) -> bool:
        return True

    def count(self, *prefix: str) -> int:
        return sum(1 for c in self.calls if c[: len(prefix)] == prefix)

    # ---- commands ----------------------------------------------------------------------
    def run(self, argv: Sequence[str], **kwargs: Any) -> CommandResult:
        key = tuple(str(a) for a in argv)
        self.calls.append(key)
        if key[0] not in self.binaries:
            raise HostkitError(f"{key[0]}: command not found")
        handler = getattr(self, "_" + key[0].replace("-", "_"))
        rc, out, err = handler(list(key[1:]))
        res = CommandResult(key, rc, out, err)
        if kwargs.get("check") and rc != 0:
            from hostkit.errors import CommandError

            raise CommandError(list(key), rc, err or out, kwargs.get("hint", ""))
        return res

    def _start_docker(self) -> Optional[str]:
        cfg = self.daemon_config()
        why = self.refuse_start(cfg) or self._flag_conflicts(cfg)
        if why:
            self.running = False
            return why
        if "docker0" in self.runtime["trusted"].interfaces and \
                version_tuple(self.docker_version) >= (20, 10):
            self.running = False
            return "ZONE_CONFLICT: 'docker0' already bound to 'trusted'"
        self.root_dir = cfg.get("data-root", "/var/lib/docker")
        self.running = True
        self.restarts += 1
        return None

    def _systemctl(self, args: list[str]) -> tuple[int, str, str]:  # noqa: PLR0911 - one branch per verb
        verb = args[0]
        if verb == "list-unit-files":
            return 0, "docker.socket enabled enabled\n", ""
        if verb == "is-enabled":
            return (0 if self.enabled == "enabled" else 1), self.enabled + "\n", ""
        if verb == "enable":
            self.enabled = "enabled"
            return 0, "", ""
        if verb == "stop":
            self.running = False
            return 0, "", ""
        if verb in ("start", "restart"):
            why = self._start_docker()
            return (1, "", f"Job for docker.service failed: {why}") if why else (0, "", "")
        if verb == "cat":
            return 0, "".join(f"# {p}\n{t}\n" for p, t in self.unit_files()), ""
        if verb == "show":
            return 0, self._show(), ""
        return 0, "", ""  # daemon-reload, reset-failed

    def _show(self) -> str:
        files = self.unit_files()
        argv, _source, environment, env_files = unit_settings(files)
        shown = [f"FragmentPath={files[0][0]}",
                 f"DropInPaths={' '.join(p for p, _ in files[1:])}",
                 f"ExecStart={{ path={argv[0] if argv else ''} ; argv[]={' '.join(argv)} ; "
                 "ignore_errors=no ; start_time=[n/a] ; stop_time=[n/a] ; pid=0 ; "
                 "code=(null) ; status=0/0 }" if argv else "ExecStart=",
                 f"Environment={' '.join(environment)}"]
        shown += [f"EnvironmentFiles={f.lstrip('-')} (ignore_errors="
                  f"{'yes' if f.startswith('-') else 'no'})" for f in env_files]
        return "\n".join(shown) + "\n"

    def _flag_conflicts(self, cfg: dict[str, Any]) -> Optional[str]:
        """dockerd refuses an option given both as a flag and in daemon.json (moby#25471)."""
        from hostkit.facts import Facts, docker_unit_command

        command = docker_unit_command(self, Facts(self))
        keys = sorted({key for _, key, _ in command_conflicts(command, cfg)}) if command else []
        if keys:
            return ("the following directives are specified both as a flag and in the "
                    f"configuration file: {', '.join(keys)}")
        return None

    def _service(self, args: list[str]) -> tuple[int, str, str]:
        """SysV init script, as on a host whose PID 1 is not systemd."""
        return self._systemctl([args[1], "docker.service"])

    def _journalctl(self, args: list[str]) -> tuple[int, str, str]:
        return 0, "level=error msg=\"invalid log opt\"\n", ""

    def _dockerd(self, args: list[str]) -> tuple[int, str, str]:
        if args[0] == "--version":
            return 0, f"Docker version {self.docker_version}, build x\n", ""
        if not self.validate_supported:
            return 125, "", "unknown flag: --validate\n"
        return (1, "", self.validate_error) if self.validate_error else (0, "configuration OK", "")

    def _docker(self, args: list[str]) -> tuple[int, str, str]:  # noqa: PLR0911 - one branch per verb
        if args[0] == "compose":
            return 1, "", "not a docker command"
        if not self.running:
            return 1, "", "Cannot connect to the Docker daemon"
        if args[0] == "info":
            return 0, json.dumps({"ServerVersion": self.docker_version,
                                  "DockerRootDir": self.root_dir,
                                  "DriverStatus": self.driver_status}), ""
        if args[:2] == ["ps", "-aq"]:
            return 0, "\n".join(sorted(self.containers)), ""
        if args[:2] == ["image", "ls"]:
            if "--format" in args:
                return 0, "hostkit-tiny:1\n", ""
            return 0, "\n".join(sorted(self.images)), ""
        if args[:2] == ["volume", "ls"]:
            return 0, "\n".join(sorted(self.volumes)), ""
        if args[0] == "inspect":
            return 0, "".join(f"{c} true always\n" for c in args[3:]), ""
        if args[0] == "run":
            return 0, "OK\n", ""
        return 1, "", f"unsimulated docker {args}"

    def _rsync(self, args: list[str]) -> tuple[int, str, str]:
        if shutil.which("rsync") is None:
            # the copy is real: without rsync these tests say so instead of failing (on a
            # machine with only Python); CI installs rsync, and fails any skipped test
            pytest.skip("needs rsync: the simulated server copies with the real one")
        mapped = [str(self.path(a)) + ("/" if a.endswith("/") else "") if a.startswith("/")
                  else a for a in args]
        proc = subprocess.run(["rsync", *mapped], capture_output=True, text=True, check=False)
        return proc.returncode, proc.stdout, proc.stderr

    def _findmnt(self, args: list[str]) -> tuple[int, str, str]:
        if "-T" in args:
            return 0, f"{self.fstype} /\n", ""
        return 0, "".join(f"{m} {t}\n" for m, t in [("/", "ext4"), *self.extra_mounts]), ""

    def _du(self, args: list[str]) -> tuple[int, str, str]:
        real = self.path(args[-1])
        total = sum(p.stat().st_size for p in real.rglob("*") if p.is_file())
        return 0, f"{total}\t{args[-1]}\n", ""

    def _df(self, args: list[str]) -> tuple[int, str, str]:
        return 0, f"Avail\n{self.avail}\n", ""

    def _apt_get(self, args: list[str]) -> tuple[int, str, str]:
        """Installing a package brings the binary of the same name."""
        if args[0] == "install":
            self.binaries.update(a for a in args[1:] if not a.startswith("-"))
        return 0, "", ""

    _dnf = _apt_get

    def _ip(self, args: list[str]) -> tuple[int, str, str]:
        return 0, "1.1.1.1 via 10.0.0.1 dev eth0 src 10.0.0.5\n", ""

    def _firewall_cmd(self, args: list[str]) -> tuple[int, str, str]:  # noqa: PLR0911, PLR0912 - one branch per verb
        zones = self.runtime
        zone = "public"
        rest = []
        for a in args:
            if a == "--permanent":
                zones = self.permanent
            elif a.startswith("--zone="):
                zone = a.split("=", 1)[1]
            else:
                rest.append(a)
        op = rest[0]
        z = zones.setdefault(zone, Zone())
        name, _, value = op.partition("=")
        if name == "--state":
            return 0, "running\n", ""
        if name == "--get-default-zone":
            return 0, "public\n", ""
        if name == "--get-zones":
            return 0, " ".join(zones) + "\n", ""
        if name == "--query-interface":
            return (0, "yes", "") if value in z.interfaces else (1, "no", "")
        if name == "--query-port":
            return (0, "yes", "") if value in z.ports else (1, "no", "")
        if name == "--query-masquerade":
            return (0, "yes", "") if z.masquerade else (1, "no", "")
        if name in ("--add-interface", "--change-interface"):
            for other in zones.values():
                other.interfaces.discard(value)
            z.interfaces.add(value)
        elif name == "--remove-interface":
            z.interfaces.discard(value)
        elif name == "--add-port":
            z.ports.add(value)
        elif name == "--add-masquerade":
            z.masquerade = True
        else:
            return 2, "", f"unsimulated firewall-cmd {args}"
        return 0, "success\n", ""


def _refuse_bogus(cfg: dict[str, Any]) -> Optional[str]:
    """dockerd refuses a resolver that is not an IP address, like the real one."""
    for dns in cfg.get("dns", []):
        try:
            ipaddress.ip_address(dns)
        except ValueError:
            return f"failed to start daemon: {dns} is not an ip address"
    return None


def copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, symlinks=True)


class _SimDockerClient:
    """docker.DockerClient's `info` and `ping`, answered by the simulated daemon."""

    def __init__(self, sim: SimHost) -> None:
        self.sim = sim

    def ping(self) -> bool:
        return True

    def info(self) -> dict[str, Any]:
        _code, out, _err = self.sim._docker(["info"])
        info: dict[str, Any] = json.loads(out)
        return info
