# JupyterHub configuration for hostkit's stack.
#
# Everything site-specific comes from the environment (the stack's .env, written by
# `hostkit stack up`), with defaults that suit a single server. hostkit replaces this file
# on `stack up` (keeping the old one as .bak): put your own settings in
# jupyterhub_config.d/*.py in the deploy directory, loaded last, in name order, and never
# touched by hostkit; `hostkit stack up` restarts the hub when they change.
from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from typing import Any, AsyncIterator, Optional

from dockerspawner import DockerSpawner
from jupyterhub.apihandlers import APIHandler
from jupyterhub.scopes import needs_scope
from jupyterhub.utils import wait_for_http_server
from nativeauthenticator import NativeAuthenticator
from nativeauthenticator.orm import UserInfo
from tornado import web

c = get_config()  # type: ignore[name-defined]  # noqa: F821 - injected by JupyterHub


def env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def env_int(name: str, default: int) -> int:
    return int(env(name, str(default)))


SECRETS_DIR = env("HOSTKIT_SECRETS_DIR", "/run/hostkit-secrets")


def secret(name: str, legacy_env: str) -> str:
    """A secret from its file (mounted read-only by docker-compose.yml), else the environment."""
    path = os.path.join(SECRETS_DIR, name)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            return fh.read().strip()
    return os.environ.get(legacy_env, "").strip()


ADMIN = env("HOSTKIT_ADMIN", "admin")
NETWORK = env("HOSTKIT_NETWORK", "hostkit-jupyterhub")
HUB_SERVICE = env("HOSTKIT_HUB_SERVICE", "jupyterhub")
NOTEBOOK_DIR = env("HOSTKIT_NOTEBOOK_DIR", "/home/jovyan/work")


class ApproveAPIHandler(APIHandler):  # type: ignore[misc]
    """POST /hub/hostkit/approve/NAME: approve a sign-up, with a token (`hostkit users approve`).

    NativeAuthenticator's own /hub/authorize/NAME is a page for the admin's browser (a toggle,
    cookie-authenticated); this API does one thing, idempotently, in the hub's own session.
    """

    @needs_scope("admin:users")  # type: ignore[misc]
    def post(self, name: str) -> None:
        info = UserInfo.find(self.db, name)
        if info is None:
            raise web.HTTPError(404, f"no sign-up for {name}")
        changed = not info.is_authorized
        if changed:
            info.is_authorized = True
            self.db.commit()
        self.write(json.dumps({"approved": name, "changed": changed}))


class PasswordAPIHandler(APIHandler):  # type: ignore[misc]
    """POST /hub/hostkit/password/NAME {"password": ...}: `hostkit users reset-password`.

    NativeAuthenticator's admin page for this needs an admin's browser session; here the
    hub's own authenticator applies its strength rules and lifts a lockout.
    """

    @needs_scope("admin:users")  # type: ignore[misc]
    def post(self, name: str) -> None:
        auth = self.authenticator
        if UserInfo.find(self.db, auth.normalize_username(name)) is None:
            raise web.HTTPError(404, f"no sign-up for {name} (hostkit)")
        password = str((self.get_json_body() or {}).get("password", ""))
        if not auth.is_password_strong(password):
            raise web.HTTPError(
                400, f"the password must have at least {auth.minimum_password_length} characters "
                "and not be a common one")
        auth.change_password(name, password)
        auth.successful_login(auth.normalize_username(name))  # forget failed attempts
        self.write(json.dumps({"changed": name}))


class SignupAPIHandler(APIHandler):  # type: ignore[misc]
    """/hub/hostkit/signup/NAME: DELETE removes a sign-up that never became a hub user;
    POST {"password_b64", "approved"} brings one back from a backup (`hostkit restore --users`)."""

    @needs_scope("admin:users")  # type: ignore[misc]
    def post(self, name: str) -> None:
        username = self.authenticator.normalize_username(name)
        if UserInfo.find(self.db, username) is not None:
            raise web.HTTPError(409, f"{username} has an account already (hostkit)")
        body = self.get_json_body() or {}
        password = base64.b64decode(str(body.get("password_b64", "")), validate=True)
        if not password:
            raise web.HTTPError(400, "no password hash (hostkit)")
        self.db.add(UserInfo(username=username, password=password, is_authorized=bool(body.get("approved"))))
        self.db.commit()
        self.set_status(201)
        self.write(json.dumps({"restored": username}))

    @needs_scope("admin:users")  # type: ignore[misc]
    def delete(self, name: str) -> None:
        info = UserInfo.find(self.db, self.authenticator.normalize_username(name))
        if info is None:
            raise web.HTTPError(404, f"no sign-up for {name} (hostkit)")
        self.db.delete(info)
        self.db.commit()
        self.set_status(204)


