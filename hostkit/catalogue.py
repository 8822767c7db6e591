"""The doctor's catalogue: checks are data (TOML in checks/), probes are code (hostkit.probes)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Optional

from hostkit.assets import checks_dir
from hostkit.errors import UsageError
from hostkit.results import CheckSpec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_FIELDS = {
    "id", "title", "probe", "group", "params", "severity", "tags", "hint", "fix_step", "timeout", "needs",
}


def load_catalogue(extra_files: Iterable[Path] = ()) -> list[CheckSpec]:
    """The bundled checks, then the user's; a user check with a bundled id replaces it."""
    from hostkit.probes import PROBES  # the closed set a catalogue may name

    files = sorted(checks_dir().glob("*.toml")) + list(extra_files)
    by_id: dict[str, CheckSpec] = {}
    for path in files:
        for spec in _parse_file(path):
            if spec.probe not in PROBES:
                raise UsageError(
                    f"{path}: check {spec.id!r} names unknown probe {spec.probe!r}",
                    f"known probes: {', '.join(sorted(PROBES))}",
                )
            by_id[spec.id] = spec
    _check_needs(by_id)
    return list(by_id.values())


def _check_needs(by_id: dict[str, CheckSpec]) -> None:
    """Every `needs` names a check of the catalogue, and no check needs itself, however far."""
    for spec in by_id.values():
        for need in spec.needs:
            if need not in by_id:
                raise UsageError(
                    f"{spec.source}: check {spec.id!r} needs unknown check {need!r}",
                    "`hostkit doctor --list` shows the ids",
                )
    done: set[str] = set()

    def visit(check_id: str, path: list[str]) -> None:
        if check_id in path:
            cycle = [*path[path.index(check_id):], check_id]
            raise UsageError(f"{by_id[check_id].source}: needs form a cycle: {' -> '.join(cycle)}")
        if check_id in done:
            return
        for need in by_id[check_id].needs:
            visit(need, [*path, check_id])
        done.add(check_id)

    for check_id in by_id:
        visit(check_id, [])


def _parse_file(path: Path) -> list[CheckSpec]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise UsageError(f"{path}: no such checks file") from exc
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: {exc}", "fix the TOML syntax") from exc
    specs = []
    for n, entry in enumerate(data.get("check", []), start=1):
        specs.append(_spec(path, n, entry))
    return specs


def _spec(path: Path, n: int, entry: dict[str, Any]) -> CheckSpec:
    where = f"{path}: check #{n}"
    missing = [k for k in ("id", "title", "probe") if k not in entry]
    if missing:
        raise UsageError(f"{where} lacks {', '.join(missing)}", "each [[check]] needs id, title, probe")
    unknown = sorted(set(entry) - _FIELDS)
    if unknown:
        raise UsageError(
            f"{where} ({entry['id']}) has unknown field(s) {', '.join(unknown)}",
            f"allowed: {', '.join(sorted(_FIELDS))}",
        )
    severity = entry.get("severity", "fail")
    if severity not in ("fail", "warn"):
        raise UsageError(f"{where} ({entry['id']}): severity must be 'fail' or 'warn'")
    group = entry.get("group") or entry["id"].split(".", 1)[0]
    return CheckSpec(
        id=entry["id"],
        title=entry["title"],
        probe=entry["probe"],
        group=group,
        params=dict(entry.get("params", {})),
        severity=severity,
        tags=(*entry.get("tags", ()), group),
        hint=entry.get("hint", ""),
        fix_step=entry.get("fix_step", ""),
        timeout=float(entry.get("timeout", 20.0)),
        source=str(path),
        needs=tuple(_needs(where, entry)),
    )


def _needs(where: str, entry: dict[str, Any]) -> list[str]:
    needs = entry.get("needs", [])
    if not isinstance(needs, list) or not all(isinstance(n, str) for n in needs):
        raise UsageError(f"{where} ({entry['id']}): needs must be a list of check ids")
    return needs


def select(specs: list[CheckSpec], only: Optional[list[str]], skip: Optional[list[str]]) -> list[CheckSpec]:
    """Filter by id, id prefix (`docker.`) or tag; an unknown selector is a usage error."""

    def matches(spec: CheckSpec, sel: str) -> bool:
        return spec.id == sel or spec.id.startswith(sel.rstrip(".") + ".") or sel in spec.tags

    for sel in (only or []) + (skip or []):
        if not any(matches(s, sel) for s in specs):
            raise UsageError(f"--only/--skip: nothing matches {sel!r}", "see `hostkit doctor --list`")
    chosen = [s for s in specs if not only or any(matches(s, o) for o in only)]
    return [s for s in chosen if not any(matches(s, k) for k in (skip or []))]
