"""Backup storage for users' volumes: plain tar archives against a restic repository.

    python3 bench/backup.py [--users 6] [--mib-per-user 60] [--files-per-user 400]

Makes USERS Docker volumes of mixed content (many small notebooks and text files, a few
larger binary files, hard links, odd names), then, in one run and on the same data:
  1. tar: one archive per volume (what `hostkit backup` writes), then extraction of all
     of them into fresh directories;
  2. restic (Debian's package): `restic backup` of every volume's directory into a new
     local repository, then `restic restore` of the snapshot;
  3. 1 % of the files changed (spread over all users) and a second backup of each kind:
     time and bytes added to the destination.
Prints MiB/s for backup and restore and the incremental cost. Needs root, dockerd and
restic (`apt-get install restic`); removes its volumes and scratch directory at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

PREFIX = "hkbench-backup"


def sh(*argv: str, env: dict[str, str] | None = None) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}).stdout


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def fill(mountpoint: Path, rng: random.Random, mib: int, files: int) -> list[Path]:
    """Notebook-like text (compressible), a few binary blobs, a hard link, odd names."""
    made = []
    big = max(1, mib // 4)
    for i in range(4):
        p = mountpoint / f"data {i} ünï.bin"
        p.write_bytes(rng.randbytes(big * 1024 * 1024 // 2) + bytes(big * 1024 * 1024 // 2))
        made.append(p)
    for i in range(files):
        d = mountpoint / f"course-{i % 12}"
        d.mkdir(exist_ok=True)
        p = d / f"nb {i}.ipynb"
        cells = [{"cell_type": "code", "source": f"x = {rng.random()}\nprint(x * {i})",
                  "outputs": [{"text": str(rng.random()) * 40}]} for _ in range(20)]
        p.write_text(json.dumps({"cells": cells, "nbformat": 4}))
        made.append(p)
    os.link(made[0], mountpoint / "hard link.bin")
    for p in mountpoint.rglob("*"):
        os.lchown(p, 1000, 100)
    return made


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=6)
    parser.add_argument("--mib-per-user", type=int, default=60)
    parser.add_argument("--files-per-user", type=int, default=400)
    args = parser.parse_args()
    if shutil.which("restic") is None:
        raise SystemExit("restic is needed: apt-get install restic")
    rng = random.Random(9)
    scratch = Path(tempfile.mkdtemp(prefix="hostkit-bench-backup-", dir="/var/tmp"))
    volumes = [f"{PREFIX}-{i}" for i in range(args.users)]
    env = {"RESTIC_PASSWORD": "bench-only", "RESTIC_CACHE_DIR": str(scratch / "cache")}
    try:
        sources: dict[str, Path] = {}
        files: list[Path] = []
        for v in volumes:
            sh("docker", "volume", "create", v)
            mp = Path(sh("docker", "volume", "inspect", "-f", "{{.Mountpoint}}", v).strip())
            files += fill(mp, rng, args.mib_per_user, args.files_per_user)
            sources[v] = mp
        total = sum(du(p) for p in sources.values())
        mib = total / 2**20
        print(f"{len(volumes)} volumes, {len(files)} files, {mib:.0f} MiB")
        sh("sync")

        t_tar = timed(tar_backup, sources, scratch / "tar1")
        t_untar = timed(tar_restore, scratch / "tar1", scratch / "untar")
        repo = scratch / "restic"
        sh("restic", "init", "--repo", str(repo), env=env)
        t_restic = timed(sh, "restic", "--repo", str(repo), "backup", "-q", *map(str, sources.values()),
                         env=env)
        t_unrestic = timed(sh, "restic", "--repo", str(repo), "restore", "latest", "-q",
                           "--target", str(scratch / "unrestic"), env=env)
        tar_size, restic_size = du(scratch / "tar1"), du(repo)

        changed = rng.sample(files, max(1, len(files) // 100))
        for p in changed:
            with p.open("r+b") as fh:
                fh.seek(rng.randrange(max(1, p.stat().st_size)))
                fh.write(rng.randbytes(64))
        t_tar2 = timed(tar_backup, sources, scratch / "tar2")
        t_restic2 = timed(sh, "restic", "--repo", str(repo), "backup", "-q", *map(str, sources.values()),
                          env=env)
        tar_added = du(scratch / "tar2")
        restic_added = du(repo) - restic_size

        print(f"{'':28}{'tar (per volume)':>20}{'restic 0.14':>16}")
        print(f"{'backup':28}{mib / t_tar:14.0f} MiB/s{mib / t_restic:10.0f} MiB/s")
        print(f"{'restore':28}{mib / t_untar:14.0f} MiB/s{mib / t_unrestic:10.0f} MiB/s")
        print(f"{'size on disk':28}{tar_size / 2**20:14.0f} MiB  {restic_size / 2**20:10.0f} MiB")
        print(f"second backup, {len(changed)} files ({len(changed) * 100 / len(files):.0f} %) changed:")
        print(f"{'  time':28}{t_tar2:16.1f} s{t_restic2:14.1f} s")
        print(f"{'  bytes added':28}{tar_added / 2**20:14.1f} MiB{restic_added / 2**20:10.1f} MiB")
    finally:
        for v in volumes:
            subprocess.run(["docker", "volume", "rm", "-f", v], capture_output=True, check=False)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