def client_address(handler: Any) -> str:
    """The address a login comes from, as the lockout counts it.

    Through nginx, the request reaches the hub from configurable-http-proxy in this container
    and carries nginx's X-Real-IP (which nginx sets itself). A user's server can reach the
    hub's port directly and put anything in that header: then the TCP peer counts.
    """
    request = getattr(handler, "request", None)
    if request is None:
        return ""
    context = getattr(request.connection, "context", None)
    peer = str(getattr(context, "_orig_remote_ip", "") or request.remote_ip)
    try:
        local = request.connection.stream.socket.getsockname()[0]
    except (AttributeError, OSError, IndexError):
        local = None
    if peer in ("127.0.0.1", "::1") or peer == local:
        return str(request.remote_ip)
    return peer


class HostkitAuthenticator(NativeAuthenticator):
    """NativeAuthenticator whose admin account is made by the installer, never at sign-up.

    NativeAuthenticator pre-authorizes names listed in admin_users when they sign up, so
    whoever registered "admin" first would become admin. Here the admin's record is
    created when the hub starts, from the bcrypt hash hostkit put in the environment;
    a sign-up under that name then finds the name taken.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._ensure_admin_record()

    async def authenticate(self, handler: Any, data: dict[str, str]) -> Optional[str]:
        """NativeAuthenticator's check, with its lockout kept per (name, client address).

        Per name alone, anyone could keep the admin locked out by failing five times every
        ten minutes; per address, a stranger locks out only their own tries (and nginx
        rate-limits the login form per address).
        """
        username = self.normalize_username(data["username"])
        key = f"{username} from {client_address(handler)}"
        user = self.get_user(username)
        if not user:
            return None
        if self.allowed_failed_logins and self.is_blocked(key):
            self.log.warning("login refused for %s: locked out after failed attempts", key)
            return None
        # bcrypt takes a third of a second of CPU: in a thread (it releases the GIL), so a
        # class logging in at once does not stall every other request of the hub behind it
        password = data["password"]
        valid = await asyncio.get_running_loop().run_in_executor(None, user.is_valid_password, password)
        checks = [user.is_authorized, valid]
        if user.has_2fa:
            checks.append(user.is_valid_token(data.get("2fa")))
        if all(checks):
            self.successful_login(key)
            return str(username)
        self.add_login_attempt(key)
        self.log.warning("failed login for %s", key)
        return None

    def add_login_attempt(self, key: str) -> None:
        if len(self.login_attempts) > 10_000:  # many addresses: forget the expired entries
            for old in [k for k in self.login_attempts if self.can_try_to_login_again(k)]:
                self.login_attempts.pop(old, None)
        super().add_login_attempt(key)

    def get_handlers(self, app: object) -> list[tuple[str, type]]:
        handlers: list[tuple[str, type]] = super().get_handlers(app)
        return [
            *handlers,
            (r"/hostkit/approve/([^/]+)", ApproveAPIHandler),
            (r"/hostkit/password/([^/]+)", PasswordAPIHandler),
            (r"/hostkit/signup/([^/]+)", SignupAPIHandler),
        ]

    def _ensure_admin_record(self) -> None:
        encoded = secret("admin_hash_b64", "HOSTKIT_ADMIN_HASH_B64")
        if not encoded:
            self.log.warning("no admin password hash: no admin account is created")
            return
        username = self.normalize_username(ADMIN)
        if UserInfo.find(self.db, username) is not None:
            return
        self.db.add(UserInfo(username=username, password=base64.b64decode(encoded), is_authorized=True))
        self.db.commit()
        self.log.info("created the admin account %s", username)


# ---- hub ---------------------------------------------------------------------------
c.JupyterHub.bind_url = "http://:8000"
c.JupyterHub.hub_ip = "0.0.0.0"  # noqa: S104 - user containers reach the hub over the network...
c.JupyterHub.hub_connect_ip = HUB_SERVICE  # ...by its service name (dockerspawner#198)
c.JupyterHub.db_url = "sqlite:////data/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "/data/jupyterhub_cookie_secret"  # noqa: S105 - a path
c.JupyterHub.upgrade_db = True  # sqlite is backed up by JupyterHub before an upgrade
c.JupyterHub.cleanup_servers = False  # a hub restart leaves users' servers running
c.JupyterHub.cleanup_proxy = True
c.JupyterHub.last_activity_interval = env_int("HOSTKIT_ACTIVITY_INTERVAL", 300)
c.JupyterHub.shutdown_on_logout = False

# ---- authentication ----------------------------------------------------------------
c.JupyterHub.authenticator_class = HostkitAuthenticator
c.Authenticator.admin_users = {ADMIN}
c.Authenticator.allow_all = True  # NativeAuthenticator's approval is the gate (JupyterHub >= 5)
c.NativeAuthenticator.open_signup = False  # every sign-up waits for the admin at /hub/authorize
c.NativeAuthenticator.enable_signup = env("HOSTKIT_ENABLE_SIGNUP", "1") == "1"
c.NativeAuthenticator.minimum_password_length = env_int("HOSTKIT_MIN_PASSWORD_LENGTH", 10)
c.NativeAuthenticator.check_common_password = True
c.NativeAuthenticator.allowed_failed_logins = env_int("HOSTKIT_ALLOWED_FAILED_LOGINS", 5)
c.NativeAuthenticator.seconds_before_next_try = env_int("HOSTKIT_LOCKOUT_SECONDS", 600)

# ---- spawner -----------------------------------------------------------------------
# A class logging in at once: booting a server is CPU-bound (imports, then the kernel), so
# N servers booting together on fewer cores all become ready late, together. The hub boots
# HOSTKIT_SPAWN_SLOTS at a time (two per core), first come first served; the others wait in
# order on the spawn page, which says so. Sized by `hostkit stack up` from the host.
SPAWN_SLOTS = max(1, env_int("HOSTKIT_SPAWN_SLOTS", 4))
BOOT_QUEUE: list[Any] = []  # spawners waiting for a slot, oldest first
_boot_slots: list[asyncio.Semaphore] = []  # made in the hub's event loop, on first use


def boot_slots() -> asyncio.Semaphore:
    if not _boot_slots:
        _boot_slots.append(asyncio.Semaphore(SPAWN_SLOTS))  # wakes its waiters in FIFO order
    return _boot_slots[0]


async def answering(url: str, timeout: float) -> None:
    """Until the server at url answers HTTP, asking every few tenths of a second.

    The hub's own wait backs off to 5 s between tries: fine for a server that boots alone,
    but a boot slot would sit idle for seconds after its server is up.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            await wait_for_http_server(url, timeout=0.3)
            return
        except asyncio.TimeoutError:
            if asyncio.get_running_loop().time() > deadline:
                raise


