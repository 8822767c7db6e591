"""The Plan runner: check, dry run, confirm, apply, verify by checking again."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import pytest

from hostkit.errors import HostkitError, UsageError
from hostkit.facts import Facts
from hostkit.host import LocalHost
from hostkit.steps import (
    CHANGED,
    FAILED,
    OK,
    WOULD_CHANGE,
    Change,
    Plan,
    StepNotReady,
    render_step,
    render_summary,
)


class Toggle:
    """A step whose desired state is a flag; apply may be told to do nothing or to fail."""

    def __init__(self, name: str, *, done: bool = False, effective: bool = True,
                 fails: Optional[str] = None, disruptive: bool = False) -> None:
        self.name = name
        self.title = name
        self.done = done
        self.effective = effective
        self.fails = fails
        self.disruptive = disruptive
        self.applied = 0

    def check(self, host: LocalHost, facts: Facts) -> list[Change]:
        return [] if self.done else [Change(f"set {self.name}", "+ on", self.disruptive, 9.0)]

    def apply(self, host: LocalHost, facts: Facts, changes: Sequence[Change]) -> None:
        self.applied += 1
        if self.fails:
            raise HostkitError(self.fails, "look at the log")
        if self.effective:
            self.done = True


@pytest.fixture
def env(tmp_path: Path) -> tuple[LocalHost, Facts]:
    host = LocalHost(tmp_path)
    return host, Facts(host)


def test_converged_steps_are_ok_and_not_applied(env: tuple[LocalHost, Facts]) -> None:
    a = Toggle("a", done=True)
    planned, result = Plan([a]).run(*env)
    assert [s.status for s in planned.steps] == [OK]
    assert [s.status for s in result.steps] == [OK]
    assert a.applied == 0


def test_changed_steps_are_applied_once_and_verified(env: tuple[LocalHost, Facts]) -> None:
    a, b = Toggle("a"), Toggle("b", done=True)
    planned, result = Plan([a, b]).run(*env)
    assert [s.status for s in planned.steps] == [WOULD_CHANGE, OK]
    assert [s.status for s in result.steps] == [CHANGED, OK]
    assert a.applied == 1
    assert render_summary(result) == "ok=1 changed=1 failed=0"


def test_dry_run_applies_nothing(env: tuple[LocalHost, Facts]) -> None:
    a = Toggle("a", disruptive=True)
    asked: list[int] = []
    _planned, result = Plan([a], dry_run=True, confirm=lambda d: asked.append(1) or True).run(*env)
    assert a.applied == 0
    assert asked == []
    assert result.dry_run
    assert "nothing was changed" in render_summary(result)


def test_an_apply_that_does_not_converge_is_a_failure(env: tuple[LocalHost, Facts]) -> None:
    a, b = Toggle("a", effective=False), Toggle("b")
    _planned, result = Plan([a, b]).run(*env)
    assert result.steps[0].status == FAILED
    assert "still different" in result.steps[0].message
    assert len(result.steps) == 1  # later steps depend on earlier ones
    assert b.applied == 0


def test_a_failing_apply_stops_the_plan_with_its_message(env: tuple[LocalHost, Facts]) -> None:
    a = Toggle("a", fails="dockerd refused")
    _planned, result = Plan([a, Toggle("b")]).run(*env)
    assert result.failed
    assert result.steps[0].message == "dockerd refused"
    assert result.steps[0].hint == "look at the log"


def test_disruptive_changes_are_confirmed_once_and_refusal_changes_nothing(
        env: tuple[LocalHost, Facts]) -> None:
    a, b = Toggle("a", disruptive=True), Toggle("b", disruptive=True)
    asked: list[int] = []

    def refuse(items: list[tuple[object, Change]]) -> bool:
        asked.append(len(items))
        return False

    _planned, result = Plan([a, b], confirm=refuse).run(*env)
    assert asked == [2]
    assert a.applied == b.applied == 0
    assert result.aborted


def test_bad_input_in_a_check_is_raised_before_any_apply(env: tuple[LocalHost, Facts]) -> None:
    class Bad(Toggle):
        def check(self, host: LocalHost, facts: Facts) -> list[Change]:
            raise UsageError("--data-root x: not an absolute path", "give the full path")

    a = Toggle("a")
    with pytest.raises(UsageError):
        Plan([a, Bad("bad")]).run(*env)
    assert a.applied == 0


def test_a_check_error_fails_the_plan_without_applying(env: tuple[LocalHost, Facts]) -> None:
    class Broken(Toggle):
        def check(self, host: LocalHost, facts: Facts) -> list[Change]:
            raise HostkitError("/etc/docker/daemon.json:2:3: Expecting value", "fix it")

    a = Toggle("a")
    planned, result = Plan([a, Broken("b")]).run(*env)
    assert planned.steps[1].status == FAILED
    assert result.aborted
    assert a.applied == 0


def test_a_step_waiting_for_an_earlier_one_is_planned_as_a_change(
        env: tuple[LocalHost, Facts]) -> None:
    class Later(Toggle):
        def check(self, host: LocalHost, facts: Facts) -> list[Change]:
            if not first.done:
                raise StepNotReady("checked once Docker is installed", disruptive=True)
            return super().check(host, facts)

    first = Toggle("install")
    later = Later("relocate")
    asked: list[int] = []
    planned, result = Plan([first, later],
                           confirm=lambda d: asked.append(len(d)) or True).run(*env)
    assert planned.steps[1].status == WOULD_CHANGE
    assert asked == [1]  # the pending step may stop Docker, so it is confirmed too
    assert [s.status for s in result.steps] == [CHANGED, CHANGED]


def test_rendering_shows_status_title_change_and_diff() -> None:
    from hostkit.steps import StepResult

    text = render_step(StepResult("x", "daemon.json", WOULD_CHANGE,
                                  (Change("write it", "+{\n-[x]"),), hint="h"))
    assert "would change" in text
    assert "write it" in text
    assert "\\[x]" in text  # user text is escaped, never read as rich markup
