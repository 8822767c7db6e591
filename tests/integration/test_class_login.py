"""A class logs in at once: ten users through nginx, each to a kernel running `1+1`.

The real stack with its admission: servers boot two at a time (HOSTKIT_SPAWN_SLOTS), the
others wait in the hub's queue; nobody gets an error or a timeout. How long it takes is
bench/spawn.py's business, not this test's.
"""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from stack_support import Deployment, HubUser, new_deployment

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLASS_SIZE = 10
NAT_CLASS_SIZE = 40  # a lecture behind one campus NAT address
SLOTS = 2
PASSWORD = "Class-" + uuid.uuid4().hex[:12]


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    deployment = new_deployment(tmp_path_factory.mktemp("class"))
    deployment.settings["HOSTKIT_SPAWN_SLOTS"] = str(SLOTS)
    deployment.up()
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            names = [f"student{i}" for i in range(CLASS_SIZE)]
            list(pool.map(lambda n: deployment.cli("users", "create", n, "--password", PASSWORD), names))
        yield deployment
    finally:
        deployment.remove()


def test_forty_logins_at_once_from_one_address_all_reach_the_hub(dep: Deployment) -> None:
    """A class behind one campus NAT address: nginx's login limit lets all of them through.

    Unknown names, so that the hub answers each at once (no bcrypt): what is tested is that
    none of them is stopped by nginx (429) on the way.
    """

    def post_login(name: str) -> int:
        user = HubUser(dep, name, PASSWORD)
        xsrf = user._xsrf("/hub/login")
        r = user.http.post(
            f"{dep.url}/hub/login",
            data={"username": name, "password": PASSWORD, "_xsrf": xsrf},
            allow_redirects=False,
            timeout=120,
        )
        return r.status_code

    names = [f"visitor{i}" for i in range(NAT_CLASS_SIZE)]
    with ThreadPoolExecutor(max_workers=NAT_CLASS_SIZE) as pool:
        statuses = list(pool.map(post_login, names))
    assert statuses == [200] * NAT_CLASS_SIZE  # the login page again (no such user), never 429


def _to_one_plus_one(dep: Deployment, name: str) -> str:
    """'' when the student got from login to `2`, else what went wrong."""
    user = HubUser(dep, name, PASSWORD)
    try:
        assert user.login(), "login refused"
        user.start_server(timeout=1800)
        result = user.run_code("1+1", user.token())
        assert result == "2", f"1+1 gave {result!r}"
    except Exception as exc:  # every student's failure is reported, not only the first
        return f"{name}: {type(exc).__name__}: {exc}"
    return ""


def test_ten_students_at_once_all_reach_a_kernel_without_errors(dep: Deployment) -> None:
    names = [f"student{i}" for i in range(CLASS_SIZE)]
    with ThreadPoolExecutor(max_workers=CLASS_SIZE) as pool:
        errors = [e for e in pool.map(lambda name: _to_one_plus_one(dep, name), names) if e]
    assert errors == []
    log = subprocess.run(
        ["docker", "logs", dep.hub_container()], capture_output=True, text=True, check=True
    )
    events = re.findall(
        rf"Starting container {dep.prefix}-(student\d+) |User (student\d+) took [\d.]+ seconds to start",
        log.stdout + log.stderr,
    )
    booting: set[str] = set()
    most = 0
    for starting, ready in events:
        if starting:
            booting.add(starting)
        else:
            booting.discard(ready)
        most = max(most, len(booting))
    assert len([s for s, _ in events if s]) == CLASS_SIZE
    assert most == SLOTS  # the queue was used, and never more than SLOTS servers booted at once


def test_servers_started_before_the_class_are_the_students_own_and_running_at_login(dep: Deployment) -> None:
    # the ten servers above still run; two students' are stopped, as after a night
    for name in ("student0", "student1"):
        user = HubUser(dep, name, PASSWORD)
        assert user.login()
        user.stop_server()
    dry = dep.cli("users", "start", "--all", "--dry-run")
    assert "would start: student0 student1" in dry.stdout  # not the admin, not running ones
    started = dep.cli("users", "start", "student0", "student1", "student2")
    rows = {line.split()[0]: line for line in started.stdout.splitlines()}
    assert rows["student0"].endswith("ready")
    assert rows["student1"].endswith("ready")
    assert rows["student2"].endswith("running already")
    mounts = json.loads(subprocess.run(
        ["docker", "inspect", "-f", "{{json .Mounts}}", dep.container_name("student0")],
        capture_output=True, text=True, check=True).stdout)
    assert [m["Name"] for m in mounts if m["Type"] == "volume"] == [dep.volume_name("student0")]
    user = HubUser(dep, "student0", PASSWORD)
    assert user.login()
    assert user.server_state()["servers"][""]["ready"]  # at login, before asking for anything
    assert user.run_code("1+1", user.token()) == "2"


def test_a_class_of_more_than_one_page_of_hub_users_is_started_whole(dep: Deployment) -> None:
    """The hub lists its users 200 at a time; a large class must not lose the rest."""
    admin = HubUser(dep, "admin", dep.admin_password)
    assert admin.login()
    crowd = [f"crowd{i:03d}" for i in range(205)]  # hub users only: no account, no server
    r = admin.api("POST", "/users", json={"usernames": crowd})
    assert r.status_code == 201, r.text
    try:
        dry = dep.cli("users", "start", "--all", "--dry-run")
        listed = dry.stdout.split("would start:", 1)[1].split()
        assert [n for n in listed if n.startswith("crowd")] == crowd
    finally:
        for name in crowd:
            admin.api("DELETE", f"/users/{name}")


def test_a_full_hub_says_the_server_is_queued_and_retries_instead_of_an_error(dep: Deployment) -> None:
    # the ten servers above still run; allow one: the next student finds the hub full
    dep.settings["HOSTKIT_ACTIVE_SERVER_LIMIT"] = "1"
    dep.up()
    dep.cli("users", "create", "latecomer", "--password", PASSWORD)
    user = HubUser(dep, "latecomer", PASSWORD)
    assert user.login()
    r = user.http.get(f"{dep.url}/hub/spawn/latecomer", timeout=60)  # what the browser opens
    assert r.status_code == 429
    assert "your server is queued" in r.text
    assert "Active user limit exceeded" in r.text  # the hub's own reason, shown as it is
    assert "window.location.replace" in r.text  # the page retries by itself