class QueuedDockerSpawner(DockerSpawner):  # type: ignore[misc]
    """DockerSpawner whose servers boot a few at a time, in the order they were asked for.

    A slot is held from `docker create` until the server answers HTTP, which is where the
    CPU goes; the hub's start_timeout covers the wait in the queue too.
    """

    async def start(self) -> Any:
        slots = boot_slots()
        BOOT_QUEUE.append(self)
        try:
            await slots.acquire()
        finally:  # also when the hub gives up (start_timeout cancels this)
            BOOT_QUEUE.remove(self)
        try:
            started = await super().start()
            url = started if isinstance(started, str) else f"http://{started[0]}:{started[1]}"
            await answering(url + self.server.base_url, self.http_timeout)
            return started
        finally:
            slots.release()

    async def progress(self) -> AsyncIterator[dict[str, Any]]:
        shown = -1
        while self in BOOT_QUEUE:
            ahead = BOOT_QUEUE.index(self)
            if ahead != shown:
                shown = ahead
                yield {
                    "progress": 10,
                    "message": f"Your server is queued: {ahead + SPAWN_SLOTS} servers start before it "
                    f"({SPAWN_SLOTS} at a time). It starts by itself; keep this page open.",
                }
            await asyncio.sleep(1)
        yield {"progress": 50, "message": "Your server is starting."}


c.JupyterHub.spawner_class = QueuedDockerSpawner
TEMPLATES = "/srv/jupyterhub/templates"  # 429.html: hostkit's hub_busy.html (docker-compose.yml)
if os.path.isdir(TEMPLATES):
    c.JupyterHub.template_paths = [TEMPLATES]  # JupyterHub adds its own after these
# Spawns the hub accepts at once, queued included (more get "Too many users", 429), and
# servers running at once (0: no limit)
c.JupyterHub.concurrent_spawn_limit = env_int("HOSTKIT_SPAWN_QUEUE_LIMIT", 100)
c.JupyterHub.active_server_limit = env_int("HOSTKIT_ACTIVE_SERVER_LIMIT", 0)
c.DockerSpawner.image = env("HOSTKIT_NOTEBOOK_IMAGE", "hostkit/singleuser:latest")
c.DockerSpawner.network_name = NETWORK  # the compose network's explicit name (dockerspawner#246)
c.DockerSpawner.use_internal_ip = True
c.DockerSpawner.remove = True  # containers are disposable; the named volume holds the work
c.DockerSpawner.prefix = env("HOSTKIT_CONTAINER_PREFIX", "jupyter")
c.DockerSpawner.notebook_dir = NOTEBOOK_DIR
USER_VOLUME = env("HOSTKIT_USER_VOLUME", "jupyterhub-user-{username}")
USER_DISK_QUOTA = env("HOSTKIT_USER_DISK_QUOTA", "").strip()
if USER_DISK_QUOTA:
    # Docker's local driver limits a volume it creates with the `size` option (xfs with
    # project quotas under the data root); a mount, unlike a bind, carries driver options.
    # A volume made before the limit was set keeps having none.
    from docker.types import DriverConfig

    c.DockerSpawner.volumes = {}
    c.DockerSpawner.mounts = [{
        "type": "volume",
        "source": USER_VOLUME,
        "target": NOTEBOOK_DIR,
        "driver_config": DriverConfig("local", {"size": USER_DISK_QUOTA}),
    }]
