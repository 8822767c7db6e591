"""The steps of `hostkit bootstrap`: distro, Docker install, firewalld, data-root, daemon.json.

Every step reads the host through the Host (commands and files), so unit tests drive
them with a fake host on a temporary root, and the integration test drives the same code
inside a systemd box with a real dockerd, firewalld and rsync.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import logging
import os
import re
import shlex
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Callable, Optional

from hostkit.daemon_config import (
    _FLAG_KEYS,
    DAEMON_JSON,
    DaemonOptions,
    conflicting_flags,
    daemon_json_text,
    find_type_problems,
    parse_daemon_json,
    render_daemon_json,
)
from hostkit.errors import HostkitError, UsageError
from hostkit.facts import Facts, docker_unit_text, version_tuple
from hostkit.host import CommandResult, LocalHost
from hostkit.settings import SETTINGS_FILE, render_settings_toml
from hostkit.steps import Change, StepNotReady

log = logging.getLogger("hostkit.bootstrap")

DROP_IN = "/etc/systemd/system/docker.service.d/hostkit.conf"
STATE_FILE = "/var/lib/hostkit/old-data-roots.json"
DEFAULT_DOCKER_ROOT = "/var/lib/docker"
RSYNC_FLAGS = ("-aHAXS", "--numeric-ids", "-x")
# Runtime mounts dockerd itself makes under its root while containers run; they are
# recreated on start and must not stop a relocation.
_RUNTIME_MOUNT = re.compile(
    r"/(overlay2|aufs|fuse-overlayfs)/[^/]+/merged$|/containers/[^/]+/mounts/|/netns/|"
    r"/plugins/[^/]+/propagated-mount$|/overlay2$|/btrfs$|/zfs/graph/")


# ---- a host that logs every command and can stream output ------------------------------

class BootstrapHost(LocalHost):
    """LocalHost that writes every command and its output to the run log.

    `run_streaming` exists for rsync's progress: `run` only returns when a command ends.
    """

    def run(self, argv: Sequence[str], **kwargs: Any) -> CommandResult:
        log.debug("$ %s", shlex.join(str(a) for a in argv))
        try:
            res = super().run(argv, **kwargs)
        except HostkitError as exc:
            log.debug("  -> %s", exc.message)
            raise
        log.debug("  -> exit %d\n%s%s", res.returncode, _indent(res.stdout), _indent(res.stderr))
        return res

    def run_streaming(self, argv: Sequence[str], on_line: Callable[[str], None],
                      timeout: float = 24 * 3600) -> CommandResult:
        """Run argv, calling on_line for each line or carriage-return-terminated chunk."""
        argv = [str(a) for a in argv]
        log.debug("$ %s", shlex.join(argv))
        try:
            # one stream: the user sees errors where they happen, in order with the output
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        except FileNotFoundError as exc:
            raise HostkitError(f"{argv[0]}: command not found") from exc
        assert proc.stdout is not None  # noqa: S101 - Popen with PIPE always sets it
        out: list[str] = []
        buf = b""
        deadline = time.monotonic() + timeout
        while True:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            buf += chunk
            parts = re.split(rb"[\r\n]", buf)
            buf = parts.pop()
            for part in parts:
                text = part.decode("utf-8", "replace")
                if text.strip():
                    out.append(text)
                    on_line(text)
            if time.monotonic() > deadline:
                proc.kill()
                raise HostkitError(f"`{shlex.join(argv)}` did not finish within {timeout:g}s")
        if buf.strip():
            text = buf.decode("utf-8", "replace")
            out.append(text)
            on_line(text)
        rc = proc.wait()
        # progress chunks are noise in the log; a password shown once must not be kept there
        lines = ["[a line mentioning a password, not logged]" if "password" in o.lower() else o
                 for o in out if "%" not in o]
        log.debug("  -> exit %d\n%s", rc, _indent("\n".join(lines[-50:])))
        return CommandResult(tuple(argv), rc, "\n".join(out), "")


def _indent(text: str) -> str:
    return "".join(f"     {line}\n" for line in text.rstrip().splitlines()) if text.strip() else ""


def run_streaming(host: LocalHost, argv: Sequence[str], on_line: Callable[[str], None],
                  timeout: float = 24 * 3600) -> CommandResult:
    """Stream when the host can; a plain host (tests) just runs the command."""
    streamer = getattr(host, "run_streaming", None)
    if streamer is not None:
        result: CommandResult = streamer(argv, on_line, timeout=timeout)
        return result
    return host.run(argv, timeout=timeout)


# ---- options ---------------------------------------------------------------------------

@dataclass(frozen=True)
class BootstrapOptions:
    """Everything the user chose on the command line."""

    data_root: Optional[str] = None
    dns: tuple[str, ...] = ("8.8.8.8",)
    log_max_size: str = "10m"
    log_max_file: str = "5"
    port: int = 9090
    force: bool = False
    docker_source: str = "distro"  # "distro" packages or Docker's own "docker" repo
    probe_image: Optional[str] = None
    probe_host: str = "deb.debian.org"

    def daemon_options(self, data_root: Optional[str] = None) -> DaemonOptions:
        return DaemonOptions(self.log_max_size, self.log_max_file, self.dns, data_root)


# ---- docker helpers --------------------------------------------------------------------

def docker_api_info(host: LocalHost, timeout: float = 15) -> Optional[dict[str, Any]]:
    """`docker info` as a dict, or None when the daemon does not answer."""
    if not host.which("docker"):
        return None
    try:
        res = host.run(["docker", "info", "--format", "{{json .}}"], timeout=timeout)
    except HostkitError:
        return None
    if not res.ok:
        return None
    try:
        info = json.loads(res.stdout)
    except json.JSONDecodeError:
        return None
    if not isinstance(info, dict) or not info.get("ServerVersion"):
        return None  # the CLI prints a partial object when the daemon is down
    return info


def docker_version(host: LocalHost) -> str:
    """The engine version, from the API when it answers, else from the dockerd binary."""
    info = docker_api_info(host)
    if info:
        return str(info.get("ServerVersion", ""))
    if host.which("dockerd"):
        res = host.run(["dockerd", "--version"], timeout=15)
        m = re.search(r"version\s+([0-9][^\s,]*)", res.stdout)
        if m:
            return m.group(1)
    return ""


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

    def restart(self) -> None:
        if self.init == "systemd":
            self.host.run(["systemctl", "restart", "docker.service"], timeout=180, check=True,
                          hint="see `journalctl -u docker`")
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
            time.sleep(1)

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


# ---- step 1: distro --------------------------------------------------------------------

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
        if d.family == "debian":
            env_pkgs = ["docker.io", "docker-compose"] if self.source == "distro" else [
                "docker-ce", "docker-ce-cli", "containerd.io", "docker-compose-plugin"]
            if not need_engine:
                env_pkgs = ["docker-compose"] if self.source == "distro" else [
                    "docker-compose-plugin"]
            cmds = [["apt-get", "update"],
                    ["apt-get", "install", "-y", "--no-install-recommends", *env_pkgs]]
            if self.source == "docker":
                cmds.insert(0, ["sh", "-c", _DEBIAN_DOCKER_REPO.format(id=d.id)])
            return cmds
        if d.family == "rhel" and d.package_manager in ("dnf", "yum"):
            pm = d.package_manager
            pkgs = ["docker-ce", "docker-ce-cli", "containerd.io", "docker-compose-plugin"]
            if not need_engine:
                pkgs = ["docker-compose-plugin"]
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


# ---- step 3: firewalld -----------------------------------------------------------------

class FirewalldStep:
    """docker0 in the right zone for this Docker version, and the public port open."""

    name = "firewalld"
    title = "firewalld zones and the public port"

    def __init__(self, port: int = 9090) -> None:
        self.port = port

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
        version = docker_version(host)
        if not version:
            raise StepNotReady("firewalld zones are checked once Docker is installed")
        changes = self._docker0_changes(host, version)
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


# ---- daemon.json + unit drop-in (shared by the relocation and daemon.json steps) -------

def strip_flags(exec_value: str, keys: set[str]) -> str:
    """An ExecStart command line without the dockerd flags that set `keys`."""
    bool_flags = {"--live-restore", "--iptables"}
    words = shlex.split(exec_value.lstrip("-@:+!"))
    out: list[str] = []
    skip = False
    for word in words:
        if skip:
            skip = False
            continue
        flag = word.split("=", 1)[0]
        if flag in _FLAG_KEYS and _FLAG_KEYS[flag] in keys:
            skip = "=" not in word and flag not in bool_flags
            continue
        out.append(word)
    return shlex.join(out)


@dataclass
class ConfigPlan:
    """The daemon.json and unit drop-in hostkit would write, next to what is there now."""

    existing_text: Optional[str]
    desired: dict[str, Any]
    desired_text: str
    dropin_text: Optional[str]  # None: no drop-in needed
    existing_dropin: Optional[str]
    type_problems: list[str] = field(default_factory=list)

    @property
    def config_changes(self) -> bool:
        if self.existing_text is None:
            return True
        return parse_daemon_json(self.existing_text) != self.desired

    @property
    def dropin_changes(self) -> bool:
        return self.dropin_text is not None and self.dropin_text != self.existing_dropin

    def diff(self) -> str:
        old = (self.existing_text or "").splitlines()
        new = self.desired_text.splitlines()
        lines = difflib.unified_diff(old, new, DAEMON_JSON, DAEMON_JSON + " (hostkit)",
                                     lineterm="", n=1)
        return "\n".join(list(lines)[2:])


def plan_config(host: LocalHost, facts: Facts, options: DaemonOptions) -> ConfigPlan:
    """Read daemon.json (a malformed one stops everything) and render the desired one."""
    existing_text = host.read_text(DAEMON_JSON) if host.exists(DAEMON_JSON) else None
    existing = parse_daemon_json(existing_text or "", DAEMON_JSON)
    desired = render_daemon_json(existing, options)
    problems = [f"{p.key}: {p.problem} (write {p.fix})" for p in find_type_problems(desired)]
    if problems:
        raise HostkitError(f"{DAEMON_JSON}: " + "; ".join(problems),
                           "dockerd would refuse this file; fix those keys by hand")
    text = docker_unit_text(host, facts)
    conflicts = conflicting_flags(text, desired)
    existing_dropin = host.read_text(DROP_IN) if host.exists(DROP_IN) else None
    dropin: Optional[str] = existing_dropin
    if conflicts:
        execs = [ln.strip()[len("ExecStart="):] for ln in re.sub(r"\\\n", " ", text).splitlines()
                 if ln.strip().startswith("ExecStart=") and ln.strip() != "ExecStart="]
        cleaned = strip_flags(execs[-1], {key for _, key in conflicts})
        flags = ", ".join(sorted({flag for flag, _ in conflicts}))
        dropin = (
            "# Written by hostkit. dockerd refuses to start when an option is given both as\n"
            f"# a flag and in {DAEMON_JSON} (moby#25471); {flags} now live in daemon.json.\n"
            "[Service]\nExecStart=\n"
            f"ExecStart={cleaned}\n")
    elif facts.init_system() != "systemd" and host.exists("/etc/default/docker"):
        opts = host.read_text("/etc/default/docker")
        for line in opts.splitlines():
            if line.strip().startswith("DOCKER_OPTS="):
                fake_unit = "ExecStart=/usr/bin/dockerd " + line.split("=", 1)[1].strip("'\" ")
                clash = conflicting_flags(fake_unit, desired)
                if clash:
                    raise HostkitError(
                        f"/etc/default/docker sets {', '.join(f for f, _ in clash)} in DOCKER_OPTS"
                        f", which {DAEMON_JSON} now sets too (dockerd would refuse to start)",
                        "remove those flags from DOCKER_OPTS")
    return ConfigPlan(existing_text, desired, daemon_json_text(desired), dropin, existing_dropin)


def validate_config(host: LocalHost, text: str) -> str:
    """Run `dockerd --validate` (Docker >= 23) on text; '' if accepted or not available."""
    if not host.which("dockerd"):
        return ""
    probe = "/etc/docker/.hostkit-validate.json"
    host.write_text(probe, text, mode=0o600, backup=False)
    try:
        res = host.run(["dockerd", "--validate", "--config-file", probe], timeout=60)
    finally:
        host.path(probe).unlink(missing_ok=True)
    output = (res.stderr + res.stdout).strip()
    if res.ok or "unknown flag" in output:
        return ""  # accepted, or a Docker older than 23 that cannot validate
    return output.splitlines()[-1] if output else f"exit {res.returncode}"


class ConfigTransaction:
    """Write daemon.json and the drop-in, remembering how to put the old ones back."""

    def __init__(self, host: LocalHost, facts: Facts, plan: ConfigPlan) -> None:
        self.host = host
        self.facts = facts
        self.plan = plan
        self.written = False
        self.backup: Optional[str] = None

    def write(self) -> None:
        problem = validate_config(self.host, self.plan.desired_text)
        if problem:
            raise HostkitError(f"dockerd --validate rejects the new {DAEMON_JSON}: {problem}",
                               f"{DAEMON_JSON} was left unchanged")
        self.written = True
        if self.plan.config_changes:
            self.host.makedirs("/etc/docker")
            self.backup = self.host.write_text(DAEMON_JSON, self.plan.desired_text, mode=0o644)
            if self.backup:
                log.info("backed up %s to %s", DAEMON_JSON, self.backup)
        if self.plan.dropin_changes and self.plan.dropin_text is not None:
            self.host.write_text(DROP_IN, self.plan.dropin_text, mode=0o644)
            DockerService(self.host, self.facts).daemon_reload()

    def undo(self) -> None:
        if not self.written:
            return
        if self.plan.config_changes:
            if self.plan.existing_text is None:
                self.host.path(DAEMON_JSON).unlink(missing_ok=True)
            else:
                self.host.write_text(DAEMON_JSON, self.plan.existing_text, backup=False)
        if self.plan.dropin_changes:
            if self.plan.existing_dropin is None:
                self.host.path(DROP_IN).unlink(missing_ok=True)
            else:
                self.host.write_text(DROP_IN, self.plan.existing_dropin, backup=False)
            DockerService(self.host, self.facts).daemon_reload()
        self.written = False


def _config_changes(plan: ConfigPlan, disruptive: bool, downtime: float) -> list[Change]:
    changes: list[Change] = []
    if plan.config_changes:
        changes.append(Change(f"write {DAEMON_JSON} (old one backed up) and restart Docker",
                              plan.diff(), disruptive, downtime))
    if plan.dropin_changes:
        changes.append(Change(f"move conflicting dockerd flags into {DROP_IN}",
                              plan.dropin_text or "", disruptive, downtime))
    return changes


# ---- step 4: data-root relocation ------------------------------------------------------

@dataclass(frozen=True)
class Preflight:
    """What the relocation found before touching anything."""

    old_root: str
    new_root: str
    used_bytes: int
    avail_bytes: int
    target_has_data: bool
    old_is_mountpoint: bool
    selinux: str


def _mounts(host: LocalHost) -> list[tuple[str, str]]:
    res = host.run(["findmnt", "-rn", "-o", "TARGET,FSTYPE"], timeout=30, check=True)
    out = []
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            # findmnt -r escapes spaces as \x20
            out.append((parts[0].replace("\\x20", " "), parts[1]))
    return out


def _fs_of(host: LocalHost, path: str) -> tuple[str, str]:
    """(fstype, mount target) of the filesystem holding path."""
    res = host.run(["findmnt", "-n", "-o", "FSTYPE,TARGET", "-T", path], timeout=30, check=True)
    parts = res.stdout.split(None, 1)
    return (parts[0], parts[1].strip()) if len(parts) == 2 else ("unknown", "/")


def _bytes(host: LocalHost, argv: list[str]) -> int:
    res = host.run(argv, timeout=1800, check=True)
    nums = re.findall(r"^\s*(\d+)", res.stdout, re.M)
    return int(nums[-1]) if nums else 0


_DOCKER_ROOT_ENTRIES = {"overlay2", "image", "containers", "volumes", "network", "buildkit",
                        "plugins", "swarm", "tmp", "runtimes", "trust", "aufs", "btrfs",
                        "vfs", "zfs", "fuse-overlayfs", "containerd"}


def _inside(child: str, parent: str) -> bool:
    return child == parent or child.startswith(parent.rstrip("/") + "/")


def relocation_preflight(host: LocalHost, facts: Facts, target: str,
                         old_root: str) -> Preflight:
    """Every reason to refuse a relocation, found before anything stops. UsageError each."""
    p = PurePosixPath(target)
    if not p.is_absolute():
        raise UsageError(f"--data-root {target}: not an absolute path",
                         f"give the full path, e.g. /srv/{p}")
    new_root = os.path.normpath(target)
    parent = str(PurePosixPath(new_root).parent)
    if not host.path(parent).is_dir():
        raise UsageError(f"--data-root {target}: parent directory {parent} does not exist",
                         f"create it (e.g. mount the new disk on {parent}) first")
    if _inside(new_root, old_root):
        raise UsageError(f"--data-root {target}: is inside the current Docker root {old_root}",
                         "choose a directory outside it, e.g. on another disk")
    if _inside(old_root, new_root):
        raise UsageError(f"--data-root {target}: contains the current Docker root {old_root}",
                         "choose a dedicated directory, e.g. /srv/docker")
    entries = host.listdir(new_root) if host.path(new_root).is_dir() else []
    if host.path(new_root).exists() and not host.path(new_root).is_dir():
        raise UsageError(f"--data-root {target}: exists and is not a directory",
                         "choose another path")
    foreign = [e for e in entries if e not in _DOCKER_ROOT_ENTRIES and e != "lost+found"]
    if foreign:
        raise UsageError(
            f"--data-root {target}: not empty and not a Docker root "
            f"(holds {', '.join(foreign[:3])}{'...' if len(foreign) > 3 else ''})",
            "choose an empty directory; hostkit never mixes Docker's data with other files")
    fstype, mnt = _fs_of(host, parent)
    if fstype in ("overlay", "aufs", "fuse.fuse-overlayfs"):
        raise UsageError(f"--data-root {target}: on an {fstype} filesystem, where overlay2 "
                         "cannot run", "use a directory on a real disk (ext4, xfs with ftype=1)")
    if fstype == "xfs":
        res = host.run(["xfs_info", mnt], timeout=30)
        if re.search(r"ftype=0", res.stdout):
            raise UsageError(f"--data-root {target}: xfs on {mnt} has ftype=0 (no d_type); "
                             "overlay2 refuses it", "use a filesystem made with "
                             "`mkfs.xfs -n ftype=1`, or ext4")
    mounts = _mounts(host)
    subs = [m for m, _ in mounts if _inside(m, old_root) and m != old_root
            and not _RUNTIME_MOUNT.search(m[len(old_root):])]
    if subs:
        raise UsageError(f"{subs[0]} is a separate mount under {old_root}; a copy with -x "
                         "would silently skip it",
                         "move that mount's data yourself, or unmount it, then retry")
    used = _bytes(host, ["du", "-sx", "-B1", old_root])
    already = _bytes(host, ["du", "-sx", "-B1", new_root]) if entries else 0
    avail = _bytes(host, ["df", "-B1", "--output=avail", parent])
    need = int(max(0, used - already) * 1.1)
    if avail < need:
        raise UsageError(f"--data-root {target}: {_gb(avail)} free on {mnt}, need {_gb(need)} "
                         f"({_gb(used)} used by {old_root} + 10%)",
                         "free space there or pick a larger filesystem")
    selinux = facts.selinux()
    if selinux in ("enforcing", "permissive") and not host.which("semanage"):
        raise UsageError(f"SELinux is {selinux} but semanage is missing: the new root could "
                         "not get Docker's labels",
                         "install policycoreutils-python-utils (dnf install -y "
                         "policycoreutils-python-utils)")
    old_is_mount = any(m == old_root for m, _ in mounts)
    return Preflight(old_root, new_root, used, avail, bool(entries), old_is_mount, selinux)


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.0f} MB"


def configured_root(host: LocalHost) -> str:
    """Docker's root as the API reports it (it wins over daemon.json, which may be stale)."""
    info = docker_api_info(host)
    if info is None:
        raise StepNotReady("data-root is checked once Docker is installed and running",
                           disruptive=True)
    return str(info.get("DockerRootDir") or DEFAULT_DOCKER_ROOT)


