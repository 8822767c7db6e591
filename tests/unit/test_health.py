"""The upgrade's canary on a scripted hub: it spawns, runs code on a kernel, and leaves nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import pytest

from hostkit.health import KERNEL_CLIENT, Canary
from hostkit.host import CommandResult
from hostkit.stack import Stack
from tests.fakes import FakeHost


class Hub:
    """The hub API as the canary sees it: users, one server each, readiness after a poll."""

    def __init__(self, server_stops: bool = False) -> None:
        self.users: set[str] = set()
        self.servers: dict[str, int] = {}
        self.server_stops = server_stops
        self.calls: list[tuple[str, str]] = []

    def __call__(self, stack: Stack, method: str, path: str,  # noqa: PLR0911 - one answer per route
                 body: Optional[dict[str, Any]] = None) -> tuple[int, str]:
        self.calls.append((method, path))
        name = path.split("/")[3] if path.startswith("/api/users/") else ""
        if method == "POST" and path == f"/api/users/{name}":
            if name in self.users:
                return 409, "{}"
            self.users.add(name)
            return 201, "{}"
        if method == "POST" and path.endswith("/server"):
            self.servers[name] = 0
            return 202, ""
        if method == "GET":
            polls = self.servers.get(name)
            if polls is None or self.server_stops:
                return 200, json.dumps({"servers": {}})
            self.servers[name] = polls + 1
            return 200, json.dumps({"servers": {"": {"ready": polls >= 1}}})
        if method == "DELETE" and path == f"/api/users/{name}":
            self.users.discard(name)
            self.servers.pop(name, None)
            return 204, ""
        return 204, ""


def _stack(tmp_path: Path, kernel_answer: str) -> tuple[FakeHost, Stack]:
    host = FakeHost(tmp_path, {
        ("docker", "exec", "jupyter-hostkitcanary", "python3", "-c", KERNEL_CLIENT, "1+1"): kernel_answer,
        ("docker", "rm", "-f", "jupyter-hostkitcanary"): "",
        ("docker", "volume", "ls", "--format", "{{.Name}}"):
            "jupyterhub-user-alice\njupyterhub-user-hostkitcanary\n",
        ("docker", "volume", "rm", "jupyterhub-user-hostkitcanary"): "",
        ("sleep", "2"): "",
    }, binaries=("docker", "sleep"))
    host.files({"/opt/hostkit/.env": "HOSTKIT_ADMIN=admin\n"})
    return host, Stack(host, "/opt/hostkit")


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Hub:
    fake = Hub()
    monkeypatch.setattr("hostkit.accounts.hub_api", fake)
    monkeypatch.setattr(Stack, "users", lambda self: [{"name": n} for n in fake.users])
    monkeypatch.setattr(Stack, "create_user", lambda self, name, password: None)
    monkeypatch.setattr("hostkit.health.time.sleep", lambda s: None)
    monkeypatch.setattr("hostkit.accounts.delete_account",
                        lambda stack, name: fake(stack, "DELETE", f"/api/users/{name}"))
    return fake


def test_the_canary_spawns_runs_one_plus_one_and_is_removed_with_its_volume(tmp_path: Path, hub: Hub) -> None:
    host, stack = _stack(tmp_path, '{"result": "2"}\n')
    result = Canary(stack).run()
    assert result.ok, result.detail
    assert "ran 1+1 = 2" in result.detail
    assert ("POST", "/api/users/hostkitcanary") in hub.calls  # the hub user, not only the sign-up
    assert hub.users == set()
    assert ("docker", "volume", "rm", "jupyterhub-user-hostkitcanary") in host.calls
    assert ("docker", "volume", "rm", "jupyterhub-user-alice") not in host.calls


@pytest.mark.parametrize(("answer", "detail"), [
    ('{"result": "error: NameError x"}\n', "answered 'error: NameError x' to 1+1"),
    (CommandResult((), 1, "", "Traceback ...\nConnectionRefusedError: [Errno 111]"),
     "kernel did not run code: ConnectionRefusedError"),
])
def test_a_kernel_that_does_not_answer_two_fails_the_canary_and_says_how(
        tmp_path: Path, hub: Hub, answer: Any, detail: str) -> None:
    _, stack = _stack(tmp_path, answer)
    result = Canary(stack).run()
    assert not result.ok
    assert detail in result.detail
    assert hub.users == set()


def test_a_server_that_stops_while_starting_fails_the_canary(tmp_path: Path, hub: Hub) -> None:
    hub.server_stops = True
    _, stack = _stack(tmp_path, '{"result": "2"}\n')
    result = Canary(stack).run()
    assert not result.ok
    assert "stopped while starting" in result.detail
