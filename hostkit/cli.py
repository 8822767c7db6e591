"""hostkit: take a Linux server to a multi-user JupyterHub, and say exactly what is wrong."""

from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path
from typing import IO, List, Optional

import typer
from rich.console import Console

from hostkit import __version__
from hostkit.cli_options import HostkitGroup, OutputFormat, deploy_dir_option, format_option, hostname_option
from hostkit.settings import SETTINGS_FILE

app = typer.Typer(
    cls=HostkitGroup, no_args_is_help=True, add_completion=False, help=__doc__, pretty_exceptions_enable=False
)


class Format(str, Enum):
    human = "human"
    json = "json"
    junit = "junit"
    prometheus = "prometheus"
    nagios = "nagios"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"hostkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """hostkit: take a Linux server to a multi-user JupyterHub, and say exactly what is wrong."""


@app.command()
def doctor(
    fmt: Format = typer.Option(Format.human, "--format", "-f", help="Output format."),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", metavar="FILE", dir_okay=False,
        help="Write the report here instead of stdout.",
    ),
    strict: bool = typer.Option(False, help="Count warnings as failures."),
    only: Optional[List[str]] = typer.Option(
        None, metavar="CHECK", help="Run only these checks (id, id prefix or tag)."
    ),
    skip: Optional[List[str]] = typer.Option(
        None, metavar="CHECK", help="Skip these checks (id, id prefix or tag)."
    ),
    list_checks: bool = typer.Option(False, "--list", help="Print the catalogue and exit."),
    checks: Optional[List[Path]] = typer.Option(
        None, "--checks", metavar="FILE", exists=True, dir_okay=False,
        help="An extra catalogue file (TOML).",
    ),
    settings_file: str = typer.Option(
        SETTINGS_FILE, "--settings", metavar="FILE", help="Site settings file."
    ),
    port: Optional[int] = typer.Option(
        None, metavar="PORT", help="Public port (default from the settings file, else 9090)."
    ),
    server_name: Optional[str] = hostname_option(),
    deploy_dir: Optional[Path] = deploy_dir_option(None),
    data_root: Optional[str] = typer.Option(None, metavar="DIR", help="Expected Docker data-root."),
    fix: bool = typer.Option(
        False, "--fix", help="Show bootstrap's plan for what failed; apply it after confirmation."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="With --fix: apply without asking."),
    dry_run: bool = typer.Option(False, "--dry-run", help="With --fix: show the plan, change nothing."),
) -> None:
    """Check this host's health: DNS, ports, certificates, Docker, storage, firewall, the stack."""
    from hostkit.catalogue import load_catalogue, select
    from hostkit.doctor import ProbeContext, run_checks
    from hostkit.facts import Facts
    from hostkit.host import LocalHost
    from hostkit.render import NAGIOS_EXIT, RENDERERS, render_human, render_nagios
    from hostkit.results import exit_code
    from hostkit.settings import load_settings

    specs = select(load_catalogue(checks or []), only, skip)
    if list_checks:
        for s in specs:
            typer.echo(f"{s.id:28} {s.severity:4}  {s.title}  [probe {s.probe}]")
        raise typer.Exit(0)
    host = LocalHost()
    settings = load_settings(host, settings_file).with_overrides(
        public_port=port,
        server_name=server_name,
        deploy_dir=str(deploy_dir) if deploy_dir else None,
        data_root=data_root,
    )
    results = run_checks(specs, ProbeContext(host, Facts(host), settings))
    if fmt is Format.human:
        text = render_human(results, Console(record=bool(output), file=_sink(output)))
    else:
        text = RENDERERS[fmt.value](results)
        if not output:
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
    if output:
        # temp file + rename in the same directory: a textfile collector never reads half a report
        LocalHost().write_text(str(output.resolve()), text, mode=0o644, backup=False)
    if fix:
        from hostkit.fix import run_fix

        results = run_fix(host, settings, specs, results, yes=yes, dry_run=dry_run,
                          console=Console(stderr=fmt is not Format.human))
    if fmt is Format.nagios:  # monitoring systems read the plugin convention, not ours
        _end(NAGIOS_EXIT[render_nagios(results).split()[1]])
    _end(exit_code(results, strict))


def _end(code: int) -> None:
    """Exit with `code`, at once when a probe given up on is still stuck in a system call.

    Such a thread (getaddrinfo on a dead resolver, statvfs on a hung NFS mount) cannot be
    stopped; the report is complete, so flush it and leave without waiting for the thread.
    """
    from hostkit.doctor import probes_still_running

    if probes_still_running():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise typer.Exit(code)


def _sink(output: Optional[Path]) -> IO[str]:
    import io

    return io.StringIO() if output else sys.stdout


@app.command()
def facts(fmt: OutputFormat = format_option()) -> None:
    """Print what hostkit detects about this host."""
    from hostkit.facts import Facts, dumps
    from hostkit.host import LocalHost

    summary = Facts(LocalHost()).summary()
    if fmt is OutputFormat.json:
        typer.echo(dumps(summary))
        return
    for key, value in summary.items():
        if isinstance(value, dict):
            shown = ", ".join(f"{k}={v}" for k, v in value.items())
        elif isinstance(value, list):
            shown = "; ".join(", ".join(f"{k}={v}" for k, v in item.items()) for item in value)
        else:
            shown = str(value)
        typer.echo(f"{key:16} {shown}")


# bootstrap and cleanup live in their own module; mounted here so `hostkit --help` lists them
from hostkit.cli_bootstrap import bootstrap as _bootstrap  # noqa: E402
from hostkit.cli_bootstrap import cleanup as _cleanup  # noqa: E402

app.command("bootstrap")(_bootstrap)
app.command("cleanup")(_cleanup)

# the stack, certs and users commands live in their own module
from hostkit.cli_stack import certs_command as _certs  # noqa: E402
from hostkit.cli_stack import stack_app as _stack_app  # noqa: E402
from hostkit.cli_stack import users_app as _users_app  # noqa: E402

app.add_typer(_stack_app, name="stack")
app.add_typer(_users_app, name="users")
app.command("certs")(_certs)

# backup, restore and the day-two `users` commands (registered on users_app when imported)
from hostkit.cli_backup import backup as _backup  # noqa: E402
from hostkit.cli_backup import restore as _restore  # noqa: E402

app.command("backup")(_backup)
app.command("restore")(_restore)

from hostkit.cli_upgrade import upgrade as _upgrade  # noqa: E402

app.command("upgrade")(_upgrade)

# several servers as one Docker Swarm
from hostkit.cli_cluster import cluster_app as _cluster_app  # noqa: E402

app.add_typer(_cluster_app, name="cluster")


def main() -> None:
    """Entry point: expected failures print one line and a hint (in HostkitGroup), never a
    traceback; typer's standalone mode turns usage errors into a message and exit code 2."""
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("aborted", err=True)
        sys.exit(130)
