"""Users' Docker volumes: which they are, where their files are, fingerprints.

The volumes are on this host, or on a node of the swarm (`At`: the same commands, run
there over the manager's ssh login). A fingerprint sums up a tree (names, types, sizes,
modes, owners, file times) so that a live volume can be compared with an archive of it
without reading every byte; on a node it is read from `find -printf`, here from lstat.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import stat
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

from hostkit.errors import HostkitError
from hostkit.host import CommandResult, LocalHost
from hostkit.stack import ENV_DEFAULTS


def volume_pattern(env: dict[str, str]) -> re.Pattern[str]:
    """The user volumes' names: HOSTKIT_USER_VOLUME with {username} as the group."""
    template = env.get("HOSTKIT_USER_VOLUME", ENV_DEFAULTS["HOSTKIT_USER_VOLUME"])
    return re.compile("^" + re.escape(template).replace(re.escape("{username}"), "(.+)") + "$")


@dataclass(frozen=True)
class At:
    """Where volumes are: this host, or a swarm node reached over ssh (`via`)."""

    node: str = ""  # the node's hostname; "" for this host
    via: tuple[str, ...] = ()
    node_id: str = ""

    @property
    def remote(self) -> bool:
        return bool(self.via)

    @property
    def on(self) -> str:
        """" on NODE" for messages; "" here."""
        return f" on {self.node}" if self.via else ""

    def label(self, name: str) -> str:
        """"NODE: name" for progress lines; name itself here."""
        return f"{self.node}: {name}" if self.via else name

    def argv(self, argv: Sequence[str]) -> list[str]:
        """The command as run there: through ssh as one quoted line, or as it is."""
        return [*self.via, shlex.join(argv)] if self.via else list(argv)

    def run(self, host: LocalHost, argv: Sequence[str], **kwargs: Any) -> CommandResult:
        result = host.run(self.argv(argv), **{"timeout": 120, **kwargs, "check": False})
        if self.via and result.returncode == 255:  # ssh's own failure, not the command's
            raise HostkitError(f"ssh {self.node}: {result.stderr.strip() or 'failed'}",
                               f"the manager logs in to every node with a key: ssh-copy-id {self.via[-1]}")
        if kwargs.get("check") and not result.ok:
            raise HostkitError(f"{' '.join(argv[:3])}{self.on}: "
                               f"{result.stderr.strip() or result.stdout.strip() or 'failed'}")
        return result


HERE = At()


def user_volumes(host: LocalHost, env: dict[str, str], at: At = HERE) -> dict[str, str]:
    """User name -> volume name, for every user volume on this host (or node)."""
    result = at.run(host, ["docker", "volume", "ls", "--format", "{{.Name}}"], check=True)
    pattern = volume_pattern(env)
    out = {}
    for name in result.stdout.split():
        found = pattern.match(name)
        if found:
            out[found.group(1)] = name
    return dict(sorted(out.items()))


def volume_mountpoint(host: LocalHost, volume: str, at: At = HERE) -> Optional[str]:
    """Where a local volume's files are on this host (or node); None when there is no such volume."""
    result = at.run(host, ["docker", "volume", "inspect", volume])
    if not result.ok:
        return None
    info = json.loads(result.stdout)[0]
    if info.get("Driver") != "local":
        raise HostkitError(f"volume {volume} uses the {info.get('Driver')} driver",
                           "hostkit backs up local volumes only")
    return str(info["Mountpoint"])


def ensure_volume(host: LocalHost, volume: str, labels: Optional[dict[str, str]] = None,
                  at: At = HERE) -> str:
    mountpoint = volume_mountpoint(host, volume, at)
    if mountpoint is None:
        argv = ["docker", "volume", "create"]
        for key, value in (labels or {}).items():
            argv += ["--label", f"{key}={value}"]
        at.run(host, [*argv, volume], check=True)
        mountpoint = volume_mountpoint(host, volume, at)
    assert mountpoint is not None  # noqa: S101 - just created
    return mountpoint


