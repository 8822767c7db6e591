"""Users' Docker volumes on this host: which they are, where their files are, fingerprints.

A fingerprint sums up a tree (names, types, sizes, modes, owners, file times) so that a
live volume can be compared with an archive of it without reading every byte.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import tarfile
from typing import Optional

from hostkit.errors import HostkitError
from hostkit.host import LocalHost
from hostkit.stack import ENV_DEFAULTS


def volume_pattern(env: dict[str, str]) -> re.Pattern[str]:
    """The user volumes' names: HOSTKIT_USER_VOLUME with {username} as the group."""
    template = env.get("HOSTKIT_USER_VOLUME", ENV_DEFAULTS["HOSTKIT_USER_VOLUME"])
    return re.compile("^" + re.escape(template).replace(re.escape("{username}"), "(.+)") + "$")


def user_volumes(host: LocalHost, env: dict[str, str]) -> dict[str, str]:
    """User name -> volume name, for every user volume on this host."""
    result = host.run(["docker", "volume", "ls", "--format", "{{.Name}}"], check=True)
    pattern = volume_pattern(env)
    out = {}
    for name in result.stdout.split():
        found = pattern.match(name)
        if found:
            out[found.group(1)] = name
    return dict(sorted(out.items()))


def volume_mountpoint(host: LocalHost, volume: str) -> Optional[str]:
    """Where a local volume's files are on this host; None when there is no such volume."""
    result = host.run(["docker", "volume", "inspect", volume])
    if not result.ok:
        return None
    info = json.loads(result.stdout)[0]
    if info.get("Driver") != "local":
        raise HostkitError(f"volume {volume} uses the {info.get('Driver')} driver",
                           "hostkit backs up local volumes only")
    return str(info["Mountpoint"])


def ensure_volume(host: LocalHost, volume: str, labels: Optional[dict[str, str]] = None) -> str:
    mountpoint = volume_mountpoint(host, volume)
    if mountpoint is None:
        argv = ["docker", "volume", "create"]
        for key, value in (labels or {}).items():
            argv += ["--label", f"{key}={value}"]
        host.run([*argv, volume], check=True)
        mountpoint = volume_mountpoint(host, volume)
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
