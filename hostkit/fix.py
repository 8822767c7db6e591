"""`hostkit doctor --fix`: the bootstrap steps that converge what the doctor found wrong.

A check names the bootstrap step that fixes it (`fix_step` in the catalogue); a step's
`check` is the same judgement bootstrap makes before it changes anything. So the repair is
bootstrap's own plan, restricted to the steps failing checks name, with bootstrap's options
taken from the site settings (what bootstrap recorded), shown first and applied only after a
confirmation, then the same checks are run again.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from hostkit.bootstrap import BootstrapOptions, bootstrap_steps
from hostkit.doctor import ProbeContext, run_checks
from hostkit.errors import UsageError
from hostkit.facts import Facts
from hostkit.host import LocalHost
from hostkit.render import render_human
from hostkit.results import CheckResult, CheckSpec, Status
from hostkit.settings import Settings
from hostkit.steps import Plan, Step, render_step, render_summary

# Failing checks of these statuses are repaired: a WARN with a known step is worth fixing
# too (an unopened public port is a WARN because published ports bypass zones).
REPAIRABLE = (Status.FAIL, Status.WARN)
# Steps that only judge (distro) or record (settings) repair nothing on their own.
NOT_A_REPAIR = frozenset({"distro", "settings"})


@dataclass(frozen=True)
class Repair:
    """The steps to run and the checks each answers for; what has no automatic fix."""

    steps: tuple[Step, ...]
    checks_by_step: dict[str, tuple[str, ...]]
    by_hand: tuple[CheckResult, ...]

    @property
    def check_ids(self) -> list[str]:
        return sorted({cid for ids in self.checks_by_step.values() for cid in ids})


def options_from_settings(settings: Settings, failing: Iterable[str] = ()) -> BootstrapOptions:
    """Bootstrap's options as this site set them up (recorded in hostkit.toml).

    Like a bootstrap re-run without flags, daemon.json keeps what it says, except for what a
    failing check asks to change: the resolvers only when `daemon.dns` failed (and they are
    proven to answer before they are written), log rotation only when `daemon.logging` did,
    the NVIDIA container toolkit only when `gpu.container-toolkit` did.
    """
    failing = set(failing)
    return BootstrapOptions(
        data_root=settings.data_root or None, port=settings.public_port,
        gpu="gpu.container-toolkit" in failing,
        dns=tuple(settings.dns) if "daemon.dns" in failing else None,
        log_max_size=settings.log_max_size if "daemon.logging" in failing else None,
        log_max_file=str(settings.log_max_file) if "daemon.logging" in failing else None)


def plan_repair(results: Iterable[CheckResult], settings: Settings,
                options: Optional[BootstrapOptions] = None) -> Repair:
    """Which bootstrap steps fix which failing checks, in bootstrap's own order (pure)."""
    failing = [r for r in results if r.status in REPAIRABLE]
    chosen_options = options or options_from_settings(settings, (r.id for r in failing))
    steps, _relocate = bootstrap_steps(chosen_options, {})
    known = {step.name for step in steps} - NOT_A_REPAIR
    wanted: dict[str, list[str]] = {}
    by_hand: list[CheckResult] = []
    for result in failing:
        if result.fix_step in known:
            wanted.setdefault(result.fix_step, []).append(result.id)
        else:
            by_hand.append(result)
    chosen = tuple(step for step in steps if step.name in wanted)
    return Repair(chosen, {name: tuple(ids) for name, ids in wanted.items()}, tuple(by_hand))


def run_fix(host: LocalHost, settings: Settings, specs: list[CheckSpec],
            results: list[CheckResult], *, yes: bool, dry_run: bool,
            console: Console) -> list[CheckResult]:
    """Show the repair plan, apply it once confirmed, and return the results checked again.

    Without --yes the plan is shown and a terminal is asked; with nobody to ask, nothing
    changes (the plan is the dry run).
    """
    repair = plan_repair(results, settings)
    for result in repair.by_hand:
        console.print(f"[dim]no automatic fix for {escape(result.id)}: "
                      f"{escape(result.hint or 'see above')}[/dim]")
    if not repair.steps:
        console.print("--fix: nothing hostkit can repair automatically")
        return results
    if not host.is_root():
        raise UsageError("--fix changes the system and must run as root", "run it with sudo")
    console.print("\n[bold]Repair plan[/bold] (bootstrap's own steps, for "
                  + ", ".join(repair.check_ids) + ")")
    facts = Facts(host)
    planned, _ = Plan(list(repair.steps), dry_run=True,
                      on_planned=lambda r: console.print(render_step(r))).run(host, facts)
    if planned.failed:
        console.print(render_summary(planned))
        return results
    if dry_run:
        console.print("dry run: nothing was changed")
        return results
    if not yes:
        if not sys.stdin.isatty():
            console.print("nothing was changed: confirm in a terminal, or pass --yes")
            return results
        if not typer.confirm("Apply this plan?", default=False):
            console.print("nothing was changed")
            return results
    _planned, outcome = Plan(list(repair.steps), confirm=lambda _changes: True,
                             on_result=lambda r: console.print(render_step(r, show_diff=False))
                             ).run(host, Facts(host))
    console.print(render_summary(outcome))
    again = run_checks([s for s in specs if s.id in repair.check_ids],
                       ProbeContext(host, Facts(host), settings))
    console.print("\n[bold]Checked again[/bold]")
    render_human(again, console)
    fresh = {r.id: r for r in again}
    return [fresh.get(r.id, r) for r in results]
