"""Moving Docker's data root: copy in two passes, verify, switch, and a rollback that always runs.

The critical section (from the first copy to Docker answering on the new root) turns
SIGHUP and SIGTERM (an SSH drop, a `kill`) into an exception, so the rollback runs; the
rollback ignores them and goes on step by step after a failed step. The moved-aside root
is recorded (as "pending") before the rename, and a marker file in the target says the
partial copy is hostkit's own, so a re-run after any interruption resumes and converges.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional

from hostkit.daemon_config import DaemonOptions
from hostkit.errors import HostkitError
from hostkit.facts import Facts
from hostkit.host import CommandResult, LocalHost
from hostkit.subsystems.daemon_json import ConfigTransaction, plan_config
from hostkit.subsystems.data_root_state import (
    MARKER,
    compare_inventory,
    marker_for,
    read_marker,
    root_inventory,
    set_state,
)
from hostkit.subsystems.docker_service import (
    DEFAULT_DOCKER_ROOT,
    DockerService,
    Inventory,
    docker_api_info,
    docker_inventory,
)

log = logging.getLogger("hostkit.bootstrap")

RSYNC_FLAGS = ("-aHAXS", "--numeric-ids", "-x", f"--exclude=/{MARKER}")
# rsync compares mtimes to the second by default: a file rewritten in place (a database
# page: same size) in the same second as the write the live pass copied looks unchanged to
# the delta pass and to the verification. rsync >= 3.1.3 compares nanoseconds with this.
PRECISE_MTIME = "--modify-window=-1"


def mtime_flags(host: LocalHost) -> tuple[list[str], list[str]]:
    """(flags for every pass, extra flags for the delta pass) that see same-second changes."""
    res = host.run(["rsync", "--version"], timeout=30)
    m = re.search(r"version\s+(\d+)\.(\d+)\.(\d+)", res.stdout)
    if m and tuple(int(x) for x in m.groups()) >= (3, 1, 3):
        return [PRECISE_MTIME], []
    return [], ["--checksum"]  # older rsync: read both sides in full, once, while stopped

ProgressFactory = Callable[[str], Callable[[float], None]]


def no_progress(_: str) -> Callable[[float], None]:
    return lambda _pct: None


@dataclass
class MovePlan:
    """What a move needs to know, decided by the step's check (preflight)."""

    old_root: str
    new_root: str
    selinux: str = "disabled"
    old_is_mountpoint: bool = False
    # "copy": rsync then switch; "switch": the target already is the data (bind mount of the
    # old root, or --adopt), only daemon.json changes
    mode: str = "copy"
    adopt: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    rsync_all: list[str] = field(default_factory=list)  # see mtime_flags
    rsync_delta: list[str] = field(default_factory=list)


class Interrupted(HostkitError):
    """A signal (SIGTERM, SIGHUP) arrived during the move."""


def _raise_on_signal(signum: int, _frame: Any) -> None:
    raise Interrupted(f"interrupted by {signal.Signals(signum).name}")


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """SIGHUP and SIGTERM raise Interrupted in here (main thread only).

    A signal already ignored stays ignored: under `nohup` an SSH drop must not abort a
    move the admin asked to survive it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = [s for s in (signal.SIGHUP, signal.SIGTERM) if signal.getsignal(s) != signal.SIG_IGN]
    old = {s: signal.signal(s, _raise_on_signal) for s in sigs}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """The rollback must finish: an SSH drop or a second kill must not cut it short."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)
    old = {s: signal.signal(s, signal.SIG_IGN) for s in sigs}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def timed(timings: dict[str, float], phase: str) -> Iterator[None]:
    start = time.monotonic()
    try:
        yield
    finally:
        timings[phase] = timings.get(phase, 0.0) + time.monotonic() - start


# ---- copying ------------------------------------------------------------------------------

def _rsync(host: LocalHost, src: str, dst: str, *, extra: Sequence[str], label: str,
           progress: ProgressFactory) -> CommandResult:
    update = progress(label)
    argv = ["rsync", *RSYNC_FLAGS, *extra, "--info=progress2", "--no-inc-recursive",
            f"{src.rstrip('/')}/", f"{dst.rstrip('/')}/"]

    def on_line(line: str) -> None:
        m = re.search(r"(\d+)%", line)
        if m:
            update(float(m.group(1)))

    res = host.run_streaming(argv, on_line)
    update(100.0)
    return res


