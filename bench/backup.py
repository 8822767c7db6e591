"""Backup storage for users' volumes: `hostkit backup`, plain tar, and a restic repository.

    python3 bench/backup.py [--users 6] [--mib-per-user 60] [--files-per-user 400]

Makes USERS Docker volumes of mixed content (many small notebooks, a few larger binary
files half random and half zeros, a hard link, odd names), then, in one run and on the
same data:
  1. backup and restore throughput of
     - `hostkit backup` (tar per volume, sha256 of every item, fingerprints, manifest) and
       `hostkit restore` into removed volumes,
     - plain `tar` of the same volumes, extracted into fresh directories,
     - restic (Debian's package) into a new local repository, `restic restore`;
  2. 1 % of the files changed, spread over all users, and a second backup of each kind:
     time and bytes added to the destination;
  3. 1 % of the files changed, all in one user's volume (a night where one student worked),
     and a third backup: hostkit archives only the changed volume and links the others.
Needs root, dockerd and restic (`apt-get install restic`); removes its volumes and scratch
directory at the end. The hub's database is a small stand-in (its backup is instant).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hostkit.backup import BackupMaker, BackupRequest, find_backup
from hostkit.host import LocalHost
from hostkit.restore import Restorer
from hostkit.stack import Stack

PREFIX = "hkbench-backup"
Rng = random.Random


def sh(*argv: str, env: dict[str, str] | None = None) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}).stdout


def du(path: Path) -> int:
    """Bytes on disk under path, each inode once (hard links are not counted twice)."""
    seen, total = set(), 0
    for p in path.rglob("*"):
        st = p.lstat()
        if p.is_file() and not p.is_symlink() and st.st_ino not in seen:
            seen.add(st.st_ino)
            total += st.st_size
    return total


def mountpoint(volume: str) -> Path:
    return Path(sh("docker", "volume", "inspect", "-f", "{{.Mountpoint}}", volume).strip())


def fill(mp: Path, rng: Rng, mib: int, files: int) -> list[Path]:
    """Notebook-like text (compressible), a few binary blobs, a hard link, odd names."""
    made = []
    big = max(1, mib // 4) * 1024 * 1024
    for i in range(4):
        p = mp / f"data {i} ünï.bin"
        p.write_bytes(rng.randbytes(big // 2) + bytes(big // 2))
        made.append(p)
    for i in range(files):
        d = mp / f"course-{i % 12}"
        d.mkdir(exist_ok=True)
        p = d / f"nb {i}.ipynb"
        cells = [{"cell_type": "code", "source": f"x = {rng.random()}\nprint(x * {i})",
                  "outputs": [{"text": str(rng.random()) * 40}]} for _ in range(20)]
        p.write_text(json.dumps({"cells": cells, "nbformat": 4}))
        made.append(p)
    os.link(made[0], mp / "hard link.bin")
    for p in [mp, *mp.rglob("*")]:
        os.lchown(p, 1000, 100)
    return made


def change(rng: Rng, files: Iterable[Path], count: int) -> None:
    for p in rng.sample(list(files), count):
        with p.open("r+b") as fh:
            fh.seek(rng.randrange(max(1, p.stat().st_size)))
            fh.write(rng.randbytes(64))


def timed(func: object, *args: object, **kwargs: object) -> float:
    start = time.perf_counter()
    func(*args, **kwargs)  # type: ignore[operator]
    return time.perf_counter() - start


def tar_backup(sources: dict[str, Path], dest: Path) -> None:
    dest.mkdir(parents=True)
    for name, src in sources.items():
        sh("tar", "-C", str(src), "--numeric-owner", "--xattrs", "--format=posix", "-cf",
           str(dest / f"{name}.tar"), ".")


def tar_restore(archives: Path, target: Path) -> None:
    for archive in sorted(archives.glob("*.tar")):
        out = target / archive.stem
        out.mkdir(parents=True)
        sh("tar", "-C", str(out), "--numeric-owner", "--xattrs", "-xpf", str(archive))


class Hostkit:
    """A stand-in deployment (an .env and a hub volume) for hostkit's own backup and restore."""

    def __init__(self, scratch: Path) -> None:
        self.deploy = scratch / "deploy"
        self.deploy.mkdir()
        (self.deploy / ".env").write_text(
            f"HOSTKIT_USER_VOLUME={PREFIX}-{{username}}\nHOSTKIT_HUB_VOLUME={PREFIX}-hub\n"
            f"COMPOSE_PROJECT_NAME={PREFIX}\n")
        sh("docker", "volume", "create", f"{PREFIX}-hub")
        db = sqlite3.connect(mountpoint(f"{PREFIX}-hub") / "jupyterhub.sqlite")
        db.execute("CREATE TABLE users_info (username TEXT, password BLOB, is_authorized BOOLEAN)")
        db.execute("CREATE TABLE users (name TEXT, admin BOOLEAN)")
        db.commit()
        db.close()
        self.dest = scratch / "hostkit"
        self.stack = Stack(LocalHost(), str(self.deploy))

    def backup(self) -> None:
        BackupMaker(self.stack, BackupRequest(dest=str(self.dest))).run()

    def restore(self, volumes: list[str]) -> None:
        for v in volumes:
            sh("docker", "volume", "rm", v)
        backup = find_backup(self.stack.host, "latest", str(self.dest))
        restorer = Restorer(self.stack, backup, users=[], force=False)
        restorer.apply(restorer.plan())


