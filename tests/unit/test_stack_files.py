"""The stack's files say what the issue and DOMAIN.md require (static checks; the
integration tests prove they work)."""

from __future__ import annotations

import asyncio
import re
import sys
import types
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")  # PyYAML: a dev dependency

STACK = Path(__file__).resolve().parents[2] / "stack"


def test_compose_file_is_v1_and_v2_compatible_with_named_network_and_volume() -> None:
    compose = yaml.safe_load((STACK / "docker-compose.yml").read_text())
    assert compose["version"] == "2.4"  # compose v1.29 needs a version; 2.4 has health-gated depends_on
    assert compose["networks"]["hostkit"]["name"] == "${HOSTKIT_NETWORK:-hostkit-jupyterhub}"
    assert compose["volumes"]["hub-data"]["name"]
    hub, nginx = compose["services"]["jupyterhub"], compose["services"]["nginx"]
    proxy = compose["services"]["docker-api"]
    for service in (hub, nginx, proxy):
        assert service["restart"] == "unless-stopped"
        assert service["healthcheck"]["test"][0] == "CMD"
    assert "hub-data:/data" in hub["volumes"]
    # only the filtering proxy holds the Docker socket; the hub is unprivileged and uses it
    assert "/var/run/docker.sock:/var/run/docker.sock" in proxy["volumes"]
    assert not any("docker.sock" in v for v in hub["volumes"] + nginx["volumes"])
    assert hub["environment"]["DOCKER_HOST"] == "unix:///run/hostkit-docker/docker.sock"
    assert hub["user"] == "1000:1000"
    assert hub["cap_drop"] == ["ALL"]
    assert hub["depends_on"]["docker-api"]["condition"] == "service_healthy"
    assert proxy["cap_add"] == ["NET_ADMIN", "CHOWN"]
    assert proxy["read_only"] is True
    assert hub["environment"]["HOSTKIT_NETWORK"] == "${HOSTKIT_NETWORK:-hostkit-jupyterhub}"
    assert nginx["depends_on"]["jupyterhub"]["condition"] == "service_healthy"
    assert all(v.endswith(":ro") for v in nginx["volumes"])
    assert nginx["ports"] == ["${HOSTKIT_BIND:-0.0.0.0}:${HOSTKIT_PORT:-9090}:8443"]
    assert any("${HOSTKIT_HOST_IP" in h for h in hub["extra_hosts"])


def test_nginx_conf_has_the_intermediate_tls_profile_and_websocket_proxying() -> None:
    conf = (STACK / "nginx.conf").read_text()
    for needle in (
        "listen 8443 ssl http2;",
        "ssl_protocols TLSv1.2 TLSv1.3;",
        "ssl_dhparam         /etc/nginx/certs/dhparam.pem;",
        "include /etc/nginx/hostkit.d/*.conf;",  # hsts.conf, from HOSTKIT_HSTS
        "map $http_upgrade $connection_upgrade",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $connection_upgrade;",
        "proxy_set_header Host $http_host;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        "client_max_body_size",
        "proxy_read_timeout 86400s;",
        "error_page 497 =301 https://",
    ):
        assert needle in conf, needle
    assert not re.search(r"^\s*ssl\s+on;", conf, re.MULTILINE)  # removed in nginx 1.25.1


def test_nginx_rate_limits_login_posts_and_refuses_cross_site_state_changing_gets() -> None:
    conf = (STACK / "nginx.conf").read_text()
    assert "POST    $binary_remote_addr;" in conf  # only POSTs are counted
    assert "limit_req_zone $hostkit_login_key zone=hostkit_login:10m rate=20r/m;" in conf
    assert re.search(r"location = /hub/login \{\s*limit_req zone=hostkit_login burst=60 nodelay;", conf)
    assert "limit_req_status 429;" in conf
    block = conf[conf.index("location ~ ^/hub/(authorize|discard)/[^/]+$") :]
    assert block.index("return 403;") < block.index("proxy_pass $hub;")
    assert "same-origin 0;" in conf


class _Config(dict):  # type: ignore[type-arg]
    """traitlets-like config: c.Section.attr = value."""

    def __getattr__(self, name: str) -> Any:
        return self.setdefault(name, types.SimpleNamespace())


