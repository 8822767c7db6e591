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
