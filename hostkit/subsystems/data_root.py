"""Docker's data root: refuse unsafe targets, copy in two passes, verify, move the old one aside."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import PurePosixPath
from typing import Callable, Optional

from hostkit.daemon_config import (
    DaemonOptions,
)
from hostkit.errors import HostkitError, UsageError
from hostkit.facts import Facts
from hostkit.host import CommandResult, LocalHost
from hostkit.steps import Change, StepNotReady
from hostkit.subsystems.daemon_json import ConfigTransaction, plan_config
from hostkit.subsystems.docker_service import (
    DEFAULT_DOCKER_ROOT,
    DockerService,
    Inventory,
    docker_api_info,
    docker_inventory,
)

log = logging.getLogger("hostkit.bootstrap")

STATE_FILE = "/var/lib/hostkit/old-data-roots.json"
RSYNC_FLAGS = ("-aHAXS", "--numeric-ids", "-x")
# Runtime mounts dockerd itself makes under its root while containers run; they are
# recreated on start and must not stop a relocation.
_RUNTIME_MOUNT = re.compile(
    r"/(overlay2|aufs|fuse-overlayfs)/[^/]+/merged$|/containers/[^/]+/mounts/|/netns/|"
    r"/plugins/[^/]+/propagated-mount$|/overlay2$|/btrfs$|/zfs/graph/")


@dataclass(frozen=True)
class Preflight:
    """What the relocation found before touching anything."""

    old_root: str
    new_root: str
    used_bytes: int
    avail_bytes: int
    target_has_data: bool
    old_is_mountpoint: bool
    selinux: str


def _mounts(host: LocalHost) -> list[tuple[str, str]]:
    res = host.run(["findmnt", "-rn", "-o", "TARGET,FSTYPE"], timeout=30, check=True)
    out = []
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            # findmnt -r escapes spaces as \x20
            out.append((parts[0].replace("\\x20", " "), parts[1]))
    return out


def _fs_of(host: LocalHost, path: str) -> tuple[str, str]:
    """(fstype, mount target) of the filesystem holding path."""
    res = host.run(["findmnt", "-n", "-o", "FSTYPE,TARGET", "-T", path], timeout=30, check=True)
    parts = res.stdout.split(None, 1)
    return (parts[0], parts[1].strip()) if len(parts) == 2 else ("unknown", "/")


def _bytes(host: LocalHost, argv: list[str]) -> int:
    res = host.run(argv, timeout=1800, check=True)
    nums = re.findall(r"^\s*(\d+)", res.stdout, re.M)
    return int(nums[-1]) if nums else 0


_DOCKER_ROOT_ENTRIES = {"overlay2", "image", "containers", "volumes", "network", "buildkit",
                        "plugins", "swarm", "tmp", "runtimes", "trust", "aufs", "btrfs",
                        "vfs", "zfs", "fuse-overlayfs", "containerd"}


def _inside(child: str, parent: str) -> bool:
    return child == parent or child.startswith(parent.rstrip("/") + "/")


def relocation_preflight(host: LocalHost, facts: Facts, target: str,
                         old_root: str) -> Preflight:
    """Every reason to refuse a relocation, found before anything stops. UsageError each."""
    p = PurePosixPath(target)
    if not p.is_absolute():
        raise UsageError(f"--data-root {target}: not an absolute path",
                         f"give the full path, e.g. /srv/{p}")
    new_root = os.path.normpath(target)
    parent = str(PurePosixPath(new_root).parent)
    if not host.path(parent).is_dir():
        raise UsageError(f"--data-root {target}: parent directory {parent} does not exist",
                         f"create it (e.g. mount the new disk on {parent}) first")
    if _inside(new_root, old_root):
        raise UsageError(f"--data-root {target}: is inside the current Docker root {old_root}",
                         "choose a directory outside it, e.g. on another disk")
    if _inside(old_root, new_root):
        raise UsageError(f"--data-root {target}: contains the current Docker root {old_root}",
                         "choose a dedicated directory, e.g. /srv/docker")
    entries = host.listdir(new_root) if host.path(new_root).is_dir() else []
    if host.path(new_root).exists() and not host.path(new_root).is_dir():
        raise UsageError(f"--data-root {target}: exists and is not a directory",
                         "choose another path")
    foreign = [e for e in entries if e not in _DOCKER_ROOT_ENTRIES and e != "lost+found"]
    if foreign:
        raise UsageError(
            f"--data-root {target}: not empty and not a Docker root "
            f"(holds {', '.join(foreign[:3])}{'...' if len(foreign) > 3 else ''})",
            "choose an empty directory; hostkit never mixes Docker's data with other files")
    fstype, mnt = _fs_of(host, parent)
    if fstype in ("overlay", "aufs", "fuse.fuse-overlayfs"):
        raise UsageError(f"--data-root {target}: on an {fstype} filesystem, where overlay2 "
                         "cannot run", "use a directory on a real disk (ext4, xfs with ftype=1)")
    if fstype == "xfs":
        res = host.run(["xfs_info", mnt], timeout=30)
        if re.search(r"ftype=0", res.stdout):
            raise UsageError(f"--data-root {target}: xfs on {mnt} has ftype=0 (no d_type); "
                             "overlay2 refuses it", "use a filesystem made with "
                             "`mkfs.xfs -n ftype=1`, or ext4")
    mounts = _mounts(host)
    subs = [m for m, _ in mounts if _inside(m, old_root) and m != old_root
            and not _RUNTIME_MOUNT.search(m[len(old_root):])]
    if subs:
        raise UsageError(f"{subs[0]} is a separate mount under {old_root}; a copy with -x "
                         "would silently skip it",
                         "move that mount's data yourself, or unmount it, then retry")
    used = _bytes(host, ["du", "-sx", "-B1", old_root])
    already = _bytes(host, ["du", "-sx", "-B1", new_root]) if entries else 0
    avail = _bytes(host, ["df", "-B1", "--output=avail", parent])
    need = int(max(0, used - already) * 1.1)
    if avail < need:
        raise UsageError(f"--data-root {target}: {_gb(avail)} free on {mnt}, need {_gb(need)} "
                         f"({_gb(used)} used by {old_root} + 10%)",
                         "free space there or pick a larger filesystem")
    selinux = facts.selinux()
    if selinux in ("enforcing", "permissive") and not host.which("semanage"):
        raise UsageError(f"SELinux is {selinux} but semanage is missing: the new root could "
                         "not get Docker's labels",
                         "install policycoreutils-python-utils (dnf install -y "
                         "policycoreutils-python-utils)")
    old_is_mount = any(m == old_root for m, _ in mounts)
    return Preflight(old_root, new_root, used, avail, bool(entries), old_is_mount, selinux)


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.0f} MB"


def configured_root(host: LocalHost) -> str:
    """Docker's root as the API reports it (it wins over daemon.json, which may be stale)."""
    info = docker_api_info(host)
    if info is None:
        raise StepNotReady("data-root is checked once Docker is installed and running",
                           disruptive=True)
    return str(info.get("DockerRootDir") or DEFAULT_DOCKER_ROOT)


