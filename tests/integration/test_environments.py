"""Environments end to end: a hub offering `datascience` and a group-restricted `sage`.

A member of the group starts SageMath, whose kernel factors and plots over the websocket
through nginx; a user outside the group cannot start it (REST API or spawn form), and nobody
starts an image that is not on the menu. One deployment for the module, tests in order.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
import types
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from stack_support import REPO, Deployment, HubUser, docker_json, new_deployment, torn_down

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GROUP = "math101"


def _docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    deployment = new_deployment(tmp_path_factory.mktemp("environments"))
    deployment.settings.update(
        {
            "HOSTKIT_PROFILES": "datascience,sage",
            "HOSTKIT_PROFILE_SAGE_GROUPS": GROUP,
            "HOSTKIT_PROFILE_SAGE_MEM_LIMIT": "3G",
        }
    )
    with torn_down(deployment, "environments"):
        started = time.monotonic()
        proc = deployment.up()
        print(f"\n`hostkit stack up` with sage (build included) took {time.monotonic() - started:.0f}s")
        print(proc.stderr)
        yield deployment


@pytest.fixture(scope="module")
def admin(dep: Deployment) -> HubUser:
    user = HubUser(dep, "admin", dep.admin_password)
    assert user.login()
    return user


def _approved(dep: Deployment, admin: HubUser, name: str) -> HubUser:
    user = HubUser(dep, name, f"Pw-{uuid.uuid4().hex[:14]}")
    assert user.signup().status_code == 200
    # as the authorize page's link does in a browser (nginx refuses cross-site toggles)
    same_origin = {"Sec-Fetch-Site": "same-origin"}
    approved = admin.http.get(f"{dep.url}/hub/authorize/{name}", headers=same_origin, timeout=30)
    assert approved.status_code == 200
    assert user.login()
    return user


@pytest.fixture(scope="module")
def ann(dep: Deployment, admin: HubUser) -> HubUser:
    """A student in the course group that may use SageMath."""
    user = _approved(dep, admin, "ann")
    assert admin.api("POST", f"/groups/{GROUP}").status_code in (201, 409)
    r = admin.api("POST", f"/groups/{GROUP}/users", json={"users": ["ann"]})
    assert r.status_code == 200, r.text
    return user


@pytest.fixture(scope="module")
def bob(dep: Deployment, admin: HubUser) -> HubUser:
    """A user outside the group."""
    return _approved(dep, admin, "bob")


def _no_container(dep: Deployment, user: str) -> bool:
    found = _docker("ps", "-aq", "--filter", f"name=^{dep.container_name(user)}$", check=False)
    return found.stdout.strip() == ""


def test_the_sage_image_was_built_and_recorded(dep: Deployment) -> None:
    env = dep.env()
    assert env["HOSTKIT_PROFILES"] == "datascience,sage"
    assert env["HOSTKIT_SAGE_IMAGE"].startswith("hostkit/sage:")
    assert docker_json("image", "inspect", env["HOSTKIT_SAGE_IMAGE"])


def test_a_crafted_image_in_user_options_is_refused(dep: Deployment, bob: HubUser) -> None:
    crafted = ({"image": "busybox"}, {"profile": "busybox"}, {"profile": "datascience", "image": "busybox"})
    for options in crafted:
        r = bob.api("POST", f"/users/{bob.name}/server", json=options)
        assert r.status_code == 400, (options, r.status_code, r.text)
        assert not bob.server_state().get("servers")
    assert _no_container(dep, "bob")


def test_a_user_outside_the_group_cannot_start_sage_by_api_or_form(dep: Deployment, bob: HubUser) -> None:
    r = bob.api("POST", f"/users/{bob.name}/server", json={"profile": "sage"})
    assert r.status_code == 403, r.text
    assert "restricted" in r.text
    xsrf = bob.http.cookies.get("_xsrf", path="/hub/") or bob.http.cookies.get("_xsrf")
    form = bob.http.post(
        f"{dep.url}/hub/spawn/{bob.name}", data={"profile": "sage", "_xsrf": xsrf}, timeout=60
    )
    assert form.status_code == 403, form.text[:500]
    assert not bob.server_state().get("servers")
    assert _no_container(dep, "bob")


def test_the_spawn_form_offers_sage_to_a_group_member(dep: Deployment, ann: HubUser) -> None:
    page = ann.http.get(f"{dep.url}/hub/spawn", timeout=60)
    assert page.status_code == 200
    assert 'value="datascience"' in page.text
    assert 'value="sage"' in page.text
    assert "SageMath" in page.text


def test_sage_kernel_factors_and_plots_through_nginx(dep: Deployment, ann: HubUser) -> None:
    # picked on the spawn form, as a student would
    xsrf = ann.http.cookies.get("_xsrf", path="/hub/") or ann.http.cookies.get("_xsrf")
    picked = ann.http.post(
        f"{dep.url}/hub/spawn/{ann.name}", data={"profile": "sage", "_xsrf": xsrf}, timeout=120
    )
    assert picked.status_code == 200, picked.text[:500]
    ann.start_server(timeout=900)  # waits until ready (a start already under way is a 400 there)
    info = docker_json("inspect", dep.container_name("ann"))[0]
    assert info["Config"]["Image"] == dep.env()["HOSTKIT_SAGE_IMAGE"]
    assert info["HostConfig"]["Memory"] == 3 * 1024**3
    token = ann.token()
    kernels = ann.server_api("GET", "/kernelspecs", token).json()["kernelspecs"]
    assert {"sagemath", "python3", "ir", "octave"} <= set(kernels), sorted(kernels)
    factored = ann.run_code("factor(2^64-1)", token, timeout=300, kernel="sagemath")
    assert factored == "3 * 5 * 17 * 257 * 641 * 65537 * 6700417"
    png = ann.run_code(
        "plot(sin(x), (x, 0, 1)).save('/tmp/p.png'); import os; "
        "(open('/tmp/p.png', 'rb').read(8) == b'\\x89PNG\\r\\n\\x1a\\n', "
        "os.path.getsize('/tmp/p.png') > 1000)",
        token,
        timeout=300,
        kernel="sagemath",
    )
    assert png == "(True, True)"
    ann.stop_server()


def test_a_user_without_a_choice_gets_the_data_science_image(dep: Deployment, bob: HubUser) -> None:
    bob.start_server()
    info = docker_json("inspect", dep.container_name("bob"))[0]
    assert info["Config"]["Image"] == dep.env()["HOSTKIT_NOTEBOOK_IMAGE"]
    assert info["HostConfig"]["Memory"] == 2 * 1024**3
    bob.stop_server()


def _profiles_module() -> Any:
    path = REPO / "stack" / "hostkit_profiles.py"
    spec = importlib.util.spec_from_file_location("hostkit_profiles_e2e", path)
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("mode", "expected"), [("per-user", (0, ["1"])), ("shared", (-1, []))])
def test_the_gpu_profile_reaches_the_daemon_as_device_requests(
    mode: str, expected: tuple[int, list[str]]
) -> None:
    """No GPU here: the daemon records the request on create; only starting it needs a GPU."""
    docker = pytest.importorskip("docker")
    hp = _profiles_module()
    env = {"HOSTKIT_PROFILES": "datascience,gpu", "HOSTKIT_GPU_READY": "1", "HOSTKIT_GPU_DEVICES": "1,0"}
    config = types.SimpleNamespace(
        Spawner=types.SimpleNamespace(), DockerSpawner=types.SimpleNamespace(extra_host_config={})
    )
    hp.configure(config, {**env, "HOSTKIT_GPU_MODE": mode})
    spawner = types.SimpleNamespace(
        user=types.SimpleNamespace(name="gina", groups=[]), name="", environment={},
        log=types.SimpleNamespace(info=lambda *a: None),
    )
    config.Spawner.apply_user_options(spawner, {"profile": "gpu"})
    client = docker.from_env()
    image = next(i for i in ("hostkit/debian:trixie", "hostkit/singleuser:full") if client.images.list(i))
    # what DockerSpawner.create_object does with extra_host_config
    host_config = client.api.create_host_config(**spawner.extra_host_config)
    created = client.api.create_container(
        image, ["true"], host_config=host_config, labels={"hostkit.probe": "1"}
    )
    try:
        (request,) = client.api.inspect_container(created["Id"])["HostConfig"]["DeviceRequests"]
    finally:
        client.api.remove_container(created["Id"], force=True)
    assert request["Driver"] == "nvidia"
    assert (request["Count"], request["DeviceIDs"] or []) == expected
    assert request["Capabilities"] == [["gpu", "utility", "compute"]]
