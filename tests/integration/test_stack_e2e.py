"""The bundled stack end to end: images built here without a registry, `hostkit stack up`,
then everything through nginx over HTTPS on a free port, as users would see it.

Tests in this module run in order on one deployment (building it is the expensive part).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from stack_support import Deployment, HubUser, docker_json, new_deployment

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SAME_ORIGIN = {"Sec-Fetch-Site": "same-origin"}
ARTIFACTS = Path(os.environ.get("HOSTKIT_TEST_ARTIFACTS", "/tmp/hostkit-test-artifacts"))


def _docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    if shutil.which("docker") is None or _docker("info", check=False).returncode != 0:
        pytest.fail("these tests need a running dockerd")
    deployment = new_deployment(tmp_path_factory.mktemp("stack"))
    started = time.monotonic()
    proc = deployment.up()
    print(f"\n`hostkit stack up` (build included) took {time.monotonic() - started:.0f}s")
    print(proc.stderr)
    assert f"https://localhost:{deployment.port}/" in proc.stdout
    try:
        yield deployment
    finally:
        logs = deployment.cli("stack", "logs", "--tail", "300", check=False)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "stack-logs.txt").write_text(logs.stdout + logs.stderr)
        deployment.remove()


@pytest.fixture(scope="module")
def admin(dep: Deployment) -> HubUser:
    return HubUser(dep, "admin", dep.admin_password)


def _user(dep: Deployment, name: str) -> HubUser:
    return HubUser(dep, name, f"Pw-{uuid.uuid4().hex[:14]}")


@pytest.fixture(scope="module")
def alice(dep: Deployment, admin: HubUser) -> HubUser:
    """A user who signed up and was approved by the admin in the web UI."""
    user = _user(dep, "alice")
    assert user.signup().status_code == 200
    assert admin.login()
    # as the authorize page's link does in a browser (nginx refuses cross-site toggles)
    r = admin.http.get(f"{dep.url}/hub/authorize/alice", headers=SAME_ORIGIN, timeout=30)
    assert r.status_code == 200, r.text
    assert user.login()
    return user


def test_hub_api_answers_through_nginx_with_tls_hardening(dep: Deployment) -> None:
    r = requests.get(f"{dep.url}/hub/api", verify=False, timeout=30)  # noqa: S501 - self-signed
    assert r.status_code == 200
    assert r.json()["version"] == dep.env().get("HOSTKIT_HUB_IMAGE", "").rsplit(":", 1)[-1]
    # HSTS would pin every port of the name to a certificate no browser trusts: off by default
    assert "Strict-Transport-Security" not in r.headers
    plain = requests.get(f"http://127.0.0.1:{dep.port}/hub/api", allow_redirects=False, timeout=30)
    assert plain.status_code == 301
    assert plain.headers["Location"] == f"https://127.0.0.1:{dep.port}/hub/api"


def test_a_second_up_changes_nothing(dep: Deployment) -> None:
    env_before = (dep.directory / ".env").read_text()
    hub_before = dep.hub_container()
    proc = dep.up()
    assert "wrote " not in proc.stderr, proc.stderr
    assert (dep.directory / ".env").read_text() == env_before
    assert dep.hub_container() == hub_before  # not recreated
    # the admin exists: a password given again is not applied (the hub owns it now)
    assert "--admin-password is ignored" in proc.stderr


def test_env_holds_generated_secrets_with_mode_0600(dep: Deployment) -> None:
    env_file = dep.directory / ".env"
    assert env_file.stat().st_mode & 0o777 == 0o600
    env = dep.env()
    assert len(env["HOSTKIT_API_TOKEN"]) == 64
    assert env["HOSTKIT_ADMIN_HASH_B64"]
    assert dep.admin_password not in env_file.read_text()
    assert (dep.directory / "certs" / "hostkit.key").stat().st_mode & 0o777 == 0o600


def test_installer_admin_logs_in_and_nobody_can_sign_up_as_admin(dep: Deployment, admin: HubUser) -> None:
    impostor = HubUser(dep, "admin", "Impostor-" + uuid.uuid4().hex[:10])
    impostor.signup()
    assert not impostor.login()
    assert admin.login()
    r = admin.api("GET", "/users")
    assert r.status_code == 200, r.text
    assert {"name": "admin", "admin": True}.items() <= next(
        u for u in r.json() if u["name"] == "admin"
    ).items()


def test_signup_waits_for_approval_by_the_admin_or_the_cli(dep: Deployment, admin: HubUser) -> None:
    carol = _user(dep, "carol")
    assert carol.signup().status_code == 200
    assert not carol.login()
    assert admin.login()
    approved = admin.http.get(f"{dep.url}/hub/authorize/carol", headers=SAME_ORIGIN, timeout=30)
    assert approved.status_code == 200
    assert carol.login()

    bob = _user(dep, "bob")
    assert bob.signup().status_code == 200
    assert not bob.login()
    listed = json.loads(dep.cli("users", "list", "--format", "json").stdout)["users"]
    assert {"name": "bob", "approved": False}.items() <= next(u for u in listed if u["name"] == "bob").items()
    assert "bob approved" in dep.cli("users", "approve", "bob").stdout
    assert bob.login()
    assert "already approved" in dep.cli("users", "approve", "bob").stdout
    missing = dep.cli("users", "approve", "nobody", check=False)
    assert missing.returncode != 0
    assert "no sign-up for nobody" in missing.stderr


def test_users_create_makes_an_approved_account(dep: Deployment) -> None:
    dave = _user(dep, "dave")
    proc = dep.cli("users", "create", "dave", "--password", dave.password)
    assert "dave created" in proc.stdout
    assert dave.login()
    short = dep.cli("users", "create", "erin", "--password", "short", check=False)
    assert short.returncode != 0
    assert "at least" in short.stderr


def test_server_runs_on_the_named_network_with_a_named_volume_and_computes(
    dep: Deployment, alice: HubUser
) -> None:
    alice.start_server()
    info = docker_json("inspect", dep.container_name("alice"))[0]
    assert dep.network in info["NetworkSettings"]["Networks"]
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    assert mounts["/home/jovyan/work"]["Type"] == "volume"
    assert mounts["/home/jovyan/work"]["Name"] == dep.volume_name("alice")
    assert info["HostConfig"]["Memory"] == 2 * 1024**3
    # the host is reachable under its fixed name (the seed's extra_hosts tip)
    env = dep.env()
    assert env["HOSTKIT_HOST_IP"] != "host-gateway", "stack up found no primary address"
    hosts = _docker("exec", dep.container_name("alice"), "getent", "hosts", env["HOSTKIT_HOST_ALIAS"])
    assert hosts.stdout.split()[0] == env["HOSTKIT_HOST_IP"]
    token = alice.token()
    assert alice.run_code("1+1", token) == "2"


def test_work_survives_server_restart_hub_restart_and_stack_down_up(dep: Deployment, alice: HubUser) -> None:
    alice.start_server()
    token = alice.token()
    content = f"kept {uuid.uuid4()}"
    r = alice.server_api(
        "PUT", "/contents/kept.txt", token, json={"type": "file", "format": "text", "content": content}
    )
    assert r.status_code in (200, 201), r.text

    alice.stop_server()
    assert _docker("inspect", dep.container_name("alice"), check=False).returncode != 0  # remove=True
    alice.start_server()
    token = alice.token()
    assert alice.server_api("GET", "/contents/kept.txt", token).json()["content"] == content

    # a hub restart leaves the user's server (same container) running and reachable
    before = docker_json("inspect", dep.container_name("alice"))[0]["Id"]
    _docker("restart", dep.hub_container())
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        health = docker_json("inspect", dep.hub_container())[0]["State"].get("Health", {}).get("Status")
        if health == "healthy":
            break
        time.sleep(2)
    assert docker_json("inspect", dep.container_name("alice"))[0]["Id"] == before
    assert alice.run_code("40+2", token) == "42"

    secrets_before = {k: v for k, v in dep.env().items() if "TOKEN" in k or "HASH" in k}
    down = dep.cli("stack", "down")
    assert "stack stopped" in down.stdout
    assert _docker("inspect", dep.container_name("alice"), check=False).returncode != 0
    assert _docker("volume", "inspect", dep.volume_name("alice"), check=False).returncode == 0
    dep.up()
    assert {k: v for k, v in dep.env().items() if "TOKEN" in k or "HASH" in k} == secrets_before
    assert alice.login()
    alice.start_server()
    token = alice.token()
    assert alice.server_api("GET", "/contents/kept.txt", token).json()["content"] == content


def test_status_and_logs_show_services_and_user_containers(dep: Deployment, alice: HubUser) -> None:
    alice.start_server()
    status = json.loads(dep.cli("stack", "status", "--format", "json").stdout)
    assert status["healthy"] is True
    assert {s["state"] for s in status["services"].values()} == {"running"}
    assert dep.container_name("alice") in [c["name"] for c in status["user_containers"]]
    logs = dep.cli("stack", "logs", "jupyterhub", "--tail", "50").stdout
    assert "JupyterHub is now running" in logs or "200 GET /hub/health" in logs
    user_logs = dep.cli("stack", "logs", dep.container_name("alice"), "--tail", "20")
    assert user_logs.returncode == 0


def test_five_wrong_passwords_lock_the_account(dep: Deployment) -> None:
    frank = _user(dep, "frank")
    dep.cli("users", "create", "frank", "--password", frank.password)
    assert frank.login()
    for _ in range(5):
        assert not frank.login("Wrong-password-123")
    assert not frank.login()  # the right password no longer helps while locked out


def test_headless_chromium_logs_in_and_reaches_jupyterlab(dep: Deployment, alice: HubUser) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is needed: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "jupyterlab.png"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
            ],
        )
        try:
            page = browser.new_context(ignore_https_errors=True).new_page()
            page.goto(f"{dep.url}/hub/login", timeout=60_000)
            page.fill("input[name=username]", alice.name)
            page.fill("input[name=password]", alice.password)
            page.click("#login_submit, input[type=submit], button[type=submit]")
            page.wait_for_url(f"**/user/{alice.name}/lab**", timeout=600_000)
            page.wait_for_selector("#jp-main-dock-panel", timeout=180_000)
            page.wait_for_selector(".jp-LauncherCard", timeout=120_000)
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000


def test_idle_culler_stops_an_idle_server(dep: Deployment, alice: HubUser) -> None:
    """Last: restarts the hub with a short culling timeout."""
    dep.settings.update({"HOSTKIT_CULL_TIMEOUT": "30", "HOSTKIT_CULL_EVERY": "10"})
    dep.up()
    assert alice.login()
    alice.start_server()
    alice.wait_stopped(timeout=240)
    deadline = time.monotonic() + 60
    while _docker("inspect", dep.container_name("alice"), check=False).returncode == 0:
        assert time.monotonic() < deadline, "the culled server's container was not removed"
        time.sleep(2)
    logs = dep.cli("stack", "logs", "jupyterhub", "--tail", "400").stdout
    assert f"Culling server {alice.name}" in logs
