"""Drive the deployed stack: files in the deploy directory, docker compose, the live hub.

The deploy directory (default /opt/hostkit) holds docker-compose.yml, jupyterhub_config.py,
nginx.conf (hostkit's, refreshed by `up`; a changed file's old copy is kept as .bak),
certs/ and .env. `.env` carries every site value and the generated secrets; it is
written once with mode 0600 and its secrets are never regenerated.
"""

from __future__ import annotations

import base64
import datetime
import json
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from hostkit import certs as certs_mod
from hostkit.errors import HostkitError, UsageError
from hostkit.facts import Facts
from hostkit.host import CommandResult, LocalHost
from hostkit.images import stack_assets_dir
from hostkit.settings import DEFAULTS

DEFAULT_DIR = DEFAULTS.deploy_dir
DEFAULT_PORT = DEFAULTS.public_port
STACK_FILES = (
    "docker-compose.yml",
    "docker-compose.http.yml",
    "docker-compose.swarm.yml",
    "jupyterhub_config.py",
    "hostkit_profiles.py",
    "hostkit_swarm.py",
    "nginx.conf",
    "hub_busy.html",  # the hub's 429 page: your server is queued
)
# compose file added when HOSTKIT_HTTP_PORT is set: nginx's plain-HTTP port for ACME
HTTP_COMPOSE_FILE = "docker-compose.http.yml"
ACME_CHALLENGE_DIR = "acme-challenge"  # in the deploy directory, mounted read-only into nginx
# HOSTKIT_CLUSTER=swarm: compose also reads docker-compose.swarm.yml (the overlay network)
CLUSTER_COMPOSE = {"swarm": "docker-compose.swarm.yml"}
HUB_SERVICE = "jupyterhub"
NGINX_SERVICE = "nginx"
DOCKER_API_SERVICE = "docker-api"
SERVICES = (DOCKER_API_SERVICE, HUB_SERVICE, NGINX_SERVICE)
HUB_UID = 1000  # the hub image's unprivileged user, owner of the hub's data volume
HUBCTL = "/srv/hostkit/hostkit_hubctl.py"

# Keys whose values are generated once and never replaced.
SECRET_KEYS = ("HOSTKIT_API_TOKEN", "CONFIGPROXY_AUTH_TOKEN")
# Secrets never go into a container's environment (`docker inspect` shows it to anyone with
# Docker access): `stack up` copies them from .env into files only the hub can read,
# mounted read-only at /run/hostkit-secrets; the containers get hub.env, .env without them.
SECRET_FILES = {
    "HOSTKIT_ADMIN_HASH_B64": "admin_hash_b64",
    "HOSTKIT_API_TOKEN": "api_token",
    "CONFIGPROXY_AUTH_TOKEN": "proxy_token",
}
HUB_ENV_FILE = "hub.env"