ANSWERED: list[str] = []  # URLs the stand-in for jupyterhub.utils.wait_for_http_server saw


async def _answered(url: str, timeout: float = 10) -> None:
    ANSWERED.append(url)
    if ANSWERED.count(url) == 1:
        raise asyncio.TimeoutError(f"{url} does not answer yet")


class _FakeDockerSpawner:
    """DockerSpawner's start without Docker: a container 'boots' until the test lets it go."""

    def __init__(self, name: str, booted: list[str], release: dict[str, asyncio.Event]) -> None:
        self.name = name
        self.booted = booted
        self.release = release
        self.http_timeout = 30
        self.server = types.SimpleNamespace(base_url=f"/user/{name}/")

    async def start(self) -> tuple[str, int]:
        self.booted.append(self.name)
        await self.release.setdefault(self.name, asyncio.Event()).wait()
        return ("10.0.0.1", 8888)


def _load_hub_config(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> tuple[_Config, Any]:
    for key in list(__import__("os").environ):
        if key.startswith("HOSTKIT_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    native = types.ModuleType("nativeauthenticator")
    native.NativeAuthenticator = type("NativeAuthenticator", (), {})  # type: ignore[attr-defined]
    orm = types.ModuleType("nativeauthenticator.orm")
    orm.UserInfo = object  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "nativeauthenticator", native)
    monkeypatch.setitem(sys.modules, "nativeauthenticator.orm", orm)
    # the hub's own modules exist only in the hub image: stand-ins with the used names
    apihandlers = types.ModuleType("jupyterhub.apihandlers")
    apihandlers.APIHandler = type("APIHandler", (), {})  # type: ignore[attr-defined]
    scopes = types.ModuleType("jupyterhub.scopes")
    scopes.needs_scope = lambda scope: lambda func: func  # type: ignore[attr-defined]
    utils = types.ModuleType("jupyterhub.utils")
    utils.wait_for_http_server = _answered  # type: ignore[attr-defined]
    dockerspawner = types.ModuleType("dockerspawner")
    dockerspawner.DockerSpawner = _FakeDockerSpawner  # type: ignore[attr-defined]
    tornado_web = types.ModuleType("tornado.web")
    tornado_web.HTTPError = Exception  # type: ignore[attr-defined]
    tornado = types.ModuleType("tornado")
    tornado.web = tornado_web  # type: ignore[attr-defined]
    for name, module in {
        "jupyterhub": types.ModuleType("jupyterhub"),
        "jupyterhub.apihandlers": apihandlers,
        "jupyterhub.scopes": scopes,
        "jupyterhub.utils": utils,
        "dockerspawner": dockerspawner,
        "tornado": tornado,
        "tornado.web": tornado_web,
    }.items():
        monkeypatch.setitem(sys.modules, name, module)
    config = _Config()
    namespace: dict[str, Any] = {
        "get_config": lambda: config,
        "__name__": "jupyterhub_config",
        "__file__": str(STACK / "jupyterhub_config.py"),  # traitlets sets it; profiles load beside it
    }
    exec(compile((STACK / "jupyterhub_config.py").read_text(), "jupyterhub_config.py", "exec"), namespace)  # noqa: S102
    return config, namespace


def test_hub_config_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    c, ns = _load_hub_config(monkeypatch, {})
    assert c.JupyterHub.hub_ip == "0.0.0.0"  # noqa: S104 - the expected setting
    assert c.JupyterHub.hub_connect_ip == "jupyterhub"
    assert c.JupyterHub.cleanup_servers is False
    assert c.JupyterHub.cookie_secret_file.startswith("/data/")
    assert c.JupyterHub.db_url == "sqlite:////data/jupyterhub.sqlite"
    assert c.DockerSpawner.network_name == "hostkit-jupyterhub"
    assert c.DockerSpawner.remove is True
    assert c.DockerSpawner.volumes == {"jupyterhub-user-{username}": "/home/jovyan/work"}
    assert c.NativeAuthenticator.open_signup is False
    assert c.NativeAuthenticator.allowed_failed_logins == 5
    assert c.NativeAuthenticator.check_common_password is True
    assert c.Authenticator.allow_all is True
    assert c.Authenticator.admin_users == {"admin"}
    assert c.JupyterHub.authenticator_class is ns["HostkitAuthenticator"]
    assert ns["ApproveAPIHandler"].post.__name__ == "post"
    (culler_role,) = [r for r in c.JupyterHub.load_roles if r["name"] == "idle-culler"]
    assert sorted(culler_role["scopes"]) == sorted(
        ["list:users", "read:users:activity", "read:servers", "delete:servers"]
    )
    assert culler_role["services"] == ["idle-culler"]
    (culler,) = c.JupyterHub.services
    assert "--timeout=3600" in culler["command"]
    # without a token there is no hostkit service at all
    assert [s["name"] for s in c.JupyterHub.services] == ["idle-culler"]


def test_hub_config_takes_site_values_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    c, _ = _load_hub_config(
        monkeypatch,
        {
            "HOSTKIT_NETWORK": "campus-net",
            "HOSTKIT_ADMIN": "prof",
            "HOSTKIT_CULL_TIMEOUT": "40",
            "HOSTKIT_MEM_LIMIT": "1G",
            "HOSTKIT_CPU_LIMIT": "0.5",
            "HOSTKIT_HOST_ALIAS": "dbhost",
            "HOSTKIT_HOST_IP": "10.0.0.7",
            "HOSTKIT_API_TOKEN": "abc",
            "HOSTKIT_USER_VOLUME": "t1-user-{username}",
        },
    )
    assert c.DockerSpawner.network_name == "campus-net"
    assert c.Authenticator.admin_users == {"prof"}
    assert c.DockerSpawner.mem_limit == "1G"
    assert c.DockerSpawner.cpu_limit == 0.5
    assert c.DockerSpawner.extra_host_config == {"extra_hosts": {"dbhost": "10.0.0.7"}, "pids_limit": 1024}
    assert c.DockerSpawner.volumes == {"t1-user-{username}": "/home/jovyan/work"}
    culler = c.JupyterHub.services[0]
    assert "--timeout=40" in culler["command"]
    assert "--cull-every=20" in culler["command"]
    hostkit = [s for s in c.JupyterHub.services if s["name"] == "hostkit"]
    assert hostkit == [{"name": "hostkit", "api_token": "abc"}]
    (role,) = [r for r in c.JupyterHub.load_roles if r["name"] == "hostkit"]
    assert "admin:users" in role["scopes"]
    assert "admin:servers" not in role["scopes"]


def test_a_disk_quota_makes_the_user_volume_a_sized_mount_the_docker_proxy_accepts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util

    from docker.types import Mount

    c, _ = _load_hub_config(monkeypatch, {"HOSTKIT_USER_DISK_QUOTA": "10G"})
    assert c.DockerSpawner.volumes == {}
    (mount,) = c.DockerSpawner.mounts
    # as DockerSpawner 14's mount_binds builds it for alice
    args = {**mount, "source": mount["source"].format(username="alice")}
    sent = dict(Mount(**args))
    assert sent["VolumeOptions"]["DriverConfig"] == {"Name": "local", "Options": {"size": "10G"}}
    spec = importlib.util.spec_from_file_location("hostkit_dockerproxy_q", STACK / "hostkit_dockerproxy.py")
    assert spec is not None
    assert spec.loader is not None
    proxy = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "hostkit_dockerproxy_q", proxy)
    spec.loader.exec_module(proxy)
    policy = proxy.Policy.from_env({"HOSTKIT_USER_DISK_QUOTA": "10G", "HOSTKIT_NETWORK": "net"})
    body = {"Image": "hostkit/singleuser:full", "HostConfig": {
        "NetworkMode": "net", "Mounts": [sent], "PidsLimit": 1024, "Memory": 1 << 30}}
    proxy.check_create({"name": "jupyter-alice"}, body, policy)  # raises Refused otherwise


