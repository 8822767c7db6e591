"""Docker's data root: the step, and every reason to refuse a target before anything stops.

Only an empty directory (lost+found allowed) or a partial copy hostkit itself started
(its marker file names this very source root) is written into. A directory holding another
Docker root is refused unless `--adopt` says to use it as it is. Paths are compared as the
kernel sees them: symlinks resolved, two names for one directory (a bind mount) found by
device and inode. The copy itself lives in data_root_move.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Optional

from hostkit.daemon_config import DaemonOptions
from hostkit.errors import HostkitError, UsageError
from hostkit.facts import Facts
from hostkit.host import LocalHost
from hostkit.steps import Change, StepNotReady
from hostkit.subsystems.data_root_move import (
    MovePlan,
    ProgressFactory,
    inside,
    no_progress,
    relocate_data_root,
    rewrite_volume_sources,
)
from hostkit.subsystems.data_root_state import STATE_FILE, marker_matches, read_marker, root_inventory
from hostkit.subsystems.docker_service import DEFAULT_DOCKER_ROOT, docker_api_info

__all__ = ["STATE_FILE", "ProgressFactory", "RelocateStep", "deletion_blocker", "no_progress",
           "rewrite_volume_sources"]

# Names only a Docker root has at its top level ("volumes" alone could be anyone's backup).
_DOCKER_ROOT_MARKS = {"overlay2", "image", "containers", "aufs", "btrfs", "zfs", "vfs",
                      "fuse-overlayfs", "swarm", "buildkit", "network", "runtimes", "trust"}
# Mounts dockerd makes under its root while containers run. They hold no data of their own
# (overlay `merged` views of layers on the root's disk, shm, namespaces) and go away on stop.
_RUNTIME_FSTYPES = {"overlay", "fuse.fuse-overlayfs", "nsfs", "proc"}
# The tools a move runs, and the package that brings each (same name on both families).
_TOOLS = {"rsync": "rsync", "findmnt": "", "du": "", "df": ""}
_SELINUX_TOOLS = {"semanage": "policycoreutils-python-utils", "restorecon": "policycoreutils"}


@dataclass(frozen=True)
class Preflight:
    """What the relocation found before touching anything."""

    old_root: str
    new_root: str
    used_bytes: int
    avail_bytes: int
    resume: bool
    old_is_mountpoint: bool


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


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.0f} MB"


def _lineage(host: LocalHost, path: str) -> set[tuple[int, int]]:
    """(dev, ino) of path (or its deepest existing ancestor) and of every ancestor."""
    ids = set()
    p = PurePosixPath(path)
    for candidate in [p, *p.parents]:
        ident = host.identity(str(candidate))
        if ident:
            ids.add(ident)
    return ids


def _within(host: LocalHost, child: str, parent: str) -> bool:
    """child is parent or below it, by name or by device and inode (bind mounts, links)."""
    ident = host.identity(parent)
    return inside(child, parent) or (ident is not None and ident in _lineage(host, child))


def foreign_submounts(host: LocalHost, old: str, mounts: list[tuple[str, str]]) -> list[str]:
    """Mounts under the old root whose data `rsync -x` would silently skip.

    Decided by device, not by name: a mount on the root's own device (a bind mount from the
    same disk) is copied like any directory; one on another device is refused unless it is
    one dockerd makes while containers run.
    """
    root_dev = (host.identity(old) or (-1, -1))[0]
    found = []
    for target, fstype in mounts:
        if target == old or not inside(target, old):
            continue
        if fstype in _RUNTIME_FSTYPES or (fstype == "tmpfs" and inside(target, f"{old}/containers")):
            continue
        ident = host.identity(target)
        if ident is not None and ident[0] == root_dev:
            continue
        found.append(f"{target} ({fstype})")
    return found


def deletion_blocker(host: LocalHost, path: str, current_root: str) -> Optional[str]:
    """Why `rm -rf path` must not run: it is, contains, or has mounted inside Docker's root."""
    ident = host.identity(path)
    if ident is None:
        return None
    if current_root and ident in _lineage(host, current_root):
        return f"{path} is (or contains) Docker's current root {current_root}"
    real = host.realpath(path)
    if current_root and inside(host.realpath(current_root), real):
        return f"{path} contains Docker's current root {current_root}"
    mounted = [m for m, _ in _mounts(host) if inside(m, path) or inside(m, real)]
    if mounted:
        return f"{mounted[0]} is a mount point inside {path}"
    return None


