"""One day-two operation at a time per deployment (a real flock on a temp root)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hostkit.cli import app
from hostkit.errors import HostkitError
from hostkit.host import LocalHost
from hostkit.locking import deployment_lock, lock_path

runner = CliRunner()

HOLD = """
import sys, time
from hostkit.host import LocalHost
from hostkit.locking import deployment_lock
with deployment_lock(LocalHost(sys.argv[1]), "/opt/hostkit", "backup"):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_holder_is_refused_and_told_who_runs_until_the_first_one_is_gone(tmp_path: Path) -> None:
    host = LocalHost(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(HostkitError) as refused, deployment_lock(host, "/opt/hostkit", "restore"):
            pass
        assert f"another hostkit backup (pid {holder.pid}" in refused.value.message
        assert "is running on /opt/hostkit" in refused.value.message
        # another deployment is not held up
        with deployment_lock(host, "/srv/other", "backup"):
            pass
    finally:
        holder.kill()  # as kill -9 would: the kernel releases the lock with the process
        holder.wait()
    with deployment_lock(host, "/opt/hostkit", "restore"):
        assert "restore (pid" in (tmp_path / lock_path("/opt/hostkit").lstrip("/")).read_text()


@pytest.mark.parametrize("argv", [["backup"], ["restore", "latest"], ["upgrade"]])
def test_backup_restore_and_upgrade_take_the_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   argv: list[str]) -> None:
    (tmp_path / "opt/hostkit").mkdir(parents=True)
    (tmp_path / "opt/hostkit/.env").write_text("HOSTKIT_PORT=9443\n")
    monkeypatch.setattr("hostkit.host.LocalHost.is_root", lambda self: True)
    reached: list[str] = []
    monkeypatch.setattr("hostkit.backup.BackupMaker.run", lambda self: reached.append("backup"))
    monkeypatch.setattr("hostkit.backup.find_backup", lambda host, spec, dest: reached.append("find") or
                        __import__("hostkit.backup").backup.BackupInfo("b", "/b", {"users": []}))
    monkeypatch.setattr("hostkit.restore.Restorer.plan", lambda self: reached.append("plan") or
                        type("R", (), {"decisions": []})())
    monkeypatch.setattr("hostkit.restore.Restorer.apply", lambda self, report: reached.append("apply"))
    monkeypatch.setattr("hostkit.upgrade.Upgrader.run", lambda self: reached.append("upgrade"))
    with deployment_lock(LocalHost(tmp_path), "/opt/hostkit", "backup"):
        result = runner.invoke(app, [*argv, "--root", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert "another hostkit backup (pid" in result.output
    assert not {"backup", "apply", "upgrade"} & set(reached)
