from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from fakes import FakeHost

from hostkit import stack as stack_mod
from hostkit.errors import HostkitError, UsageError
from hostkit.host import CommandResult


def _counter() -> object:
    numbers = itertools.count(1)
    return lambda: f"secret{next(numbers)}"


def test_render_env_generates_secrets_once_and_keeps_them() -> None:
    first = stack_mod.render_env({}, {}, token=_counter())  # type: ignore[arg-type]
    assert first["HOSTKIT_API_TOKEN"] == "secret1"
    assert first["CONFIGPROXY_AUTH_TOKEN"] == "secret2"
    assert first["HOSTKIT_PORT"] == "9090"
    again = stack_mod.render_env(first, {"HOSTKIT_PORT": "9443"}, token=_counter())  # type: ignore[arg-type]
    assert again["HOSTKIT_API_TOKEN"] == "secret1"
    assert again["CONFIGPROXY_AUTH_TOKEN"] == "secret2"
    assert again["HOSTKIT_PORT"] == "9443"


def test_render_env_keeps_what_the_admin_set_and_refuses_secret_overrides() -> None:
    env = stack_mod.render_env({"HOSTKIT_MEM_LIMIT": "8G"}, {})
    assert env["HOSTKIT_MEM_LIMIT"] == "8G"
    with pytest.raises(UsageError, match="generated"):
        stack_mod.render_env({}, {"HOSTKIT_API_TOKEN": "mine"})
    with pytest.raises(UsageError, match="one line"):
        stack_mod.render_env({}, {"HOSTKIT_ADMIN": "a$b"})


def test_format_and_parse_env_round_trip() -> None:
    env = stack_mod.render_env({}, {"HOSTKIT_ADMIN_HASH_B64": "JDJiJDEy=="})
    assert stack_mod.parse_env(stack_mod.format_env(env)) == env