# Site values and their defaults; `.env` keeps what an admin set there.
ENV_DEFAULTS: dict[str, str] = {
    "COMPOSE_PROJECT_NAME": "hostkit",
    "HOSTKIT_PORT": str(DEFAULT_PORT),
    "HOSTKIT_BIND": "0.0.0.0",  # noqa: S104 - the hub is served to the network on purpose
    "HOSTKIT_NETWORK": "hostkit-jupyterhub",
    "HOSTKIT_HUB_VOLUME": "hostkit-hub-data",
    "HOSTKIT_USER_VOLUME": "jupyterhub-user-{username}",
    "HOSTKIT_CONTAINER_PREFIX": "jupyter",
    "HOSTKIT_HUB_IMAGE": "hostkit/jupyterhub:latest",
    "HOSTKIT_NGINX_IMAGE": "hostkit/nginx:latest",
    "HOSTKIT_NOTEBOOK_IMAGE": "hostkit/singleuser:full",
    "HOSTKIT_ADMIN": "admin",
    "HOSTKIT_HOST_ALIAS": "hostkit-host",
    "HOSTKIT_HOST_IP": "host-gateway",
    "HOSTKIT_MEM_LIMIT": "4G",
    "HOSTKIT_CPU_LIMIT": "2",
    "HOSTKIT_CULL_TIMEOUT": "3600",
    "HOSTKIT_MIN_PASSWORD_LENGTH": "10",
    "HOSTKIT_ALLOWED_FAILED_LOGINS": "5",
    "HOSTKIT_LOCKOUT_SECONDS": "600",
    "HOSTKIT_START_TIMEOUT": "600",
    # host ports users' containers may open on the host (hostkit-host), e.g. a PostgreSQL;
    # every other port of the host, other users and link-local addresses are dropped
    "HOSTKIT_HOST_PORTS": "5432",
    "HOSTKIT_PIDS_LIMIT": "1024",
    # size limit of each user's volume, e.g. 10G; needs the Docker data root on xfs mounted
    # with prjquota (the doctor's storage.user-quota says); empty: none
    "HOSTKIT_USER_DISK_QUOTA": "",
    # a daily timer (or cron entry) renews hostkit's certificate before it expires: on, off
    "HOSTKIT_CERT_RENEWAL": "on",
    # Strict-Transport-Security: auto (on unless the certificate is self-signed), on, off
    "HOSTKIT_HSTS": "auto",
    # plain-HTTP port nginx publishes for ACME HTTP-01 challenges (redirecting all else to
    # HTTPS); empty: none. `hostkit certs --acme` sets 80 when empty.
    "HOSTKIT_HTTP_PORT": "",
    # where the certificate comes from, for renewals and the doctor: local (self-signed, the
    # site CA or the admin's own) or acme (HOSTKIT_ACME_DIRECTORY, account HOSTKIT_ACME_EMAIL)
    "HOSTKIT_CERT_MODE": "local",
    "HOSTKIT_ACME_DIRECTORY": "",
    "HOSTKIT_ACME_EMAIL": "",
}
HSTS_MAX_AGE = 63072000  # two years (Mozilla's recommendation)

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


