"""`hostkit backup`, `hostkit restore` and the day-two `hostkit users` commands."""

from __future__ import annotations

import calendar
import contextlib
import json
import sys
import time
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from hostkit.cli_options import OutputFormat, RootOption, format_option
from hostkit.cli_stack import DirOption, users_app
from hostkit.errors import HostkitError, UsageError
from hostkit.host import LocalHost
from hostkit.locking import deployment_lock
from hostkit.settings import DEFAULTS
from hostkit.stack import Stack


class Schedule(str, Enum):
    """How often `hostkit backup` runs by itself."""

    daily = "daily"
    weekly = "weekly"
    off = "off"


DestOption = typer.Option(
    DEFAULTS.backup_dir, "--dest", metavar="DIR", help="Directory holding the backups."
)


def _echo(message: str) -> None:
    typer.echo(message, err=True)


def _root_only(host: LocalHost) -> None:
    if not host.is_root():
        raise UsageError("backups read Docker's volumes and the deploy directory's secrets",
                         "run as root (sudo)")


def backup(
    dest: str = DestOption,
    keep: Optional[int] = typer.Option(
        None, "--keep", metavar="COUNT", help="Keep this many full backups; prune older."
    ),
    users: List[str] = typer.Option(
        [], "--users", metavar="NAME", help="Only these users' volumes (repeatable)."
    ),
    volumes: bool = typer.Option(True, "--volumes/--no-volumes", help="Include users' volumes."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be backed up; write nothing."),
    list_them: bool = typer.Option(False, "--list", help="List the complete backups in --dest."),
    schedule: Optional[Schedule] = typer.Option(
        None, "--schedule", help="A systemd timer (cron without systemd); off removes it."),
    stop_idle: bool = typer.Option(False, "--stop-idle", help="Stop servers idle for an hour first."),
    directory: Path = DirOption,
    root: str = RootOption,
) -> None:
    """Back up the hub: database (taken live), secrets, config, certificates, users' volumes."""
    from hostkit.backup import BackupMaker, BackupRequest, list_backups, prune

    host = LocalHost(root)
    if list_them:
        for b in list_backups(host, dest):
            m = b.manifest
            size = sum(i["size"] for i in m.get("items", []))
            count = sum(1 for i in m.get("items", []) if i["kind"] == "volume")
            typer.echo(f"{b.name}  {m.get('scope', '?'):7}  {count:3} volumes  {size / 2**20:9.1f} MiB  "
                       f"{b.path}")
        return
    _root_only(host)
    if schedule is not None:
        from hostkit.schedule import install_schedule

        for line in install_schedule(host, schedule.value, dest, keep or 7, str(directory)):
            typer.echo(line)
        return
    stack = Stack(host, str(directory), log=_echo)
    request = BackupRequest(dest=dest, users=list(users), volumes=volumes, dry_run=dry_run)
    with contextlib.nullcontext() if dry_run else deployment_lock(host, str(directory), "backup"):
        if stop_idle:
            _stop_idle(stack)
        result = BackupMaker(stack, request, log=_echo).run()
    if dry_run:
        typer.echo(f"would write {result.path}:")
        for line in result.planned:
            typer.echo(f"  {line}")
        return
    total = sum(i["size"] for i in result.items)
    vols = [i for i in result.items if i["kind"] == "volume"]
    typer.echo(f"backup {result.path}: {len(result.items)} items, {len(vols)} user volumes, "
               f"{total / 2**20:.1f} MiB in {result.seconds:.0f}s"
               + (f" ({len(result.linked)} volumes unchanged, linked)" if result.linked else ""))
    typer.echo(f"accounts: {len(result.users)} ("
               f"{sum(1 for u in result.users if not u['approved'])} awaiting approval)")
    if keep:
        for name in prune(host, dest, keep):
            typer.echo(f"pruned {name}")


def _stop_idle(stack: Stack, idle_seconds: float = 3600) -> None:
    from hostkit.accounts import stop_server

    now = time.time()
    for user in stack.users():
        last = user.get("last_activity")
        if not user["server_running"] or not last:
            continue
        seen = calendar.timegm(time.strptime(last[:19], "%Y-%m-%dT%H:%M:%S"))
        if now - seen > idle_seconds and stop_server(stack, user["name"]):
            _echo(f"stopped {user['name']}'s idle server")


def restore(
    backup_spec: str = typer.Argument(..., metavar="BACKUP", help="A backup's path, its name, or `latest`."),
    users: List[str] = typer.Option(
        [], "--users", metavar="NAME", help="Only these users' volumes (repeatable)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace what differs (and keep it aside)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Verify and say what would be done."),
    dest: str = DestOption,
    directory: Path = DirOption,
    root: str = RootOption,
) -> None:
    """Restore the whole hub, or only some users' files (`--users alice`)."""
    from hostkit.backup import find_backup
    from hostkit.restore import Restorer

    host = LocalHost(root)
    _root_only(host)
    backup_info = find_backup(host, backup_spec, dest)
    stack = Stack(host, str(directory), log=_echo)
    restorer = Restorer(stack, backup_info, users=list(users), force=force, log=_echo)
    report = restorer.plan()
    typer.echo(f"{backup_info.path}: verified ({len(report.decisions)} items)")
    for d in report.decisions:
        what = d.item.get("volume") or d.item.get("target") or d.item["path"]
        what += f" on {d.node}" if d.node else ""
        typer.echo(f"  {d.state:8} {what}" + (f" ({d.detail})" if d.detail else ""))
    if dry_run:
        refused = restorer.refusals(report)
        if refused:
            typer.echo("would refuse without --force: " + "; ".join(refused))
        return
    with deployment_lock(host, str(directory), "restore"):
        report = restorer.apply(report)
    for line in report.done:
        typer.echo(line)
    for line in report.kept:
        typer.echo(line)
    if not report.done:
        typer.echo("nothing to do: everything is as in the backup")
    if not users:
        accounts = backup_info.manifest.get("users", [])
        typer.echo(f"accounts from the backup: {len(accounts)} "
                   f"({sum(1 for u in accounts if not u['approved'])} awaiting approval)")
    if host.exists(stack.env_path):
        _doctor_after_restore(stack)


def _doctor_after_restore(stack: Stack) -> None:
    """The doctor's stack checks on what the restore left; a failing one fails the restore."""
    from hostkit.health import failed_checks, stack_checks

    _echo("running the doctor's stack checks")
    results = stack_checks(stack)
    for r in results:
        typer.echo(f"doctor {r.id}: {r.status.value}: {r.summary}")
    failed = failed_checks(results)
    if failed:
        raise HostkitError("restored, but the doctor's stack checks fail: " + "; ".join(failed),
                           f"hostkit stack logs --deploy-dir {stack.directory}")


@users_app.command("delete")
def users_delete(
    name: str = typer.Argument(..., help="The account to delete."),
    keep_volume: bool = typer.Option(False, "--keep-volume", help="Leave the user's volume in place."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    dest: str = DestOption,
    directory: Path = DirOption,
    root: str = RootOption,
) -> None:
    """Delete an account; its volume goes only after a backup of it."""
    from hostkit.accounts import delete_account
    from hostkit.backup import BackupMaker, BackupRequest
    from hostkit.volumes import user_volumes

    host = LocalHost(root)
    stack = Stack(host, str(directory), log=_echo)
    volume = None if keep_volume else user_volumes(host, stack.env()).get(name)
    what = f"the account {name}" + (f" and its volume {volume} (after a backup in {dest})" if volume else "")
    if not yes and not typer.confirm(f"Delete {what}?", default=False):
        raise typer.Exit(1)
    backup_path = ""
    if volume:
        _root_only(host)
        with deployment_lock(host, str(directory), "backup"):
            result = BackupMaker(stack, BackupRequest(dest=dest, users=[name]), log=_echo).run()
        backup_path = result.path
        typer.echo(f"backed up {volume} to {backup_path}")
    for line in delete_account(stack, name):
        typer.echo(line)
    if volume:
        host.run(["docker", "volume", "rm", volume], check=True)
        typer.echo(f"removed volume {volume}; bring it back with: "
                   f"hostkit restore {backup_path} --users {name}")


@users_app.command("reset-password")
def users_reset_password(
    name: str = typer.Argument(..., help="The account."),
    directory: Path = DirOption,
    root: str = RootOption,
) -> None:
    """Set a new password (read from standard input, or asked for twice); lifts a lockout."""
    from hostkit.accounts import reset_password

    if sys.stdin.isatty():
        password = typer.prompt(f"New password for {name}", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise UsageError("no password given", f"echo NEW | hostkit users reset-password {name}")
    reset_password(Stack(LocalHost(root), str(directory)), name, password)
    typer.echo(f"password of {name} changed")


@users_app.command("volumes")
def users_volumes(
    directory: Path = DirOption,
    fmt: OutputFormat = format_option(),
    root: str = RootOption,
) -> None:
    """Each user's volume with its size, and volumes whose user has no account any more."""
    from hostkit.accounts import volume_usage

    host = LocalHost(root)
    _root_only(host)
    rows = volume_usage(Stack(host, str(directory)))
    if fmt is OutputFormat.json:
        typer.echo(json.dumps({"version": 1, "volumes": [r.__dict__ for r in rows]}, indent=2))
        return
    for r in rows:
        note = {True: "", None: "  (hub not running: account unknown)"}.get(
            r.account, "  NO ACCOUNT (orphaned: `hostkit backup --users` then `docker volume rm`)")
        typer.echo(f"{r.user:24} {r.volume:40} {r.bytes / 2**20:10.1f} MiB{note}")
    if not rows:
        typer.echo("no user volumes")


@users_app.command("start")
def users_start(
    names: Optional[List[str]] = typer.Argument(None, help="Users whose servers to start."),
    all_users: bool = typer.Option(False, "--all", help="Every hub user without a server (not the admin)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say whose servers would start; start none."),
    directory: Path = DirOption,
    fmt: OutputFormat = format_option(),
    root: str = RootOption,
) -> None:
    """Start users' servers now, before a class logs in, so that they find them running.

    Each server is the user's own (volume, limits, image), started through the hub's queue.
    The idle culler stops a server nobody uses within HOSTKIT_CULL_TIMEOUT (an hour by
    default): start them less than that before the lecture.
    """
    from hostkit.accounts import start_servers, users_without_a_server

    if bool(names) == all_users:
        raise UsageError("name the users, or give --all (not both)", "hostkit users start alice bob")
    stack = Stack(LocalHost(root), str(directory))
    chosen = users_without_a_server(stack) if all_users else list(names or [])
    if dry_run or not chosen:
        typer.echo("would start: " + (" ".join(chosen) or "nobody (every hub user has a server)"))
        return
    results = start_servers(stack, chosen, log=_echo)
    if fmt is OutputFormat.json:
        typer.echo(json.dumps({"version": 1, "servers": [r.__dict__ for r in results]}, indent=2))
    else:
        for r in results:
            typer.echo(f"{r.user:24} {r.outcome}")
    if not all(r.ok for r in results):
        raise typer.Exit(1)
