"""The doctor's vocabulary: what a check is (from the catalogue) and what it found."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Status(str, Enum):
    PASS = "pass"  # noqa: S105 - a status, not a password
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"
    ERROR = "error"  # the probe itself broke (timeout, crash): the check could not be made


@dataclass(frozen=True)
class CheckSpec:
    """One catalogue entry: which probe to run, with what parameters, and how to fix a failure."""

    id: str
    title: str
    probe: str
    group: str
    params: dict[str, Any] = field(default_factory=dict)
    severity: str = "fail"  # "fail" or "warn": a failing warn-check is reported as WARN
    tags: tuple[str, ...] = ()
    hint: str = ""
    fix_step: str = ""  # the `hostkit bootstrap` step (or command) that fixes it
    timeout: float = 20.0
    source: str = ""  # catalogue file it came from
    needs: tuple[str, ...] = ()  # checks that must PASS or WARN first; otherwise this one SKIPs


@dataclass(frozen=True)
class Outcome:
    """What a probe returns: a verdict and the evidence for it."""

    status: Status
    summary: str
    expected: str = ""
    actual: str = ""
    hint: str = ""  # overrides the catalogue's hint when the probe knows the precise fix

    @classmethod
    def ok(cls, summary: str, **kw: str) -> Outcome:
        return cls(Status.PASS, summary, **kw)

    @classmethod
    def fail(cls, summary: str, **kw: str) -> Outcome:
        return cls(Status.FAIL, summary, **kw)

    @classmethod
    def warn(cls, summary: str, **kw: str) -> Outcome:
        return cls(Status.WARN, summary, **kw)

    @classmethod
    def skip(cls, summary: str, **kw: str) -> Outcome:
        return cls(Status.SKIP, summary, **kw)


@dataclass(frozen=True)
class CheckResult:
    """A check evaluated on a host: the row every renderer prints."""

    id: str
    title: str
    group: str
    status: Status
    summary: str
    expected: str
    actual: str
    hint: str
    fix_step: str
    duration_s: float
    tags: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "group": self.group,
            "status": self.status.value,
            "summary": self.summary,
            "expected": self.expected,
            "actual": self.actual,
            "hint": self.hint,
            "fix_step": self.fix_step,
            "duration_s": round(self.duration_s, 4),
            "tags": list(self.tags),
        }


def exit_code(results: list[CheckResult], strict: bool = False) -> int:
    """0 when nothing failed (warnings allowed unless strict), 1 otherwise."""
    bad = {Status.FAIL, Status.ERROR} | ({Status.WARN} if strict else set())
    return 1 if any(r.status in bad for r in results) else 0
