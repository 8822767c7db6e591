"""`hostkit upgrade`: the deployed stack onto this hostkit's pins, gated on health, with rollback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

import typer

from hostkit.cli_backup import DestOption, _echo, _root_only
from hostkit.cli_options import BaseMode, OutputFormat, PackageSet, RootOption, format_option
from hostkit.cli_stack import (
    BaseOpt,
    CaOpt,
    DirOption,
    MirrorOpt,
    OctaveOpt,
    ROpt,
    SetOpt,
    _build_options,
    _parse_settings,
    _profiles,
)
from hostkit.host import LocalHost
from hostkit.locking import deployment_lock
from hostkit.stack import Stack


def upgrade(
    check_only: bool = typer.Option(False, "--check", help="Show what would change; change nothing."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Show what would change and the steps; change nothing."),
    rollback: bool = typer.Option(
        False, "--rollback", help="Go back to the images and database from before the last upgrade."),
    volume_backup: bool = typer.Option(
        True, "--volume-backup/--no-volume-backup",
        help="Back up users' volumes too (the database, config and secrets always are)."),
    settings: List[str] = typer.Option(
        [], "--set", metavar="KEY=VALUE", help="Written to .env; an image set here wins over the built one."),
    timeout: float = typer.Option(
        300, "--timeout", metavar="SECONDS", help="How long to wait for the stack to be healthy."),
    base: BaseMode = BaseOpt,
    ca_bundle: str = CaOpt,
    mirror: str = MirrorOpt,
    package_set: PackageSet = SetOpt,
    octave: bool = OctaveOpt,
    r: bool = ROpt,
    dest: str = DestOption,
    directory: Path = DirOption,
    fmt: OutputFormat = format_option(),
    root: str = RootOption,
) -> None:
    """Upgrade to this hostkit's pins, gated on health; rolls back by itself on failure.

    A backup, new images beside the old ones, the database migrated on a copy, then a health
    gate: the doctor's stack checks and a canary user's kernel running code.
    """
    from hostkit.images import ImageBuilder
    from hostkit.upgrade import Upgrader, UpgradeRequest, check, rollback_last

    host = LocalHost(root)
    stack = Stack(host, str(directory), log=_echo)
    overrides = _parse_settings(settings)
    options = _build_options(host, base, ca_bundle, mirror, package_set, octave, r, False)
    builder = ImageBuilder(host, options, log=lambda m: _echo(f"  {m}"))
    if check_only or dry_run:
        plan = check(stack, builder, overrides)
        if fmt is OutputFormat.json:
            typer.echo(json.dumps({"version": 1, "needed": plan.needed, "jupyterhub": {
                "running": plan.hub_running, "pinned": plan.hub_pinned},
                "images": [{**i.__dict__, "changes": i.changes, "builds": i.builds} for i in plan.images]},
                indent=2))
            return
        for line in plan.lines():
            typer.echo(line)
        if dry_run and plan.needed:
            typer.echo("would: back up (" + ("with" if volume_backup else "without")
                       + f" users' volumes) into {dest}; keep the running images under rollback tags; "
                       "build the new images; migrate a copy of the database; start the new stack; "
                       "gate on the doctor's stack checks and a canary user's kernel; roll back on failure")
        return
    _root_only(host)
    if rollback:
        with deployment_lock(host, str(directory), "upgrade --rollback"):
            lines = rollback_last(stack, builder, timeout=timeout, log=_echo)
        for line in lines:
            typer.echo(line)
        return
    enabled = _profiles(stack.read_env(), overrides, None)
    request = UpgradeRequest(dest=dest, overrides=overrides, volume_backup=volume_backup, timeout=timeout)
    with deployment_lock(host, str(directory), "upgrade"):
        report = Upgrader(stack, builder, request, log=_echo, profiles=enabled).run()
    for line in report.lines:
        typer.echo(line)