def verify_copy(host: LocalHost, old: str, new: str, extra: Sequence[str] = ()) -> None:
    """A dry-run rsync of the same copy must find nothing left to do."""
    check = host.run(["rsync", *RSYNC_FLAGS, *extra, "--delete", "-n", "-i", f"{old}/",
                      f"{new}/"], timeout=3600)
    diffs = [ln for ln in check.stdout.splitlines() if ln.strip()]
    if check.returncode != 0 or diffs:
        raise HostkitError(f"verification found {len(diffs)} differences after the copy "
                           f"(first: {diffs[0] if diffs else last_line(check.stderr)})")


def rewrite_volume_sources(host: LocalHost, old: str, new: str) -> int:
    """Point containers' recorded volume paths at the new root; returns how many changed.

    dockerd 20.10 keeps each volume mount's absolute Source in containers/*/config.v2.json
    and uses it on start: after a move, a restart=always container fails with "error
    evaluating symlinks from mount source /var/lib/docker/volumes/...", or, when the old
    root is left in place as the seed's recipe does, silently writes to the OLD copy.
    Only the copy is edited; the old root keeps the original files.
    """
    changed = 0
    for cfg in host.glob(f"{new}/containers", "*/config.v2.json"):
        try:
            data = json.loads(host.read_text(cfg))
        except json.JSONDecodeError:
            continue  # not ours to judge; dockerd reports it for that container
        mounts = data.get("MountPoints") if isinstance(data, dict) else None
        if not isinstance(mounts, dict):
            continue
        touched = False
        for mp in mounts.values():
            src = mp.get("Source") if isinstance(mp, dict) else None
            if isinstance(src, str) and inside(src, old) and mp.get("Type", "volume") == "volume":
                mp["Source"] = new + src[len(old):]
                touched = True
                changed += 1
        if touched:
            mode = host.stat(cfg).st_mode & 0o777
            host.write_text(cfg, json.dumps(data, separators=(",", ":")), mode=mode,
                            backup=False)
    return changed


def inside(child: str, parent: str) -> bool:
    return child == parent or child.startswith(parent.rstrip("/") + "/")


def _label_selinux(host: LocalHost, new: str) -> None:
    listing = host.run(["semanage", "fcontext", "-l", "-C"], timeout=120)
    if not re.search(rf"^{re.escape(new)}\s*=\s*{re.escape(DEFAULT_DOCKER_ROOT)}\s*$",
                     listing.stdout, re.M):
        host.run(["semanage", "fcontext", "-a", "-e", DEFAULT_DOCKER_ROOT, new], timeout=300,
                 check=True)
    host.run(["restorecon", "-R", new], timeout=3600, check=True)


# ---- live-restore: containers that outlive dockerd ----------------------------------------

def stop_live_containers(host: LocalHost) -> list[str]:
    """With live-restore, containers keep running (and writing into the old root) while
    dockerd is stopped: stop them first, and say which, so they can be started again."""
    info = docker_api_info(host) or {}
    if not info.get("LiveRestoreEnabled"):
        return []
    res = host.run(["docker", "ps", "-q", "--no-trunc"], timeout=60, check=True)
    ids = [x.strip() for x in res.stdout.splitlines() if x.strip()]
    if ids:
        log.info("live-restore is on: stopping %d running containers first", len(ids))
        host.run(["docker", "stop", *ids], timeout=300, check=True)
    return ids


def start_containers(host: LocalHost, ids: Sequence[str]) -> list[str]:
    """Start the containers stopped for the move again; returns the ones that did not."""
    failed = []
    for cid in ids:
        res = host.run(["docker", "start", cid], timeout=120)
        if not res.ok and "No such container" not in res.stderr:
            failed.append(cid[:12])
    return failed


# ---- the move -----------------------------------------------------------------------------

@dataclass
class _Undo:
    """What has been done so far, for the rollback."""

    stopped: bool = False
    txn: Optional[ConfigTransaction] = None
    moved_aside: Optional[str] = None
    live_stopped: list[str] = field(default_factory=list)


def relocate_data_root(host: LocalHost, facts: Facts, plan: MovePlan, *,
                       options: DaemonOptions, progress: ProgressFactory = no_progress,
                       notes: Optional[list[str]] = None) -> None:
    """Copy (or just switch) Docker's root; on any failure or signal Docker runs on the old one."""
    notes = notes if notes is not None else []
    service = DockerService(host, facts)
    undo = _Undo()
    with signals_raise():
        try:
            if plan.mode == "copy":
                _first_pass(host, plan, progress)
            undo.txn = ConfigTransaction(
                host, facts, plan_config(host, facts, replace(options, data_root=plan.new_root)))
            downtime, restart_before, after = _critical(host, plan, service, undo, progress)
        except BaseException as exc:
            with signals_ignored():
                if not undo.stopped and not undo.live_stopped:
                    # nothing was stopped yet: nothing to undo, the copy can be resumed
                    if isinstance(exc, HostkitError) and not isinstance(exc, Interrupted):
                        raise
                    raise _untouched_error(exc) from exc
                failures = _rollback(host, service, plan, undo)
            raise _rollback_error(exc, plan, service, failures) from exc
    _finish(host, plan, undo, downtime, notes)
    _wait_restarted(host, restart_before & after.containers, notes)


