"""The command-line side: streaming output, hand-off to other hostkit commands, exit codes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hostkit.cli_bootstrap import _run_sub, check_daemon_inputs
from hostkit.errors import UsageError
from hostkit.host import LocalHost
from hostkit.steps import CHANGED, FAILED, OK


def test_streaming_splits_progress_chunks_and_merges_stderr(tmp_path: Path) -> None:
    seen: list[str] = []
    res = LocalHost(tmp_path).run_streaming(
        ["sh", "-c", "printf ' 10%%\\r 55%%\\r100%%\\n'; echo oops >&2; printf tail"], seen.append)
    assert res.ok
    assert seen == [" 10%", " 55%", "100%", "oops", "tail"]


def test_a_failing_sub_command_reports_its_error_and_hint(tmp_path: Path) -> None:
    argv = [sys.executable, "-c",
            "import sys; print('wrote /opt/hostkit/.env'); "
            "print('error: no hub image yet', file=sys.stderr); "
            "print('hint: run without --no-build', file=sys.stderr); sys.exit(2)"]
    res = _run_sub(LocalHost(tmp_path), "stack", "the stack", argv, lambda _l: True)
    assert res.status == FAILED
    assert "no hub image yet" in res.message
    assert res.hint == "run without --no-build"


def test_a_sub_command_that_wrote_files_is_changed_otherwise_ok(tmp_path: Path) -> None:
    host = LocalHost(tmp_path)
    wrote = [sys.executable, "-c", "print('wrote /opt/hostkit/.env')"]
    quiet = [sys.executable, "-c", "print('starting the stack')"]

    def changed(lines: list[str]) -> bool:
        return any(ln.startswith("wrote ") for ln in lines)

    assert _run_sub(host, "stack", "t", wrote, changed).status == CHANGED
    assert _run_sub(host, "stack", "t", quiet, changed).status == OK


def test_bootstrap_refuses_to_run_as_a_normal_user(monkeypatch: pytest.MonkeyPatch) -> None:
    from hostkit.cli import app

    monkeypatch.setattr(LocalHost, "is_root", lambda self: False)
    res = CliRunner().invoke(app, ["bootstrap", "--data-root", "/srv/docker", "--yes"])
    assert res.exit_code != 0
    assert "must run as root" in str(res.exception) + res.output



@pytest.mark.parametrize(("dns", "size", "files", "expect"), [
    (["10.0.0.53", "not-an-ip"], "10m", 5, "--dns not-an-ip"),
    (["999.1.1.1"], "10m", 5, "--dns 999.1.1.1"),
    ([], "bogus", 5, "--log-max-size bogus"),
    ([], "10m", 0, "--log-max-file 0"),
])
def test_daemon_values_dockerd_would_reject_are_refused_up_front(
        dns: list[str], size: str, files: int, expect: str) -> None:
    with pytest.raises(UsageError, match=expect):
        check_daemon_inputs(dns, size, files)


@pytest.mark.parametrize("size", ["10m", "10MB", "1.5g", "500k", "2GiB", "1024"])
def test_sizes_dockerd_accepts_pass(size: str) -> None:
    check_daemon_inputs(["8.8.8.8", "2001:4860:4860::8888"], size, 5)
