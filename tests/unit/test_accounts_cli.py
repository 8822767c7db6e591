"""The day-two `users` commands: a password never travels as an option, deletion asks first."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from hostkit.cli import app

runner = CliRunner()


def test_reset_password_reads_standard_input_and_has_no_password_option(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, str]] = []
    monkeypatch.setattr("hostkit.accounts.reset_password",
                        lambda stack, name, password: seen.append((name, password)))
    result = runner.invoke(app, ["users", "reset-password", "alice", "--root", str(tmp_path)],
                           input="New-password-42\n")
    assert result.exit_code == 0, result.output
    assert seen == [("alice", "New-password-42")]
    assert "New-password-42" not in result.output
    option = runner.invoke(app, ["users", "reset-password", "alice", "--password", "x"])
    assert option.exit_code == 2
    empty = runner.invoke(app, ["users", "reset-password", "alice", "--root", str(tmp_path)], input="\n")
    assert empty.exit_code == 2
    assert "no password given" in empty.output


def test_delete_asks_first_and_does_nothing_on_no(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "opt/hostkit").mkdir(parents=True)
    (tmp_path / "opt/hostkit/.env").write_text("HOSTKIT_ADMIN=admin\n")
    monkeypatch.setattr("hostkit.volumes.user_volumes", lambda host, env: {"bob": "jupyterhub-user-bob"})
    deleted: list[str] = []
    monkeypatch.setattr("hostkit.accounts.delete_account", lambda stack, name: deleted.append(name) or [])
    result = runner.invoke(app, ["users", "delete", "bob", "--root", str(tmp_path)], input="n\n")
    assert result.exit_code == 1
    assert "volume jupyterhub-user-bob (after a backup in /var/backups/hostkit)" in result.output
    assert deleted == []


def test_restore_of_a_directory_that_is_no_backup_says_so(tmp_path: Path) -> None:
    result = runner.invoke(app, ["restore", "/nowhere", "--root", str(tmp_path)])
    assert result.exit_code == 2
    assert "is not a complete hostkit backup" in result.output


class _Report:
    def __init__(self) -> None:
        self.decisions: list[object] = []
        self.done = ["restored volume jupyterhub-user-alice"]
        self.kept: list[str] = []


class _Restorer:
    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def plan(self) -> _Report:
        return _Report()

    def apply(self, report: _Report) -> _Report:
        return report


def _check(status: str, summary: str) -> object:
    from hostkit.results import CheckResult, Status

    return CheckResult("stack.https", "Hub API answers through nginx over TLS", "stack", Status(status),
                       summary, "", "", "", "stack", 0.1)


@pytest.mark.parametrize(("status", "exit_code"), [("pass", 0), ("fail", 1)])
def test_restore_ends_with_the_doctors_stack_checks_and_fails_with_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, status: str, exit_code: int) -> None:
    from hostkit.backup import BackupInfo

    (tmp_path / "opt/hostkit").mkdir(parents=True)
    (tmp_path / "opt/hostkit/.env").write_text("HOSTKIT_PORT=9443\n")
    monkeypatch.setattr("hostkit.backup.find_backup", lambda host, spec, dest: BackupInfo(
        "hostkit-20260101T000000Z", "/b", {"users": []}))
    monkeypatch.setattr("hostkit.restore.Restorer", _Restorer)
    monkeypatch.setattr("hostkit.host.LocalHost.is_root", lambda self: True)
    checked: list[str] = []

    def stack_checks(stack: object) -> list[object]:
        checked.append(str(getattr(stack, "directory", "")))
        return [_check(status, "JupyterHub 5.5.4 answers" if status == "pass" else "HTTP 502")]

    monkeypatch.setattr("hostkit.health.stack_checks", stack_checks)
    result = runner.invoke(app, ["restore", "latest", "--root", str(tmp_path)])
    assert checked == ["/opt/hostkit"]
    assert result.exit_code == exit_code, result.output
    assert f"doctor stack.https: {status}" in result.output
    if exit_code:
        assert "restored, but the doctor's stack checks fail: stack.https: HTTP 502" in result.output


class _Hub:
    """The hub's REST API as `users start` sees it: each full read of /api/users moves spawns
    on. It pages as JupyterHub does, here two users a page whatever the limit asked."""

    PAGE = 2

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users  # name -> "", "pending", "ready"
        self.started: list[str] = []

    def __call__(self, stack: object, method: str, path: str, body: object = None,
                 accept: str = "") -> tuple[int, str]:
        import json
        from urllib.parse import parse_qs, urlsplit

        url = urlsplit(path)
        if method == "GET" and url.path == "/api/users":
            assert accept == "application/jupyterhub-pagination+json"
            offset = int(parse_qs(url.query).get("offset", ["0"])[0])
            listing = [{"name": n, "servers": {"": {"ready": s == "ready"}} if s else {}}
                       for n, s in list(self.users.items())[offset:offset + self.PAGE]]
            more = offset + self.PAGE < len(self.users)
            if not more:
                self.users = {n: {"pending": "ready", "broken": ""}.get(s, s) for n, s in self.users.items()}
            return 200, json.dumps({"items": listing, "_pagination": {
                "offset": offset, "limit": self.PAGE, "total": len(self.users),
                "next": {"offset": offset + self.PAGE} if more else None}})
        name = path.split("/")[3]
        if name not in self.users:
            return 404, json.dumps({"message": f"No such user: {name}"})
        if self.users[name]:
            return 400, json.dumps({"message": f"{name} is already running"})
        self.started.append(name)
        self.users[name] = "broken" if name == "carol" else "pending"
        return 202, ""


def _deploy_dir(tmp_path: Path) -> None:
    (tmp_path / "opt/hostkit").mkdir(parents=True)
    (tmp_path / "opt/hostkit/.env").write_text("HOSTKIT_ADMIN=teacher\n")


def test_users_start_all_starts_everyone_without_a_server_and_waits_until_ready(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _deploy_dir(tmp_path)
    hub = _Hub({"teacher": "", "alice": "", "bob": "ready", "dave": "", "erin": ""})
    monkeypatch.setattr("hostkit.accounts.hub_api", hub)
    monkeypatch.setattr("hostkit.host.LocalHost.run", lambda self, argv, **kw: None)  # the sleep
    dry = runner.invoke(app, ["users", "start", "--all", "--dry-run", "--root", str(tmp_path)])
    assert dry.exit_code == 0, dry.output
    assert "would start: alice dave erin" in dry.output  # erin is on the hub's third page
    assert hub.started == []
    result = runner.invoke(app, ["users", "start", "--all", "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert hub.started == ["alice", "dave", "erin"]  # not the admin, not bob who runs already
    assert "alice                    ready" in result.output
    assert "3 ready, 0 starting" in result.output  # progress, until every one answers


def test_users_start_names_each_user_it_could_not_start_and_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _deploy_dir(tmp_path)
    hub = _Hub({"alice": "", "bob": "ready", "carol": ""})
    monkeypatch.setattr("hostkit.accounts.hub_api", hub)
    monkeypatch.setattr("hostkit.host.LocalHost.run", lambda self, argv, **kw: None)
    result = runner.invoke(app, ["users", "start", "alice", "bob", "carol", "zed", "--root", str(tmp_path)])
    assert result.exit_code == 1, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines() if line[:1].isalpha()}
    assert lines["alice"].endswith("ready")
    assert lines["bob"].endswith("running already")
    assert "failed to start" in lines["carol"]
    assert "not a hub user yet" in lines["zed"]
    both = runner.invoke(app, ["users", "start", "alice", "--all", "--root", str(tmp_path)])
    assert both.exit_code == 2
    assert "name the users, or give --all" in both.output
