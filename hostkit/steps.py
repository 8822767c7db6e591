"""Steps and plans: check -> apply -> check again, with Ansible-style ok/changed reporting.

A Step compares the host with a desired state (`check`, read-only) and returns the
differences as Changes; `apply` makes them; a second `check` must then find nothing, or
the step failed. A Plan checks every step first and prints that (the dry run stops
there), asks once if a change interrupts Docker, then applies step by step, re-checking
each one just before it runs because earlier steps change what later ones see.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol

from rich.markup import escape

from hostkit.errors import HostkitError, UsageError
from hostkit.facts import Facts
from hostkit.host import LocalHost

OK = "ok"
CHANGED = "changed"
WOULD_CHANGE = "would change"
FAILED = "failed"
SKIPPED = "skipped"
WARNING = "warning"


@dataclass(frozen=True)
class Change:
    """One difference between the host and the desired state."""

    summary: str
    diff: str = ""
    # True when applying it stops Docker (and so every container) for a while
    disruptive: bool = False
    # Seconds of Docker downtime the change is expected to cost, when disruptive
    downtime_s: float = 0.0


@dataclass(frozen=True)
class StepResult:
    """What one step found or did; immutable so a renderer cannot change history."""

    name: str
    title: str
    status: str
    changes: tuple[Change, ...] = ()
    message: str = ""
    hint: str = ""
    seconds: float = 0.0


@dataclass(frozen=True)
class PlanResult:
    """The outcome of a whole plan."""

    dry_run: bool
    steps: tuple[StepResult, ...]
    aborted: str = ""
    notes: tuple[str, ...] = ()

    @property
    def failed(self) -> bool:
        return bool(self.aborted) or any(s.status == FAILED for s in self.steps)

    def count(self, status: str) -> int:
        return sum(1 for s in self.steps if s.status == status)


class Step(Protocol):
    """One unit of bootstrap."""

    name: str
    title: str

    def check(self, host: LocalHost, facts: Facts) -> list[Change]:
        """Differences from the desired state; must not change the host."""
        ...

    def apply(self, host: LocalHost, facts: Facts, changes: Sequence[Change]) -> None:
        """Make the changes; raise HostkitError (after undoing what it can) on failure."""
        ...


class StepNotReady(HostkitError):
    """A step cannot be checked until an earlier step has run (e.g. Docker not installed yet)."""

    def __init__(self, message: str, hint: str = "", *, disruptive: bool = False) -> None:
        super().__init__(message, hint)
        self.disruptive = disruptive


Reporter = Callable[[StepResult], None]


@dataclass
class Plan:
    """An ordered list of steps and how to run them."""

    steps: list[Step]
    dry_run: bool = False
    # Called with the changes that interrupt Docker; returns False to abort.
    confirm: Optional[Callable[[list[tuple[Step, Change]]], bool]] = None
    on_planned: Optional[Reporter] = None
    on_result: Optional[Reporter] = None
    notes: list[str] = field(default_factory=list)

    def run(self, host: LocalHost, facts: Facts) -> tuple[PlanResult, PlanResult]:
        """Check everything, then (unless dry run) apply. Returns (plan, outcome)."""
        planned = [self._check_one(host, facts, step) for step in self.steps]
        planned_result = PlanResult(self.dry_run, tuple(planned))
        for res in planned:
            if self.on_planned:
                self.on_planned(res)
        if planned_result.failed:
            # A step that cannot even be checked (bad input, malformed config) stops
            # everything before the first change.
            return planned_result, PlanResult(self.dry_run, (), aborted="the plan has errors")
        if self.dry_run:
            return planned_result, PlanResult(True, tuple(planned), notes=tuple(self.notes))

        disruptive = [
            (step, ch)
            for step, res in zip(self.steps, planned)
            for ch in res.changes
            if ch.disruptive
        ]
        if disruptive and self.confirm and not self.confirm(disruptive):
            return planned_result, PlanResult(False, (), aborted="not confirmed; nothing changed")

        done: list[StepResult] = []
        for step in self.steps:
            res = self._apply_one(host, facts, step)
            done.append(res)
            if self.on_result:
                self.on_result(res)
            if res.status == FAILED:
                break
        return planned_result, PlanResult(False, tuple(done), notes=tuple(self.notes))

    def _check_one(self, host: LocalHost, facts: Facts, step: Step) -> StepResult:
        start = time.monotonic()
        try:
            changes = step.check(host, facts)
        except StepNotReady as exc:
            pending = Change(exc.message, disruptive=exc.disruptive,
                             downtime_s=15.0 if exc.disruptive else 0.0)
            return StepResult(step.name, step.title, WOULD_CHANGE, (pending,), "", exc.hint,
                              time.monotonic() - start)
        except UsageError:
            raise  # bad input: one line from the CLI, before any change
        except HostkitError as exc:
            return StepResult(step.name, step.title, FAILED, (), exc.message, exc.hint,
                              time.monotonic() - start)
        status = WOULD_CHANGE if changes else OK
        return StepResult(step.name, step.title, status, tuple(changes), "",
                          "", time.monotonic() - start)

    def _apply_one(self, host: LocalHost, facts: Facts, step: Step) -> StepResult:
        start = time.monotonic()
        try:
            changes = step.check(host, facts)
            if not changes:
                return StepResult(step.name, step.title, OK, seconds=time.monotonic() - start)
            step.apply(host, facts, changes)
            left = step.check(host, facts)
        except HostkitError as exc:
            return StepResult(step.name, step.title, FAILED, (), exc.message, exc.hint,
                              time.monotonic() - start)
        if left:
            return StepResult(
                step.name, step.title, FAILED, tuple(left),
                "still different after applying: " + "; ".join(c.summary for c in left),
                "see the log for the commands that ran", time.monotonic() - start)
        return StepResult(step.name, step.title, CHANGED, tuple(changes),
                          seconds=time.monotonic() - start)


_STYLE = {OK: "green", CHANGED: "yellow", WOULD_CHANGE: "yellow", FAILED: "bold red",
          SKIPPED: "dim", WARNING: "magenta"}


def render_step(result: StepResult, *, show_diff: bool = True) -> str:
    """One step as rich markup: status, name, what changes, and the diff when asked."""
    style = _STYLE.get(result.status, "")
    secs = f" [dim]({result.seconds:.1f}s)[/dim]" if result.seconds >= 0.5 else ""
    lines = [f"[{style}]{result.status:<12}[/{style}] {escape(result.title)}{secs}"]
    for ch in result.changes:
        lines.append(f"{'':13}- {escape(ch.summary)}")
        if show_diff and ch.diff:
            for dl in ch.diff.rstrip("\n").splitlines():
                colour = "green" if dl.startswith("+") else "red" if dl.startswith("-") else "dim"
                lines.append(f"{'':15}[{colour}]{escape(dl)}[/{colour}]")
    if result.message:
        lines.append(f"{'':13}{escape(result.message)}")
    if result.hint:
        lines.append(f"{'':13}[dim]hint: {escape(result.hint)}[/dim]")
    return "\n".join(lines)


def render_summary(result: PlanResult) -> str:
    """The recap line, like Ansible's PLAY RECAP."""
    if result.aborted:
        return f"[bold red]aborted:[/bold red] {result.aborted}"
    if result.dry_run:
        n = result.count(WOULD_CHANGE)
        return f"dry run: ok={result.count(OK)} would-change={n} (nothing was changed)"
    return (f"ok={result.count(OK)} changed={result.count(CHANGED)} "
            f"failed={result.count(FAILED)}")
