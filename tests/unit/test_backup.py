"""Backups and restores on a temp root: Docker's volumes are directories, tar is the real one."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import pytest
from fakes import FakeHost

from hostkit.backup import (
    BackupMaker,
    BackupRequest,
    clean_partials,
    find_backup,
    list_backups,
    prune,
    verify,
)
from hostkit.errors import HostkitError, UsageError
from hostkit.host import CommandResult
from hostkit.restore import Restorer
from hostkit.schedule import CRON_FILE, install_schedule
from hostkit.settings import load_settings
from hostkit.stack import Stack
from hostkit.volumes import archive_fingerprint, tree_fingerprint, volume_pattern

VOLUMES = "/var/lib/docker/volumes"
DEPLOY = "/opt/hostkit"


class VolumeHost(FakeHost):
    """docker volume ls/inspect/create/rm over directories; every other command is real."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, binaries=("docker", "tar"))

    def run(self, argv: Sequence[str], **kwargs: Any) -> CommandResult:
        key = tuple(str(a) for a in argv)
        self.calls.append(key)
        names = self.listdir(VOLUMES)
        if key[:3] == ("docker", "volume", "ls"):
            return CommandResult(key, 0, "\n".join(names) + "\n", "")
        if key[:3] == ("docker", "volume", "inspect"):
            if key[3] not in names:
                return CommandResult(key, 1, "", "no such volume")
            info = [{"Name": key[3], "Driver": "local", "Mountpoint": f"{VOLUMES}/{key[3]}/_data"}]
            return CommandResult(key, 0, json.dumps(info), "")
        if key[:3] == ("docker", "volume", "create"):
            self.makedirs(f"{VOLUMES}/{key[-1]}/_data")
            return CommandResult(key, 0, key[-1], "")
        if key[:3] == ("docker", "image", "inspect"):
            return CommandResult(key, 0, "sha256:" + "0" * 64 + "\n", "")
        return CommandResult(key, 127, "", f"unexpected command {key}")


class StoppedStack(Stack):
    """A deployed stack whose containers are not running (no compose needed)."""

    ups: int = 0

    def container_id(self, service: str) -> Optional[str]:
        return None

    def up(self, timeout: float = 300) -> dict[str, dict[str, str]]:
        self.ups += 1
        return {}


