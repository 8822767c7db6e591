"""Day two on the real stack: backup while users work, disaster, restore, accounts.

One deployment for the module (tests run in order). Two users with files (a hard link, a
~50 MB file, names with spaces and unicode) and running servers, an approved user who
never logged in and a pending sign-up; then backup, kill -9 during a backup, destroy
everything and restore, one user's restore, deletion and password reset.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from stack_support import PACKAGE_SET, REPO, Deployment, HubUser, docker_json, new_deployment, torn_down

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ODD = "odd dir ünï/naïve \u2013 file (1) 🐍.txt"  # an en dash, spaces, an emoji
MAKE_FILES = f"""
import os, random
os.chdir('/home/jovyan/work')
os.makedirs('odd dir ünï', exist_ok=True)
open({ODD!r}, 'w').write('spaces and unicode\\n')
open('notes.ipynb', 'w').write('{{"cells": [], "who": "' + os.environ['JUPYTERHUB_USER'] + '"}}')
with open('big.bin', 'wb') as f:
    f.write(random.Random(os.environ['JUPYTERHUB_USER']).randbytes(50 * 1024 * 1024))
os.link('notes.ipynb', 'hard link to notes.ipynb')
os.symlink('notes.ipynb', 'symlink to notes')
os.chmod('notes.ipynb', 0o640)
"""


def _docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


def mountpoint(volume: str) -> Path:
    return Path(docker_json("volume", "inspect", volume)[0]["Mountpoint"])


def tree(volume: str) -> dict[str, Any]:
    """Every entry of a volume: sha256 (files), mode, owner, and which paths share an inode."""
    base = mountpoint(volume)
    out: dict[str, Any] = {}
    inodes: dict[int, list[str]] = {}
    for path in sorted(base.rglob("*")):
        rel = str(path.relative_to(base))
        st = path.lstat()
        entry: dict[str, Any] = {"mode": st.st_mode, "uid": st.st_uid, "gid": st.st_gid}
        if path.is_symlink():
            entry["link"] = os.readlink(path)
        elif path.is_file():
            entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
            inodes.setdefault(st.st_ino, []).append(rel)
        out[rel] = entry
    out["hard links"] = sorted(sorted(v) for v in inodes.values() if len(v) > 1)
    return out


def this_checkouts_hub_image() -> str:
    """The hub image built from this checkout's stack/ (found by its input-hash label, even
    when the shared tag was moved to another build meanwhile)."""
    from hostkit.host import LocalHost
    from hostkit.images import (
        DEFAULT_MIRROR,
        HASH_LABEL,
        BuildOptions,
        ImageBuilder,
        input_hash,
        resolve_ca_bundle,
    )

    host = LocalHost()
    builder = ImageBuilder(host, BuildOptions(base="local", ca_bundle=resolve_ca_bundle(host, "system"),
                                              mirror=DEFAULT_MIRROR, package_set=PACKAGE_SET))
    debian = f"hostkit/debian:{builder.versions['DEBIAN_SUITE']}"
    spec = builder.specs(debian, "unused")["hub"]
    files = {k: c for k, (c, _) in builder._context_files(spec).items()}
    wanted = input_hash(files, spec.build_args, builder.image_id(debian) or "", builder._ca)
    ids = _docker("images", "-q", "--no-trunc", "--filter", f"label={HASH_LABEL}={wanted}").stdout.split()
    # Builds share /var/lib/hostkit/build: a build racing another checkout's can carry this
    # label with the other's Dockerfile. Keep the images whose user is the one ours sets.
    dockerfile = builder.stack_dir / "hub" / "Dockerfile"
    users = [line.split()[1] for line in dockerfile.read_text().splitlines() if line.startswith("USER ")]
    user = users[-1] if users else ""
    ours = [i for i in ids if docker_json("inspect", i)[0]["Config"]["User"] == user]
    assert ours, f"stack up did not leave a hub image built from {dockerfile}"
    return ours[0]


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    deployment = new_deployment(tmp_path_factory.mktemp("daytwo"))
    pins: list[str] = []
    with torn_down(deployment, "daytwo"):
        print(deployment.up().stderr)  # which images were built or reused
        # Pin the images this deployment runs under tags of its own: the restore below starts
        # the stack again, and on a shared machine the stack's tags may meanwhile point elsewhere.
        hub_image = this_checkouts_hub_image()
        env = deployment.env()
        for key, image in (("HOSTKIT_HUB_IMAGE", hub_image),
                           ("HOSTKIT_NGINX_IMAGE", env["HOSTKIT_NGINX_IMAGE"]),
                           ("HOSTKIT_NOTEBOOK_IMAGE", env["HOSTKIT_NOTEBOOK_IMAGE"])):
            pin = f"{env[key].rsplit(':', 1)[0]}:{deployment.prefix}"
            _docker("tag", image, pin)
            pins.append(pin)
            deployment.settings[key] = pin
        # and start afresh on them: the first start may have run another build's hub on the volume
        deployment.cli("stack", "down")
        _docker("volume", "rm", f"{deployment.prefix}-hub-data")
        deployment.up("--no-build")
        yield deployment
    for pin in pins:
        _docker("rmi", pin, check=False)


@pytest.fixture(scope="module")
def dest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("backups") / "hostkit"


def _pw() -> str:
    return f"Pw-{uuid.uuid4().hex[:14]}"


@pytest.fixture(scope="module")
def people(dep: Deployment) -> dict[str, HubUser]:
    """alice (signed up, approved in the UI), bob (created), carol (approved, never logged in),
    dave (pending sign-up); alice and bob have files and running servers."""
    admin = HubUser(dep, "admin", dep.admin_password)
    alice, bob, carol, dave = (HubUser(dep, n, _pw()) for n in ("alice", "bob", "carol", "dave"))
    assert alice.signup().status_code == 200
    assert admin.login()
    # as the authorize page's link does in a browser (nginx refuses cross-site toggles)
    same_origin = {"Sec-Fetch-Site": "same-origin"}
    approved = admin.http.get(f"{dep.url}/hub/authorize/alice", headers=same_origin, timeout=30)
    assert approved.status_code == 200
    dep.cli("users", "create", "bob", "--password", bob.password)
    dep.cli("users", "create", "carol", "--password", carol.password)
    assert dave.signup().status_code == 200
    for user in (alice, bob):
        assert user.login()
        user.start_server()
        _docker("exec", "-u", "1000", dep.container_name(user.name), "python3", "-c", MAKE_FILES)
    return {"admin": admin, "alice": alice, "bob": bob, "carol": carol, "dave": dave}


def _users(dep: Deployment) -> dict[str, tuple[bool, bool]]:
    listed = json.loads(dep.cli("users", "list", "--format", "json").stdout)["users"]
    return {u["name"]: (u["approved"], u["admin"]) for u in listed}


def _backup(dep: Deployment, dest: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return dep.cli("backup", "--dest", str(dest), *extra)


def _listed(dep: Deployment, dest: Path) -> list[str]:
    out = dep.cli("backup", "--list", "--dest", str(dest)).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def test_backup_while_the_hub_and_servers_run(dep: Deployment, dest: Path,
                                              people: dict[str, HubUser]) -> None:
    hub_before = dep.hub_container()
    servers = {u: docker_json("inspect", dep.container_name(u))[0]["Id"] for u in ("alice", "bob")}
    proc = _backup(dep, dest, "--keep", "3")
    assert "2 user volumes" in proc.stdout, proc.stdout + proc.stderr
    assert "1 awaiting approval" in proc.stdout
    (name,) = _listed(dep, dest)
    backup = dest / name
    manifest = json.loads((backup / "manifest.json").read_text())
    kinds = {i["kind"] for i in manifest["items"]}
    assert kinds == {"hub-db", "hub-file", "config", "pins", "volume"}
    targets = {i.get("target") for i in manifest["items"]}
    assert {str(dep.directory / ".env"), str(dep.directory / "certs" / "hostkit.key")} <= targets
    assert manifest["jupyterhub_version"] == "5.5.4"
    assert all(v["id"].startswith("sha256:") for v in manifest["images"].values())
    states = {u["name"]: (u["approved"], u["admin"]) for u in manifest["users"]}
    assert states == {"admin": (True, True), "alice": (True, False), "bob": (True, False),
                      "carol": (True, False), "dave": (False, False)}
    for path in [dest, *backup.rglob("*")]:
        mode = path.stat().st_mode & 0o777
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
        assert path.stat().st_uid == 0
    # nothing was stopped or restarted
    assert dep.hub_container() == hub_before
    assert {u: docker_json("inspect", dep.container_name(u))[0]["Id"] for u in servers} == servers
    assert True  # progress lines go to stderr
    assert "MiB" in proc.stderr


def test_kill_9_during_a_backup_leaves_the_last_one_intact_and_the_partial_one_unlisted(
        dep: Deployment, dest: Path, people: dict[str, HubUser]) -> None:
    (good,) = _listed(dep, dest)
    # a change, so the volumes are archived again (unchanged ones would only be linked)
    _docker("exec", "-u", "1000", dep.container_name("alice"), "sh", "-c",
            "head -c 30000000 /dev/urandom > /home/jovyan/work/more.bin")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hostkit", "backup", "--dest", str(dest), "--deploy-dir", str(dep.directory)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        partial = list(dest.glob(".partial-*/volumes/*.tar"))
        if partial:
            break
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert partial, "the backup never started writing a volume"
    assert _listed(dep, dest) == [good]
    assert list(dest.glob(".partial-*"))
    assert "verified" in dep.cli("restore", good, "--dest", str(dest), "--dry-run").stdout
    # the next backup clears what the killed one left
    proc2 = _backup(dep, dest)
    assert "left by an interrupted backup" in proc2.stderr
    assert not list(dest.glob(".partial-*"))
    assert len(_listed(dep, dest)) == 2


def test_an_unchanged_volume_is_linked_not_copied_again(dep: Deployment, dest: Path,
                                                        people: dict[str, HubUser]) -> None:
    proc = _backup(dep, dest, "--keep", "3")
    names = _listed(dep, dest)
    assert len(names) == 3
    assert "unchanged" in proc.stdout + proc.stderr
    bob_tar = f"volumes/{dep.volume_name('bob')}.tar"
    assert (dest / names[-1] / bob_tar).stat().st_ino == (dest / names[-2] / bob_tar).stat().st_ino
    # --keep 3 prunes the oldest full backup on the next run
    _backup(dep, dest, "--keep", "3")
    assert _listed(dep, dest) == [*names[1:], _listed(dep, dest)[-1]]


def test_doctor_checks_the_last_backup(dep: Deployment, dest: Path, tmp_path: Path) -> None:
    settings = tmp_path / "hostkit.toml"
    settings.write_text(f'backup_dir = "{dest}"\ndeploy_dir = "{dep.directory}"\n')
    proc = subprocess.run([sys.executable, "-m", "hostkit", "doctor", "--only", "backup", "--format",
                           "json", "--settings", str(settings)], cwd=REPO, capture_output=True,
                          text=True, check=False)
    checks = {c["id"]: c for c in json.loads(proc.stdout)["checks"]}
    assert checks["backup.age"]["status"] == "pass", checks
    assert checks["backup.verifies"]["status"] == "pass", checks
    # a damaged archive is found
    last = dest / _listed(dep, dest)[-1]
    hub_db = last / "hub" / "jupyterhub.sqlite"
    saved = hub_db.read_bytes()
    hub_db.write_bytes(saved[:-1] + bytes([saved[-1] ^ 1]))
    try:
        proc = subprocess.run([sys.executable, "-m", "hostkit", "doctor", "--only", "backup.verifies",
                               "--format", "json", "--settings", str(settings)], cwd=REPO,
                              capture_output=True, text=True, check=False)
        (check,) = json.loads(proc.stdout)["checks"]
        assert check["status"] == "fail"
        assert "jupyterhub.sqlite" in check["summary"]
    finally:
        hub_db.write_bytes(saved)


def test_destroy_everything_then_restore_brings_back_files_accounts_and_servers(
        dep: Deployment, dest: Path, people: dict[str, HubUser]) -> None:
    _backup(dep, dest)
    files = {u: tree(dep.volume_name(u)) for u in ("alice", "bob")}
    assert files["alice"]["hard links"] == [["hard link to notes.ipynb", "notes.ipynb"]]
    assert ODD in files["alice"]
    assert files["alice"]["big.bin"]["uid"] == 1000
    states = _users(dep)

    dep.cli("stack", "down")
    for volume in (dep.volume_name("alice"), dep.volume_name("bob"), f"{dep.prefix}-hub-data"):
        _docker("volume", "rm", volume)

    proc = dep.cli("restore", "latest", "--dest", str(dest))
    assert "restored volume" in proc.stdout, proc.stdout + proc.stderr
    assert "started the stack" in proc.stdout
    # the doctor's stack checks ran on the restored hub, and passed
    for check in ("stack.services", "stack.https", "stack.hub-from-network"):
        assert f"doctor {check}: pass" in proc.stdout, proc.stdout
    assert {u: tree(dep.volume_name(u)) for u in ("alice", "bob")} == files
    assert _users(dep) == states
    for name in ("admin", "alice", "bob", "carol"):
        assert people[name].login(), f"{name} cannot log in after the restore"
    assert not people["dave"].login()  # still waiting for approval
    alice = people["alice"]
    alice.start_server()
    assert alice.run_code("1+1", alice.token()) == "2"
    # a second run converges: files and settings are as in the backup; the database has moved
    # on since the hub started (activity times), so only --force would take it back
    again = dep.cli("restore", "latest", "--dest", str(dest), "--dry-run").stdout
    states_again = dict(reversed(line.split(None, 1)) for line in again.splitlines()[1:]
                        if line.startswith("  "))
    assert states_again.pop("jupyterhub.sqlite") == "differs"
    assert set(states_again.values()) == {"same"}, again
    assert "would refuse without --force: hub database" in again


def test_kill_9_during_a_restore_then_a_rerun_converges(
        dep: Deployment, dest: Path, people: dict[str, HubUser]) -> None:
    files = {u: tree(dep.volume_name(u)) for u in ("alice", "bob")}
    dep.cli("stack", "down")
    for volume in (dep.volume_name("alice"), dep.volume_name("bob"), f"{dep.prefix}-hub-data"):
        _docker("volume", "rm", volume)
    proc = subprocess.Popen(
        [sys.executable, "-m", "hostkit", "restore", "latest", "--dest", str(dest), "--deploy-dir",
         str(dep.directory)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True)
    volumes = Path(docker_json("info", "--format", "{{json .}}")["DockerRootDir"]) / "volumes"
    deadline = time.monotonic() + 120
    incoming = f"{dep.prefix}-user-*/_data.hostkit-incoming"
    while time.monotonic() < deadline and not list(volumes.glob(incoming)):
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the restore finished before it could be killed"
    again = dep.cli("restore", "latest", "--dest", str(dest))
    assert "started the stack" in again.stdout, again.stdout + again.stderr
    assert {u: tree(dep.volume_name(u)) for u in ("alice", "bob")} == files
    assert not list(volumes.glob(f"{dep.prefix}-*/_data.hostkit-incoming"))
    assert people["alice"].login()


def test_one_users_restore_refuses_to_overwrite_changes_unless_forced_and_keeps_them(
        dep: Deployment, dest: Path, people: dict[str, HubUser]) -> None:
    alice = people["alice"]
    assert alice.login()
    alice.start_server()
    before = tree(dep.volume_name("alice"))
    _docker("exec", "-u", "1000", dep.container_name("alice"), "rm", "/home/jovyan/work/notes.ipynb")
    refused = dep.cli("restore", "latest", "--dest", str(dest), "--users", "alice", check=False)
    assert refused.returncode != 0
    assert "would be overwritten" in refused.stderr
    proc = dep.cli("restore", "latest", "--dest", str(dest), "--users", "alice", "--force")
    assert "stopped alice's server" in proc.stdout, proc.stdout
    kept = [line for line in proc.stdout.splitlines() if "before the restore are in volume" in line]
    assert kept, proc.stdout
    aside = kept[0].rsplit(" ", 1)[-1]
    assert not (mountpoint(aside) / "notes.ipynb").exists()
    assert tree(dep.volume_name("alice")) == before
    _docker("volume", "rm", aside)
    alice.start_server()
    token = alice.token()
    assert alice.server_api("GET", "/contents/notes.ipynb", token).status_code == 200


def test_reset_password_then_login_with_the_new_one(dep: Deployment, people: dict[str, HubUser]) -> None:
    carol = people["carol"]
    new = _pw()
    weak = subprocess.run([sys.executable, "-m", "hostkit", "users", "reset-password", "carol",
                           "--deploy-dir", str(dep.directory)], input="short\n", cwd=REPO,
                          capture_output=True, text=True, check=False)
    assert weak.returncode != 0
    assert "at least" in weak.stderr
    proc = subprocess.run([sys.executable, "-m", "hostkit", "users", "reset-password", "carol",
                           "--deploy-dir", str(dep.directory)], input=new + "\n", cwd=REPO,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert not carol.login()
    assert carol.login(new)


def test_delete_backs_up_the_volume_first_and_one_user_restore_brings_it_back(
        dep: Deployment, dest: Path, people: dict[str, HubUser]) -> None:
    bob = people["bob"]
    before = tree(dep.volume_name("bob"))
    _docker("volume", "create", f"{dep.prefix}-user-ghost")
    listed = dep.cli("users", "volumes").stdout
    assert "ghost" in listed
    assert "NO ACCOUNT" in listed
    assert "MiB" in listed
    proc = dep.cli("users", "delete", "bob", "--yes", "--dest", str(dest))
    assert "removed volume" in proc.stdout, proc.stdout + proc.stderr
    assert _docker("volume", "inspect", dep.volume_name("bob"), check=False).returncode != 0
    assert "bob" not in _users(dep)
    assert not bob.login()
    backup = proc.stdout.split("hostkit restore ", 1)[1].split()[0]
    restored = dep.cli("restore", backup, "--users", "bob")
    assert tree(dep.volume_name("bob")) == before
    # the account comes back too, with its password and approval
    assert "restored the account bob" in restored.stdout, restored.stdout
    assert _users(dep)["bob"] == (True, False)
    assert bob.login()


def test_two_backups_of_one_deployment_never_run_at_once(
        dep: Deployment, dest: Path, people: dict[str, HubUser]) -> None:
    before = _listed(dep, dest)
    # a change, so the first backup archives a volume again
    (mountpoint(dep.volume_name("alice")) / "concurrent.bin").write_bytes(os.urandom(20_000_000))
    first = subprocess.Popen(
        [sys.executable, "-m", "hostkit", "backup", "--dest", str(dest), "--deploy-dir", str(dep.directory)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(dest.glob(".partial-*/volumes")):
        time.sleep(0.01)
    # hold the first one mid-backup (as a slow disk would) while the second one starts
    os.kill(first.pid, signal.SIGSTOP)
    try:
        assert list(dest.glob(".partial-*/volumes")), "the first backup never started"
        second = subprocess.run(
            [sys.executable, "-m", "hostkit", "backup", "--dest", str(dest), "--deploy-dir",
             str(dep.directory)], cwd=REPO, capture_output=True, text=True, check=False, timeout=600)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, out + err
    assert second.returncode != 0, "a second backup ran while the first one was writing"
    assert "another hostkit backup" in second.stderr
    assert f"is running on {dep.directory}" in second.stderr
    assert len(_listed(dep, dest)) == len(before) + 1
    (mountpoint(dep.volume_name("alice")) / "concurrent.bin").unlink()
