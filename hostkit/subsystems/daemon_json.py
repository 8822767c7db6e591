"""daemon.json and the docker.service drop-in: plan, validate, write with a way back."""

from __future__ import annotations

import contextlib
import difflib
import json
import logging
import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Optional

from hostkit.daemon_config import (
    _FLAG_KEYS,
    BOM,
    DAEMON_JSON,
    DEFAULT_DATA_ROOT,
    ROTATING_DRIVERS,
    DaemonOptions,
    UnitCommand,
    command_conflicts,
    daemon_json_text,
    find_type_problems,
    parse_daemon_json,
    parse_environment_file,
    render_daemon_json,
)
from hostkit.errors import HostkitError
from hostkit.facts import UNIT_DIRS, Facts, docker_unit_command
from hostkit.host import LocalHost
from hostkit.steps import Change
from hostkit.subsystems.dns import choose_dns
from hostkit.subsystems.docker_service import DockerService, docker_api_info

log = logging.getLogger("hostkit.bootstrap")

DROP_IN_DIR = "/etc/systemd/system/docker.service.d"
# `zz-` so it sorts after override.conf (what `systemctl edit docker` writes) and any
# other drop-in a site is likely to have: the last ExecStart= read is the one that runs.
DROP_IN = f"{DROP_IN_DIR}/zz-hostkit.conf"
LEGACY_DROP_IN = f"{DROP_IN_DIR}/hostkit.conf"


def strip_flags(exec_value: str, keys: set[str]) -> str:
    """An ExecStart command line without the dockerd flags that set `keys`."""
    return shlex.join(_without_flags(shlex.split(exec_value.lstrip("-@:+!")), keys))


def _without_flags(words: Sequence[str], keys: set[str]) -> list[str]:
    bool_flags = {"--live-restore", "--iptables"}
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
    return out


@dataclass
class ConfigPlan:
    """The daemon.json and unit drop-in hostkit would write, next to what is there now."""

    existing_text: Optional[str]
    desired: dict[str, Any]
    desired_text: str
    dropin_text: Optional[str]  # None: no drop-in needed
    existing_dropin: Optional[str]
    type_problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # choices made for the admin, said in the plan
    legacy_dropin: Optional[str] = None  # the old hostkit.conf, replaced by zz-hostkit.conf

    @property
    def config_changes(self) -> bool:
        if self.existing_text is None:
            return True
        existing: dict[str, Any] = json.loads(self.existing_text.lstrip(BOM).strip() or "{}")
        return existing != self.desired

    @property
    def dropin_changes(self) -> bool:
        return (self.dropin_text is not None and self.dropin_text != self.existing_dropin) \
            or self.legacy_dropin is not None

    def diff(self) -> str:
        old = (self.existing_text or "").splitlines()
        new = self.desired_text.splitlines()
        lines = difflib.unified_diff(old, new, DAEMON_JSON, DAEMON_JSON + " (hostkit)",
                                     lineterm="", n=1)
        return "\n".join(list(lines)[2:])


def _read(host: LocalHost, path: str) -> Optional[str]:
    return host.read_text(path) if host.exists(path) else None


def _dropin_exec(text: Optional[str]) -> Optional[str]:
    """The ExecStart= an earlier hostkit drop-in set (it keeps the unit's flags out)."""
    lines = [ln.strip()[len("ExecStart="):] for ln in re.sub(r"\\\n", " ", text or "")
             .splitlines() if ln.strip().startswith("ExecStart=")]
    return lines[-1] if lines and lines[-1] else None


def _unit_conflicts(host: LocalHost, facts: Facts,
                    desired: dict[str, Any]) -> tuple[Optional[UnitCommand], set[str]]:
    """The keys to take off the effective ExecStart; refuse what a drop-in cannot fix."""
    command = docker_unit_command(host, facts)
    if command is None:
        return None, set()
    conflicts = command_conflicts(command, desired)
    for flag, key, where in conflicts:
        if where != command.source:  # from an environment file: a drop-in cannot win there
            raise HostkitError(
                f"{where} sets {flag} for dockerd, and {DAEMON_JSON} sets {key}: dockerd "
                "would refuse to start", f"remove {flag} from {where.split(' ')[0]} (keep the "
                "setting in daemon.json), then run bootstrap again")
    winner = command.source.rsplit("/", 1)[-1]
    if conflicts and command.source.startswith(tuple(f"{d}/docker.service.d" for d in
                                                     (*UNIT_DIRS, "/run/systemd/system"))) \
            and winner > DROP_IN.rsplit("/", 1)[1] and command.source != DROP_IN:
        raise HostkitError(
            f"{command.source} sets dockerd's command line with "
            f"{', '.join(c[0] for c in conflicts)} and sorts after hostkit's {DROP_IN}",
            f"remove those flags from {command.source}, or rename it to sort before "
            "zz-hostkit.conf")
    return command, {key for _, key, _ in conflicts}