def _critical(host: LocalHost, plan: MovePlan, service: DockerService, undo: _Undo,
              progress: ProgressFactory) -> tuple[float, frozenset[str], Inventory]:
    """From stopping Docker to Docker answering on the new root; `undo` tracks each step."""
    t = plan.timings
    old, new = plan.old_root, plan.new_root
    with timed(t, "inventory before stop"):
        restart_before = docker_inventory(host).running_restart
    t_stop = time.monotonic()
    with timed(t, "stop containers (live-restore)"):
        undo.live_stopped = stop_live_containers(host)
    with timed(t, "stop"):
        undo.stopped = True
        service.stop()
    with timed(t, "inventory from files"):
        baseline = None if plan.adopt else root_inventory(host, old)
    if plan.mode == "copy":
        _delta_and_verify(host, plan, progress)
    if not plan.adopt:
        rewrite_volume_sources(host, old, new)
    if plan.selinux in ("enforcing", "permissive") and plan.mode == "copy":
        _label_selinux(host, new)
    assert undo.txn is not None  # noqa: S101 - set by the caller
    undo.txn.write()
    if plan.mode == "copy" and not plan.old_is_mountpoint:
        aside = f"{old}.hostkit-old-{time.strftime('%Y%m%d-%H%M%S')}"
        # recorded before the rename: an interruption after it still leaves a trace
        set_state(host, aside, {"path": aside, "from": old, "to": new,
                                 "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                 "status": "pending"})
        host.rename(old, aside)
        undo.moved_aside = aside
    with timed(t, "start"):
        service.start()
        info = service.wait_api(90)
    downtime = time.monotonic() - t_stop  # from stop until the API answers again
    if os.path.normpath(str(info.get("DockerRootDir"))) != new:
        raise HostkitError(f"Docker came back on {info.get('DockerRootDir')}, not {new}")
    with timed(t, "inventory after start"):
        after = docker_inventory(host)
    if baseline is not None:
        compare_inventory(baseline, after)
    return downtime, restart_before, after


def _first_pass(host: LocalHost, plan: MovePlan, progress: ProgressFactory) -> None:
    old, new = plan.old_root, plan.new_root
    if not host.path(new).exists():
        mode = host.stat(old).st_mode & 0o7777
        host.makedirs(new, mode=mode)
        host.chmod(new, mode)  # makedirs honours umask; Docker's root is 0710
    if read_marker(host, new) is None:
        host.write_text(f"{new}/{MARKER}", json.dumps(marker_for(host, old)) + "\n",
                        mode=0o600, backup=False)
    with timed(plan.timings, "live pass (Docker running)"):
        plan.rsync_all, plan.rsync_delta = mtime_flags(host)
        first = _rsync(host, old, new, extra=plan.rsync_all, label="copy 1/2 (Docker running)",
                       progress=progress)
    # 24: files vanished while Docker ran; 23: some files changed mid-read. The delta pass
    # with Docker stopped picks up both.
    if first.returncode not in (0, 23, 24):
        raise HostkitError(f"first copy pass failed (rsync exit {first.returncode}): "
                           f"{last_line(first.stderr or first.stdout)}",
                           "nothing was stopped; see the log")


def _delta_and_verify(host: LocalHost, plan: MovePlan, progress: ProgressFactory) -> None:
    old, new = plan.old_root, plan.new_root
    with timed(plan.timings, "delta pass"):
        second = _rsync(host, old, new, extra=[*plan.rsync_all, *plan.rsync_delta, "--delete"],
                        label="copy 2/2 (Docker stopped)",
                        progress=progress)
    if second.returncode != 0:
        raise HostkitError(f"final copy pass failed (rsync exit {second.returncode}): "
                           f"{last_line(second.stderr or second.stdout)}")
    with timed(plan.timings, "verify pass"):
        verify_copy(host, old, new, plan.rsync_all)


def _finish(host: LocalHost, plan: MovePlan, undo: _Undo, downtime: float,
            notes: list[str]) -> None:
    log.info("docker API back after %.1fs of downtime", downtime)
    plan.timings["downtime"] = downtime
    notes.append(f"Docker was down {downtime:.1f}s for the data-root change")
    if undo.live_stopped:
        failed = start_containers(host, undo.live_stopped)
        notes.append(f"{len(undo.live_stopped)} containers were stopped for the move (live-"
                     "restore would have kept them writing into the old root) and started again"
                     + (f"; not started: {', '.join(failed)}" if failed else ""))
    host.unlink(f"{plan.new_root}/{MARKER}")
    if undo.moved_aside:
        set_state(host, undo.moved_aside, {
            "path": undo.moved_aside, "from": plan.old_root, "to": plan.new_root,
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        notes.append(f"the old root is kept as {undo.moved_aside}; `hostkit cleanup` removes it")
    elif plan.adopt:
        notes.append(f"{plan.old_root} was left in place, untouched, and is not recorded for "
                     "`hostkit cleanup`: it is still your data")
    elif plan.mode == "copy":
        notes.append(f"{plan.old_root} is a mount point and was left in place with its data "
                     "(not recorded for `hostkit cleanup`)")


def _wait_restarted(host: LocalHost, expected: frozenset[str], notes: list[str]) -> None:
    """restart=always containers come back by themselves; say so if one does not."""
    deadline = time.monotonic() + 30
    while True:
        missing = expected - docker_inventory(host).running_restart
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(1)
    if missing:
        notes.append(f"{len(missing)} restart=always containers are not running again yet: "
                     + ", ".join(sorted(m[:12] for m in missing)))


def _rollback(host: LocalHost, service: DockerService, plan: MovePlan,
              undo: _Undo) -> list[str]:
    """Every step tried, each one logged; returns the failed ones."""
    old = plan.old_root
    failures: list[str] = []

    def attempt(label: str, action: Callable[[], object]) -> bool:
        try:
            action()
        except Exception as exc:  # best effort: log it and go on
            msg = exc.message if isinstance(exc, HostkitError) else str(exc)
            log.warning("rollback: %s failed: %s", label, msg)
            failures.append(f"{label}: {msg}")
            return False
        log.warning("rollback: %s: done", label)
        return True

    log.warning("rolling back the data-root change")
    attempt("stop Docker", service.stop)
    if undo.txn is not None:
        attempt("restore daemon.json", undo.txn.undo)
    back = True
    if undo.moved_aside:
        aside = undo.moved_aside

        def move_back() -> None:
            if host.exists(old):
                # something created the old path meanwhile: keep both, put ours back first
                host.rename(old, f"{old}.hostkit-empty-{int(time.time())}")
            host.rename(aside, old)
            set_state(host, aside, None)

        back = attempt(f"move {aside} back to {old}", move_back)
    if back:
        attempt("start Docker", service.start)
        attempt("wait for the Docker API", lambda: service.wait_api(90))
        if undo.live_stopped:
            attempt("start the stopped containers",
                    lambda: start_containers(host, undo.live_stopped))
    return failures


def recovery_line(plan: MovePlan, service: DockerService, undo_aside: Optional[str]) -> str:
    start = "systemctl start docker" if service.init == "systemd" else "service docker start"
    if undo_aside:
        return f"to recover: mv {undo_aside} {plan.old_root} && {start}"
    return f"to recover: {start}"


def _why(exc: BaseException) -> str:
    if isinstance(exc, HostkitError):
        return exc.message
    return "interrupted (Ctrl-C)" if isinstance(exc, KeyboardInterrupt) else repr(exc)


def _untouched_error(exc: BaseException) -> BaseException:
    return HostkitError(f"{_why(exc)} before Docker was stopped; nothing else changed",
                        "run bootstrap again: it resumes the copy")


def _rollback_error(exc: BaseException, plan: MovePlan, service: DockerService,
                    failures: list[str]) -> BaseException:
    why = _why(exc)
    kept = (f" (the partial copy in {plan.new_root} is kept; running bootstrap again resumes it)"
            if plan.mode == "copy" else "")
    running = docker_api_info(service.host) is not None
    if not failures and running:
        return HostkitError(f"{why}; rolled back: Docker runs on {plan.old_root} again{kept}",
                            (exc.hint if isinstance(exc, HostkitError) else "")
                            or f"see {service.journal_hint()}")
    aside = next((f.split()[1] for f in failures if f.startswith("move ")), None)
    state = "Docker runs" if running else "Docker is STOPPED"
    return HostkitError(f"{why}; rollback incomplete ({'; '.join(failures) or 'see the log'}); "
                        f"{state}", recovery_line(plan, service, aside))


def last_line(text: str) -> str:
    """The line that says why: rsync's own error lines win over its progress output."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("rsync") or "error" in ln.lower()]
    pick = errors or lines
    return pick[-1][:300] if pick else "no output"
