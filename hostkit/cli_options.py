"""What every hostkit command shares: one name per concept, choices as enums, metavars that
say what a value is, and the one place an expected failure becomes a message and a hint."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

from hostkit.errors import HostkitError
from hostkit.settings import DEFAULTS


class HostkitGroup(TyperGroup):
    """The root command group: every command's HostkitError is printed here, and only here.

    One line `error: …`, one line `hint: …`, exit 1 (2 for bad input); never a traceback.
    """

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except HostkitError as exc:
            # plain lines, never wrapped: admins grep logs for them
            typer.echo(f"error: {exc.message}", err=True)
            if exc.hint:
                typer.echo(f"hint: {exc.hint}", err=True)
            raise typer.Exit(exc.exit_code) from None


class OutputFormat(str, Enum):
    """Text for people, or versioned JSON for scripts."""

    human = "human"
    json = "json"


class DockerSource(str, Enum):
    """Where Docker comes from on Debian/Ubuntu."""

    distro = "distro"
    docker = "docker"


class LogDriver(str, Enum):
    """The log drivers whose files hostkit rotates (max-size, max-file)."""

    json_file = "json-file"
    local = "local"


class BaseMode(str, Enum):
    """Base images: pulled, built here, or pulled when possible."""

    auto = "auto"
    upstream = "upstream"
    local = "local"


class PackageSet(str, Enum):
    """What the single-user image carries."""

    full = "full"
    slim = "slim"


def deploy_dir_option(default: Any = Path(DEFAULTS.deploy_dir)) -> Any:
    """--deploy-dir: where the stack lives (the `deploy_dir` setting)."""
    return typer.Option(default, "--deploy-dir", metavar="DIR", file_okay=False,
                        help="Deploy directory of the stack (setting deploy_dir).")


def hostname_option(help_text: str = "Host name clients use (certificate and URL).") -> Any:
    """--hostname: the name clients use (the `server_name` setting)."""
    return typer.Option(None, "--hostname", metavar="NAME", help=help_text)


def format_option() -> Any:
    return typer.Option(OutputFormat.human, "--format",
                        help="Output for people, or versioned JSON for scripts.")


RootOption = typer.Option("/", "--root", hidden=True, metavar="DIR",
                          help="Resolve host paths under this root.")