def test_singleuser_dockerfile_turns_record_timing_on_and_installs_the_seed_extensions() -> None:
    text = (STACK / "singleuser" / "Dockerfile").read_text()
    assert '"recordTiming"] = True' in text
    for package in (
        "psycopg2-binary",
        "pyspark[pandas_on_spark]",
        "bokeh",
        "plotly",
        "jupyter-resource-usage",
        "ipympl",
        "jupyterlab-lsp",
        "python-lsp-server",
        "jupyter_bokeh",
        "jupyterlab-execute-time",
        "octave_kernel",
        "openjdk-21-jre-headless",
    ):
        assert package in text, package


class _Request:
    def __init__(self, remote_ip: str, peer: str, local: str) -> None:
        self.remote_ip = remote_ip  # after tornado applied X-Real-IP
        sock = types.SimpleNamespace(getsockname=lambda: (local, 8081))
        self.connection = types.SimpleNamespace(
            context=types.SimpleNamespace(_orig_remote_ip=peer), stream=types.SimpleNamespace(socket=sock)
        )


def test_lockout_address_trusts_x_real_ip_only_from_the_hubs_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    _, ns = _load_hub_config(monkeypatch, {})
    address = ns["client_address"]
    # through nginx -> configurable-http-proxy (in the hub's container) -> hub
    assert address(types.SimpleNamespace(request=_Request("203.0.113.9", "172.20.0.3", "172.20.0.3"))) == (
        "203.0.113.9"
    )
    assert address(types.SimpleNamespace(request=_Request("203.0.113.9", "127.0.0.1", "172.20.0.3"))) == (
        "203.0.113.9"
    )
    # a user's container talking to the hub's port directly, naming any address it likes
    assert address(types.SimpleNamespace(request=_Request("198.51.100.1", "172.20.0.7", "172.20.0.3"))) == (
        "172.20.0.7"
    )


