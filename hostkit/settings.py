"""Site settings the checks and steps compare against: defaults, then /etc/hostkit/hostkit.toml."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field, fields, replace
from typing import Any

from hostkit.errors import UsageError
from hostkit.host import LocalHost

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on the 3.9/3.10 targets
    import tomli as tomllib

SETTINGS_FILE = "/etc/hostkit/hostkit.toml"


@dataclass(frozen=True)
class Settings:
    """What this site wants; every field can be set in hostkit.toml or on the command line."""

    deploy_dir: str = "/opt/hostkit"
    public_port: int = 9090
    # address the public port is published on; empty = the deployed stack's HOSTKIT_BIND
    # (all addresses by default). The checks reach it there, or on loopback for "all".
    bind_address: str = ""
    server_name: str = ""  # host name clients use; empty = this host's FQDN
    # empty: the files `hostkit certs` writes under deploy_dir/certs/
    cert_file: str = ""
    key_file: str = ""
    dhparam_file: str = ""
    # CA bundle the doctor verifies the served chain against; empty: the site CA for its
    # certificates, else the system's trust store (a self-signed certificate is not chained)
    tls_trust_file: str = ""
    users: int = 10  # how many people use the hub at once, for sizing checks
    mem_per_user_gib: float = 1.0
    disk_per_user_gib: float = 2.0  # each user's named volume lives on the data-root
    users_per_cpu: int = 4
    # Admission (`hostkit stack up` sizes the hub's limits from the host with these):
    # a single-user server and its first kernel just started, resident (bench/spawn.py)
    server_memory_gib: float = 0.5
    # memory kept for the hub, nginx and the system before counting servers
    reserved_memory_gib: float = 2.0
    # one server's boot with a core to itself, with room for a loaded host (bench: 2-5 s)
    server_boot_seconds: int = 30
    data_root: str = ""  # expected Docker data-root; empty = whatever Docker uses
    dns: tuple[str, ...] = ("8.8.8.8",)
    log_max_size: str = "10m"
    log_max_file: str = "5"
    network: str = "hostkit-jupyterhub"
    compose_project: str = "hostkit"
    singleuser_image: str = "hostkit/singleuser"
    probe_image: str = ""  # image for throwaway containers; empty = pick a local one
    outside_name: str = "pypi.org"  # a name containers must resolve
    egress_target: str = "pypi.org:443"  # where a container must be able to open TCP
    max_container_log_mib: int = 500
    min_free_gib: float = 10.0
    backup_dir: str = "/var/backups/hostkit"  # where `hostkit backup` writes, and the doctor looks
    backup_max_age_hours: float = 36.0  # older than this, the last good backup is a warning
    # the servers of a Swarm cluster (addresses or networks): the swarm ports open to these only
    cluster_peers: tuple[str, ...] = ()
    cluster_ssh_user: str = "root"  # the manager logs in to the workers as this (key-based ssh)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, default in _cert_paths(self.deploy_dir).items():
            if not getattr(self, name):
                object.__setattr__(self, name, default)  # frozen: set once, at construction

    def with_overrides(self, **values: Any) -> Settings:
        """These values instead (None: keep); certificate paths follow a new deploy_dir."""
        given = {k: v for k, v in values.items() if v is not None}
        if "deploy_dir" in given:
            derived = _cert_paths(self.deploy_dir)
            for name in derived:
                if getattr(self, name) == derived[name] and name not in given:
                    given[name] = ""  # re-derived from the new deploy_dir
        return replace(self, **given)


def _cert_paths(deploy_dir: str) -> dict[str, str]:
    return {"cert_file": f"{deploy_dir}/certs/hostkit.crt",
            "key_file": f"{deploy_dir}/certs/hostkit.key",
            "dhparam_file": f"{deploy_dir}/certs/dhparam.pem"}


# Every default hostkit has, in one place: the CLI, bootstrap's steps and the doctor read these.
DEFAULTS = Settings()


def load_settings(host: LocalHost, path: str = SETTINGS_FILE) -> Settings:
    """Defaults, overlaid by the settings file when it exists; unknown keys are an error."""
    if not host.exists(path):
        return Settings()
    try:
        data = tomllib.loads(host.read_text(path))
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: {exc}", "fix the TOML syntax") from exc
    known = {f.name for f in fields(Settings)} - {"extra"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UsageError(
            f"{path}: unknown setting(s) {', '.join(unknown)}", f"known settings: {', '.join(sorted(known))}"
        )
    for key in ("dns", "cluster_peers"):
        if key in data:
            data[key] = tuple(data[key])
    return Settings(**data)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to {SETTINGS_FILE}")


def render_settings_toml(existing_text: str, updates: dict[str, Any]) -> str:
    """The settings file with `updates` applied and every other key kept (pure).

    Values the admin set by hand stay, except those `updates` names; keys are sorted so
    that the same settings always give the same text (a second bootstrap changes nothing).
    """
    try:
        data: dict[str, Any] = tomllib.loads(existing_text) if existing_text.strip() else {}
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{SETTINGS_FILE}: {exc}", "fix the TOML syntax; hostkit leaves it untouched") \
            from exc
    data.update(updates)
    lines = ["# hostkit's site settings: what `hostkit doctor` checks this host against.",
             "# Written by `hostkit bootstrap`; keys you add by hand are kept."]
    lines += [f"{key} = {_toml_value(data[key])}" for key in sorted(data)]
    return "\n".join(lines) + "\n"


def admission_settings(cpus: int, memory_bytes: int, settings: Settings = DEFAULTS) -> dict[str, str]:
    """The hub's admission limits for a host, as `.env` settings.

    Servers boot two per core at a time: booting is mostly CPU, but part of it is Docker
    creating and starting the container (bench/spawn.py, 20 users on 2 cores: 4 slots gave
    p50 31 s, 2 slots 60 s, no queue 66 s). As many may run as memory holds; everyone who
    may run one may wait in the queue; the start timeout covers a place at its end.
    """
    slots = max(1, 2 * cpus)
    spare_gib = memory_bytes / 2**30 - settings.reserved_memory_gib
    servers = max(slots, int(spare_gib / settings.server_memory_gib))
    start_timeout = max(600, 120 + math.ceil(servers / slots) * settings.server_boot_seconds)
    return {
        "HOSTKIT_SPAWN_SLOTS": str(slots),
        "HOSTKIT_ACTIVE_SERVER_LIMIT": str(servers),
        "HOSTKIT_SPAWN_QUEUE_LIMIT": str(servers),
        "HOSTKIT_START_TIMEOUT": str(start_timeout),
    }