def render_dropin(data_root: Optional[str], exec_start: Optional[str]) -> Optional[str]:
    """hostkit's docker.service drop-in: the data-root's mount first, an ExecStart without
    the flags daemon.json now carries (moby#25471); None when neither is needed."""
    lines = ["# Written by hostkit (hostkit bootstrap)."]
    if data_root and os.path.normpath(data_root) != DEFAULT_DATA_ROOT:
        lines += ["# dockerd must not start on an empty directory before its disk is mounted.",
                  "[Unit]", f"RequiresMountsFor={data_root}"]
    if exec_start:
        lines += [f"# dockerd refuses an option given both as a flag and in {DAEMON_JSON}.",
                  "[Service]", "ExecStart=", f"ExecStart={exec_start}"]
    return "\n".join(lines) + "\n" if len(lines) > 1 else None


def plan_config(host: LocalHost, facts: Facts, options: DaemonOptions) -> ConfigPlan:
    """Read daemon.json (a malformed one stops everything) and render the desired one."""
    existing_text = _read(host, DAEMON_JSON)
    existing = parse_daemon_json(existing_text or "", DAEMON_JSON, facts.dockerd_version())
    options, notes = choose_dns(host, facts, options, existing)
    desired = render_daemon_json(existing, options)
    problems = [f"{p.key}: {p.problem} (write {p.fix})" for p in find_type_problems(desired)]
    if problems:
        raise HostkitError(f"{DAEMON_JSON}: " + "; ".join(problems),
                           "dockerd would refuse this file; fix those keys by hand")
    command, keys = _unit_conflicts(host, facts, desired)
    existing_dropin = _read(host, DROP_IN)
    legacy = _read(host, LEGACY_DROP_IN)
    exec_start = _dropin_exec(existing_dropin) or _dropin_exec(legacy)
    if keys and command is not None:
        exec_start = " ".join(shlex.quote(w) if " " in w else w
                              for w in _without_flags(command.argv, keys))
    root = desired.get("data-root")
    dropin = render_dropin(root if isinstance(root, str) else None, exec_start)
    if dropin is None:
        dropin = existing_dropin if existing_dropin is not None else legacy
    if facts.init_system() != "systemd" and host.exists("/etc/default/docker"):
        _sysv_docker_opts(host, desired)
    return ConfigPlan(existing_text, desired, daemon_json_text(desired), dropin,
                      existing_dropin, notes=notes, legacy_dropin=legacy)


def _sysv_docker_opts(host: LocalHost, desired: dict[str, Any]) -> None:
    """The init script passes DOCKER_OPTS to dockerd: a flag there must not clash either."""
    env = parse_environment_file(host.read_text("/etc/default/docker"))
    command = UnitCommand(("/usr/bin/dockerd", "$DOCKER_OPTS"), "/etc/init.d/docker",
                          tuple(env.items()), (("DOCKER_OPTS", "/etc/default/docker"),))
    clash = command_conflicts(command, desired)
    if clash:
        raise HostkitError(
            f"/etc/default/docker sets {', '.join(c[0] for c in clash)} in DOCKER_OPTS"
            f", which {DAEMON_JSON} now sets too (dockerd would refuse to start)",
            "remove those flags from DOCKER_OPTS")


