"""Facts about a host, each gathered at most once per run (probes share them)."""

from __future__ import annotations

import functools
import json
import re
import threading
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional, TypeVar

import psutil

from hostkit import firewalld
from hostkit.daemon_config import (
    UnitCommand,
    exec_start_argv,
    parse_environment_assignments,
    parse_environment_file,
    parse_systemctl_show,
    unit_settings,
)
from hostkit.distros import DistroInfo, detect_distro
from hostkit.errors import HostkitError
from hostkit.firewalld import FirewalldInfo
from hostkit.host import LocalHost

T = TypeVar("T")


def _once(method: Callable[[Facts], T]) -> Callable[[Facts], T]:
    """Compute a fact once, even when many probe threads ask at the same moment.

    A failure is remembered too, so a daemon that hangs costs one timeout, not one per check.
    """
    name = method.__name__

    @functools.wraps(method)
    def wrapper(self: Facts) -> T:
        with self._locks.setdefault(name, threading.Lock()):
            if name not in self._cache:
                try:
                    self._cache[name] = (True, method(self))
                except HostkitError as exc:
                    self._cache[name] = (False, exc)
            ok, value = self._cache[name]
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    return wrapper


UNIT_DIRS = ("/usr/lib/systemd/system", "/lib/systemd/system", "/etc/systemd/system")


def docker_unit_files(host: LocalHost, facts: Facts) -> list[tuple[str, str]]:
    """(path, text) of docker.service and its drop-ins, in the order systemd reads them."""
    if facts.init_system() != "systemd":
        return []
    paths: list[str] = []
    if host.which("systemctl"):
        res = host.run(["systemctl", "show", "-p", "FragmentPath", "-p", "DropInPaths",
                        "docker.service"], timeout=30)
        props = parse_systemctl_show(res.stdout if res.ok else "")
        paths = [p for v in props.get("FragmentPath", []) + props.get("DropInPaths", [])
                 for p in v.split()]
    else:
        for directory in UNIT_DIRS:  # later directories override earlier ones
            if host.exists(f"{directory}/docker.service"):
                paths = [f"{directory}/docker.service"]
        dropins: dict[str, str] = {}
        for directory in (*UNIT_DIRS, "/run/systemd/system"):
            for path in host.glob(f"{directory}/docker.service.d", "*.conf"):
                dropins[path.rsplit("/", 1)[1]] = path  # same name: the later directory wins
        paths += [dropins[name] for name in sorted(dropins)]
    files = []
    for path in paths:
        try:
            files.append((path, host.read_text(path)))
        except HostkitError:
            continue
    return files


def docker_unit_command(host: LocalHost, facts: Facts) -> Optional[UnitCommand]:
    """docker.service's effective dockerd command, with its environment; None without one.

    `systemctl show -p ExecStart` (its argv[]) is the authority where systemctl runs; the
    unit files are read for which of them sets it, and for a host under a temporary root.
    $VARIABLES come from Environment= and the EnvironmentFile= files (Debian's docker.io
    unit reads DOCKER_OPTS from /etc/default/docker), files winning as in systemd.
    """
    files = docker_unit_files(host, facts)
    if not files:
        return None
    argv, source, environment, env_files = unit_settings(files)
    if host.which("systemctl"):
        res = host.run(["systemctl", "show", "-p", "ExecStart", "-p", "Environment",
                        "-p", "EnvironmentFiles", "docker.service"], timeout=30)
        props = parse_systemctl_show(res.stdout if res.ok else "")
        shown = exec_start_argv(" ".join(props.get("ExecStart", [])))
        if shown:
            argv = shown
            environment = props.get("Environment", [])
            env_files = [re.sub(r" \(ignore_errors=\w+\)$", "", v)
                         for v in props.get("EnvironmentFiles", []) if v]
    env = parse_environment_assignments(environment)
    origin: dict[str, str] = {}
    for entry in env_files:
        path = entry.lstrip("-")
        if not host.exists(path):
            continue  # `-` (ignore_errors) in front, or systemd refuses to start: not ours
        values = parse_environment_file(host.read_text(path))
        env.update(values)
        origin.update(dict.fromkeys(values, path))
    return UnitCommand(tuple(argv), source, tuple(env.items()), tuple(origin.items()))


def version_tuple(text: str) -> tuple[int, int, int]:
    """'20.10.24+dfsg1' -> (20, 10, 24); missing or unparsable parts count as 0."""
    parts = [int(p) for p in re.findall(r"\d+", re.split(r"[+-]", text, maxsplit=1)[0])[:3]]
    parts += [0] * (3 - len(parts))
    return parts[0], parts[1], parts[2]


@dataclass(frozen=True)
class ComposeInfo:
    flavour: str  # "v2" (docker compose plugin) or "v1" (docker-compose)
    argv: tuple[str, ...]
    version: str


