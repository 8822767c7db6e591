"""Docker's daemon.json: parse it with precise errors, and find what dockerd would refuse.

Everything here is pure: text in, data out. Reading and writing the file is the Host's job.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from typing import Any, Optional

from hostkit.errors import HostkitError, UsageError

DAEMON_JSON = "/etc/docker/daemon.json"


class DaemonJsonError(HostkitError):
    """daemon.json is not valid JSON; carries the line and column like a compiler would."""

    def __init__(self, path: str, line: int, column: int, problem: str) -> None:
        super().__init__(
            f"{path}:{line}:{column}: {problem}",
            "fix the JSON by hand (dockerd will not start with it); hostkit leaves it untouched",
        )
        self.path = path
        self.line = line
        self.column = column


BOM = "\ufeff"
# dockerd strips a UTF-8 byte order mark since 23.0 (moby#44770, backported as moby#44777);
# 20.10 refuses the file with "invalid character 'ï' looking for beginning of value".
BOM_ACCEPTED_SINCE = (23, 0, 0)
REMOVE_BOM = "sed -i '1s/^\\xEF\\xBB\\xBF//' " + DAEMON_JSON


class DaemonJsonBomError(DaemonJsonError):
    """daemon.json starts with a UTF-8 BOM that the installed dockerd does not accept."""

    def __init__(self, path: str, docker_version: Optional[tuple[int, int, int]]) -> None:
        which = (f"Docker {'.'.join(map(str, docker_version))}" if docker_version
                 else "a Docker older than 23 (or one whose version is unknown)")
        HostkitError.__init__(
            self,
            f"{path} starts with a UTF-8 byte order mark (BOM), which {which} does not accept "
            "(Docker 23 and later ignore it)",
            f"remove it: {REMOVE_BOM.replace(DAEMON_JSON, path)}",
        )
        self.path = path
        self.line = 1
        self.column = 1


def parse_daemon_json(text: str, path: str = DAEMON_JSON,
                      docker_version: Optional[tuple[int, int, int]] = None) -> dict[str, Any]:
    """Parse daemon.json as the installed dockerd would; an empty file is an empty config.

    A leading UTF-8 BOM is accepted where dockerd accepts it (docker_version >= 23.0) and is
    the error otherwise, with the command that removes it.
    """
    if text.startswith(BOM):
        if docker_version is None or docker_version < BOM_ACCEPTED_SINCE:
            raise DaemonJsonBomError(path, docker_version)
        text = text[len(BOM):]
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DaemonJsonError(path, exc.lineno, exc.colno, exc.msg) from exc
    if not isinstance(data, dict):
        raise DaemonJsonError(path, 1, 1, f"top level must be an object, found {type(data).__name__}")
    return data


@dataclass(frozen=True)
class TypeProblem:
    key: str
    problem: str
    fix: str


# Keys whose values dockerd requires as strings inside a map (moby#38242: a number there
# makes dockerd refuse to start with "cannot unmarshal number into Go value of type string").
_STRING_MAPS = ("log-opts", "storage-opts-map", "default-address-pools-map")
_LISTS_OF_STRINGS = (
    "dns",
    "dns-search",
    "dns-opts",
    "insecure-registries",
    "registry-mirrors",
    "storage-opts",
    "hosts",
    "exec-opts",
)
_STRINGS = (
    "data-root",
    "log-driver",
    "storage-driver",
    "bip",
    "fixed-cidr",
    "log-level",
    "default-runtime",
    "cgroup-parent",
)
_BOOLS = (
    "live-restore",
    "iptables",
    "ip-forward",
    "ip-masq",
    "debug",
    "userland-proxy",
    "icc",
    "experimental",
    "selinux-enabled",
)


def find_type_problems(config: dict[str, Any]) -> list[TypeProblem]:
    """Values of the wrong JSON type, each with the corrected form."""
    problems: list[TypeProblem] = []
    opts = config.get("log-opts")
    if opts is not None:
        if not isinstance(opts, dict):
            problems.append(TypeProblem("log-opts", "must be an object", '"log-opts": {"max-size": "10m"}'))
        else:
            for k, v in opts.items():
                if not isinstance(v, str):
                    problems.append(
                        TypeProblem(
                            f"log-opts.{k}", f"must be a string, found {json.dumps(v)}", f'"{k}": "{v}"'
                        )
                    )
    for key in _LISTS_OF_STRINGS:
        if key in config and (
            not isinstance(config[key], list) or not all(isinstance(x, str) for x in config[key])
        ):
            problems.append(TypeProblem(key, "must be a list of strings", f'"{key}": ["..."]'))
    for key in _STRINGS:
        if key in config and not isinstance(config[key], str):
            problems.append(
                TypeProblem(
                    key, f"must be a string, found {json.dumps(config[key])}", f'"{key}": "{config[key]}"'
                )
            )
    for key in _BOOLS:
        if key in config and not isinstance(config[key], bool):
            problems.append(
                TypeProblem(key, f"must be true or false, found {json.dumps(config[key])}", f'"{key}": true')
            )
    return problems


# dockerd flag -> daemon.json key, for the flags people put in unit files
_FLAG_KEYS = {
    "--data-root": "data-root",
    "-g": "data-root",
    "--graph": "data-root",
    "--log-driver": "log-driver",
    "--log-opt": "log-opts",
    "--dns": "dns",
    "--storage-driver": "storage-driver",
    "-s": "storage-driver",
    "--host": "hosts",
    "-H": "hosts",
    "--bip": "bip",
    "--insecure-registry": "insecure-registries",
    "--registry-mirror": "registry-mirrors",
    "--live-restore": "live-restore",
    "--exec-opt": "exec-opts",
    "--log-level": "log-level",
    "-l": "log-level",
    "--iptables": "iptables",
}


def dockerd_flags_in_unit(unit_text: str) -> list[tuple[str, str]]:
    """(flag, daemon.json key) for each daemon option on the unit's effective ExecStart.

    An empty `ExecStart=` resets earlier ones (systemd semantics), so drop-ins that override
    the command are honoured when the unit and its drop-ins are concatenated in order.
    """
    exec_lines: list[str] = []
    logical = re.sub(r"\\\n", " ", unit_text)
    for raw in logical.splitlines():
        line = raw.strip()
        if not line.startswith("ExecStart="):
            continue
        value = line[len("ExecStart=") :].strip()
        if not value:
            exec_lines = []
        else:
            exec_lines.append(value)
    found: list[tuple[str, str]] = []
    for value in exec_lines:
        try:
            words = shlex.split(value.lstrip("-@:+!"))
        except ValueError:
            words = value.split()
        if not words or not words[0].endswith("dockerd"):
            continue
        for word in words[1:]:
            flag = word.split("=", 1)[0]
            if flag in _FLAG_KEYS:
                found.append((flag, _FLAG_KEYS[flag]))
    return found


def conflicting_flags(unit_text: str, config: dict[str, Any]) -> list[tuple[str, str]]:
    """Flags on the unit whose key is also in daemon.json: dockerd refuses to start (moby#25471).

    `-H fd://` with `hosts` in daemon.json is the classic case.
    """
    return [(flag, key) for flag, key in dockerd_flags_in_unit(unit_text) if key in config]


# ---- desired state ---------------------------------------------------------------------

DEFAULT_DNS = ("8.8.8.8",)
DEFAULT_LOG_MAX_SIZE = "10m"
DEFAULT_LOG_MAX_FILE = "5"
DEFAULT_DATA_ROOT = "/var/lib/docker"

# Options each rotating file driver accepts; any other log-opt left over from a previous
# driver (syslog-address, gelf-*) would make dockerd refuse to start once it is switched.
_ROTATING_DRIVER_OPTS = {
    "json-file": frozenset({"max-size", "max-file", "labels", "labels-regex", "env",
                            "env-regex", "tag", "compress"}),
    # docs.docker.com/engine/logging/drivers/local: max-size, max-file, compress
    "local": frozenset({"max-size", "max-file", "compress"}),
}
ROTATING_DRIVERS = tuple(_ROTATING_DRIVER_OPTS)


@dataclass(frozen=True)
class DaemonOptions:
    """The daemon.json keys hostkit owns; None keeps what the file says (or the default)."""

    log_max_size: Optional[str] = None
    log_max_file: Optional[str] = None
    dns: Optional[tuple[str, ...]] = None
    data_root: Optional[str] = None
    log_driver: Optional[str] = None  # json-file or local; None keeps the admin's driver


def render_daemon_json(existing: dict[str, Any], options: DaemonOptions) -> dict[str, Any]:
    """The daemon.json hostkit wants: `existing` with hostkit's keys set, every other key kept.

    Pure: `existing` is not modified. Key order is kept so the diff shows only real changes.
    Only what `options` names changes a value the file already has: an admin's `dns`, or a
    log driver of their own (journald, gelf, ...) with its options, stays.
    """
    out: dict[str, Any] = json.loads(json.dumps(existing))  # deep copy, JSON types only
    previous_driver = out.get("log-driver") or "json-file"
    driver = options.log_driver or previous_driver
    if driver in _ROTATING_DRIVER_OPTS:
        raw_opts = out.get("log-opts")
        opts: dict[str, str] = {}
        for key, value in (raw_opts if isinstance(raw_opts, dict) else {}).items():
            if driver != previous_driver and key not in _ROTATING_DRIVER_OPTS[driver]:
                continue
            # moby#38242: every log-opts value must be a JSON string ("5", not 5)
            opts[key] = value if isinstance(value, str) else json.dumps(value)
        opts["max-size"] = options.log_max_size or opts.get("max-size") or DEFAULT_LOG_MAX_SIZE
        opts["max-file"] = str(options.log_max_file or opts.get("max-file")
                               or DEFAULT_LOG_MAX_FILE)
        out["log-driver"] = driver
        out["log-opts"] = opts
    elif options.log_max_size or options.log_max_file:
        raise UsageError(f"log-driver {driver} (in {DAEMON_JSON}) keeps no files to rotate, "
                         "so --log-max-size/--log-max-file do not apply",
                         "add --log-driver json-file (or local) to switch, or drop those flags")
    if options.dns is not None:
        out["dns"] = list(options.dns)
    if "graph" in out:
        # `graph` was removed in Docker 23; `data-root` has meant the same since 17.05
        graph = out.pop("graph")
        out.setdefault("data-root", graph)
    if options.data_root:
        out["data-root"] = options.data_root
    return out


def daemon_json_text(config: dict[str, Any]) -> str:
    """How hostkit writes daemon.json: two-space indent, trailing newline."""
    return json.dumps(config, indent=2) + "\n"