# ---- fingerprints: the same function for a live tree and for an archive --------------
def _fingerprint(rows: list[tuple[str, str, int, int, int, int, int, str]]) -> str:
    digest = hashlib.sha256()
    for row in sorted(rows):
        digest.update("\t".join(map(str, row)).encode("utf-8", "surrogateescape") + b"\n")
    return digest.hexdigest()


def tree_fingerprint(host: LocalHost, path: str) -> tuple[str, int, int]:
    """(fingerprint, entries, bytes) of a directory tree: names, types, sizes, modes, owners, times."""
    rows = []
    total = 0
    for rel, st, target in host.walk_tree(path):
        if stat.S_ISDIR(st.st_mode):
            kind, size, mtime = "d", 0, 0  # a directory's time changes as it is filled
        elif stat.S_ISLNK(st.st_mode):
            kind, size, mtime = "l", 0, 0
        else:
            kind, size, mtime = "f", st.st_size, int(st.st_mtime)
            total += size
        rows.append((rel, kind, size, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, mtime, target))
    return _fingerprint(rows), len(rows), total


# what `find -printf` prints per entry, NUL-terminated fields (any file name survives):
# path, type, size, mode (octal), uid, gid, mtime, symlink target
FIND_PRINTF = "%P\\0%y\\0%s\\0%m\\0%U\\0%G\\0%T@\\0%l\\0"
_FIND_FIELDS = 8


def find_fingerprint(output: bytes) -> tuple[str, int, int]:
    """tree_fingerprint's result from `find DIR -mindepth 1 -printf FIND_PRINTF` (run on a node)."""
    fields = output.split(b"\0")[:-1] if output else []
    if len(fields) % _FIND_FIELDS:
        raise HostkitError("find printed a partial entry: the volume changed while it was read")
    rows = []
    total = 0
    for i in range(0, len(fields), _FIND_FIELDS):
        raw = [f.decode("utf-8", "surrogateescape") for f in fields[i:i + _FIND_FIELDS]]
        rel, kind, size, mode, uid, gid, mtime, target = raw
        if kind == "d":
            row = (rel, "d", 0, int(mode, 8), int(uid), int(gid), 0, "")
        elif kind == "l":
            row = (rel, "l", 0, int(mode, 8), int(uid), int(gid), 0, target)
        else:
            row = (rel, "f", int(size), int(mode, 8), int(uid), int(gid), int(mtime.split(".")[0]), "")
            total += int(size)
        rows.append(row)
    return _fingerprint(rows), len(rows), total


def fingerprint_at(host: LocalHost, path: str, at: At = HERE) -> tuple[str, int, int]:
    """The fingerprint of a tree on this host (lstat) or on a node (find over ssh)."""
    if not at.remote:
        return tree_fingerprint(host, path)
    # through a file: the listing is bytes (file names need not be UTF-8)
    scratch = f"/tmp/.hostkit-find-{os.getpid()}"  # noqa: S108 - 0600, root's
    try:
        host.stream_to_file(at.argv(["find", path, "-mindepth", "1", "-printf", FIND_PRINTF]), scratch)
        return find_fingerprint(host.read_bytes(scratch))
    finally:
        if host.exists(scratch):
            host.unlink(scratch)


def archive_fingerprint(host: LocalHost, path: str) -> tuple[str, int, int]:
    """The fingerprint of the tree an archive extracts to (hard links as the files they are)."""
    rows = []
    total = 0
    seen: dict[str, tarfile.TarInfo] = {}
    with tarfile.open(str(host.path(path)), "r:") as archive:
        for member in archive:
            name = os.path.normpath(member.name)
            if name == ".":
                continue
            seen[name] = member
            if member.islnk():
                member = seen.get(os.path.normpath(member.linkname), member)  # noqa: PLW2901
            if member.isdir():
                row = (name, "d", 0, member.mode, member.uid, member.gid, 0, "")
            elif member.issym():
                row = (name, "l", 0, member.mode, member.uid, member.gid, 0, member.linkname)
            else:
                row = (name, "f", member.size, member.mode, member.uid, member.gid, int(member.mtime), "")
                total += member.size
            rows.append(row)
    return _fingerprint(rows), len(rows), total
