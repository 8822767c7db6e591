"""How long a full `hostkit doctor` takes on this host, cold and warm, and where the time goes.

Prints, side by side from one run: cold wall time (a fresh process: interpreter, imports,
every probe), warm wall time (same process, fresh Facts), the sum of per-check times (what
running them one after another would cost), the slowest checks, and the critical path: the
heaviest chain of checks linked by `needs` (a dependent starts only when its needs are done,
so no amount of concurrency gets below it). When docker-bench-security is on the host
(on PATH, in /opt or /usr/local/share, or DOCKER_BENCH=path/to/docker-bench-security.sh),
its wall time is measured in the same runs for comparison.

    python3 bench/doctor.py [--runs 3] [--only GROUP ...] [--top 10]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BENCH_PLACES = (
    "/opt/docker-bench-security/docker-bench-security.sh",
    "/usr/local/share/docker-bench-security/docker-bench-security.sh",
)


def cold_run(only: list[str]) -> tuple[float, dict[str, float]]:
    argv = [sys.executable, "-m", "hostkit", "doctor", "--format", "json"]
    for sel in only:
        argv += ["--only", sel]
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, check=False)
    wall = time.perf_counter() - start
    checks = json.loads(proc.stdout)["checks"]
    return wall, {c["id"]: c["duration_s"] for c in checks}


def warm_run(only: list[str]) -> tuple[float, dict[str, float]]:
    from hostkit.catalogue import load_catalogue, select
    from hostkit.doctor import ProbeContext, run_checks
    from hostkit.facts import Facts
    from hostkit.host import LocalHost
    from hostkit.settings import load_settings

    host = LocalHost()
    specs = select(load_catalogue(), only or None, None)
    start = time.perf_counter()
    results = run_checks(specs, ProbeContext(host, Facts(host), load_settings(host)))
    return time.perf_counter() - start, {r.id: r.duration_s for r in results}


def critical_path(durations: dict[str, float]) -> tuple[float, list[str]]:
    """The heaviest chain of checks through `needs` (checks not run count as zero)."""
    from hostkit.catalogue import load_catalogue

    needs = {s.id: [n for n in s.needs if n in durations] for s in load_catalogue() if s.id in durations}
    best: dict[str, tuple[float, list[str]]] = {}

    def finish(check_id: str) -> tuple[float, list[str]]:
        if check_id not in best:
            before = max((finish(n) for n in needs.get(check_id, [])), default=(0.0, []))
            best[check_id] = (before[0] + durations[check_id], [*before[1], check_id])
        return best[check_id]

    return max((finish(c) for c in durations), default=(0.0, []))


def docker_bench() -> Optional[list[str]]:
    found = os.environ.get("DOCKER_BENCH") or shutil.which("docker-bench-security") or next(
        (p for p in BENCH_PLACES if Path(p).exists()), None)
    if not found:
        return None
    return ["sh", found] if found.endswith(".sh") else [found]


def docker_bench_run(argv: list[str]) -> float:
    start = time.perf_counter()
    # it reads its helper scripts relative to its own directory
    subprocess.run(argv, capture_output=True, cwd=Path(argv[-1]).parent, check=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", action="append", default=[], help="as `hostkit doctor --only`")
    parser.add_argument("--top", type=int, default=10, help="how many of the slowest checks to list")
    args = parser.parse_args()
    bench = docker_bench()
    cold, warm, other = [], [], []
    per_check: dict[str, list[float]] = {}
    for _ in range(args.runs):  # interleaved, so machine noise hits all alike
        wall, checks = cold_run(args.only)
        cold.append(wall)
        wall_w, checks_w = warm_run(args.only)
        warm.append(wall_w)
        for cid, d in {**checks, **checks_w}.items():
            per_check.setdefault(cid, []).append(d)
        if bench:
            other.append(docker_bench_run(bench))
    med = {cid: statistics.median(v) for cid, v in per_check.items()}
    path_s, path = critical_path(med)

    def line(label: str, values: list[float]) -> str:
        return f"  {label:26}{statistics.median(values):6.2f} s  ({min(values):.2f}-{max(values):.2f})"

    print(f"hostkit doctor, {len(med)} checks, {args.runs} runs each (median, min-max)")
    print(line("cold (new process)", cold))
    print(line("warm (in process)", warm))
    print(f"  {'sum of checks (serial)':26}{sum(med.values()):6.2f} s")
    print(f"  {'critical path (needs)':26}{path_s:6.2f} s  ({' -> '.join(path)})")
    if bench:
        print(line("docker-bench-security", other) + f"  [{' '.join(bench)}]")
    else:
        print("  docker-bench-security     not on this host (set DOCKER_BENCH=path/to/the .sh)")
    print(f"  slowest {args.top} checks (median):")
    for cid in sorted(med, key=lambda c: -med[c])[: args.top]:
        print(f"    {cid:28} {med[cid] * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
