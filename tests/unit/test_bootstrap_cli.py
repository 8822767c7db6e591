"""The command-line side: streaming output, hand-off to other hostkit commands, exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from hostkit.cli_bootstrap import StackOptions, check_daemon_inputs, stack_up_in_process
from hostkit.errors import UsageError
from hostkit.host import LocalHost
from hostkit.steps import FAILED


def test_streaming_splits_progress_chunks_and_merges_stderr(tmp_path: Path) -> None:
    seen: list[str] = []
    res = LocalHost(tmp_path).run_streaming(
        ["sh", "-c", "printf ' 10%%\\r 55%%\\r100%%\\n'; echo oops >&2; printf tail"], seen.append)
    assert res.ok
    assert seen == [" 10%", " 55%", "100%", "oops", "tail"]


def test_stack_up_runs_in_process_and_its_error_arrives_with_the_hint(tmp_path: Path) -> None:
    host = LocalHost(tmp_path)
    stack = StackOptions(directory="/opt/hk", extra_args=("--root", str(tmp_path), "--no-build"))
    res = stack_up_in_process(host, stack, 9090)
    assert res.status == FAILED
    assert res.message == "hostkit stack up: no hub image yet"
    assert res.hint == "run without --no-build"
    # it ran here, on the temporary root: the deploy files were written before the refusal
    assert (tmp_path / "opt/hk/docker-compose.yml").is_file()


def test_a_stack_arg_stack_up_does_not_know_is_a_failed_step_not_a_crash(tmp_path: Path) -> None:
    stack = StackOptions(directory="/opt/hk", extra_args=("--package-set=slim", "--bogus"))
    res = stack_up_in_process(LocalHost(tmp_path), stack, 9090)
    assert res.status == FAILED
    assert "--stack-arg: No such option: --bogus" in res.message
    assert not (tmp_path / "opt/hk").exists()


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
