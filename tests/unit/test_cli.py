from __future__ import annotations

import os
import subprocess
import sys

from typer.testing import CliRunner

from hostkit.cli import app


def test_list_prints_every_check_with_severity() -> None:
    result = CliRunner().invoke(app, ["doctor", "--list", "--only", "tls"])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert len(lines) == 8
    assert lines[0].split()[:2] == ["tls.files", "fail"]


def test_unknown_option_is_exit_2_without_traceback() -> None:
    proc = subprocess.run([sys.executable, "-m", "hostkit", "doctor", "--format", "yaml"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "yaml" in proc.stderr


def test_bad_settings_file_is_one_line_and_a_hint(tmp_path) -> None:
    bad = tmp_path / "hostkit.toml"
    bad.write_text("public_prot = 9090\n")
    proc = subprocess.run([sys.executable, "-m", "hostkit", "doctor", "--settings", str(bad)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0] == f"error: {bad}: unknown setting(s) public_prot"
    assert proc.stderr.splitlines()[1].startswith("hint: known settings: ")


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.stdout.startswith("hostkit ")


def test_report_file_is_replaced_atomically_for_textfile_collectors(tmp_path) -> None:
    """node_exporter may read the file at any moment: never a half-written one."""
    out = tmp_path / "hostkit.prom"
    out.write_text("old complete report\n")
    reader_view = tmp_path / "held-by-reader"
    os.link(out, reader_view)  # the inode a reader that opened the old file still sees
    result = CliRunner().invoke(app, ["doctor", "--format", "prometheus", "--only", "host.root",
                                      "--settings", str(tmp_path / "none.toml"), "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert 'hostkit_check_status{check="host.root"' in out.read_text()
    assert reader_view.read_text() == "old complete report\n"  # a new file was renamed over it
    assert oct(out.stat().st_mode & 0o777) == "0o644"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["held-by-reader", "hostkit.prom"]
