"""Run the catalogue's checks against a host, concurrently, each within its own time limit."""

from __future__ import annotations

import concurrent.futures as cf
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from hostkit.errors import CheckNotApplicable, HostkitError
from hostkit.facts import Facts
from hostkit.host import LocalHost
from hostkit.results import CheckResult, CheckSpec, Outcome, Status
from hostkit.settings import Settings


@dataclass
class ProbeContext:
    """What a probe may look at: the host, its cached facts, and the site's settings."""

    host: LocalHost
    facts: Facts
    settings: Settings


def resolve_params(params: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """A string parameter "$name" takes the setting of that name (e.g. port = "$public_port")."""
    out = {}
    for key, value in params.items():
        if isinstance(value, str) and value.startswith("$"):
            name = value[1:]
            if not hasattr(settings, name):
                raise HostkitError(f"parameter {key} refers to unknown setting {name!r}")
            out[key] = getattr(settings, name)
        else:
            out[key] = value
    return out


def evaluate(spec: CheckSpec, ctx: ProbeContext) -> CheckResult:
    """Run one check; a probe that raises becomes an ERROR result, never a crash."""
    from hostkit.probes import PROBES

    start = time.monotonic()
    try:
        outcome = PROBES[spec.probe](ctx, **resolve_params(spec.params, ctx.settings))
    except HostkitError as exc:
        status = Status.SKIP if isinstance(exc, CheckNotApplicable) else Status.ERROR
        outcome = Outcome(status, exc.message, hint=exc.hint)
    except Exception as exc:
        outcome = Outcome(Status.ERROR, f"probe {spec.probe} crashed: {type(exc).__name__}: {exc}")
    return _result(spec, outcome, time.monotonic() - start)


def _result(spec: CheckSpec, outcome: Outcome, duration: float) -> CheckResult:
    status = outcome.status
    if status is Status.FAIL and spec.severity == "warn":
        status = Status.WARN
    needs_fix = status in (Status.FAIL, Status.WARN, Status.ERROR)
    hint = outcome.hint or (spec.hint if needs_fix else "")
    return CheckResult(
        id=spec.id,
        title=spec.title,
        group=spec.group,
        status=status,
        summary=outcome.summary,
        expected=outcome.expected,
        actual=outcome.actual,
        hint=hint,
        fix_step=spec.fix_step if status in (Status.FAIL, Status.WARN) else "",
        duration_s=duration,
        tags=spec.tags,
    )


def run_checks(
    specs: list[CheckSpec],
    ctx: ProbeContext,
    workers: int = 16,
    on_result: Optional[Callable[[CheckResult], None]] = None,
) -> list[CheckResult]:
    """Evaluate every check; results come back in catalogue order.

    A check's time limit counts from when it starts, not from when it was queued. A check
    that overruns is reported as ERROR and abandoned; its thread finishes on its own
    (Python cannot kill a thread), which is why every command a probe runs has a timeout too.
    """
    begun_at: dict[str, float] = {}

    def timed(spec: CheckSpec) -> CheckResult:
        begun_at[spec.id] = time.monotonic()
        return evaluate(spec, ctx)

    pool = cf.ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="probe")
    futures = {spec.id: pool.submit(timed, spec) for spec in specs}
    results: list[CheckResult] = []
    try:
        for spec in specs:
            result = _wait(spec, futures[spec.id], begun_at)
            results.append(result)
            if on_result:
                on_result(result)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return results


def _wait(spec: CheckSpec, future: cf.Future[CheckResult], begun_at: dict[str, float]) -> CheckResult:
    while True:
        begun = begun_at.get(spec.id)
        # still queued behind other checks: its clock has not started, so just poll
        wait = 0.05 if begun is None else max(0.0, spec.timeout - (time.monotonic() - begun))
        try:
            return future.result(timeout=wait)
        except cf.TimeoutError:
            if begun is not None:
                return _result(
                    spec,
                    Outcome(
                        Status.ERROR,
                        f"no answer within {spec.timeout:g}s (probe {spec.probe})",
                        hint="something on the host hangs: see the other checks in this group",
                    ),
                    spec.timeout,
                )