def validate_config(host: LocalHost, text: str) -> str:
    """Run `dockerd --validate` (Docker >= 23) on text; '' if accepted or not available."""
    if not host.which("dockerd"):
        return ""
    probe = "/etc/docker/.hostkit-validate.json"
    host.write_text(probe, text, mode=0o600, backup=False)
    try:
        res = host.run(["dockerd", "--validate", "--config-file", probe], timeout=60)
    finally:
        host.unlink(probe)
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
        if self.plan.dropin_changes:
            if self.plan.dropin_text is not None:
                # hostkit's own file, kept in memory for undo: no .bak beside the drop-ins
                self.host.write_text(DROP_IN, self.plan.dropin_text, mode=0o644, backup=False)
            if self.plan.legacy_dropin is not None:
                self.host.unlink(LEGACY_DROP_IN)  # its content lives on in zz-hostkit.conf
            DockerService(self.host, self.facts).daemon_reload()

    def undo(self) -> None:
        if not self.written:
            return
        if self.plan.config_changes:
            if self.plan.existing_text is None:
                self.host.unlink(DAEMON_JSON)
            else:
                self.host.write_text(DAEMON_JSON, self.plan.existing_text, backup=False)
        if self.plan.dropin_changes:
            if self.plan.existing_dropin is None:
                self.host.unlink(DROP_IN)
            else:
                self.host.write_text(DROP_IN, self.plan.existing_dropin, backup=False)
            if self.plan.legacy_dropin is not None:
                self.host.write_text(LEGACY_DROP_IN, self.plan.legacy_dropin, backup=False)
            DockerService(self.host, self.facts).daemon_reload()
        self.written = False


def _config_changes(plan: ConfigPlan, disruptive: bool, downtime: float) -> list[Change]:
    changes: list[Change] = []
    if plan.config_changes:
        why = "".join(f" ({note})" for note in plan.notes)
        changes.append(Change(f"write {DAEMON_JSON} (old one backed up) and restart Docker{why}",
                              plan.diff(), disruptive, downtime))
    if plan.dropin_changes:
        what = [w for w, there in (("RequiresMountsFor=", "RequiresMountsFor="),
                                   ("an ExecStart without the flags daemon.json sets",
                                    "ExecStart=/")) if there in (plan.dropin_text or "")]
        moved = f" (replaces {LEGACY_DROP_IN})" if plan.legacy_dropin is not None else ""
        changes.append(Change(f"write {DROP_IN}: {' and '.join(what) or 'hostkit settings'}"
                              f"{moved}", plan.dropin_text or "", disruptive, downtime))
    return changes


def recorded_settings(desired: dict[str, Any]) -> dict[str, Any]:
    """What daemon.json really puts in effect, for the site settings the doctor reads."""
    found: dict[str, Any] = {}
    if desired.get("dns"):
        found["dns"] = list(desired["dns"])
    opts = desired.get("log-opts")
    if desired.get("log-driver", "json-file") in ROTATING_DRIVERS and isinstance(opts, dict):
        found.update({f"log_{k.replace('-', '_')}": str(opts[k])
                      for k in ("max-size", "max-file") if k in opts})
    return found



class DaemonJsonStep:
    """daemon.json merged with hostkit's keys, accepted by dockerd, flags out of the unit."""

    name = "daemon-json"
    title = f"{DAEMON_JSON}: log rotation, DNS, no flag conflicts"

    def __init__(self, options: DaemonOptions,
                 recorded: Optional[dict[str, Any]] = None) -> None:
        self.options = options
        self.recorded = recorded if recorded is not None else {}
        self._plan: Optional[ConfigPlan] = None

    def check(self, host: LocalHost, facts: Facts) -> list[Change]:
        # data-root is the relocation step's key: here it is kept as it is
        plan = plan_config(host, facts, replace(self.options, data_root=None))
        self._plan = plan
        for key in ("dns", "log_max_size", "log_max_file"):
            self.recorded.pop(key, None)
        self.recorded.update(recorded_settings(plan.desired))
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


def read_dns(host: LocalHost) -> Optional[list[str]]:
    """daemon.json's dns now (None: unset, or a file that does not parse)."""
    try:
        config = parse_daemon_json(_read(host, DAEMON_JSON) or "", DAEMON_JSON, (99, 0, 0))
    except HostkitError:
        return None
    dns = config.get("dns")
    return [str(d) for d in dns] if isinstance(dns, list) and dns else None


def restore_dns(host: LocalHost, facts: Facts, previous: Optional[list[str]]) -> bool:
    """Put daemon.json's dns back to `previous` and restart Docker; False if nothing differs."""
    text = _read(host, DAEMON_JSON)
    current = parse_daemon_json(text or "", DAEMON_JSON, facts.dockerd_version())
    desired = dict(current)
    if previous:
        desired["dns"] = list(previous)
    else:
        desired.pop("dns", None)
    if desired == current:
        return False
    dropin = _read(host, DROP_IN)
    plan = ConfigPlan(text, desired, daemon_json_text(desired), dropin, dropin)
    apply_config_with_restart(host, facts, plan)
    return True

