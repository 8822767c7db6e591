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
