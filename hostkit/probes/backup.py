"""Probes of hostkit's backups: the last good one's age, and that its manifest verifies."""

from __future__ import annotations

import time

from hostkit.backup import list_backups, verify
from hostkit.doctor import ProbeContext
from hostkit.probes import probe
from hostkit.results import Outcome


def _deployed(ctx: ProbeContext, deploy_dir: str) -> bool:
    return ctx.host.exists(f"{deploy_dir}/.env")


@probe("backup_age")
def backup_age(ctx: ProbeContext, dest: str = "/var/backups/hostkit", max_age_hours: float = 36.0,
               deploy_dir: str = "/opt/hostkit") -> Outcome:
    if not _deployed(ctx, deploy_dir):
        return Outcome.skip(f"stack not deployed in {deploy_dir}: nothing to back up")
    full = [b for b in list_backups(ctx.host, dest) if b.full]
    hint = f"hostkit backup --dest {dest}; hostkit backup --schedule daily keeps it so"
    if not full:
        return Outcome.fail(f"no complete backup in {dest}", hint=hint)
    last = full[-1]
    hours = (time.time() - last.created) / 3600
    summary = f"last good backup {last.name}, {hours:.1f} h old"
    if hours > max_age_hours:
        return Outcome.fail(summary, expected=f"under {max_age_hours:g} h", actual=f"{hours:.1f} h",
                            hint=hint)
    return Outcome.ok(summary)


@probe("backup_verifies")
def backup_verifies(ctx: ProbeContext, dest: str = "/var/backups/hostkit",
                    deploy_dir: str = "/opt/hostkit") -> Outcome:
    if not _deployed(ctx, deploy_dir):
        return Outcome.skip(f"stack not deployed in {deploy_dir}")
    full = [b for b in list_backups(ctx.host, dest) if b.full]
    if not full:
        return Outcome.skip(f"no complete backup in {dest} (see backup.age)")
    last = full[-1]
    problems = verify(ctx.host, last)
    if problems:
        return Outcome.fail(f"{last.name} does not verify: {'; '.join(problems[:3])}",
                            hint=f"take a new backup (hostkit backup --dest {dest}) and check the disk")
    items = last.manifest.get("items", [])
    size = sum(i["size"] for i in items)
    return Outcome.ok(f"{last.name}: {len(items)} items, {size / 2**20:.1f} MiB, every sha256 matches")
