"""The doctor and bootstrap must not disagree: every fix the doctor names is something
bootstrap (or a hostkit command) really does, and no hint tells the admin to do what
bootstrap deliberately never does."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import pytest
from fakes import FakeHost

from hostkit.bootstrap import BootstrapOptions, bootstrap_steps
from hostkit.catalogue import load_catalogue
from hostkit.results import CheckResult, Status

RunCheck = Callable[..., CheckResult]

# hostkit commands a check may name as its fix, besides bootstrap's own steps
COMMANDS = {"certs", "stack", "bootstrap --force"}
# `firewall-cmd --reload` drops Docker's rules before Docker 28.3.3 (CVE-2025-54388):
# bootstrap never runs it, so no hint may tell the admin to
RELOAD = re.compile(r"firewall-cmd\s+--reload")


def _step_names() -> set[str]:
    steps, _relocate = bootstrap_steps(BootstrapOptions(), {})
    return {step.name for step in steps}


def test_every_fix_step_in_the_catalogue_is_a_bootstrap_step_or_a_hostkit_command() -> None:
    names = _step_names() | COMMANDS
    wrong = {spec.id: spec.fix_step for spec in load_catalogue()
             if spec.fix_step and spec.fix_step not in names}
    assert wrong == {}, f"known steps: {sorted(_step_names())}"


def test_no_catalogue_hint_says_to_reload_firewalld() -> None:
    assert [spec.id for spec in load_catalogue() if RELOAD.search(spec.hint)] == []


def _firewalld(tmp_path: Path, zone: str) -> FakeHost:
    commands: dict[tuple[str, ...], str] = {
        ("firewall-cmd", "--state"): "running\n",
        ("firewall-cmd", "--get-zone-of-interface=docker0"): f"{zone}\n",
        ("firewall-cmd", "--get-default-zone"): "public\n",
        ("firewall-cmd", "--zone=public", "--list-ports"): "22/tcp\n",
    }
    return FakeHost(tmp_path, binaries=("docker", "firewall-cmd"), commands=commands)


@pytest.mark.parametrize(("check_id", "zone"), [
    ("firewall.docker0-zone", "trusted"),
    ("firewall.public-port", "docker"),
])
def test_firewall_hints_change_permanent_and_runtime_config_without_a_reload(
        tmp_path: Path, run_check: RunCheck, check_id: str, zone: str) -> None:
    result = run_check(check_id, _firewalld(tmp_path, zone))
    assert result.status in (Status.FAIL, Status.WARN)
    assert not RELOAD.search(result.hint), result.hint
    # what bootstrap does instead: the permanent change and the same change at runtime
    assert "--permanent" in result.hint
    runtime = [part for part in result.hint.split("&&") if "--permanent" not in part
               and "firewall-cmd" in part]
    assert runtime, result.hint