ProgressFactory = Callable[[str], Callable[[float], None]]


def _no_progress(_: str) -> Callable[[float], None]:
    return lambda _pct: None


class RelocateStep:
    """Move Docker's data root to --data-root with two rsync passes and a verified restart."""

    name = "data-root"
    title = "Docker data root"

    def __init__(self, target: Optional[str], options: BootstrapOptions,
                 progress: ProgressFactory = _no_progress) -> None:
        self.target = target
        self.options = options
        self.progress = progress
        self.preflight: Optional[Preflight] = None
        self.notes: list[str] = []

    def check(self, host: LocalHost, facts: Facts) -> list[Change]:
        if not self.target:
            self.title = "Docker data root: unchanged (no --data-root)"
            return []
        # Input errors are reported before Docker is even looked at.
        if not PurePosixPath(self.target).is_absolute():
            raise UsageError(f"--data-root {self.target}: not an absolute path",
                             f"give the full path, e.g. /srv/{self.target}")
        old = configured_root(host)
        target = os.path.normpath(self.target)
        self.title = f"Docker data root at {target}"
        if old == target:
            return []
        pre = relocation_preflight(host, facts, target, old)
        self.preflight = pre
        downtime = 15.0 + pre.used_bytes / 400e6 * 0.1  # stop/start + a small delta pass
        diff = (f"- data-root: {old}\n+ data-root: {target}\n"
                f"  first copy while Docker runs; Docker stopped only for the final delta pass;\n"
                f"  {old} is kept as {old}.hostkit-old-<time> until `hostkit cleanup`")
        if _uses_containerd_store(host):
            diff += ("\n  note: this Docker keeps images in containerd's store "
                     "(/var/lib/containerd), which data-root does not move (moby#50517)")
        return [Change(f"move Docker's data from {old} to {target} ({_gb(pre.used_bytes)})",
                       diff, disruptive=True, downtime_s=downtime)]

    def apply(self, host: LocalHost, facts: Facts, changes: Sequence[Change]) -> None:
        pre = self.preflight
        assert pre is not None  # noqa: S101 - check() always runs first and sets it
        relocate_data_root(host, facts, pre, options=self.options, progress=self.progress,
                           notes=self.notes)


