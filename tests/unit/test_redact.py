"""Passwords given as options never reach hostkit's logs."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from hostkit.errors import CommandError
from hostkit.host import LocalHost
from hostkit.redact import MASK, redact_argv


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["up", "--admin-password=s3cret"], ["up", f"--admin-password={MASK}"]),
        (["up", "--admin-password", "s3cret", "-p", "9"], ["up", "--admin-password", MASK, "-p", "9"]),
        (["--stack-arg=--admin-password=s3cret"], [f"--stack-arg=--admin-password={MASK}"]),
        (["users", "create", "bob", "--password", "x"], ["users", "create", "bob", "--password", MASK]),
        (["docker", "ps", "--format", "{{json .}}"], ["docker", "ps", "--format", "{{json .}}"]),
    ],
)
def test_password_option_values_are_masked(argv: list[str], expected: list[str]) -> None:
    assert redact_argv(argv) == expected


def test_host_log_and_command_errors_do_not_carry_the_password(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="hostkit.host")
    LocalHost(str(tmp_path)).run(["true", "--admin-password=s3cret"])
    assert "s3cret" not in caplog.text
    assert f"--admin-password={MASK}" in caplog.text
    assert "s3cret" not in str(CommandError(["x", "--password", "s3cret"], 1, "failed"))