def test_write_env_is_0600_and_never_regenerates_secrets(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    s = stack_mod.Stack(host, "/opt/hostkit")
    env, changed = s.write_env({})
    assert changed
    assert host.path("/opt/hostkit/.env").stat().st_mode & 0o777 == 0o600
    env2, changed2 = s.write_env({})
    assert not changed2
    assert env2["HOSTKIT_API_TOKEN"] == env["HOSTKIT_API_TOKEN"]
    env3, changed3 = s.write_env({"HOSTKIT_PORT": "8443"})
    assert changed3
    assert env3["HOSTKIT_API_TOKEN"] == env["HOSTKIT_API_TOKEN"]
    assert host.path("/opt/hostkit/.env").stat().st_mode & 0o777 == 0o600


def test_commands_on_a_directory_without_a_stack_say_so(tmp_path: Path) -> None:
    with pytest.raises(HostkitError, match="no stack"):
        stack_mod.Stack(FakeHost(tmp_path), "/srv/none").env()


def test_install_files_copies_the_stack_and_reports_only_changes(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    s = stack_mod.Stack(host, "/opt/hostkit")
    # two compose files (the plain-HTTP one is read only with HOSTKIT_HTTP_PORT), hub config,
    # its profiles module, nginx.conf, the busy page, and the swarm's compose override and
    # spawner (read only with HOSTKIT_CLUSTER=swarm)
    assert len(s.install_files()) == 8
    assert s.install_files() == []
    host.path("/opt/hostkit/nginx.conf").write_text("edited")
    assert s.install_files() == ["/opt/hostkit/nginx.conf"]
    assert host.glob("/opt/hostkit", "nginx.conf.hostkit-*.bak")


def test_compose_reads_the_swarm_file_only_on_a_swarm(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    s = stack_mod.Stack(host, "/opt/hostkit", _compose=["docker-compose"])
    s.write_env({})
    files = [a for a in s.compose_cmd() if a.endswith(".yml")]
    assert [Path(f).name for f in files] == ["docker-compose.yml"]
    s.write_env({"HOSTKIT_CLUSTER": "swarm"})
    files = [a for a in s.compose_cmd() if a.endswith(".yml")]
    assert [Path(f).name for f in files] == ["docker-compose.yml", "docker-compose.swarm.yml"]
    s.write_env({"HOSTKIT_CLUSTER": "kubernetes"})
    with pytest.raises(UsageError, match="HOSTKIT_CLUSTER=kubernetes"):
        s.compose_cmd()


def test_down_on_a_swarm_removes_the_users_services_too(tmp_path: Path) -> None:
    host = FakeHost(tmp_path, {
        ("docker", "ps", "-a", "--filter", "name=^jupyter-", "--format", "{{json .}}"): "",
        ("docker", "service", "ls", "--filter", "label=org.hostkit.stack=hostkit", "--format",
         "{{.Name}}"): "jupyter-alice\njupyter-bob\n",
        ("docker", "service", "rm", "jupyter-alice", "jupyter-bob"): "",
    }, binaries=("docker", "docker-compose"))
    s = stack_mod.Stack(host, "/opt/hostkit", _compose=["docker-compose"])
    s.write_env({"HOSTKIT_CLUSTER": "swarm"})
    host.commands[(*s.compose_cmd(), "down", "--remove-orphans")] = ""
    assert s.down() == ["jupyter-alice", "jupyter-bob"]
    assert host.calls[-1][-2:] == ("down", "--remove-orphans")
    s.write_env({"HOSTKIT_CLUSTER": ""})
    host.commands[(*s.compose_cmd(), "down", "--remove-orphans")] = ""
    assert s.down() == []
    assert not any(c[:3] == ("docker", "service", "ls") for c in host.calls[-3:])


def test_detect_compose_prefers_v2_then_v1(tmp_path: Path) -> None:
    v2 = FakeHost(tmp_path, {("docker", "compose", "version", "--short"): "2.30.3"})
    assert stack_mod.detect_compose(v2) == ["docker", "compose"]
    v1 = FakeHost(
        tmp_path,
        {
            ("docker", "compose", "version", "--short"): CommandResult((), 1, "", "not a docker command"),
            ("docker-compose", "version", "--short"): "1.29.2",
        },
        binaries=("docker", "docker-compose"),
    )
    assert stack_mod.detect_compose(v1) == ["docker-compose"]
    with pytest.raises(HostkitError, match="docker-compose"):
        stack_mod.detect_compose(FakeHost(tmp_path, binaries=()))


def test_primary_ip_reads_the_default_routes_source(tmp_path: Path) -> None:
    route = "1.1.1.1 via 10.0.0.1 dev eth0 src 10.0.0.7 uid 0 \n    cache \n"
    host = FakeHost(tmp_path, {("ip", "-4", "route", "get", "1.1.1.1"): route}, binaries=("ip",))
    assert stack_mod.primary_ip(host) == "10.0.0.7"
    assert stack_mod.primary_ip(FakeHost(tmp_path, binaries=("ip",))) is None


def _stack_with_compose(tmp_path: Path, answers: dict[tuple[str, ...], object]) -> stack_mod.Stack:
    host = FakeHost(tmp_path, binaries=("docker",))
    s = stack_mod.Stack(host, "/opt/hostkit")
    s.write_env({"COMPOSE_PROJECT_NAME": "hk"})
    s._compose = ["docker", "compose"]
    base = ("docker", "compose", "-p", "hk", "-f", str(host.path("/opt/hostkit/docker-compose.yml")))
    for args, answer in answers.items():
        key = base + args if args[:1] != ("docker",) else args
        host.commands[key] = answer  # type: ignore[assignment]
    return s


def test_service_states_and_user_containers(tmp_path: Path) -> None:
    def inspect(name: str, status: str, health: str) -> str:
        state: dict[str, object] = {"Status": status}
        if health:
            state["Health"] = {"Status": health}
        return json.dumps([{"Name": f"/{name}", "State": state}])

    rows = [
        {"Names": "jupyter-alice", "Status": "Up 2 minutes", "Image": "su", "Networks": "hostkit-jupyterhub"},
        {"Names": "jupyter-bob", "Status": "Up 1 minute", "Image": "su", "Networks": "other"},
    ]
    s = _stack_with_compose(
        tmp_path,
        {
            ("ps", "-q", "jupyterhub"): "aaa\n",
            ("ps", "-q", "nginx"): "",
            ("docker", "inspect", "aaa"): inspect("hk-jupyterhub-1", "running", "healthy"),
            (
                "docker",
                "ps",
                "-a",
                "--filter",
                "name=^jupyter-",
                "--format",
                "{{json .}}",
            ): "\n".join(json.dumps(r) for r in rows),
        },
    )
    states = s.service_states()
    assert states["jupyterhub"] == {"container": "hk-jupyterhub-1", "state": "running", "health": "healthy"}
    assert states["nginx"]["state"] == "absent"
    assert [u["name"] for u in s.user_containers()] == ["jupyter-alice"]


def test_wait_healthy_fails_fast_when_a_service_exited(tmp_path: Path) -> None:
    s = _stack_with_compose(tmp_path, {})
    s.service_states = lambda: {  # type: ignore[method-assign]
        "jupyterhub": {"container": "h", "state": "exited", "health": "unhealthy"},
        "nginx": {"container": "n", "state": "running", "health": "healthy"},
    }
    with pytest.raises(HostkitError, match="jupyterhub: exited/unhealthy"):
        s.wait_healthy(timeout=30, interval=0)


def test_hubctl_errors_become_hostkit_errors(tmp_path: Path) -> None:
    s = _stack_with_compose(tmp_path, {("ps", "-q", "jupyterhub"): "hub1\n"})
    host = s.host
    assert isinstance(host, FakeHost)
    key = ("docker", "exec", "-i", "hub1", "python3", stack_mod.HUBCTL, "approve", "zed")
    host.commands[key] = CommandResult(key, 1, '{"ok": false, "error": "no sign-up for zed"}', "")
    with pytest.raises(HostkitError, match="no sign-up for zed"):
        s.approve("zed")
    host.commands[key] = '{"ok": true, "approved": "zed", "changed": true}'
    assert s.approve("zed") is True


def test_runtime_files_keep_secrets_out_of_the_containers_environment(tmp_path: Path) -> None:
    chown = ("chown", "-R", "0:1000", str(tmp_path / "opt/hostkit/secrets/hub"))
    host = FakeHost(tmp_path, commands={chown: ""}, binaries=("docker", "chown"))
    s = stack_mod.Stack(host, "/opt/hostkit")
    env, _ = s.write_env({"HOSTKIT_ADMIN_HASH_B64": "JDJiJDEy=="})
    s.write_runtime_files()
    assert chown in host.calls  # root:hub, so only the hub's user reads them in the container
    hub_env = host.path("/opt/hostkit/hub.env").read_text()
    for key in stack_mod.SECRET_FILES:
        assert key not in hub_env
    assert "HOSTKIT_PORT=9090" in hub_env
    secrets = host.path("/opt/hostkit/secrets")
    assert secrets.stat().st_mode & 0o777 == 0o700
    assert (secrets / "hub").stat().st_mode & 0o777 == 0o750
    token = secrets / "hub" / "api_token"
    assert token.read_text() == env["HOSTKIT_API_TOKEN"]
    assert token.stat().st_mode & 0o777 == 0o440
    assert (secrets / "hub" / "admin_hash_b64").read_text() == "JDJiJDEy=="
    assert s.write_runtime_files() == []  # nothing changes the second time


def test_hsts_is_a_setting_off_for_self_signed_certificates_by_default() -> None:
    header = "add_header Strict-Transport-Security"
    assert header not in stack_mod.hsts_conf("auto", self_signed=True)
    assert header in stack_mod.hsts_conf("auto", self_signed=False)
    assert header in stack_mod.hsts_conf("on", self_signed=True)
    assert header not in stack_mod.hsts_conf("off", self_signed=False)
    with pytest.raises(UsageError, match="HOSTKIT_HSTS"):
        stack_mod.hsts_conf("yes", self_signed=False)


def test_changed_files_reach_the_containers_that_kept_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = FakeHost(tmp_path, commands={
        ("docker", "restart", "hub1"): "", ("docker", "restart", "nginx1"): "",
        ("docker", "exec", "nginx1", "nginx", "-s", "reload"): "",
    })  # fmt: skip
    s = stack_mod.Stack(host, "/opt/hostkit")
    monkeypatch.setattr(s, "container_id", {"jupyterhub": "hub1", "nginx": "nginx1"}.get)
    running = {"jupyterhub": "hub1", "nginx": "nginx1"}
    # a new certificate: nginx reloads, the hub is left alone
    assert s.take_effect(["/opt/hostkit/certs/hostkit.crt"], running) == ["reloaded nginx"]
    # nginx.conf is a single-file mount: only a restart shows the new file
    assert s.take_effect(["/opt/hostkit/nginx.conf"], running) == ["restarted nginx"]
    # the admin's additions or a new secret: the hub restarts (users' servers keep running)
    assert s.take_effect(["/opt/hostkit/jupyterhub_config.d/site.py"], running) == ["restarted jupyterhub"]
    # a container compose just recreated has the new files already
    recreated = {"jupyterhub": "old", "nginx": "nginx1"}
    assert s.take_effect(["/opt/hostkit/jupyterhub_config.py"], recreated) == []


def test_disk_quota_must_be_a_size() -> None:
    assert stack_mod.render_env({}, {"HOSTKIT_USER_DISK_QUOTA": "10G"})["HOSTKIT_USER_DISK_QUOTA"] == "10G"
    assert stack_mod.render_env({}, {})["HOSTKIT_USER_DISK_QUOTA"] == ""  # off by default
    with pytest.raises(UsageError, match="a size such as 10G"):
        stack_mod.render_env({}, {"HOSTKIT_USER_DISK_QUOTA": "ten gigs"})