def _uses_containerd_store(host: LocalHost) -> bool:
    info = docker_api_info(host) or {}
    status = info.get("DriverStatus") or []
    return any(isinstance(pair, list) and "io.containerd.snapshotter" in " ".join(map(str, pair))
               for pair in status)


def _rsync(host: LocalHost, src: str, dst: str, *, extra: Sequence[str], label: str,
           progress: ProgressFactory) -> CommandResult:
    update = progress(label)
    argv = ["rsync", *RSYNC_FLAGS, *extra, "--info=progress2", "--no-inc-recursive",
            f"{src.rstrip('/')}/", f"{dst.rstrip('/')}/"]

    def on_line(line: str) -> None:
        m = re.search(r"(\d+)%", line)
        if m:
            update(float(m.group(1)))

    res = run_streaming(host, argv, on_line)
    update(100.0)
    return res


def _record_old_root(host: LocalHost, entry: dict[str, str]) -> None:
    data: list[dict[str, str]] = []
    if host.exists(STATE_FILE):
        try:
            loaded = json.loads(host.read_text(STATE_FILE))
            data = loaded if isinstance(loaded, list) else []
        except json.JSONDecodeError:
            data = []
    data.append(entry)
    host.makedirs(str(PurePosixPath(STATE_FILE).parent))
    host.write_text(STATE_FILE, json.dumps(data, indent=2) + "\n", mode=0o600)