def _hub_db(path: Path, users: dict[str, bool]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE users_info (username TEXT, password BLOB, is_authorized BOOLEAN)")
    db.execute("CREATE TABLE users (name TEXT, admin BOOLEAN)")
    for name, approved in users.items():
        db.execute("INSERT INTO users_info VALUES (?, ?, ?)", (name, b"hash", approved))
    db.execute("INSERT INTO users VALUES ('admin', 1)")
    db.commit()
    db.close()


def _user_files(data: Path) -> None:
    (data / "odd dir ünï").mkdir(parents=True)
    (data / "odd dir ünï" / "a b (1) 🐍.txt").write_text("odd\n")
    (data / "notes.ipynb").write_text('{"cells": []}')
    os.link(data / "notes.ipynb", data / "hard link")
    os.symlink("notes.ipynb", data / "link")
    (data / "big.bin").write_bytes(os.urandom(300_000))
    for p in [data, *data.rglob("*")]:
        os.lchown(p, 1000, 100)


@pytest.fixture
def site(tmp_path: Path) -> tuple[VolumeHost, Stack]:
    host = VolumeHost(tmp_path)
    host.files({f"{DEPLOY}/.env": "HOSTKIT_ADMIN=admin\nHOSTKIT_API_TOKEN=secret\n",
                f"{DEPLOY}/docker-compose.yml": "services: {}\n",
                f"{DEPLOY}/certs/hostkit.key": "KEY\n",
                "/etc/hostkit/hostkit.toml": "public_port = 9090\n"})
    host.chmod(f"{DEPLOY}/.env", 0o600)
    _hub_db(host.path(f"{VOLUMES}/hostkit-hub-data/_data/jupyterhub.sqlite"),
            {"admin": True, "alice": True, "dave": False})
    host.write_bytes(f"{VOLUMES}/hostkit-hub-data/_data/jupyterhub_cookie_secret", b"cookie")
    for p in ("", "/jupyterhub.sqlite", "/jupyterhub_cookie_secret"):  # a hub that is not root
        os.chown(host.path(f"{VOLUMES}/hostkit-hub-data/_data{p}"), 1000, 1000)
    _user_files(host.path(f"{VOLUMES}/jupyterhub-user-alice/_data"))
    host.makedirs(f"{VOLUMES}/jupyterhub-user-bob/_data")
    (host.path(f"{VOLUMES}/jupyterhub-user-bob/_data") / "b.txt").write_text("bob")
    return host, StoppedStack(host, DEPLOY)


def _backup(stack: Stack, **kw: Any) -> Any:
    return BackupMaker(stack, BackupRequest(dest="/backups", **kw)).run()


def test_volume_pattern_takes_the_user_name_from_the_template() -> None:
    pattern = volume_pattern({"HOSTKIT_USER_VOLUME": "hk1-user-{username}"})
    assert pattern.match("hk1-user-alice").group(1) == "alice"  # type: ignore[union-attr]
    assert pattern.match("jupyterhub-user-alice") is None


def test_an_archive_and_the_tree_it_came_from_have_one_fingerprint(site: tuple[VolumeHost, Stack]) -> None:
    host, stack = site
    result = _backup(stack)
    item = next(i for i in result.items if i.get("user") == "alice")
    live = tree_fingerprint(host, f"{VOLUMES}/jupyterhub-user-alice/_data")
    assert archive_fingerprint(host, f"{result.path}/{item['path']}") == live
    assert item["fingerprint"] == live[0]


def test_backup_writes_every_item_with_its_digest_and_root_only_modes(site: tuple[VolumeHost, Stack]) -> None:
    host, stack = site
    result = _backup(stack)
    (listed,) = list_backups(host, "/backups")
    assert listed.full
    assert listed.path == result.path
    paths = {i["path"] for i in listed.manifest["items"]}
    assert {"hub/jupyterhub.sqlite", "hub/jupyterhub_cookie_secret", "config/deploy/.env",
            "config/deploy/docker-compose.yml", "config/deploy/certs/hostkit.key",
            "config/etc/hostkit.toml", "config/versions.env",
            "volumes/jupyterhub-user-alice.tar", "volumes/jupyterhub-user-bob.tar"} == paths
    users = {u["name"]: u["approved"] for u in listed.manifest["users"]}
    assert users == {"admin": True, "alice": True, "dave": False}
    assert verify(host, listed) == []
    for p in [host.path("/backups"), *host.path("/backups").rglob("*")]:
        assert p.stat().st_mode & 0o777 == (0o700 if p.is_dir() else 0o600), p


def test_a_damaged_item_does_not_verify_and_restore_refuses_it(site: tuple[VolumeHost, Stack]) -> None:
    host, stack = site
    result = _backup(stack)
    with host.path(f"{result.path}/volumes/jupyterhub-user-bob.tar").open("r+b") as fh:
        fh.write(b"X")
    backup = find_backup(host, "latest", "/backups")
    assert [p.split(":")[0] for p in verify(host, backup)] == ["volumes/jupyterhub-user-bob.tar"]
    with pytest.raises(HostkitError, match="does not verify"):
        Restorer(stack, backup, users=[], force=False).plan()


def test_an_interrupted_backup_is_not_listed_and_the_next_one_removes_it(
        site: tuple[VolumeHost, Stack]) -> None:
    host, _stack = site
    host.makedirs("/backups/.partial-hostkit-20260101T000000Z/volumes")
    host.write_bytes("/backups/.partial-hostkit-20260101T000000Z/.pid", b"999999999")
    host.write_bytes("/backups/.partial-hostkit-20260101T000000Z/manifest.json", b"{}")
    assert list_backups(host, "/backups") == []
    assert clean_partials(host, "/backups") == [".partial-hostkit-20260101T000000Z"]
    assert host.listdir("/backups") == []


def test_unchanged_volumes_are_linked_and_keep_prunes_only_full_backups(
        site: tuple[VolumeHost, Stack], monkeypatch: pytest.MonkeyPatch) -> None:
    host, stack = site
    stamps = iter(f"2026010{d}T000000Z" for d in range(1, 10))
    monkeypatch.setattr("hostkit.backup.time.strftime",
                        lambda fmt, *_: "hostkit-" + next(stamps) if fmt.startswith("hostkit-") else "x")
    first = _backup(stack)
    (host.path(f"{VOLUMES}/jupyterhub-user-bob/_data") / "new.txt").write_text("new")
    second = _backup(stack)
    assert second.linked == ["jupyterhub-user-alice"]
    alice = "volumes/jupyterhub-user-alice.tar"
    assert host.stat(f"{first.path}/{alice}").st_ino == host.stat(f"{second.path}/{alice}").st_ino
    partial = _backup(stack, users=["bob"])
    third = _backup(stack)
    assert prune(host, "/backups", 1) == [first.name, second.name]
    assert [b.name for b in list_backups(host, "/backups")] == [partial.name, third.name]
    assert verify(host, list_backups(host, "/backups")[-1]) == []  # links survive the pruning


def test_restore_into_an_empty_host_then_again_changes_nothing(site: tuple[VolumeHost, Stack]) -> None:
    host, stack = site
    before = tree_fingerprint(host, f"{VOLUMES}/jupyterhub-user-alice/_data")
    _backup(stack)
    for volume in ("jupyterhub-user-alice", "jupyterhub-user-bob", "hostkit-hub-data"):
        host.rmtree(f"{VOLUMES}/{volume}")
    host.unlink(f"{DEPLOY}/.env")
    backup = find_backup(host, "latest", "/backups")
    restorer = Restorer(stack, backup, users=[], force=False)
    report = restorer.apply(restorer.plan())
    assert any("restored volume jupyterhub-user-alice" in line for line in report.done)
    assert tree_fingerprint(host, f"{VOLUMES}/jupyterhub-user-alice/_data") == before
    data = host.path(f"{VOLUMES}/jupyterhub-user-alice/_data")
    assert os.stat(data / "notes.ipynb").st_ino == os.stat(data / "hard link").st_ino
    assert host.stat(f"{DEPLOY}/.env").st_mode & 0o777 == 0o600
    assert "HOSTKIT_API_TOKEN=secret" in host.read_text(f"{DEPLOY}/.env")
    for p in ("", "/jupyterhub.sqlite", "/jupyterhub_cookie_secret"):
        st = host.stat(f"{VOLUMES}/hostkit-hub-data/_data{p}")
        assert (st.st_uid, st.st_gid) == (1000, 1000), p
    assert host.stat(f"{VOLUMES}/hostkit-hub-data/_data/jupyterhub_cookie_secret").st_mode & 0o777 == 0o600
    assert isinstance(stack, StoppedStack)
    assert stack.ups == 1
    again = Restorer(stack, backup, users=[], force=False).plan()
    assert {d.state for d in again.decisions} == {"same"}


def test_a_changed_volume_is_refused_without_force_and_kept_aside_with_it(
        site: tuple[VolumeHost, Stack]) -> None:
    host, stack = site
    before = tree_fingerprint(host, f"{VOLUMES}/jupyterhub-user-alice/_data")
    _backup(stack)
    host.unlink(f"{VOLUMES}/jupyterhub-user-alice/_data/notes.ipynb")
    backup = find_backup(host, "latest", "/backups")
    refused = Restorer(stack, backup, users=["alice"], force=False)
    with pytest.raises(UsageError, match="would be overwritten"):
        refused.apply(refused.plan())
    forced = Restorer(stack, backup, users=["alice"], force=True)
    report = forced.apply(forced.plan())
    assert tree_fingerprint(host, f"{VOLUMES}/jupyterhub-user-alice/_data") == before
    (aside,) = [n for n in host.listdir(VOLUMES) if n.startswith("jupyterhub-user-alice.replaced-")]
    assert not host.exists(f"{VOLUMES}/{aside}/_data/notes.ipynb")
    assert host.exists(f"{VOLUMES}/{aside}/_data/big.bin")
    assert any(aside in line for line in report.kept)
    with pytest.raises(UsageError, match="no volume of carol"):
        Restorer(stack, backup, users=["carol"], force=False).plan()


def test_a_new_hubs_database_is_replaced_without_force_but_a_used_one_is_not(
        site: tuple[VolumeHost, Stack]) -> None:
    host, stack = site
    _backup(stack)
    db = host.path(f"{VOLUMES}/hostkit-hub-data/_data/jupyterhub.sqlite")
    db.unlink()
    _hub_db(db, {"admin": True})
    backup = find_backup(host, "latest", "/backups")
    decision = next(d for d in Restorer(stack, backup, users=[], force=False).plan().decisions
                    if d.item["kind"] == "hub-db")
    assert decision.state == "missing"
    db.unlink()
    _hub_db(db, {"admin": True, "erin": True})
    restorer = Restorer(stack, backup, users=[], force=False)
    assert any("hub database" in r for r in restorer.refusals(restorer.plan()))


def test_schedule_without_systemd_writes_a_cron_file_and_tells_the_doctor(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    done = install_schedule(host, "weekly", "/srv/backups", 4, DEPLOY)
    cron = host.read_text(CRON_FILE)
    assert "30 2 * * 0 root " in cron
    assert "backup --dest /srv/backups --keep 4 --deploy-dir /opt/hostkit" in cron
    settings = load_settings(host)
    assert settings.backup_dir == "/srv/backups"
    assert settings.backup_max_age_hours == 192
    assert any("cron" in line for line in done)
    install_schedule(host, "off", "/srv/backups", 4, DEPLOY)
    assert not host.exists(CRON_FILE)


def test_schedule_with_systemd_installs_and_enables_a_timer(tmp_path: Path) -> None:
    host = FakeHost(tmp_path, binaries=("systemctl",), commands={
        ("systemctl", "daemon-reload"): "", ("systemctl", "enable", "--now", "hostkit-backup.timer"): ""})
    host.files({"/proc/1/comm": "systemd\n"})
    install_schedule(host, "daily", "/var/backups/hostkit", 7, DEPLOY)
    timer = host.read_text("/etc/systemd/system/hostkit-backup.timer")
    assert "OnCalendar=*-*-* 02:30:00" in timer
    assert "Persistent=true" in timer
    assert "hostkit backup --dest" in host.read_text("/etc/systemd/system/hostkit-backup.service")
    assert ("systemctl", "enable", "--now", "hostkit-backup.timer") in host.calls
    assert not host.exists(CRON_FILE)


def test_the_admins_hub_additions_and_the_acme_account_key_survive_a_restore_on_a_fresh_host(
        site: tuple[VolumeHost, Stack]) -> None:
    """jupyterhub_config.d/ is where the admin's own hub settings live (hostkit never writes
    there), and the ACME account key is what a certificate authority knows the site by: a
    restore onto a fresh host that lacks them loses the admin's work and the account."""
    host, stack = site
    host.files({f"{DEPLOY}/jupyterhub_config.d/50-course.py": "c.Spawner.default_url = '/lab'\n",
                f"{DEPLOY}/acme/account.key": "ACCOUNT KEY\n"})
    host.chmod(f"{DEPLOY}/acme/account.key", 0o600)
    _backup(stack)
    for volume in ("jupyterhub-user-alice", "jupyterhub-user-bob", "hostkit-hub-data"):
        host.rmtree(f"{VOLUMES}/{volume}")
    for gone in ("jupyterhub_config.d", "acme"):
        host.rmtree(f"{DEPLOY}/{gone}")
    backup = find_backup(host, "latest", "/backups")
    restorer = Restorer(stack, backup, users=[], force=False)
    restorer.apply(restorer.plan())
    assert host.read_text(f"{DEPLOY}/jupyterhub_config.d/50-course.py") == "c.Spawner.default_url = '/lab'\n"
    assert host.read_text(f"{DEPLOY}/acme/account.key") == "ACCOUNT KEY\n"
    assert host.stat(f"{DEPLOY}/acme/account.key").st_mode & 0o777 == 0o600


# ---- a cluster's manager: users' volumes on the workers -------------------------------------
class ClusterHost(VolumeHost):
    """The manager of a swarm whose workers are directories; `ssh NODE CMD` is
    `env FAKE_NODE=ADDR sh -c CMD`: tar, find and sh run for real on the node's directory,
    docker's volume commands are answered from it."""

    def __init__(self, root: Path, nodes_dir: Path) -> None:
        super().__init__(root)
        self.nodes_dir = nodes_dir
        self.nodes: dict[str, dict[str, Any]] = {}  # id -> node as `docker node inspect` has it

    def add_node(self, node_id: str, hostname: str, state: str = "ready", memory: int = 8 << 30) -> Path:
        addr = f"10.0.0.{len(list(self.nodes_dir.glob('*'))) + 2 if self.nodes_dir.exists() else 2}"
        self.nodes[node_id] = {
            "ID": node_id, "Spec": {"Role": "worker", "Availability": "active", "Labels": {}},
            "Description": {"Hostname": hostname, "Resources": {"MemoryBytes": memory, "NanoCPUs": 2e9}},
            "Status": {"State": state, "Addr": addr}}
        path = self.nodes_dir / addr
        path.mkdir(parents=True, exist_ok=True)
        return path

    def node_volumes(self, hostname: str) -> Path:
        node = next(n for n in self.nodes.values() if n["Description"]["Hostname"] == hostname)
        return self.nodes_dir / node["Status"]["Addr"]

    def run(self, argv: Sequence[str], **kwargs: Any) -> CommandResult:  # noqa: PLR0911
        key = tuple(str(a) for a in argv)
        if key[0] == "env" and key[1].startswith("FAKE_NODE="):
            return self._on_node(key[1].split("=", 1)[1], key)
        if key[:2] == ("docker", "info"):
            return CommandResult(key, 0, json.dumps({"LocalNodeState": "active", "NodeID": "m",
                                                     "ControlAvailable": True}), "")
        if key[:4] == ("docker", "node", "ls", "-q"):
            return CommandResult(key, 0, "\n".join(self.nodes) + "\n", "")
        if key[:3] == ("docker", "node", "inspect"):
            return CommandResult(key, 0, json.dumps([self.nodes[i] for i in key[3:]]), "")
        if key[:3] == ("docker", "node", "update"):
            self.calls.append(key)
            labels = self.nodes[key[-1]]["Spec"]["Labels"]
            if key[3] == "--label-add":
                labels.update([key[4].split("=", 1)])
            else:
                labels.pop(key[4])
            return CommandResult(key, 0, "", "")
        if key[:3] == ("docker", "service", "ls"):
            return CommandResult(key, 0, "", "")
        return super().run(argv, **kwargs)

    def _on_node(self, addr: str, key: tuple[str, ...]) -> CommandResult:
        import shlex
        import subprocess

        self.calls.append(key)
        cmd = shlex.split(key[-1])
        volumes = self.nodes_dir / addr
        if cmd[:3] == ["docker", "volume", "ls"]:
            return CommandResult(key, 0, "\n".join(sorted(os.listdir(volumes))) + "\n", "")
        if cmd[:3] == ["docker", "volume", "inspect"]:
            if not (volumes / cmd[3]).exists():
                return CommandResult(key, 1, "", "no such volume")
            info = [{"Name": cmd[3], "Driver": "local", "Mountpoint": str(volumes / cmd[3] / "_data")}]
            return CommandResult(key, 0, json.dumps(info), "")
        if cmd[:3] == ["docker", "volume", "create"]:
            (volumes / cmd[-1] / "_data").mkdir(parents=True)
            return CommandResult(key, 0, cmd[-1], "")
        if cmd[:2] == ["docker", "ps"]:
            return CommandResult(key, 0, "", "")
        assert cmd[0] != "docker", cmd
        proc = subprocess.run(key, capture_output=True, text=True, check=False)
        return CommandResult(key, proc.returncode, proc.stdout, proc.stderr)


def _live(path: Path) -> tuple[str, int, int]:
    """A worker's tree (outside the manager's root) as find/tar on it see it."""
    from hostkit.host import LocalHost

    return tree_fingerprint(LocalHost(), str(path))


@pytest.fixture
def cluster_site(site: tuple[VolumeHost, Stack], tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> tuple[ClusterHost, Stack]:
    from hostkit.subsystems import swarm

    monkeypatch.setattr(swarm, "ssh_argv", lambda user, addr: ["env", f"FAKE_NODE={addr}", "sh", "-c"])
    host = ClusterHost(site[0].root, tmp_path / "nodes")
    host.makedirs("/tmp")
    host.write_text(f"{DEPLOY}/.env", host.read_text(f"{DEPLOY}/.env") + "HOSTKIT_CLUSTER=swarm\n")
    _user_files(host.add_node("w1", "worker1") / "jupyterhub-user-alice" / "_data")
    carol = host.add_node("w2", "worker2", memory=16 << 30) / "jupyterhub-user-carol" / "_data"
    carol.mkdir(parents=True)
    (carol / "c.txt").write_text("carol")
    return host, StoppedStack(host, DEPLOY)


def test_a_remote_trees_fingerprint_from_find_is_the_local_one(tmp_path: Path) -> None:
    import subprocess

    from hostkit.host import LocalHost
    from hostkit.volumes import FIND_PRINTF, find_fingerprint

    data = tmp_path / "data"
    _user_files(data)
    (data / "tab\there\nnewline").write_text("x")
    (data / os.fsdecode(b"caf\xe9 not UTF-8")).write_bytes(b"")
    os.chmod(data / "big.bin", 0o4700)  # set-uid: the mode's high bits count too
    out = subprocess.run(["find", str(data), "-mindepth", "1", "-printf", FIND_PRINTF],
                         capture_output=True, check=True).stdout
    assert find_fingerprint(out) == tree_fingerprint(LocalHost(), str(data))
    os.utime(data / "notes.ipynb", (1, 1))
    assert find_fingerprint(out) != tree_fingerprint(LocalHost(), str(data))


def test_a_managers_backup_holds_each_workers_volumes_and_names_their_node(
        cluster_site: tuple[ClusterHost, Stack]) -> None:
    host, stack = cluster_site
    lines: list[str] = []
    result = BackupMaker(stack, BackupRequest(dest="/backups"), log=lines.append).run()
    held = {(i.get("node", ""), i["volume"]): i for i in result.items if i["kind"] == "volume"}
    assert set(held) == {("", "jupyterhub-user-alice"), ("", "jupyterhub-user-bob"),
                         ("worker1", "jupyterhub-user-alice"), ("worker2", "jupyterhub-user-carol")}
    remote = held[("worker1", "jupyterhub-user-alice")]
    assert remote["path"] == "volumes/worker1/jupyterhub-user-alice.tar"
    assert remote["node_id"] == "w1"
    live = _live(host.node_volumes("worker1") / "jupyterhub-user-alice/_data")
    assert archive_fingerprint(host, f"{result.path}/{remote['path']}") == live
    assert "worker1: 1 user volume(s)" in lines
    assert any(line.startswith("worker2: jupyterhub-user-carol: 1 entries") for line in lines)
    assert verify(host, find_backup(host, "latest", "/backups")) == []
    # unchanged on the worker (its find agrees with the archive): linked, not fetched again
    again = BackupMaker(stack, BackupRequest(dest="/backups")).run()
    assert sorted(again.linked) == ["jupyterhub-user-alice", "jupyterhub-user-alice on worker1",
                                    "jupyterhub-user-bob", "jupyterhub-user-carol on worker2"]
    planned = BackupMaker(stack, BackupRequest(dest="/backups", users=["carol"], dry_run=True)).run().planned
    assert "volume jupyterhub-user-carol on worker2 (5 bytes)" in planned


def test_a_backup_refuses_to_call_itself_complete_while_a_worker_is_down(
        cluster_site: tuple[ClusterHost, Stack]) -> None:
    host, stack = cluster_site
    host.nodes["w2"]["Status"]["State"] = "down"
    with pytest.raises(HostkitError, match="on worker2 is down cannot be read") as exc:
        _backup(stack)
    assert "cluster remove" in (exc.value.hint or "")
    assert list_backups(host, "/backups") == []
    # the users on the nodes that are up can still be backed up, and nobody on the down one
    lines: list[str] = []
    alice = BackupMaker(stack, BackupRequest(dest="/backups", users=["alice"]), log=lines.append).run()
    assert [(i.get("node", ""), i["volume"]) for i in alice.items if i["kind"] == "volume"] == [
        ("", "jupyterhub-user-alice"), ("worker1", "jupyterhub-user-alice")]
    assert "not read: worker2 is down (the users asked for are elsewhere)" in lines
    with pytest.raises(UsageError, match="no volume for carol; not read: worker2 is down"):
        _backup(stack, users=["carol"])


def test_a_workers_volume_goes_back_to_its_node_or_where_the_hub_will_place_the_user(
        cluster_site: tuple[ClusterHost, Stack]) -> None:
    host, stack = cluster_site
    _backup(stack)
    backup = find_backup(host, "latest", "/backups")
    alice = host.node_volumes("worker1") / "jupyterhub-user-alice"
    want = _live(alice / "_data")
    shutil.rmtree(alice)
    restorer = Restorer(stack, backup, users=["alice"], force=False)
    report = restorer.plan()
    states = {(d.node, d.item["volume"]): d.state for d in report.decisions}
    assert states == {("", "jupyterhub-user-alice"): "same", ("worker1", "jupyterhub-user-alice"): "missing"}
    done = restorer.apply(report).done
    assert "restored volume jupyterhub-user-alice on worker1 (6 entries) for alice" in done
    assert _live(alice / "_data") == want
    assert host.nodes["w1"]["Spec"]["Labels"] == {"org.hostkit.files.alice": "jupyterhub-user-alice"}
    assert not list(alice.parent.glob("*incoming*"))
    # changed on the node: refused without --force; with it, the old files are kept aside there
    (alice / "_data" / "new.txt").write_text("after the backup")
    with pytest.raises(UsageError, match="would be overwritten"):
        Restorer(stack, backup, users=["alice"], force=False).apply(
            Restorer(stack, backup, users=["alice"], force=False).plan())
    forced = Restorer(stack, backup, users=["alice"], force=True)
    kept = forced.apply(forced.plan()).kept
    assert kept == ["jupyterhub-user-alice's files before the restore are in volume "
                    f"jupyterhub-user-alice.replaced-{forced.stamp} on worker1"]
    assert (alice.parent / f"jupyterhub-user-alice.replaced-{forced.stamp}/_data/new.txt").exists()
    # worker1 left the swarm: the freest ready worker (worker3) takes it, and is labelled
    del host.nodes["w1"]
    host.add_node("w3", "worker3", memory=32 << 30)
    host.add_node("w4", "worker4", state="down", memory=64 << 30)
    moved = Restorer(stack, backup, users=["alice"], force=False)
    report = moved.plan()
    (decision,) = [d for d in report.decisions if d.node]
    assert (decision.node, decision.state, decision.detail) == ("worker3", "missing", "backed up on worker1")
    moved.apply(report)
    assert _live(host.node_volumes("worker3") / "jupyterhub-user-alice/_data") == want
    assert host.nodes["w3"]["Spec"]["Labels"] == {"org.hostkit.files.alice": "jupyterhub-user-alice"}
    # the hub already pins alice to worker2 (she started again there): her files go there
    db = sqlite3.connect(host.path(f"{VOLUMES}/hostkit-hub-data/_data/jupyterhub.sqlite"))
    db.execute("ALTER TABLE users ADD COLUMN id INTEGER")
    db.execute("INSERT INTO users VALUES ('alice', 0, 2)")
    db.execute("CREATE TABLE spawners (user_id INTEGER, state TEXT)")
    db.execute("INSERT INTO spawners VALUES (2, ?)", (json.dumps({"node_id": "w2", "object_id": "s"}),))
    db.commit()
    db.close()
    pinned = Restorer(stack, backup, users=["alice"], force=False).plan()
    assert [(d.node, d.state) for d in pinned.decisions if d.node] == [("worker2", "missing")]
    # a node still in the swarm but down is not restored to, and says what to do
    host.nodes["w2"]["Status"]["State"] = "down"
    with pytest.raises(HostkitError, match="worker2, which held the volume, is down"):
        Restorer(stack, backup, users=["carol"], force=False).plan()
