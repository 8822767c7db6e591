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
from hostkit.settings import DEFAULTS

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


@dataclass(frozen=True)
class UnitCommand:
    """docker.service's effective dockerd command line, and where each part of it comes from."""

    argv: tuple[str, ...]  # as systemd holds it: $VARIABLES not expanded
    source: str = ""  # the unit file or drop-in whose ExecStart= wins
    environment: tuple[tuple[str, str], ...] = ()  # (name, value) after every file is read
    env_sources: tuple[tuple[str, str], ...] = ()  # (name, environment file that sets it)

    def words(self) -> list[tuple[str, str]]:
        """(word, where it comes from) with $VAR and ${VAR} expanded as systemd does."""
        env = dict(self.environment)
        origin = dict(self.env_sources)
        out: list[tuple[str, str]] = []
        for word in self.argv:
            whole = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
            if whole:  # `$VAR` alone splits into words; unset means no word at all
                name = whole.group(1)
                where = f"{origin.get(name, 'Environment=')} ({name})"
                out += [(w, where) for w in env.get(name, "").split()]
                continue
            names = re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", word)
            expanded = re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}",
                              lambda m: env.get(m.group(1), ""), word)
            where = (f"{origin.get(names[0], 'Environment=')} ({names[0]})" if names
                     else self.source)
            if expanded:
                out.append((expanded, where))
        return out


def parse_systemctl_show(text: str) -> dict[str, list[str]]:
    """`systemctl show -p A -p B` output: each property's values (a property may repeat)."""
    props: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            props.setdefault(key.strip(), []).append(value.strip())
    return props


def exec_start_argv(show_value: str) -> list[str]:
    """The argv of the last command in a `systemctl show -p ExecStart` value.

    The value looks like `{ path=/usr/sbin/dockerd ; argv[]=/usr/sbin/dockerd -H fd:// ... ;
    ignore_errors=no ; ... }`; systemd prints argv words separated by spaces.
    """
    found = re.findall(r"argv\[\]=(.*?) ; ", show_value)
    return found[-1].split() if found else []


def parse_environment_file(text: str) -> dict[str, str]:
    """KEY=VALUE lines as systemd's EnvironmentFile= reads them (quotes removed, # comments)."""
    env: dict[str, str] = {}
    for raw in re.sub(r"\\\n", "", text).splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")) or "=" not in line:
            continue
        key, _, value = line.partition("=")
        try:
            env[key.strip()] = " ".join(shlex.split(value, comments=True))
        except ValueError:
            env[key.strip()] = value.strip().strip("'\"")
    return env


def parse_environment_assignments(values: list[str]) -> dict[str, str]:
    """`Environment=A=1 "B=two words"` lines (unit text or systemctl show) as a dict."""
    env: dict[str, str] = {}
    for value in values:
        try:
            words = shlex.split(value)
        except ValueError:
            words = value.split()
        for word in words:
            key, sep, val = word.partition("=")
            if sep:
                env[key] = val
    return env


def unit_settings(files: list[tuple[str, str]]) -> tuple[list[str], str, list[str], list[str]]:
    """(ExecStart words, its file, Environment= values, EnvironmentFile= values) from unit text.

    `files` are the unit and its drop-ins in systemd's order; an empty `ExecStart=` resets
    the earlier ones, as an empty `EnvironmentFile=` or `Environment=` does.
    """
    argv: list[str] = []
    source = ""
    environment: list[str] = []
    env_files: list[str] = []
    for path, text in files:
        for raw in re.sub(r"\\\n", " ", text).splitlines():
            key, sep, value = raw.strip().partition("=")
            if not sep:
                continue
            value = value.strip()
            if key == "ExecStart":
                argv, source = ([], "") if not value else (_split(value.lstrip("-@:+!")), path)
            elif key == "Environment":
                environment = [*environment, value] if value else []
            elif key == "EnvironmentFile":
                env_files = [*env_files, value] if value else []
    return argv, source, environment, env_files


def _split(value: str) -> list[str]:
    try:
        return shlex.split(value)
    except ValueError:
        return value.split()


def dockerd_flags(words: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """(flag, daemon.json key, where it is set) for each daemon option on a dockerd command."""
    if not words or not words[0][0].endswith("dockerd"):
        return []
    found = []
    for word, where in words[1:]:
        flag = word.split("=", 1)[0]
        if flag in _FLAG_KEYS:
            found.append((flag, _FLAG_KEYS[flag], where))
    return found


def dockerd_flags_in_unit(unit_text: str) -> list[tuple[str, str]]:
    """(flag, daemon.json key) for each daemon option on the unit text's effective ExecStart."""
    argv, source, _env, _files = unit_settings([("docker.service", unit_text)])
    return [(f, k) for f, k, _ in dockerd_flags([(w, source) for w in argv])]


def conflicting_flags(unit_text: str, config: dict[str, Any]) -> list[tuple[str, str]]:
    """Flags on the unit whose key is also in daemon.json: dockerd refuses to start (moby#25471).

    `-H fd://` with `hosts` in daemon.json is the classic case.
    """
    return [(flag, key) for flag, key in dockerd_flags_in_unit(unit_text) if key in config]


def command_conflicts(command: UnitCommand, config: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(flag, key, where) for each option of the effective command also set in daemon.json."""
    return [c for c in dockerd_flags(command.words()) if c[1] in config]


# ---- desired state ---------------------------------------------------------------------

# the seed's values, from the one place every default lives
DEFAULT_DNS = DEFAULTS.dns
DEFAULT_LOG_MAX_SIZE = DEFAULTS.log_max_size
DEFAULT_LOG_MAX_FILE = DEFAULTS.log_max_file
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