def relocate_data_root(host: LocalHost, facts: Facts, pre: Preflight, *,
                       options: BootstrapOptions, progress: ProgressFactory = _no_progress,
                       notes: Optional[list[str]] = None) -> None:
    """The relocation itself; on any failure Docker runs on the old root again."""
    notes = notes if notes is not None else []
    service = DockerService(host, facts)
    old, new = pre.old_root, pre.new_root
    if not host.path(new).exists():
        mode = host.stat(old).st_mode & 0o7777
        host.makedirs(new, mode=mode)
        os.chmod(host.path(new), mode)  # makedirs honours umask; Docker's root is 0710
    before = docker_inventory(host)
    log.info("inventory before: %d images, %d containers, %d volumes", len(before.images),
             len(before.containers), len(before.volumes))

    first = _rsync(host, old, new, extra=[], label="copy 1/2 (Docker running)",
                   progress=progress)
    # 24: files vanished while Docker ran; 23: some files changed mid-read. The delta pass
    # with Docker stopped picks up both.
    if first.returncode not in (0, 23, 24):
        raise HostkitError(f"first copy pass failed (rsync exit {first.returncode}): "
                           f"{_last(first.stderr or first.stdout)}",
                           "nothing was stopped; see the log")

    cfg = plan_config(host, facts, options.daemon_options(new))
    txn = ConfigTransaction(host, facts, cfg)
    moved_aside: Optional[str] = None
    t_stop = time.monotonic()
    service.stop()
    log.info("docker stopped")
    try:
        second = _rsync(host, old, new, extra=["--delete"],
                        label="copy 2/2 (Docker stopped)", progress=progress)
        if second.returncode != 0:
            raise HostkitError(f"final copy pass failed (rsync exit {second.returncode}): "
                               f"{_last(second.stderr or second.stdout)}")
        _verify_copy(host, old, new)
        rewritten = rewrite_volume_sources(host, old, new)
        if rewritten:
            log.info("pointed %d container volume mounts at the new root", rewritten)
        if pre.selinux in ("enforcing", "permissive"):
            _label_selinux(host, new)
        txn.write()
        if not pre.old_is_mountpoint:
            moved_aside = f"{old}.hostkit-old-{time.strftime('%Y%m%d-%H%M%S')}"
            # Moved, not copied or deleted: Docker provably no longer uses it, and it stays
            # whole until `hostkit cleanup`.
            host.rename(old, moved_aside)
        service.start()
        info = service.wait_api(90)
        if os.path.normpath(str(info.get("DockerRootDir"))) != new:
            raise HostkitError(f"Docker came back on {info.get('DockerRootDir')}, not {new}")
        _compare_inventory(before, docker_inventory(host))
    except BaseException as exc:
        _rollback(host, service, txn, old=old, moved_aside=moved_aside)
        if isinstance(exc, HostkitError):
            raise HostkitError(f"{exc.message}; rolled back: Docker runs on {old} again "
                               f"(the partial copy in {new} was left for inspection)",
                               exc.hint or f"see {service.journal_hint()}") from exc
        raise
    _report_moved(host, pre, moved_aside, time.monotonic() - t_stop, notes)
    _wait_restarted(host, before, notes)