ProgressFactory = Callable[[str], Callable[[float], None]]


def no_progress(_: str) -> Callable[[float], None]:
    return lambda _pct: None


class RelocateStep:
    """Move Docker's data root to --data-root with two rsync passes and a verified restart."""

    name = "data-root"
    title = "Docker data root"

    def __init__(self, target: Optional[str], options: DaemonOptions,
                 progress: ProgressFactory = no_progress) -> None:
        self.target = target
        self.options = options
        self.progress = progress
        self.preflight: Optional[Preflight] = None
        self.notes: list[str] = []

    def check(self, host: LocalHost, facts: Facts) -> list[Change]:
        if not self.target:
            self.title = "Docker data root: unchanged (no --data-root)"
            return []
        # Input errors are reported before Docker is even looked at.
        if not PurePosixPath(self.target).is_absolute():
            raise UsageError(f"--data-root {self.target}: not an absolute path",
                             f"give the full path, e.g. /srv/{self.target}")
        old = configured_root(host)
        target = os.path.normpath(self.target)
        self.title = f"Docker data root at {target}"
        if old == target:
            return []
        pre = relocation_preflight(host, facts, target, old)
        self.preflight = pre
        downtime = 15.0 + pre.used_bytes / 400e6 * 0.1  # stop/start + a small delta pass
        diff = (f"- data-root: {old}\n+ data-root: {target}\n"
                f"  first copy while Docker runs; Docker stopped only for the final delta pass;\n"
                f"  {old} is kept as {old}.hostkit-old-<time> until `hostkit cleanup`")
        if _uses_containerd_store(host):
            diff += ("\n  note: this Docker keeps images in containerd's store "
                     "(/var/lib/containerd), which data-root does not move (moby#50517)")
        return [Change(f"move Docker's data from {old} to {target} ({_gb(pre.used_bytes)})",
                       diff, disruptive=True, downtime_s=downtime)]

    def apply(self, host: LocalHost, facts: Facts, changes: Sequence[Change]) -> None:
        pre = self.preflight
        assert pre is not None  # noqa: S101 - check() always runs first and sets it
        relocate_data_root(host, facts, pre, options=self.options, progress=self.progress,
                           notes=self.notes)


