"""`hostkit upgrade` on the real stack: from an older JupyterHub 5.x to this hostkit's pins,
and a broken new hub image that the health gate refuses and rolls back.

The old deployment runs a hub built from this checkout's hub Dockerfile at JupyterHub
OLD_JUPYTERHUB (its own tag); nginx and the single-user image are this hostkit's, under tags
of the test's own. The single-user image is not rebuilt at an older pin set: the "new"
single-user image is the current one with one label added (a different image id, built in
seconds), which is what makes servers on the old image and stale stopped containers appear.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from stack_support import PACKAGE_SET, REPO, Deployment, HubUser, docker_json, new_deployment

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OLD_JUPYTERHUB = "5.3.0"
OWN_REPO = "hostkit-upgrade"  # the tags these tests make; none of them is a shared tag
BUILD = ["--base", "local", "--package-set", PACKAGE_SET]


def _docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


def _image_id(ref: str) -> str:
    return _docker("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()


def old_hub_image(tmp: Path) -> str:
    """This checkout's hub image at an older JupyterHub 5.x, built by hostkit's own builder
    from a copy of stack/ whose versions.env pins it (reused while its inputs are the same)."""
    from hostkit.host import LocalHost
    from hostkit.images import BuildOptions, BuildReport, ImageBuilder, resolve_ca_bundle

    stack = tmp / "stack-old-pins"
    shutil.copytree(REPO / "stack", stack)
    pins = stack / "versions.env"
    text = pins.read_text()
    current = next(line for line in text.splitlines() if line.startswith("JUPYTERHUB_VERSION="))
    pins.write_text(text.replace(current, f"JUPYTERHUB_VERSION={OLD_JUPYTERHUB}"))
    host = LocalHost()
    builder = ImageBuilder(host, BuildOptions(base="local", ca_bundle=resolve_ca_bundle(host, "system"),
                                              repository=OWN_REPO), stack_dir=stack)
    spec = builder.specs(f"hostkit/debian:{builder.versions['DEBIAN_SUITE']}", "unused")["hub"]
    return builder.build("hub", spec, BuildReport())


def derived_image(base: str, tag: str, instructions: str) -> str:
    """A tiny image FROM `base` under a tag of this module's own (the build lock is held)."""
    with tempfile.TemporaryDirectory() as context:
        (Path(context) / "Dockerfile").write_text(f"FROM {base}\n{instructions}\n")
        subprocess.run(["flock", "/tmp/hostkit-build.lock", "docker", "build", "-q", "-t", tag, context],
                       check=True, capture_output=True, text=True)
    return tag


@contextlib.contextmanager
def old_deployment(tmp: Path) -> Iterator[Deployment]:
    """A stack on the older hub, nginx and single-user images under this module's own tags;
    afterwards its containers, volumes and every tag made for it (rollback tags too) go."""
    dep = new_deployment(tmp)
    own = [f"{OWN_REPO}/nginx:{dep.prefix}", f"{OWN_REPO}/singleuser:{dep.prefix}"]
    try:
        dep.settings["HOSTKIT_HUB_IMAGE"] = old_hub_image(tmp)
        shared = (("HOSTKIT_NGINX_IMAGE", "hostkit/nginx:trixie"),
                  ("HOSTKIT_NOTEBOOK_IMAGE", "hostkit/singleuser:full"))
        current = {key: _image_id(ref) for key, ref in shared}
        for (key, image_id), tag in zip(current.items(), own):
            _docker("tag", image_id, tag)
            dep.settings[key] = tag
        dep.up("--no-build")
        yield dep
    finally:
        dep.cli("stack", "down", check=False)
        volumes = _docker("volume", "ls", "-q", "--filter", f"name={dep.prefix}", check=False).stdout
        for volume in volumes.split():
            _docker("volume", "rm", "-f", volume, check=False)
        rollback_tags = _docker("images", "--format", "{{.Repository}}:{{.Tag}}", "--filter",
                                f"reference=*/*:rollback-{dep.prefix}", check=False).stdout.split()
        for tag in [*own, *rollback_tags, f"{OWN_REPO}/singleuser-next:{dep.prefix}",
                    f"{OWN_REPO}/broken-hub:{dep.prefix}"]:
            _docker("rmi", tag, check=False)


