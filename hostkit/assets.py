"""Where the bundled `stack/` and `checks/` live: inside the wheel, or beside the package in a checkout."""

from __future__ import annotations

from pathlib import Path

from hostkit.errors import HostkitError

_PACKAGE = Path(__file__).resolve().parent


def asset_dir(name: str) -> Path:
    """The directory of a bundled asset tree (`stack` or `checks`)."""
    for candidate in (_PACKAGE / "_assets" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise HostkitError(
        f"bundled {name}/ not found next to {_PACKAGE}", "reinstall hostkit (pipx install --force hostkit)"
    )


def stack_dir() -> Path:
    return asset_dir("stack")


def checks_dir() -> Path:
    return asset_dir("checks")