class Facts:
    """Lazily gathered, cached facts about one host."""

    def __init__(self, host: LocalHost, docker_timeout: float = 8):
        self.host = host
        self.docker_timeout = docker_timeout
        self._cache: dict[str, tuple[bool, Any]] = {}
        # dict.setdefault is atomic in CPython, so two threads always share one lock per fact
        self._locks: dict[str, threading.Lock] = {}

    def forget_docker(self) -> None:
        """Read the daemon again next time: it was stopped, started or reconfigured."""
        for name in ("docker_client", "docker_info", "docker_version", "dockerd_version"):
            with self._locks.setdefault(name, threading.Lock()):
                self._cache.pop(name, None)

    # ---- system ------------------------------------------------------------------
    @_once
    def distro(self) -> DistroInfo:
        for candidate in ("/etc/os-release", "/usr/lib/os-release"):
            if self.host.exists(candidate):
                return detect_distro(str(self.host.path(candidate)))
        return DistroInfo(
            "", "", "unknown", "unknown", None, False, "unsupported: no /etc/os-release on this host"
        )

    @_once
    def init_system(self) -> str:
        """'systemd' when PID 1 is systemd, otherwise 'sysvinit' (init.d scripts) or 'none'."""
        try:
            comm = self.host.read_text("/proc/1/comm").strip()
        except HostkitError:
            comm = ""
        if comm == "systemd":
            return "systemd"
        return "sysvinit" if self.host.exists("/etc/init.d") else "none"

    @_once
    def selinux(self) -> str:
        """'enforcing', 'permissive' or 'disabled'."""
        if not self.host.exists("/sys/fs/selinux/enforce"):
            return "disabled"
        try:
            flag = self.host.read_text("/sys/fs/selinux/enforce").strip()
        except HostkitError:
            return "unknown"
        return "enforcing" if flag == "1" else "permissive"

    @_once
    def is_root(self) -> bool:
        return self.host.is_root()

    @_once
    def resources(self) -> dict[str, Any]:
        vm = psutil.virtual_memory()
        return {
            "cpus": psutil.cpu_count() or 1,
            "memory_bytes": vm.total,
            "memory_available_bytes": vm.available,
        }

    # ---- docker ------------------------------------------------------------------
    @_once
    def docker_binary(self) -> Optional[str]:
        return self.host.which("docker")

    @_once
    def docker_client(self) -> Any:
        return self.host.docker(timeout=self.docker_timeout)

    @_once
    def docker_info(self) -> dict[str, Any]:
        try:
            info: dict[str, Any] = self.docker_client().info()
        except HostkitError:
            raise
        except Exception as exc:
            raise HostkitError(f"`docker info` failed: {exc}") from exc
        return info

    @_once
    def docker_version(self) -> str:
        info = self.docker_info()
        return str(info.get("ServerVersion", ""))

    @_once
    def dockerd_version(self) -> Optional[tuple[int, int, int]]:
        """The installed engine's version: the running daemon's, else `dockerd --version`."""
        try:
            return version_tuple(self.docker_version())
        except HostkitError:
            pass
        if not self.host.which("dockerd"):
            return None
        res = self.host.run(["dockerd", "--version"], timeout=15)
        found = re.search(r"version v?(\d+\.\d+[.\d]*)", res.stdout)
        return version_tuple(found.group(1)) if res.ok and found else None

    @_once
    def compose(self) -> Optional[ComposeInfo]:
        """The compose the host has: the v2 plugin is preferred over the v1 binary."""
        if self.docker_binary():
            try:
                res = self.host.run(["docker", "compose", "version", "--short"], timeout=15)
                if res.ok and res.stdout.strip():
                    return ComposeInfo("v2", ("docker", "compose"), res.stdout.strip())
            except HostkitError:
                pass
        if self.host.which("docker-compose"):
            res = self.host.run(["docker-compose", "version", "--short"], timeout=15)
            if res.ok:
                return ComposeInfo("v1", ("docker-compose",), res.stdout.strip())
        return None

    @_once
    def probe_image(self) -> str:
        """hostkit's own tiny image for throwaway containers, imported on first use."""
        from hostkit.probe_image import ensure_probe_image

        return ensure_probe_image(self.host, self.docker_client())

    def resolver_answers(self, server: str, name: str) -> str:
        """'' when server answers for name asked directly, else why not (asked once per run)."""
        with self._locks.setdefault("resolver_answers", threading.Lock()):
            answers: dict[tuple[str, str], str] = self._cache.setdefault(
                "resolver_answers", (True, {}))[1]
            if (server, name) not in answers:
                try:
                    self.host.ask_dns(server, name)
                    answers[(server, name)] = ""
                except HostkitError as exc:
                    answers[(server, name)] = exc.message
            return answers[(server, name)]

    # ---- firewall ----------------------------------------------------------------
    @_once
    def firewalld(self) -> FirewalldInfo:
        """State and backend, over D-Bus when there is a bus (ms), else with firewall-cmd."""
        return firewalld.observe_state(self.host)

    @_once
    def firewalld_docker0_zone(self) -> str:
        return firewalld.zone_of_interface(self.host, self.firewalld(), "docker0")

    @_once
    def firewalld_default_zone_ports(self) -> tuple[str, tuple[str, ...]]:
        return firewalld.default_zone_ports(self.host, self.firewalld())

    def summary(self) -> dict[str, Any]:
        """Everything, for `hostkit facts`; a fact that could not be read shows its error."""
        out: dict[str, Any] = {}
        for key, getter in (
            ("distro", lambda: asdict(self.distro())),
            ("init_system", self.init_system),
            ("selinux", self.selinux),
            ("root", self.is_root),
            ("resources", self.resources),
            ("docker_version", self.docker_version),
            ("docker_root_dir", lambda: self.docker_info().get("DockerRootDir")),
            ("storage_driver", lambda: self.docker_info().get("Driver")),
            ("compose", lambda: asdict(c) if (c := self.compose()) else None),
            ("firewalld", lambda: asdict(self.firewalld())),
            ("disks", _disks),
        ):
            try:
                out[key] = getter()
            except HostkitError as exc:
                out[key] = {"error": exc.message}
        return out


def _disks() -> list[dict[str, Any]]:
    disks = []
    for part in psutil.disk_partitions(all=False):
        try:
            usage = psutil.disk_usage(part.mountpoint)
        except OSError:
            continue
        disks.append(
            {
                "mountpoint": part.mountpoint,
                "fstype": part.fstype,
                "total_bytes": usage.total,
                "free_bytes": usage.free,
            }
        )
    return disks


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, default=str)