@pytest.fixture(scope="module")
def old(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    if shutil.which("docker") is None or _docker("info", check=False).returncode != 0:
        pytest.fail("these tests need a running dockerd")
    with old_deployment(tmp_path_factory.mktemp("upgrade")) as dep:
        yield dep


@pytest.fixture(scope="module")
def dest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("backups") / "hostkit"


def _pw() -> str:
    return f"Pw-{uuid.uuid4().hex[:14]}"


DATA = "import os; open('/home/jovyan/work/thesis.txt', 'w').write('chapter one ' * 10000)"
SHA = "import hashlib; print(hashlib.sha256(open('/home/jovyan/work/thesis.txt','rb').read()).hexdigest())"


@pytest.fixture(scope="module")
def people(old: Deployment) -> dict[str, HubUser]:
    """alice (signed up, approved) with a file and a running server; bob with a file and a
    container that stopped behind the hub's back; carol approved, never logged in."""
    admin = HubUser(old, "admin", old.admin_password)
    alice, bob, carol = (HubUser(old, n, _pw()) for n in ("alice", "bob", "carol"))
    assert alice.signup().status_code == 200
    old.cli("users", "approve", "alice")
    old.cli("users", "create", "bob", "--password", bob.password)
    old.cli("users", "create", "carol", "--password", carol.password)
    for user in (alice, bob):
        _sign_in(user)
        user.start_server()
        _docker("exec", "-u", "1000", old.container_name(user.name), "python3", "-c", DATA)
    return {"admin": admin, "alice": alice, "bob": bob, "carol": carol}


def _sign_in(user: HubUser) -> None:
    """Log in, then load the home page: JupyterHub 5.3 ties the XSRF cookie to the session and
    renews it there, so an API call with the login page's cookie would be refused."""
    assert user.login(), f"{user.name} cannot log in"
    user.http.get(f"{user.dep.url}/hub/home", timeout=30).raise_for_status()


def _hub_version(dep: Deployment) -> str:
    return _docker("exec", dep.hub_container(), "jupyterhub", "--version").stdout.strip()


def _sha(dep: Deployment, user: str) -> str:
    return _docker("exec", "-u", "1000", dep.container_name(user), "python3", "-c", SHA).stdout.strip()


def _record(dep: Deployment) -> list[dict[str, object]]:
    return list(json.loads((dep.directory / "upgrades.json").read_text())["upgrades"])


def test_check_shows_the_older_hub_against_this_hostkits_pins_and_changes_nothing(
        old: Deployment, people: dict[str, HubUser]) -> None:
    env_before = (old.directory / ".env").read_text()
    proc = old.cli("upgrade", "--check", *BUILD)
    out = proc.stdout
    print(out)
    assert f"JupyterHub  {OLD_JUPYTERHUB} -> 5.5.4" in out
    hub_line = next(line for line in out.splitlines() if line.startswith("hub "))
    assert f"{OWN_REPO}/jupyterhub:{OLD_JUPYTERHUB}" in hub_line
    assert "-> hostkit/jupyterhub:5.5.4" in hub_line
    assert "unchanged" in next(line for line in out.splitlines() if line.startswith("nginx"))
    assert "upgrade needed" in out
    as_json = json.loads(old.cli("upgrade", "--check", "--format", "json", *BUILD).stdout)
    assert as_json["needed"] is True
    assert as_json["jupyterhub"] == {"running": OLD_JUPYTERHUB, "pinned": "5.5.4"}
    assert (old.directory / ".env").read_text() == env_before
    assert not (old.directory / "upgrades.json").exists()


def test_upgrade_from_an_older_jupyterhub_migrates_keeps_data_and_users_and_runs_code(
        old: Deployment, dest: Path, people: dict[str, HubUser]) -> None:
    shas = {u: _sha(old, u) for u in ("alice", "bob")}
    old_notebook = _image_id(old.env()["HOSTKIT_NOTEBOOK_IMAGE"])
    new_notebook = derived_image("hostkit/singleuser:full", f"{OWN_REPO}/singleuser-next:{old.prefix}",
                                 f"LABEL org.hostkit.test={old.prefix}")
    # bob's container stops behind the hub's back (the restarted hub notices and removes it),
    # and a stopped container of the old image that the hub knows nothing about, as a hub
    # with DockerSpawner.remove off leaves them: DockerSpawner would start it again as it is
    _docker("stop", old.container_name("bob"))
    _docker("create", "--name", old.container_name("dave"), "--network", old.network,
            old.env()["HOSTKIT_NOTEBOOK_IMAGE"], "true")
    proc = old.cli("upgrade", "--dest", str(dest), "--set", f"HOSTKIT_NOTEBOOK_IMAGE={new_notebook}", *BUILD)
    print(proc.stderr)
    print(proc.stdout)
    for phase in range(1, 8):
        assert f"[{phase}/7]" in proc.stderr
    assert "doctor: the stack checks pass" in proc.stderr
    assert "its kernel ran 1+1 = 2" in proc.stderr
    assert _hub_version(old) == "5.5.4"
    env = old.env()
    assert env["HOSTKIT_HUB_IMAGE"] == "hostkit/jupyterhub:5.5.4"
    assert env["HOSTKIT_NOTEBOOK_IMAGE"] == new_notebook
    # the old images stay, under rollback tags, with their ids
    (entry,) = _record(old)
    assert entry["outcome"] == "upgraded"
    before = entry["before"]["images"]  # type: ignore[index]
    for key in ("HOSTKIT_HUB_IMAGE", "HOSTKIT_NGINX_IMAGE", "HOSTKIT_NOTEBOOK_IMAGE"):
        assert _image_id(before[key]["rollback_tag"]) == before[key]["id"]
    assert before["HOSTKIT_NOTEBOOK_IMAGE"]["id"] == old_notebook
    # users' servers: alice's keeps running on the old image, bob's stale container is gone
    assert f"{old.container_name('alice')} keeps running on the old single-user image" in proc.stdout
    assert f"removed the stopped container {old.container_name('dave')} (old image)" in proc.stdout
    assert docker_json("inspect", old.container_name("alice"))[0]["Image"] == old_notebook
    for gone in ("bob", "dave"):
        assert _docker("inspect", old.container_name(gone), check=False).returncode != 0
    # the database: migrated copy in place, the old file kept beside it, no canary left
    hub_data = Path(docker_json("volume", "inspect", f"{old.prefix}-hub-data")[0]["Mountpoint"])
    assert (hub_data / str(entry["database"]["kept"])).exists()  # type: ignore[index]
    head = _docker("run", "--rm", "--entrypoint", "python3", "hostkit/jupyterhub:5.5.4", "-c",
                   "from alembic.script import ScriptDirectory; from alembic.config import Config; "
                   "import jupyterhub, os; c = Config(); c.set_main_option('script_location', "
                   "os.path.join(os.path.dirname(jupyterhub.__file__), 'alembic')); "
                   "print(ScriptDirectory.from_config(c).get_current_head())").stdout.strip()
    assert entry["database"]["after"] == head  # type: ignore[index]
    listed = {u["name"] for u in json.loads(old.cli("users", "list", "--format", "json").stdout)["users"]}
    assert listed == {"admin", "alice", "bob", "carol"}
    # users log in, their files are intact, and a kernel on the new image runs code
    for name in ("admin", "alice", "bob", "carol"):
        _sign_in(people[name])
    alice, bob = people["alice"], people["bob"]
    assert _sha(old, "alice") == shas["alice"]
    bob.start_server()
    assert docker_json("inspect", old.container_name("bob"))[0]["Image"] == _image_id(new_notebook)
    assert _sha(old, "bob") == shas["bob"]
    alice.stop_server()
    alice.start_server()
    assert docker_json("inspect", old.container_name("alice"))[0]["Image"] == _image_id(new_notebook)
    assert alice.run_code("1+1", alice.token()) == "2"


def test_a_broken_new_hub_image_fails_the_gate_and_the_old_stack_comes_back(
        old: Deployment, dest: Path, people: dict[str, HubUser]) -> None:
    env_before = old.env()
    hub_before = docker_json("inspect", old.hub_container())[0]["Image"]
    version_before = _hub_version(old)
    broken = derived_image(env_before["HOSTKIT_HUB_IMAGE"], f"{OWN_REPO}/broken-hub:{old.prefix}",
                           'ENTRYPOINT ["sh", "-c", "echo this hub image is broken >&2; exit 3"]')
    proc = old.cli("upgrade", "--dest", str(dest), "--no-volume-backup", "--timeout", "60",
                   "--set", f"HOSTKIT_HUB_IMAGE={broken}", *BUILD, check=False)
    print(proc.stderr)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    assert "upgrade rolled back: the stack did not start: docker-api" in errors[0]
    assert "this hub image is broken" in errors[0]
    assert "users' volumes not included" in proc.stdout + proc.stderr
    # the old images and database run again
    assert old.env()["HOSTKIT_HUB_IMAGE"] == env_before["HOSTKIT_HUB_IMAGE"]
    assert docker_json("inspect", old.hub_container())[0]["Image"] == hub_before
    assert _hub_version(old) == version_before
    entry = _record(old)[-1]
    assert entry["outcome"] == "rolled back"
    assert "did not start" in str(entry["reason"])
    for name in ("admin", "alice", "bob", "carol"):
        _sign_in(people[name])
    alice = people["alice"]
    alice.start_server()
    assert alice.run_code("1+1", alice.token()) == "2"


def test_rollback_goes_back_to_the_images_and_database_from_before_the_upgrade(
        old: Deployment, people: dict[str, HubUser]) -> None:
    upgraded = [e for e in _record(old) if e["outcome"] == "upgraded"]
    assert upgraded, "the upgrade test did not leave an upgrade to roll back"
    proc = old.cli("upgrade", "--rollback")
    print(proc.stderr)
    assert _hub_version(old) == OLD_JUPYTERHUB
    env = old.env()
    for key, image in upgraded[-1]["before"]["images"].items():  # type: ignore[union-attr]
        assert _image_id(env[key]) == image["id"], key
    assert _record(old)[-1]["outcome"] == "rolled back (--rollback)"
    for name in ("admin", "alice", "bob", "carol"):
        _sign_in(people[name])
    again = old.cli("upgrade", "--rollback", check=False)
    assert again.returncode == 2
    assert "no upgrade to roll back" in again.stderr
