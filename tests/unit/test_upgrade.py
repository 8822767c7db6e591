"""`hostkit upgrade`'s decisions on fakes: what changes, which tag names the old image, what
happens to users' containers, and the way back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hostkit.host import CommandResult
from hostkit.images import HASH_LABEL
from hostkit.stack import Stack
from hostkit.upgrade import ImageChange, UpgradeCheck, Upgrader, UpgradeRequest, read_record, rollback_tag
from tests.fakes import FakeHost

OLD, NEW = "sha256:" + "a" * 64, "sha256:" + "b" * 64


def _inspect(ref: str) -> tuple[str, ...]:
    return ("docker", "image", "inspect", "--format",
            "{{.Id}} {{index .Config.Labels \"" + HASH_LABEL + "\"}}", ref)


@pytest.mark.parametrize(("ref", "tag"), [
    ("hostkit/singleuser:full", "hostkit/singleuser:rollback-hk1"),
    ("registry.example:5000/hub", "registry.example:5000/hub:rollback-hk1"),
    ("registry.example:5000/hub:5.3.0", "registry.example:5000/hub:rollback-hk1"),
])
def test_the_rollback_tag_keeps_the_repository_and_names_the_project(ref: str, tag: str) -> None:
    assert rollback_tag(ref, "hk1") == tag


def _change(**kw: Any) -> ImageChange:
    base = {"role": "hub", "key": "HOSTKIT_HUB_IMAGE", "running": "hostkit/jupyterhub:5.3.0",
            "running_id": OLD, "running_hash": "h-old", "wanted": "hostkit/jupyterhub:5.5.4",
            "wanted_id": NEW, "wanted_hash": "h-new", "wanted_label": "h-new"}
    return ImageChange(**{**base, **kw})


def test_a_new_tag_for_the_same_image_is_no_change_and_a_stale_tag_is_built() -> None:
    same = _change(wanted="hostkit/nginx:trixie", wanted_id=OLD, wanted_label="h-new")
    assert not same.changes
    assert "unchanged (the same image as hostkit/nginx:trixie)" in same.line()
    stale = _change(wanted_id=OLD, wanted_label="h-old")  # singleuser:full from other inputs
    assert stale.builds
    assert stale.changes
    assert "(to be built, inputs h-new)" in stale.line()
    switch = _change()
    assert switch.changes
    assert not switch.builds
    assert switch.line().endswith("-> hostkit/jupyterhub:5.5.4 (bbbbbbbbbbbb)")
    given = _change(wanted_hash="", wanted_id="")  # a --set image hostkit does not build
    assert not given.builds


def test_the_check_says_whether_an_upgrade_is_needed() -> None:
    plan = UpgradeCheck([_change(wanted_id=OLD, wanted_label="h-new")], "5.5.4", "5.5.4", [], False)
    assert not plan.needed
    assert plan.lines()[-1].startswith("nothing to upgrade")
    older = UpgradeCheck([_change(wanted_id=OLD, wanted_label="h-new")], "5.3.0", "5.5.4",
                         [("JUPYTERHUB_VERSION", "5.3.0", "5.5.4")], True)
    assert older.needed
    assert "JupyterHub  5.3.0 -> 5.5.4" in older.lines()
    assert "pin         JUPYTERHUB_VERSION: 5.3.0 -> 5.5.4" in older.lines()


class _Stack(Stack):
    """A stack whose compose calls are recorded, never run."""

    def compose(self, *args: str, **kwargs: Any) -> CommandResult:
        self.host.calls.append(("compose", *args))  # type: ignore[attr-defined]
        return CommandResult(("compose",), 0, "", "")

    def up(self, timeout: float = 300, changed: Any = ()) -> dict[str, dict[str, str]]:
        self.host.calls.append(("up",))  # type: ignore[attr-defined]
        return {}


def _site(tmp_path: Path, commands: dict[tuple[str, ...], Any]) -> tuple[FakeHost, _Stack]:
    host = FakeHost(tmp_path, commands)
    host.files({"/opt/hostkit/.env": "COMPOSE_PROJECT_NAME=hk1\nHOSTKIT_HUB_IMAGE=hostkit/jupyterhub:5.5.4\n"
                "HOSTKIT_NOTEBOOK_IMAGE=hostkit/singleuser:full\n",
                "/hub/jupyterhub.sqlite": "new", "/hub/jupyterhub.sqlite.pre-upgrade-S": "old"})
    return host, _Stack(host, "/opt/hostkit")


def test_going_back_uses_the_rollback_tag_where_the_old_tag_moved_to_the_new_build(tmp_path: Path) -> None:
    host, stack = _site(tmp_path, {
        _inspect("hostkit/jupyterhub:5.3.0"): f"{OLD} h",  # a versioned tag still names the old image
        _inspect("hostkit/singleuser:full"): f"{NEW} h",  # rebuilt in place: no longer the old one
    })
    before = {"images": {
        "HOSTKIT_HUB_IMAGE": {"name": "hostkit/jupyterhub:5.3.0", "id": OLD,
                              "rollback_tag": "hostkit/jupyterhub:rollback-hk1"},
        "HOSTKIT_NOTEBOOK_IMAGE": {"name": "hostkit/singleuser:full", "id": OLD,
                                   "rollback_tag": "hostkit/singleuser:rollback-hk1"}}}
    upgrader = Upgrader(stack, None, UpgradeRequest(dest="/b"))  # type: ignore[arg-type]
    upgrader.stamp = "S"
    upgrader.restore_previous(before, "/hub", "/hub/jupyterhub.sqlite.pre-upgrade-S")
    env = stack.read_env()
    assert env["HOSTKIT_HUB_IMAGE"] == "hostkit/jupyterhub:5.3.0"
    assert env["HOSTKIT_NOTEBOOK_IMAGE"] == "hostkit/singleuser:rollback-hk1"
    assert host.read_text("/hub/jupyterhub.sqlite") == "old"
    assert host.read_text("/hub/jupyterhub.sqlite.failed-upgrade-S") == "new"
    assert host.calls.index(("compose", "stop")) < host.calls.index(("up",))


def test_servers_on_the_old_image_keep_running_and_stopped_containers_from_it_go(tmp_path: Path) -> None:
    rows = [
        '{"Names": "jupyter-alice", "Status": "Up 3 hours", "Image": "x", "Networks": "hostkit-jupyterhub"}',
        '{"Names": "jupyter-bob", "Status": "Exited (0) 2 days ago", "Image": "x", '
        '"Networks": "hostkit-jupyterhub"}',
        '{"Names": "jupyter-carol", "Status": "Exited (0) 1 hour ago", "Image": "y", '
        '"Networks": "hostkit-jupyterhub"}',
    ]
    host, stack = _site(tmp_path, {
        ("docker", "ps", "-a", "--filter", "name=^jupyter-", "--format", "{{json .}}"): "\n".join(rows),
        ("docker", "inspect", "--format", "{{.Image}}", "jupyter-alice"): OLD,
        ("docker", "inspect", "--format", "{{.Image}}", "jupyter-bob"): OLD,
        ("docker", "inspect", "--format", "{{.Image}}", "jupyter-carol"): NEW,
        ("docker", "rm", "jupyter-bob"): "",
    })
    upgrader = Upgrader(stack, None, UpgradeRequest(dest="/b"))  # type: ignore[arg-type]
    lines = upgrader._users_servers(OLD, NEW)
    assert lines[0].startswith("jupyter-alice keeps running on the old single-user image")
    assert lines[1].startswith("removed the stopped container jupyter-bob")
    assert ("docker", "rm", "jupyter-bob") in host.calls
    assert ("docker", "rm", "jupyter-carol") not in host.calls
    assert upgrader._users_servers(OLD, OLD) == ["users' servers: the single-user image did not change"]


def test_the_record_keeps_every_run(tmp_path: Path) -> None:
    from hostkit.upgrade import write_record

    _, stack = _site(tmp_path, {})
    write_record(stack, {"started": "t1", "outcome": "started"})
    write_record(stack, {"started": "t1", "outcome": "upgraded"})
    write_record(stack, {"started": "t2", "outcome": "rolled back", "reason": "doctor: stack.https"})
    assert [e["outcome"] for e in read_record(stack)] == ["upgraded", "rolled back"]
    assert stack.host.stat("/opt/hostkit/upgrades.json").st_mode & 0o777 == 0o600