else:
    c.DockerSpawner.volumes = {USER_VOLUME: NOTEBOOK_DIR}
c.DockerSpawner.mem_limit = env("HOSTKIT_MEM_LIMIT", "4G")
c.DockerSpawner.cpu_limit = float(env("HOSTKIT_CPU_LIMIT", "2"))
c.DockerSpawner.extra_host_config = {
    "extra_hosts": {env("HOSTKIT_HOST_ALIAS", "hostkit-host"): env("HOSTKIT_HOST_IP", "host-gateway")},
    # a fork bomb in one user's server stays in it (the docker-api proxy requires a limit)
    "pids_limit": env_int("HOSTKIT_PIDS_LIMIT", 1024),
}
c.DockerSpawner.environment = {"HOSTKIT_HOST": env("HOSTKIT_HOST_ALIAS", "hostkit-host")}
c.Spawner.default_url = "/lab"
c.Spawner.start_timeout = env_int("HOSTKIT_START_TIMEOUT", 600)  # a cold image, and the queue
c.Spawner.http_timeout = env_int("HOSTKIT_HTTP_TIMEOUT", 180)

# ---- services ----------------------------------------------------------------------
CULL_TIMEOUT = env_int("HOSTKIT_CULL_TIMEOUT", 3600)
CULL_EVERY = env_int("HOSTKIT_CULL_EVERY", max(10, min(300, CULL_TIMEOUT // 2)))
services: list[dict[str, object]] = [
    {
        "name": "idle-culler",
        "command": [
            sys.executable,
            "-m",
            "jupyterhub_idle_culler",
            f"--timeout={CULL_TIMEOUT}",
            f"--cull-every={CULL_EVERY}",
        ],
    }
]
roles: list[dict[str, object]] = [
    {
        # least privilege for the culler (jupyterhub-idle-culler's README)
        "name": "idle-culler",
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
        "services": ["idle-culler"],
    }
]
proxy_token = secret("proxy_token", "CONFIGPROXY_AUTH_TOKEN")
if proxy_token:
    c.ConfigurableHTTPProxy.auth_token = proxy_token
api_token = secret("api_token", "HOSTKIT_API_TOKEN")
if api_token:
    # `hostkit users` acts through the hub with this token, on users and their servers.
    services.append({"name": "hostkit", "api_token": api_token})
    roles.append(
        {
            "name": "hostkit",
            "scopes": ["admin:users", "list:users", "read:servers", "servers"],
            "services": ["hostkit"],
        }
    )
c.JupyterHub.services = services
c.JupyterHub.load_roles = roles

# ---- environments (profiles) -------------------------------------------------------
# The menu of environments on the spawn page (image, limits, groups, GPUs), from the
# HOSTKIT_PROFILES* settings; hostkit_profiles.py sits beside this file. With one profile
# (the default) no form is shown and every server runs HOSTKIT_NOTEBOOK_IMAGE as before.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hostkit_profiles  # noqa: E402 - needs the path above

hostkit_profiles.configure(c)

# ---- several servers (Docker Swarm) ------------------------------------------------------
# HOSTKIT_CLUSTER=swarm: users' servers run as services on the workers (hostkit_swarm.py,
# mounted by docker-compose.swarm.yml); nginx and the hub stay on this host.
if env("HOSTKIT_CLUSTER", "") == "swarm":
    import hostkit_swarm  # beside this file, like hostkit_profiles

    hostkit_swarm.configure(c, env)

# ---- the admin's additions -----------------------------------------------------------
CONFIG_D = env("HOSTKIT_CONFIG_D", "/srv/jupyterhub/jupyterhub_config.d")
if os.path.isdir(CONFIG_D):
    for _name in sorted(os.listdir(CONFIG_D)):
        if _name.endswith(".py"):
            _path = os.path.join(CONFIG_D, _name)
            with open(_path, encoding="utf-8") as _fh:
                exec(compile(_fh.read(), _path, "exec"), globals())  # noqa: S102 - the admin's own config