def _refuse_target_contents(host: LocalHost, target: str, new: str, old: str) -> bool:
    """Refuse a target that holds data; True when it is our own partial copy to resume."""
    if host.path(new).exists() and not host.path(new).is_dir():
        raise UsageError(f"--data-root {target}: exists and is not a directory",
                         "choose another path")
    entries = [e for e in host.listdir(new) if e != "lost+found"]
    if not entries:
        return False
    marker = read_marker(host, new)
    if marker is not None:
        if marker_matches(host, marker, old):
            return True
        raise UsageError(f"--data-root {target}: holds an unfinished copy of another root "
                         f"({marker.get('source', 'unknown')})",
                         f"if that copy is no longer wanted, delete {new} yourself; "
                         "or choose an empty directory")
    if _DOCKER_ROOT_MARKS & set(entries):
        raise UsageError(f"--data-root {target}: holds another Docker root "
                         f"({', '.join(sorted(_DOCKER_ROOT_MARKS & set(entries)))})",
                         "to run Docker on it as it is, add --adopt; otherwise choose an "
                         "empty directory (hostkit never overwrites data)")
    raise UsageError(f"--data-root {target}: not empty (holds {', '.join(entries[:3])}"
                     f"{'...' if len(entries) > 3 else ''})",
                     "choose an empty directory; hostkit never writes into one that holds data")


def _check_filesystem(host: LocalHost, target: str, parent: str) -> str:
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
    return mnt


def relocation_preflight(host: LocalHost, target: str, new: str, old: str) -> Preflight:
    """Every reason to refuse a copy, found before anything stops. UsageError each."""
    parent = str(PurePosixPath(new).parent)
    if not host.path(parent).is_dir():
        raise UsageError(f"--data-root {target}: parent directory {parent} does not exist",
                         f"create it (e.g. mount the new disk on {parent}) first")
    if _within(host, new, old):
        raise UsageError(f"--data-root {target}: is inside the current Docker root {old}",
                         "choose a directory outside it, e.g. on another disk")
    if host.exists(new) and _within(host, old, new):
        raise UsageError(f"--data-root {target}: contains the current Docker root {old}",
                         "choose a dedicated directory, e.g. /srv/docker")
    resume = _refuse_target_contents(host, target, new, old)
    mnt = _check_filesystem(host, target, parent)
    mounts = _mounts(host)
    subs = foreign_submounts(host, old, mounts)
    if subs:
        raise UsageError(f"{subs[0]} is a separate filesystem under {old}; a copy with -x "
                         "would silently skip its data",
                         "move that mount's data yourself, or unmount it, then retry")
    used = _bytes(host, ["du", "-sx", "-B1", old])
    already = _bytes(host, ["du", "-sx", "-B1", new]) if resume else 0
    avail = _bytes(host, ["df", "-B1", "--output=avail", parent])
    need = int(max(0, used - already) * 1.1)
    if avail < need:
        raise UsageError(f"--data-root {target}: {_gb(avail)} free on {mnt}, need {_gb(need)} "
                         f"({_gb(used)} used by {old} + 10%)",
                         "free space there or pick a larger filesystem")
    old_is_mount = any(m == old for m, _ in mounts)
    return Preflight(old, new, used, avail, resume, old_is_mount)


def _adopt_summary(host: LocalHost, target: str, new: str) -> str:
    if not host.path(new).is_dir():
        raise UsageError(f"--adopt {target}: no such directory", "drop --adopt to copy there")
    if read_marker(host, new) is not None:
        raise UsageError(f"--adopt {target}: is an unfinished copy, not a Docker root",
                         "drop --adopt: bootstrap then finishes the copy")
    if not _DOCKER_ROOT_MARKS & set(host.listdir(new)):
        raise UsageError(f"--adopt {target}: holds no Docker root",
                         "drop --adopt to move the current root there")
    _check_filesystem(host, target, str(PurePosixPath(new).parent))
    inv = root_inventory(host, new)
    size = _bytes(host, ["du", "-sx", "-B1", new])
    return (f"{len(inv.images)} images, {len(inv.containers)} containers, "
            f"{len(inv.volumes)} volumes, {_gb(size)}")


def configured_root(host: LocalHost) -> str:
    """Docker's root as the API reports it (it wins over daemon.json, which may be stale)."""
    info = docker_api_info(host)
    if info is None:
        raise StepNotReady("data-root is checked once Docker is installed and running",
                           disruptive=True)
    return str(info.get("DockerRootDir") or DEFAULT_DOCKER_ROOT)


def _install_commands(facts: Facts, packages: list[str]) -> Optional[list[list[str]]]:
    d = facts.distro()
    if d.family == "debian":
        return [["apt-get", "update"],
                ["apt-get", "install", "-y", "--no-install-recommends", *packages]]
    if d.family == "rhel" and d.package_manager in ("dnf", "yum"):
        return [[d.package_manager, "install", "-y", *packages]]
    return None