def _uses_containerd_store(host: LocalHost) -> bool:
    info = docker_api_info(host) or {}
    status = info.get("DriverStatus") or []
    return any(isinstance(pair, list) and "io.containerd.snapshotter" in " ".join(map(str, pair))
               for pair in status)


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


def _record_old_root(host: LocalHost, entry: dict[str, str]) -> None:
    data: list[dict[str, str]] = []
    if host.exists(STATE_FILE):
        try:
            loaded = json.loads(host.read_text(STATE_FILE))
            data = loaded if isinstance(loaded, list) else []
        except json.JSONDecodeError:
            data = []
    data.append(entry)
    host.makedirs(str(PurePosixPath(STATE_FILE).parent))
    host.write_text(STATE_FILE, json.dumps(data, indent=2) + "\n", mode=0o600)


def relocate_data_root(host: LocalHost, facts: Facts, pre: Preflight, *,
                       options: DaemonOptions, progress: ProgressFactory = no_progress,
                       notes: Optional[list[str]] = None) -> None:
    """The relocation itself; on any failure Docker runs on the old root again."""
    notes = notes if notes is not None else []
    service = DockerService(host, facts)
    old, new = pre.old_root, pre.new_root
    if not host.path(new).exists():
        mode = host.stat(old).st_mode & 0o7777
        host.makedirs(new, mode=mode)
        host.chmod(new, mode)  # makedirs honours umask; Docker's root is 0710
    before = docker_inventory(host)
    log.info("inventory before: %d images, %d containers, %d volumes", len(before.images),
             len(before.containers), len(before.volumes))

    first = _rsync(host, old, new, extra=[], label="copy 1/2 (Docker running)",
                   progress=progress)
    # 24: files vanished while Docker ran; 23: some files changed mid-read. The delta pass
    # with Docker stopped picks up both.
    if first.returncode not in (0, 23, 24):
        raise HostkitError(f"first copy pass failed (rsync exit {first.returncode}): "
                           f"{_last(first.stderr or first.stdout)}",
                           "nothing was stopped; see the log")

    cfg = plan_config(host, facts, replace(options, data_root=new))
    txn = ConfigTransaction(host, facts, cfg)
    moved_aside: Optional[str] = None
    t_stop = time.monotonic()
    service.stop()
    log.info("docker stopped")
    try:
        second = _rsync(host, old, new, extra=["--delete"],
                        label="copy 2/2 (Docker stopped)", progress=progress)
        if second.returncode != 0:
            raise HostkitError(f"final copy pass failed (rsync exit {second.returncode}): "
                               f"{_last(second.stderr or second.stdout)}")
        _verify_copy(host, old, new)
        rewritten = rewrite_volume_sources(host, old, new)
        if rewritten:
            log.info("pointed %d container volume mounts at the new root", rewritten)
        if pre.selinux in ("enforcing", "permissive"):
            _label_selinux(host, new)
        txn.write()
        if not pre.old_is_mountpoint:
            moved_aside = f"{old}.hostkit-old-{time.strftime('%Y%m%d-%H%M%S')}"
            # Moved, not copied or deleted: Docker provably no longer uses it, and it stays
            # whole until `hostkit cleanup`.
            host.rename(old, moved_aside)
        service.start()
        info = service.wait_api(90)
        if os.path.normpath(str(info.get("DockerRootDir"))) != new:
            raise HostkitError(f"Docker came back on {info.get('DockerRootDir')}, not {new}")
        _compare_inventory(before, docker_inventory(host))
    except BaseException as exc:
        _rollback(host, service, txn, old=old, moved_aside=moved_aside)
        if isinstance(exc, HostkitError):
            raise HostkitError(f"{exc.message}; rolled back: Docker runs on {old} again "
                               f"(the partial copy in {new} was left for inspection)",
                               exc.hint or f"see {service.journal_hint()}") from exc
        raise
    _report_moved(host, pre, moved_aside, time.monotonic() - t_stop, notes)
    _wait_restarted(host, before, notes)