# ---- .env ------------------------------------------------------------------------------
def parse_env(text: str) -> dict[str, str]:
    """KEY=VALUE lines of a compose .env file (no quoting: hostkit writes none)."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        out[key.strip()] = value.strip()
    return out


def render_env(
    existing: dict[str, str],
    overrides: dict[str, str],
    *,
    token: Callable[[], str] = lambda: secrets.token_hex(32),
) -> dict[str, str]:
    """The .env to write: defaults < existing < overrides; secrets only when missing."""
    for key, value in overrides.items():
        if key in SECRET_KEYS:
            raise UsageError(f"{key} is generated by hostkit and cannot be set")
        if "\n" in value or "$" in value or value != value.strip():
            raise UsageError(f"{key}: the value must be one line without `$` or outer spaces")
    quota = overrides.get("HOSTKIT_USER_DISK_QUOTA", "")
    if quota and not re.fullmatch(r"[0-9]+(\.[0-9]+)?[kKmMgGtT]?[bB]?", quota):
        raise UsageError(f"HOSTKIT_USER_DISK_QUOTA must be a size such as 10G, not {quota!r}")
    env = {**ENV_DEFAULTS, **existing, **overrides}
    for key in SECRET_KEYS:
        if not existing.get(key):
            env[key] = token()
    return env


def format_env(env: dict[str, str]) -> str:
    lines = [
        "# hostkit stack settings and secrets (mode 0600). Written by `hostkit stack up`;",
        "# edit a value and run `hostkit stack up` again. Secrets are never regenerated.",
    ]
    lines += [f"{key}={env[key]}" for key in sorted(env)]
    return "\n".join(lines) + "\n"


def container_env(env: dict[str, str]) -> dict[str, str]:
    """The settings the containers get in their environment: .env without the secrets."""
    return {key: value for key, value in env.items() if key not in SECRET_FILES}


def format_container_env(env: dict[str, str]) -> str:
    lines = [
        "# Written by `hostkit stack up` from .env, without the secrets (those are files in",
        "# secrets/hub/). Edit .env, not this file.",
    ]
    lines += [f"{key}={value}" for key, value in sorted(container_env(env).items())]
    return "\n".join(lines) + "\n"


def hsts_conf(setting: str, self_signed: bool) -> str:
    """nginx.d/hsts.conf for HOSTKIT_HSTS.

    HSTS covers every port of the host name, not only the hub's, and a browser that saw it
    refuses to let anyone click through a certificate warning: with a self-signed
    certificate that locks users out, so `auto` turns it on only for a trusted one.
    """
    value = setting.strip().lower()
    if value not in ("auto", "on", "off"):
        raise UsageError(f"HOSTKIT_HSTS must be auto, on or off, not {setting!r}")
    on = value == "on" or (value == "auto" and not self_signed)
    header = f'add_header Strict-Transport-Security "max-age={HSTS_MAX_AGE}" always;'
    state = "on" if on else "off"
    first = f"# Written by `hostkit stack up`: HOSTKIT_HSTS={value} -> {state}\n"
    return first + (header + "\n" if on else "")


def plain_http_server(http_port: str, https_port: str) -> str:
    """nginx.d/plain-http.server: the plain-HTTP server behind HOSTKIT_HTTP_PORT (pure).

    It answers ACME HTTP-01 challenges from the deploy directory's acme-challenge/ and
    redirects every other request to HTTPS on the public port; nothing is proxied to the
    hub in clear text. Without an HTTP port the file holds only a comment.
    """
    if not http_port.strip():
        return "# Written by `hostkit stack up`: HOSTKIT_HTTP_PORT is empty, no plain-HTTP server\n"
    if not http_port.strip().isdigit() or not https_port.strip().isdigit():
        raise UsageError(f"HOSTKIT_HTTP_PORT and HOSTKIT_PORT must be port numbers, not {http_port!r}, "
                         f"{https_port!r}")
    port = "" if https_port.strip() == "443" else f":{https_port.strip()}"
    return (
        f"# Written by `hostkit stack up`: HOSTKIT_HTTP_PORT={http_port.strip()} (published to 8080)\n"
        "server {\n"
        "    listen 8080;\n"
        "    server_name _;\n"
        "    location ^~ /.well-known/acme-challenge/ {\n"
        "        alias /var/www/acme-challenge/;\n"
        "        default_type text/plain;\n"
        "        try_files $uri =404;\n"
        "    }\n"
        "    location / {\n"
        f"        return 301 https://$host{port}$request_uri;\n"
        "    }\n"
        "}\n"
    )


def primary_ip(host: LocalHost) -> Optional[str]:
    """The address this host uses for outbound traffic (the default route's source).

    Parsed from text, not `ip -j`: CentOS 7's iproute2 predates JSON output.
    """
    try:
        result = host.run(["ip", "-4", "route", "get", "1.1.1.1"], timeout=10)
    except HostkitError:
        return None
    found = re.search(r"\bsrc\s+(\S+)", result.stdout) if result.ok else None
    return found.group(1) if found else None


# ---- compose ---------------------------------------------------------------------------
def detect_compose(host: LocalHost) -> list[str]:
    """`docker compose` (v2) when present, else `docker-compose` (v1): the doctor's fact."""
    compose = Facts(host).compose()
    if compose:
        return list(compose.argv)
    raise HostkitError(
        "neither `docker compose` nor `docker-compose` works on this host",
        "install the compose plugin (docker-compose-plugin) or docker-compose",
    )


@dataclass
class Stack:
    """One deployed stack, in one deploy directory."""

    host: LocalHost
    directory: str = DEFAULT_DIR
    log: Log = _quiet
    _compose: Optional[list[str]] = field(default=None, repr=False)

    # ---- files ---------------------------------------------------------------------
    @property
    def env_path(self) -> str:
        return f"{self.directory}/.env"

    @property
    def certs_dir(self) -> str:
        return f"{self.directory}/certs"

    def read_env(self) -> dict[str, str]:
        return parse_env(self.host.read_text(self.env_path)) if self.host.exists(self.env_path) else {}

    def env(self) -> dict[str, str]:
        """The deployed .env; an error when the stack was never set up here."""
        if not self.host.exists(self.env_path):
            raise HostkitError(
                f"no stack in {self.directory} (no .env)",
                "run `hostkit stack up` (or give --deploy-dir)",
            )
        return self.read_env()

    def install_files(self) -> list[str]:
        """Copy hostkit's stack files into the deploy directory; returns those changed."""
        self.host.makedirs(self.directory)
        assets = stack_assets_dir()
        changed = []
        for name in STACK_FILES:
            wanted = (assets / name).read_text()
            path = f"{self.directory}/{name}"
            if self.host.exists(path) and self.host.read_text(path) == wanted:
                continue
            self.host.write_text(path, wanted, mode=0o644)
            changed.append(path)
        return changed

    def write_env(self, overrides: dict[str, str]) -> tuple[dict[str, str], bool]:
        """Create or update .env (0600); returns it and whether the file changed."""
        existing = self.read_env()
        env = render_env(existing, overrides)
        text = format_env(env)
        present = self.host.exists(self.env_path)
        if present and self.host.read_text(self.env_path) == text:
            if self.host.stat(self.env_path).st_mode & 0o077:
                self.host.run(["chmod", "600", str(self.host.path(self.env_path))], check=True)
            return env, False
        self.host.write_text(self.env_path, text, mode=0o600, backup=False)
        return env, True

    # ---- compose -------------------------------------------------------------------
    def compose_cmd(self) -> list[str]:
        if self._compose is None:
            self._compose = detect_compose(self.host)
        env = self.read_env()
        project = env.get("COMPOSE_PROJECT_NAME", ENV_DEFAULTS["COMPOSE_PROJECT_NAME"])
        files = ["docker-compose.yml"] + ([HTTP_COMPOSE_FILE] if env.get("HOSTKIT_HTTP_PORT") else [])
        cluster = env.get("HOSTKIT_CLUSTER", "")
        if cluster:
            if cluster not in CLUSTER_COMPOSE:
                raise UsageError(f"HOSTKIT_CLUSTER={cluster}: not a cluster kind hostkit knows",
                                 f"use one of: {', '.join(CLUSTER_COMPOSE)} (or leave it empty)")
            files.append(CLUSTER_COMPOSE[cluster])
        argv = [*self._compose, "-p", project]
        for name in files:
            argv += ["-f", str(self.host.path(f"{self.directory}/{name}"))]
        return argv

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> CommandResult:
        return self.host.run(
            [*self.compose_cmd(), *args],
            timeout=timeout,
            check=check,
            hint=f"see `hostkit stack logs --deploy-dir {self.directory}`",
        )

    def container_id(self, service: str) -> Optional[str]:
        result = self.compose("ps", "-q", service, check=False)
        ids = result.stdout.split()
        return ids[0] if result.ok and ids else None

    def hub_container(self) -> str:
        cid = self.container_id(HUB_SERVICE)
        if not cid:
            raise HostkitError("the hub is not running", "run `hostkit stack up`")
        return cid

    def inspect(self, container: str) -> dict[str, Any]:
        result = self.host.run(["docker", "inspect", container], check=True)
        data: list[dict[str, Any]] = json.loads(result.stdout)
        return data[0]

    def service_states(self) -> dict[str, dict[str, str]]:
        """For each service: container, state and health ("" when no health check)."""
        out: dict[str, dict[str, str]] = {}
        for service in SERVICES:
            cid = self.container_id(service)
            if not cid:
                out[service] = {"container": "", "state": "absent", "health": ""}
                continue
            info = self.inspect(cid)
            state = info.get("State", {})
            out[service] = {
                "container": str(info.get("Name", "")).lstrip("/"),
                "state": str(state.get("Status", "")),
                "health": str((state.get("Health") or {}).get("Status", "")),
            }
        return out

    def user_containers(self) -> list[dict[str, str]]:
        """The spawned single-user containers on the stack's network."""
        env = self.read_env()
        network = env.get("HOSTKIT_NETWORK", ENV_DEFAULTS["HOSTKIT_NETWORK"])
        prefix = env.get("HOSTKIT_CONTAINER_PREFIX", ENV_DEFAULTS["HOSTKIT_CONTAINER_PREFIX"])
        result = self.host.run(
            [
                "docker",
                "ps",
                "-a",
                "--filter",
                f"name=^{prefix}-",
                "--format",
                "{{json .}}",
            ]
        )
        out = []
        for line in result.stdout.splitlines():
            row = json.loads(line)
            if network in str(row.get("Networks", "")).split(","):
                out.append(
                    {
                        "name": str(row.get("Names", "")),
                        "status": str(row.get("Status", "")),
                        "image": str(row.get("Image", "")),
                    }
                )
        return out

    def wait_healthy(self, timeout: float = 300, interval: float = 2.0) -> dict[str, dict[str, str]]:
        """Wait until every service is running and healthy; HostkitError on timeout."""
        deadline = time.monotonic() + timeout
        states: dict[str, dict[str, str]] = {}
        while time.monotonic() < deadline:
            states = self.service_states()
            if all(s["state"] == "running" and s["health"] in ("healthy", "") for s in states.values()):
                return states
            if any(s["state"] in ("exited", "dead") for s in states.values()):
                break
            time.sleep(interval)
        summary = ", ".join(f"{k}: {v['state']}/{v['health'] or '-'}" for k, v in states.items())
        raise HostkitError(
            f"the stack did not become healthy ({summary})",
            f"see `hostkit stack logs --deploy-dir {self.directory}`",
        )

    # ---- lifecycle -----------------------------------------------------------------
    def hash_password(self, hub_image: str, password: str) -> str:
        """bcrypt hash (base64) of a password, made with the hub image's own bcrypt."""
        code = (
            "import base64, sys, bcrypt; "
            "print(base64.b64encode(bcrypt.hashpw(sys.stdin.read().encode(), bcrypt.gensalt())).decode())"
        )
        result = self.host.run(
            ["docker", "run", "--rm", "-i", "--entrypoint", "python3", hub_image, "-c", code],
            input=password,
            timeout=120,
            check=True,
        )
        encoded = result.stdout.strip()
        base64.b64decode(encoded, validate=True)
        return encoded

    def write_runtime_files(self) -> list[str]:
        """hub.env and the hub's secret files, from .env; returns the paths changed.

        secrets/ is 0700 (no one on the host but root gets in); secrets/hub/, mounted into
        the hub, is 0750 root:hub and its files 0440, so inside the container only the hub's
        user reads them.
        """
        env = self.read_env()
        changed = []
        hub_env = f"{self.directory}/{HUB_ENV_FILE}"
        text = format_container_env(env)
        if not self.host.exists(hub_env) or self.host.read_text(hub_env) != text:
            self.host.write_text(hub_env, text, mode=0o600, backup=False)
            changed.append(hub_env)
        outer, inner = f"{self.directory}/secrets", f"{self.directory}/secrets/hub"
        self.host.makedirs(inner, mode=0o700)
        self.host.chmod(outer, 0o700)
        self.host.chmod(inner, 0o750)
        for key, name in SECRET_FILES.items():
            path = f"{inner}/{name}"
            value = env.get(key, "")
            if not self.host.exists(path) or self.host.read_text(path) != value:
                self.host.write_text(path, value, mode=0o440, backup=False)
                changed.append(path)
        owner = f"0:{HUB_UID}"
        self.host.run(["chown", "-R", owner, str(self.host.path(inner))], check=True)
        self.host.makedirs(f"{self.directory}/jupyterhub_config.d")
        hsts_path = f"{self.directory}/nginx.d/hsts.conf"
        cert = f"{self.certs_dir}/{certs_mod.CERT_NAME}"
        self_signed = True
        if self.host.exists(cert):
            self_signed = certs_mod.describe(self.host.read_text(cert)).self_signed
        text = hsts_conf(env.get("HOSTKIT_HSTS", ENV_DEFAULTS["HOSTKIT_HSTS"]), self_signed)
        if not self.host.exists(hsts_path) or self.host.read_text(hsts_path) != text:
            self.host.write_text(hsts_path, text, mode=0o644, backup=False)
            changed.append(hsts_path)
        http_path = f"{self.directory}/nginx.d/plain-http.server"
        text = plain_http_server(env.get("HOSTKIT_HTTP_PORT", ""), env.get("HOSTKIT_PORT", str(DEFAULT_PORT)))
        if not self.host.exists(http_path) or self.host.read_text(http_path) != text:
            self.host.write_text(http_path, text, mode=0o644, backup=False)
            changed.append(http_path)
        self.host.makedirs(f"{self.directory}/{ACME_CHALLENGE_DIR}", mode=0o755)
        return changed

    def own_hub_data(self) -> None:
        """Give an existing hub data volume to the hub's unprivileged user.

        Stacks from before the hub ran unprivileged have a root-owned /data; a fresh volume
        takes its owner from the image.
        """
        env = self.read_env()
        volume = env.get("HOSTKIT_HUB_VOLUME", ENV_DEFAULTS["HOSTKIT_HUB_VOLUME"])
        image = env.get("HOSTKIT_HUB_IMAGE", ENV_DEFAULTS["HOSTKIT_HUB_IMAGE"])
        if not self.host.run(["docker", "volume", "inspect", volume], check=False).ok:
            return
        owner = f"{HUB_UID}:{HUB_UID}"
        self.host.run(
            ["docker", "run", "--rm", "--user", "0:0", "--network", "none", "--entrypoint", "chown",
             "-v", f"{volume}:/data", image, "-R", owner, "/data"],
            timeout=300,
            check=True,
        )

    def up(self, timeout: float = 300, changed: Sequence[str] = ()) -> dict[str, dict[str, str]]:
        """Start or update the stack; files changed since the last run take effect.

        `compose up -d` recreates a container only when its definition changes, and a
        single-file bind mount rewritten atomically (a new inode) keeps showing the old
        file: so nginx is reloaded for new certificates or settings and restarted for a new
        nginx.conf, and the hub restarted (users' servers keep running) for its config.
        """
        changed = [*changed, *self.write_runtime_files()]
        hub = self.container_id(HUB_SERVICE)
        if hub:
            changed += self.config_d_changed(self.started_at(hub))
        self.own_hub_data()
        before = {service: self.container_id(service) for service in (HUB_SERVICE, NGINX_SERVICE)}
        self.compose("up", "-d", "--remove-orphans", timeout=timeout)
        states = self.wait_healthy(timeout=timeout)
        actions = self.take_effect(changed, before)
        return self.wait_healthy(timeout=timeout) if actions else states

    def take_effect(self, changed: Sequence[str], before: dict[str, Optional[str]]) -> list[str]:
        """Reload or restart what kept running with old files; returns what was done."""
        prefix = self.directory + "/"
        rel = {p[len(prefix) :] if p.startswith(prefix) else p for p in changed}
        done = []
        for service, restart_on, reload_on in (
            (HUB_SERVICE, ("jupyterhub_config.py", "jupyterhub_config.d/", "secrets/"), ()),
            (NGINX_SERVICE, ("nginx.conf",), ("certs/", "nginx.d/")),
        ):
            cid = self.container_id(service)
            if not cid or cid != before.get(service):
                continue  # (re)created by compose: it has the new files already
            if any(p == r or (r.endswith("/") and p.startswith(r)) for p in rel for r in restart_on):
                self.host.run(["docker", "restart", cid], timeout=120, check=True)
                done.append(f"restarted {service}")
            elif any(p.startswith(r) for p in rel for r in reload_on):
                self.host.run(["docker", "exec", cid, "nginx", "-s", "reload"], timeout=60, check=True)
                done.append(f"reloaded {service}")
        for action in done:
            self.log(action)
        return done

    def started_at(self, container: str) -> float:
        """When a container last started (epoch seconds)."""
        text = str(self.inspect(container).get("State", {}).get("StartedAt", ""))
        match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)", text)
        if not match:
            return 0.0
        moment = datetime.datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S")
        return moment.replace(tzinfo=datetime.timezone.utc).timestamp()

    def config_d_changed(self, since: float) -> list[str]:
        """The admin's jupyterhub_config.d files modified after `since` (a timestamp)."""
        directory = f"{self.directory}/jupyterhub_config.d"
        if not self.host.exists(directory):
            return []
        return [p for p in self.host.glob(directory, "*.py") if self.host.stat(p).st_mtime > since]

    def reload_nginx(self, timeout: float = 30) -> bool:
        """Make a running nginx load new certificates; False when the stack is not running.

        `nginx -s reload` only signals the master process: this returns once the public port
        serves the certificate now on disk (new workers), or raises after `timeout`.
        """
        if not self.host.exists(f"{self.directory}/docker-compose.yml"):
            return False
        cid = self.container_id(NGINX_SERVICE)
        if not cid:
            return False
        self.host.run(["docker", "exec", cid, "nginx", "-s", "reload"], timeout=60, check=True)
        self.wait_served(timeout)
        return True

    def wait_served(self, timeout: float = 30, interval: float = 0.2) -> None:
        """Wait until nginx serves the certificate in certs/ on the public port."""
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        from hostkit.probes.tls import served_certificate

        env = self.read_env()
        bind = env.get("HOSTKIT_BIND", ENV_DEFAULTS["HOSTKIT_BIND"])
        address = "127.0.0.1" if bind in ("0.0.0.0", "", "::") else bind  # noqa: S104
        port = int(env.get("HOSTKIT_PORT", str(DEFAULT_PORT)))
        pem = self.host.read_text(f"{self.certs_dir}/{certs_mod.CERT_NAME}")
        wanted = x509.load_pem_x509_certificate(pem.encode()).public_bytes(Encoding.DER)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if served_certificate(address, port, "") == wanted:
                    return
                seen = "another certificate"
            except OSError as exc:
                seen = str(exc)
            if time.monotonic() > deadline:
                raise HostkitError(
                    f"nginx was reloaded but {address}:{port} still serves {seen}, not {self.certs_dir}",
                    "hostkit stack logs nginx (a reload with a broken certificate keeps the old one)",
                )
            time.sleep(interval)

    def down(self) -> list[str]:
        """Stop the stack. Users' containers go too (their volumes stay)."""
        removed = []
        for row in self.user_containers():
            self.host.run(["docker", "rm", "-f", row["name"]], check=True)
            removed.append(row["name"])
        removed += self._remove_user_services()
        self.compose("down", "--remove-orphans")
        return removed

    def _remove_user_services(self) -> list[str]:
        """On a swarm, the users' servers are services (on the workers): they go too."""
        env = self.read_env()
        if env.get("HOSTKIT_CLUSTER") != "swarm":
            return []
        project = env.get("COMPOSE_PROJECT_NAME", ENV_DEFAULTS["COMPOSE_PROJECT_NAME"])
        names = self.host.run(["docker", "service", "ls", "--filter", f"label=org.hostkit.stack={project}",
                               "--format", "{{.Name}}"], check=True).stdout.split()
        if names:
            self.host.run(["docker", "service", "rm", *names], check=True)
        return names

    def logs(self, service: Optional[str] = None, tail: int = 200) -> str:
        args = ["logs", "--no-color", "--tail", str(tail)]
        if service:
            if service not in SERVICES:
                containers = [c["name"] for c in self.user_containers()]
                if service not in containers:
                    raise UsageError(
                        f"no service or user container named {service!r}",
                        f"services: {', '.join(SERVICES)}; users: {', '.join(containers) or 'none'}",
                    )
                result = self.host.run(["docker", "logs", "--tail", str(tail), service], check=True)
                return result.stdout + result.stderr
            args.append(service)
        result = self.compose(*args)
        return result.stdout + result.stderr

    # ---- users ---------------------------------------------------------------------
    def hubctl(self, *args: str, stdin: Optional[str] = None) -> dict[str, Any]:
        cid = self.hub_container()
        result = self.host.run(
            ["docker", "exec", "-i", cid, "python3", HUBCTL, *args], input=stdin, timeout=120
        )
        try:
            data: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
        except (json.JSONDecodeError, IndexError) as exc:
            raise HostkitError(
                f"the hub's user tool failed: {(result.stderr or result.stdout).strip()[-300:]}"
            ) from exc
        if not data.get("ok"):
            raise HostkitError(str(data.get("error", "unknown error")))
        return data

    def users(self) -> list[dict[str, Any]]:
        users: list[dict[str, Any]] = self.hubctl("list")["users"]
        return users

    def approve(self, name: str) -> bool:
        """Approve a sign-up; False when it was already approved."""
        return bool(self.hubctl("approve", name).get("changed"))

    def create_user(self, name: str, password: str) -> None:
        self.hubctl("create", name, stdin=password)
