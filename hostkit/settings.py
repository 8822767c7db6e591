"""Site settings the checks and steps compare against: defaults, then /etc/hostkit/hostkit.toml."""

from __future__ import annotations

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
    server_name: str = ""  # host name clients use; empty = this host's FQDN
    cert_file: str = "/opt/hostkit/certs/hostkit.crt"
    key_file: str = "/opt/hostkit/certs/hostkit.key"
    dhparam_file: str = "/opt/hostkit/certs/dhparam.pem"
    users: int = 10  # how many people use the hub at once, for sizing checks
    mem_per_user_gib: float = 1.0
    disk_per_user_gib: float = 2.0  # each user's named volume lives on the data-root
    users_per_cpu: int = 4
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
    extra: dict[str, Any] = field(default_factory=dict)

    def with_overrides(self, **values: Any) -> Settings:
        return replace(self, **{k: v for k, v in values.items() if v is not None})


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
    if "dns" in data:
        data["dns"] = tuple(data["dns"])
    return Settings(**data)