def test_servers_boot_a_few_at_a_time_in_the_order_asked_and_the_rest_are_told_they_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, ns = _load_hub_config(monkeypatch, {"HOSTKIT_SPAWN_SLOTS": "2"})
    assert ns["c"].JupyterHub.spawner_class is ns["QueuedDockerSpawner"]
    booted: list[str] = []
    release: dict[str, asyncio.Event] = {}

    async def scenario() -> None:
        spawners = [ns["QueuedDockerSpawner"](f"u{i}", booted, release) for i in range(5)]
        starts = [asyncio.ensure_future(s.start()) for s in spawners]
        await asyncio.sleep(0.01)
        assert booted == ["u0", "u1"]  # two slots: the others wait
        progress = spawners[4].progress()
        first = await progress.__anext__()
        assert "queued" in first["message"]
        assert "4 servers start before it" in first["message"]
        release.setdefault("u1", asyncio.Event()).set()
        assert await starts[1] == ("10.0.0.1", 8888)
        await asyncio.sleep(0.01)
        assert booted == ["u0", "u1", "u2"]  # u2 was next in line, not a later one
        starts[3].cancel()  # the hub gave up on u3 (start_timeout): it leaves the queue
        await asyncio.sleep(0.01)
        for name in ("u0", "u2"):
            release.setdefault(name, asyncio.Event()).set()
        await asyncio.gather(starts[0], starts[2])
        await asyncio.sleep(0.01)
        assert booted == ["u0", "u1", "u2", "u4"]
        release.setdefault("u4", asyncio.Event()).set()
        await starts[4]
        assert ns["BOOT_QUEUE"] == []
        await progress.aclose()

    asyncio.run(scenario())
    # the slot is held until the server answers, asked again when it did not yet
    assert ANSWERED.count("http://10.0.0.1:8888/user/u1/") == 2


def test_busy_page_says_the_server_is_queued_and_retries_after_the_hubs_suggestion() -> None:
    import jinja2  # a dev dependency: the test must run, not skip
    error_html = (  # the blocks of JupyterHub's error.html that the page fills in
        "{% block h1_error %}{% endblock %}{% block error_detail %}{% endblock %}"
        "{% block script %}<script src=page.js></script>{% endblock %}"
    )
    env = jinja2.Environment(
        loader=jinja2.DictLoader(
            {"error.html": error_html, "429.html": (STACK / "hub_busy.html").read_text()}
        ),
        autoescape=True,
    )
    message = "Too many users trying to log in right now. Try again in 40 seconds."
    page = env.get_template("429.html").render(message=message, status_code=429)
    assert "your server is queued" in page
    assert message in page
    assert '"Too many users trying to log in right now. Try again in 40 seconds."' in page  # for the timer
    assert "page.js" in page  # JupyterHub's own scripts stay
    assert "window.location.replace" in page

