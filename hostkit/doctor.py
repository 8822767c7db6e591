"""Run the catalogue's checks against a host, concurrently, each within its own time limit."""

from __future__ import annotations

import threading
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


PROBE_THREAD_PREFIX = "hostkit-probe "
_MET = (Status.PASS, Status.WARN)  # a need that ends so lets its dependents run


class _Slot:
    """One check in a run: its result, settled once, by its probe or by the clock."""

    def __init__(self, spec: CheckSpec, workers: threading.Semaphore) -> None:
        self.spec = spec
        self.done = threading.Event()
        self.result: Optional[CheckResult] = None
        self.begun: Optional[float] = None
        self._workers = workers
        self._holds_worker = False
        self._lock = threading.Lock()

    def take_worker(self) -> None:
        self._workers.acquire()
        with self._lock:
            self._holds_worker = True
            self.begun = time.monotonic()

    def settle(self, result: CheckResult) -> None:
        """The first verdict wins; a probe that answers after its time limit is ignored."""
        with self._lock:
            if self.result is not None:
                return
            self.result = result
            if self._holds_worker:  # an abandoned probe no longer counts against the pool
                self._holds_worker = False
                self._workers.release()
        self.done.set()

    def overdue(self, now: float) -> bool:
        return self.begun is not None and not self.done.is_set() and now - self.begun >= self.spec.timeout


def run_checks(
    specs: list[CheckSpec],
    ctx: ProbeContext,
    workers: int = 16,
    on_result: Optional[Callable[[CheckResult], None]] = None,
) -> list[CheckResult]:
    """Evaluate every check; results come back in catalogue order.

    A check whose `needs` did not all PASS or WARN is a SKIP naming those needs, and
    its probe does not run. At most `workers` probes run at once. A check's time limit counts
    from when it starts, not from when it was queued (or waited for its needs).
    A check that overruns is reported as ERROR and abandoned:
    Python cannot kill a thread, so each probe runs in a daemon thread that never holds the
    process up (see `probes_still_running`).
    """
    pool = threading.Semaphore(max(1, workers))
    slots = [_Slot(spec, pool) for spec in specs]
    settled = threading.Event()
    by_id = {slot.spec.id: slot for slot in slots}
    for slot in slots:
        # a need that is not part of this run (--only) does not hold its dependents
        needs = [by_id[n] for n in slot.spec.needs if n in by_id]
        threading.Thread(
            target=_work, args=(slot, needs, ctx, settled), name=PROBE_THREAD_PREFIX + slot.spec.id,
            daemon=True,
        ).start()
    results: list[CheckResult] = []
    while len(results) < len(slots):
        now = time.monotonic()
        for slot in slots:
            if slot.overdue(now):
                slot.settle(_timed_out(slot.spec))
        while len(results) < len(slots) and slots[len(results)].done.is_set():
            result = slots[len(results)].result
            assert result is not None  # noqa: S101 - done is set only after result
            results.append(result)
            if on_result:
                on_result(result)
        settled.wait(0.05)
        settled.clear()
    return results


def _work(slot: _Slot, needs: list[_Slot], ctx: ProbeContext, settled: threading.Event) -> None:
    for need in needs:
        need.done.wait()  # before taking a worker, so the clock has not started
    unmet = [n.spec.id for n in needs if n.result is None or n.result.status not in _MET]
    if unmet:
        # the root cause is reported once, by the needed check; this one steps aside
        slot.settle(_result(slot.spec, Outcome.skip(f"needs {', '.join(unmet)}"), 0.0))
        settled.set()
        return
    slot.take_worker()
    slot.settle(evaluate(slot.spec, ctx))
    settled.set()


def _timed_out(spec: CheckSpec) -> CheckResult:
    return _result(
        spec,
        Outcome(
            Status.ERROR,
            f"no answer within {spec.timeout:g}s (probe {spec.probe})",
            hint="something on the host hangs: see the other checks in this group",
        ),
        spec.timeout,
    )


def probes_still_running() -> bool:
    """Whether a probe given up on is still stuck (in a DNS lookup, on a hung mount, ...)."""
    return any(t.name.startswith(PROBE_THREAD_PREFIX) and t.is_alive() for t in threading.enumerate())