def _tools_plan(host: LocalHost, facts: Facts) -> tuple[list[str], list[list[str]]]:
    """Packages and commands installing the tools a move needs; UsageError for the rest."""
    tools = dict(_TOOLS)
    if facts.selinux() in ("enforcing", "permissive"):
        tools.update(_SELINUX_TOOLS)
    missing = [t for t in tools if not host.which(t)]
    packages = sorted({tools[t] for t in missing if tools[t]})
    cmds = _install_commands(facts, packages) if packages else []
    unfixable = [t for t in missing if not tools[t] or cmds is None]
    if unfixable:
        raise UsageError(f"moving the data root needs {', '.join(unfixable)}, which is missing",
                         "install it (findmnt: util-linux; du, df: coreutils; rsync; "
                         "semanage: policycoreutils-python-utils), then retry")
    return packages, cmds or []


class RelocateStep:
    """Move Docker's data root to --data-root with two rsync passes and a verified restart."""

    name = "data-root"
    title = "Docker data root"

    def __init__(self, target: Optional[str], options: DaemonOptions,
                 progress: ProgressFactory = no_progress, *, adopt: bool = False) -> None:
        self.target = target
        self.options = options
        self.progress = progress
        self.adopt = adopt
        self.move: Optional[MovePlan] = None
        self.install: list[list[str]] = []
        self.notes: list[str] = []
        self.timings: dict[str, float] = {}

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
        # dockerd reports its root with symlinks resolved; so is the target compared
        new = host.realpath(target)
        self.title = f"Docker data root at {target}"
        if new == old:
            return []
        packages, self.install = _tools_plan(host, facts)
        changes = [Change(f"install {', '.join(packages)} (the data-root move needs it)",
                          "\n".join("$ " + shlex.join(c) for c in self.install))
                   ] if packages else []
        same = host.identity(new)
        if same is not None and same == host.identity(old):
            self.move = MovePlan(old, new, mode="switch")
            diff = (f"- data-root: {old}\n+ data-root: {new}\n"
                    f"  {old} and {new} are the same directory (a bind mount): nothing is "
                    "copied, nothing moved aside")
            return [*changes, Change(f"point Docker at {new}, the directory it already uses "
                                     f"as {old}", diff, disruptive=True, downtime_s=15.0)]
        if self.adopt:
            what = _adopt_summary(host, target, new)
            self.move = MovePlan(old, new, mode="switch", adopt=True)
            diff = (f"- data-root: {old}\n+ data-root: {new}\n"
                    f"  adopted as it is, nothing copied: {what}\n"
                    f"  {old} stays where it is, untouched, and is NOT recorded for "
                    "`hostkit cleanup` (it is still your data)")
            return [*changes, Change(f"run Docker on the existing root {new} ({what})", diff,
                                     disruptive=True, downtime_s=15.0)]
        pre = relocation_preflight(host, target, new, old)
        self.move = MovePlan(old, new, selinux=facts.selinux(),
                             old_is_mountpoint=pre.old_is_mountpoint)
        downtime = 15.0 + pre.used_bytes / 400e6 * 0.1  # stop/start + a small delta pass
        diff = (f"- data-root: {old}\n+ data-root: {new}\n"
                + ("  resuming hostkit's own unfinished copy there\n" if pre.resume else "")
                + "  first copy while Docker runs; Docker stopped only for the final delta pass;\n"
                + (f"  {old} is a mount point: it is left in place with its data"
                   if pre.old_is_mountpoint else
                   f"  {old} is kept as {old}.hostkit-old-<time> until `hostkit cleanup`"))
        if _uses_containerd_store(host):
            diff += ("\n  note: this Docker keeps images in containerd's store "
                     "(/var/lib/containerd), which data-root does not move (moby#50517)")
        return [*changes, Change(f"move Docker's data from {old} to {new} ({_gb(pre.used_bytes)})",
                                 diff, disruptive=True, downtime_s=downtime)]

    def apply(self, host: LocalHost, facts: Facts, changes: Sequence[Change]) -> None:
        move = self.move
        assert move is not None  # noqa: S101 - check() always runs first and sets it
        for cmd in self.install:
            host.run(cmd, timeout=1800, check=True, env={"DEBIAN_FRONTEND": "noninteractive"},
                     hint="install it by hand, then run bootstrap again")
        if self.install and _tools_plan(host, facts)[0]:
            raise HostkitError("the tools for the data-root move are still missing after "
                               "installing them", "install rsync by hand, then retry")
        move.timings = self.timings
        relocate_data_root(host, facts, move, options=self.options, progress=self.progress,
                           notes=self.notes)
        phases = ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items())
        self.notes.append(f"data-root phases: {phases}")


def _uses_containerd_store(host: LocalHost) -> bool:
    info = docker_api_info(host) or {}
    status = info.get("DriverStatus") or []
    return any(isinstance(pair, list) and "io.containerd.snapshotter" in " ".join(map(str, pair))
               for pair in status)