def main() -> None:  # noqa: PLR0915 - one run, one table: the steps read best in order
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=6)
    parser.add_argument("--mib-per-user", type=int, default=60)
    parser.add_argument("--files-per-user", type=int, default=400)
    args = parser.parse_args()
    if shutil.which("restic") is None:
        raise SystemExit("restic is needed: apt-get install restic")
    rng = Rng(9)
    scratch = Path(tempfile.mkdtemp(prefix="hostkit-bench-backup-", dir="/var/tmp"))
    volumes = [f"{PREFIX}-user{i}" for i in range(args.users)]
    env = {"RESTIC_PASSWORD": "bench-only", "RESTIC_CACHE_DIR": str(scratch / "cache")}
    repo = scratch / "restic"
    try:
        files: list[Path] = []
        for v in volumes:
            sh("docker", "volume", "create", v)
            files += fill(mountpoint(v), rng, args.mib_per_user, args.files_per_user)
        sources = {v: mountpoint(v) for v in volumes}
        hostkit = Hostkit(scratch)
        mib = sum(du(p) for p in sources.values()) / 2**20
        print(f"{len(volumes)} volumes, {len(files)} files, {mib:.0f} MiB")
        sh("sync")

        t = {"hostkit": timed(hostkit.backup), "tar": timed(tar_backup, sources, scratch / "tar1")}
        sh("restic", "init", "--repo", str(repo), env=env)
        t["restic"] = timed(sh, "restic", "--repo", str(repo), "backup", "-q",
                            *map(str, sources.values()), env=env)
        r = {"hostkit": timed(hostkit.restore, volumes),
             "tar": timed(tar_restore, scratch / "tar1", scratch / "untar"),
             "restic": timed(sh, "restic", "--repo", str(repo), "restore", "latest", "-q", "--target",
                             str(scratch / "unrestic"), env=env)}
        sources = {v: mountpoint(v) for v in volumes}
        files = [p for v in sources.values() for p in v.rglob("*") if p.is_file() and not p.is_symlink()]
        size = {"hostkit": du(hostkit.dest), "tar": du(scratch / "tar1"), "restic": du(repo)}

        count = max(1, len(files) // 100)
        change(rng, files, count)
        before = dict(size)
        t2 = {"hostkit": timed(hostkit.backup), "tar": timed(tar_backup, sources, scratch / "tar2"),
              "restic": timed(sh, "restic", "--repo", str(repo), "backup", "-q",
                              *map(str, sources.values()), env=env)}
        size2 = {"hostkit": du(hostkit.dest), "tar": du(scratch / "tar1") + du(scratch / "tar2"),
                 "restic": du(repo)}

        change(rng, [p for p in files if sources[volumes[0]] in p.parents], count)
        t3 = {"hostkit": timed(hostkit.backup), "tar": timed(tar_backup, sources, scratch / "tar3"),
              "restic": timed(sh, "restic", "--repo", str(repo), "backup", "-q",
                              *map(str, sources.values()), env=env)}
        size3 = {"hostkit": du(hostkit.dest), "tar": size2["tar"] + du(scratch / "tar3"), "restic": du(repo)}

        kinds = ("hostkit", "tar", "restic")
        print(f"{'':30}" + "".join(f"{k:>16}" for k in ("hostkit backup", "plain tar", "restic 0.14")))
        print(f"{'backup (MiB/s)':30}" + "".join(f"{mib / t[k]:16.0f}" for k in kinds))
        print(f"{'restore (MiB/s)':30}" + "".join(f"{mib / r[k]:16.0f}" for k in kinds))
        print(f"{'size on disk (MiB)':30}" + "".join(f"{size[k] / 2**20:16.0f}" for k in kinds))
        print(f"second backup, {count} files (1 %) changed across all volumes:")
        print(f"{'  time (s)':30}" + "".join(f"{t2[k]:16.1f}" for k in kinds))
        added2 = {k: (size2[k] - before[k]) / 2**20 for k in kinds}
        print(f"{'  bytes added (MiB)':30}" + "".join(f"{added2[k]:16.1f}" for k in kinds))
        print(f"third backup, {count} files changed in one volume:")
        print(f"{'  time (s)':30}" + "".join(f"{t3[k]:16.1f}" for k in kinds))
        added3 = {k: (size3[k] - size2[k]) / 2**20 for k in kinds}
        print(f"{'  bytes added (MiB)':30}" + "".join(f"{added3[k]:16.1f}" for k in kinds))
    finally:
        for v in [*volumes, f"{PREFIX}-hub"]:
            subprocess.run(["docker", "volume", "rm", "-f", v], capture_output=True, check=False)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