def _report_moved(host: LocalHost, pre: Preflight, moved_aside: Optional[str], downtime: float,
                  notes: list[str]) -> None:
    log.info("docker API back after %.1fs of downtime", downtime)
    notes.append(f"Docker was down {downtime:.1f}s for the data-root move")
    if moved_aside:
        _record_old_root(host, {"path": moved_aside, "from": pre.old_root, "to": pre.new_root,
                                "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        notes.append(f"the old root is kept as {moved_aside}; `hostkit cleanup` removes it")
    else:
        notes.append(f"{pre.old_root} is a mount point and was left in place; remove its "
                     "contents yourself once you are happy")


def rewrite_volume_sources(host: LocalHost, old: str, new: str) -> int:
    """Point containers' recorded volume paths at the new root; returns how many changed.

    dockerd 20.10 keeps each volume mount's absolute Source in containers/*/config.v2.json
    and uses it on start: after a move, a restart=always container fails with "error
    evaluating symlinks from mount source /var/lib/docker/volumes/...", or, when the old
    root is left in place as the seed's recipe does, silently writes to the OLD copy.
    Only the copy is edited; the old root keeps the original files.
    """
    changed = 0
    for cfg in host.glob(f"{new}/containers", "*/config.v2.json"):
        try:
            data = json.loads(host.read_text(cfg))
        except json.JSONDecodeError:
            continue  # not ours to judge; dockerd reports it for that container
        mounts = data.get("MountPoints") if isinstance(data, dict) else None
        if not isinstance(mounts, dict):
            continue
        touched = False
        for mp in mounts.values():
            src = mp.get("Source") if isinstance(mp, dict) else None
            if isinstance(src, str) and _inside(src, old) and mp.get("Type", "volume") == "volume":
                mp["Source"] = new + src[len(old):]
                touched = True
                changed += 1
        if touched:
            mode = host.stat(cfg).st_mode & 0o777
            host.write_text(cfg, json.dumps(data, separators=(",", ":")), mode=mode,
                            backup=False)
    return changed


def _verify_copy(host: LocalHost, old: str, new: str) -> None:
    """A dry-run rsync of the same copy must find nothing left to do."""
    check = host.run(["rsync", *RSYNC_FLAGS, "--delete", "-n", "-i", f"{old}/", f"{new}/"],
                     timeout=3600)
    diffs = [ln for ln in check.stdout.splitlines() if ln.strip()]
    if check.returncode != 0 or diffs:
        raise HostkitError(f"verification found {len(diffs)} differences after the copy "
                           f"(first: {diffs[0] if diffs else _last(check.stderr)})")


def _compare_inventory(before: Inventory, after: Inventory) -> None:
    lost = {"images": before.images - after.images,
            "containers": before.containers - after.containers,
            "volumes": before.volumes - after.volumes}
    if any(lost.values()):
        raise HostkitError("Docker on the new root is missing " + ", ".join(
            f"{len(v)} {k} ({', '.join(sorted(x[:12] for x in v)[:3])})"
            for k, v in lost.items() if v))


def _wait_restarted(host: LocalHost, before: Inventory, notes: list[str]) -> None:
    """restart=always containers come back by themselves; say so if one does not."""
    deadline = time.monotonic() + 30
    while True:
        now = docker_inventory(host)
        missing = before.running_restart - now.running_restart
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(1)
    if missing:
        notes.append(f"{len(missing)} restart=always containers are not running again yet: "
                     + ", ".join(sorted(m[:12] for m in missing)))


def _label_selinux(host: LocalHost, new: str) -> None:
    listing = host.run(["semanage", "fcontext", "-l", "-C"], timeout=120)
    if not re.search(rf"^{re.escape(new)}\s*=\s*{re.escape(DEFAULT_DOCKER_ROOT)}\s*$",
                     listing.stdout, re.M):
        host.run(["semanage", "fcontext", "-a", "-e", DEFAULT_DOCKER_ROOT, new], timeout=300,
                 check=True)
    host.run(["restorecon", "-R", new], timeout=3600, check=True)


def _rollback(host: LocalHost, service: DockerService, txn: ConfigTransaction, *,
              old: str, moved_aside: Optional[str]) -> None:
    log.warning("rolling back the data-root move")
    try:
        service.stop()
    except HostkitError as exc:
        log.warning("stop during rollback: %s", exc.message)
    txn.undo()
    if moved_aside and host.exists(moved_aside) and not host.exists(old):
        host.rename(moved_aside, old)
    elif moved_aside and host.exists(moved_aside):
        # something created the old path meanwhile: keep both, put ours back first
        host.rename(old, f"{old}.hostkit-empty-{int(time.time())}")
        host.rename(moved_aside, old)
    service.start()
    service.wait_api(90)
    log.warning("rolled back: Docker runs on %s", old)


def _last(text: str) -> str:
    """The line that says why: rsync's own error lines win over its progress output."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("rsync") or "error" in ln.lower()]
    pick = errors or lines
    return pick[-1][:300] if pick else "no output"


# ---- step 5: daemon.json ---------------------------------------------------------------

class DaemonJsonStep:
    """daemon.json merged with hostkit's keys, accepted by dockerd, flags out of the unit."""

    name = "daemon-json"
    title = f"{DAEMON_JSON}: log rotation, DNS, no flag conflicts"

    def __init__(self, options: BootstrapOptions) -> None:
        self.options = options
        self._plan: Optional[ConfigPlan] = None

    def check(self, host: LocalHost, facts: Facts) -> list[Change]:
        # data-root is the relocation step's key: here it is kept as it is
        plan = plan_config(host, facts, self.options.daemon_options(None))
        self._plan = plan
        running = docker_api_info(host) is not None
        return _config_changes(plan, disruptive=running, downtime=10.0)

    def apply(self, host: LocalHost, facts: Facts, changes: Sequence[Change]) -> None:
        plan = self._plan
        assert plan is not None  # noqa: S101 - check() always runs first and sets it
        apply_config_with_restart(host, facts, plan)


def apply_config_with_restart(host: LocalHost, facts: Facts, plan: ConfigPlan) -> None:
    """Write the config, restart Docker, and put the old config back if it will not start."""
    service = DockerService(host, facts)
    txn = ConfigTransaction(host, facts, plan)
    txn.write()
    try:
        service.restart()
        service.wait_api(60)
    except HostkitError as exc:
        why = service.failure_tail() or exc.message
        log.warning("dockerd refused the new config: %s", why)
        with contextlib.suppress(HostkitError):
            service.stop()
        txn.undo()
        service.start()
        service.wait_api(90)
        raise HostkitError(f"dockerd did not start with the new {DAEMON_JSON} ({why}); "
                           "rolled back to the old config, Docker is running",
                           "the old file is back in place; see the log") from exc



# ---- the site's settings, for later `hostkit doctor` runs -------------------------------

class SiteSettingsStep:
    """Record what bootstrap set up, so a later `hostkit doctor` checks against it."""

    name = "settings"
    title = f"{SETTINGS_FILE}: what the doctor checks against"

    def __init__(self, updates: dict[str, Any]) -> None:
        self.updates = updates
        self._text = ""

    def check(self, host: LocalHost, facts: Facts) -> list[Change]:
        existing = host.read_text(SETTINGS_FILE) if host.exists(SETTINGS_FILE) else ""
        self._text = render_settings_toml(existing, self.updates)  # bad TOML: UsageError
        if self._text == existing:
            return []
        diff = "\n".join(list(difflib.unified_diff(existing.splitlines(), self._text.splitlines(),
                                                   SETTINGS_FILE, SETTINGS_FILE + " (hostkit)",
                                                   lineterm="", n=0))[2:])
        return [Change(f"record {', '.join(sorted(self.updates))}", diff)]

    def apply(self, host: LocalHost, facts: Facts, changes: Sequence[Change]) -> None:
        host.write_text(SETTINGS_FILE, self._text, mode=0o644, backup=True)