def _report_moved(host: LocalHost, pre: Preflight, moved_aside: Optional[str], downtime: float,
                  notes: list[str]) -> None:
    log.info("docker API back after %.1fs of downtime", downtime)
    notes.append(f"Docker was down {downtime:.1f}s for the data-root move")
    if moved_aside:
        _record_old_root(host, {"path": moved_aside, "from": pre.old_root, "to": pre.new_root,
                                "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        notes.append(f"the old root is kept as {moved_aside}; `hostkit cleanup` removes it")
    else:
        notes.append(f"{pre.old_root} is a mount point and was left in place; remove its "
                     "contents yourself once you are happy")


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
            if isinstance(src, str) and _inside(src, old) and mp.get("Type", "volume") == "volume":
                mp["Source"] = new + src[len(old):]
                touched = True
                changed += 1
        if touched:
            mode = host.stat(cfg).st_mode & 0o777
            host.write_text(cfg, json.dumps(data, separators=(",", ":")), mode=mode,
                            backup=False)
    return changed


def _verify_copy(host: LocalHost, old: str, new: str) -> None:
    """A dry-run rsync of the same copy must find nothing left to do."""
    check = host.run(["rsync", *RSYNC_FLAGS, "--delete", "-n", "-i", f"{old}/", f"{new}/"],
                     timeout=3600)
    diffs = [ln for ln in check.stdout.splitlines() if ln.strip()]
    if check.returncode != 0 or diffs:
        raise HostkitError(f"verification found {len(diffs)} differences after the copy "
                           f"(first: {diffs[0] if diffs else _last(check.stderr)})")


def _compare_inventory(before: Inventory, after: Inventory) -> None:
    lost = {"images": before.images - after.images,
            "containers": before.containers - after.containers,
            "volumes": before.volumes - after.volumes}
    if any(lost.values()):
        raise HostkitError("Docker on the new root is missing " + ", ".join(
            f"{len(v)} {k} ({', '.join(sorted(x[:12] for x in v)[:3])})"
            for k, v in lost.items() if v))


def _wait_restarted(host: LocalHost, before: Inventory, notes: list[str]) -> None:
    """restart=always containers come back by themselves; say so if one does not."""
    deadline = time.monotonic() + 30
    while True:
        now = docker_inventory(host)
        missing = before.running_restart - now.running_restart
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(1)
    if missing:
        notes.append(f"{len(missing)} restart=always containers are not running again yet: "
                     + ", ".join(sorted(m[:12] for m in missing)))


def _label_selinux(host: LocalHost, new: str) -> None:
    listing = host.run(["semanage", "fcontext", "-l", "-C"], timeout=120)
    if not re.search(rf"^{re.escape(new)}\s*=\s*{re.escape(DEFAULT_DOCKER_ROOT)}\s*$",
                     listing.stdout, re.M):
        host.run(["semanage", "fcontext", "-a", "-e", DEFAULT_DOCKER_ROOT, new], timeout=300,
                 check=True)
    host.run(["restorecon", "-R", new], timeout=3600, check=True)


def _rollback(host: LocalHost, service: DockerService, txn: ConfigTransaction, *,
              old: str, moved_aside: Optional[str]) -> None:
    log.warning("rolling back the data-root move")
    try:
        service.stop()
    except HostkitError as exc:
        log.warning("stop during rollback: %s", exc.message)
    txn.undo()
    if moved_aside and host.exists(moved_aside) and not host.exists(old):
        host.rename(moved_aside, old)
    elif moved_aside and host.exists(moved_aside):
        # something created the old path meanwhile: keep both, put ours back first
        host.rename(old, f"{old}.hostkit-empty-{int(time.time())}")
        host.rename(moved_aside, old)
    service.start()
    service.wait_api(90)
    log.warning("rolled back: Docker runs on %s", old)


def _last(text: str) -> str:
    """The line that says why: rsync's own error lines win over its progress output."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("rsync") or "error" in ln.lower()]
    pick = errors or lines
    return pick[-1][:300] if pick else "no output"


