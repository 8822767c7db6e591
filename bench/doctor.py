"""How long a full `hostkit doctor` takes on this host, cold and warm, and where the time goes.

Prints, side by side from one run: cold wall time (a fresh process: interpreter, imports,
every probe), warm wall time (same process, fresh Facts), the sum of per-check times (what
running them one after another would cost) and the slowest single check (the floor
concurrency can reach).

    python3 bench/doctor.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def cold_run() -> tuple[float, dict[str, float]]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "hostkit", "doctor", "--format", "json"],
                          capture_output=True, text=True, cwd=REPO, check=False)
    wall = time.perf_counter() - start
    checks = json.loads(proc.stdout)["checks"]
    return wall, {c["id"]: c["duration_s"] for c in checks}


def warm_run() -> tuple[float, dict[str, float]]:
    from hostkit.catalogue import load_catalogue
    from hostkit.doctor import ProbeContext, run_checks
    from hostkit.facts import Facts
    from hostkit.host import LocalHost
    from hostkit.settings import load_settings

    host = LocalHost()
    start = time.perf_counter()
    results = run_checks(load_catalogue(), ProbeContext(host, Facts(host), load_settings(host)))
    return time.perf_counter() - start, {r.id: r.duration_s for r in results}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    runs = parser.parse_args().runs
    cold, warm = [], []
    per_check: dict[str, list[float]] = {}
    for _ in range(runs):  # interleaved, so machine noise hits both alike
        wall, checks = cold_run()
        cold.append(wall)
        wall_w, checks_w = warm_run()
        warm.append(wall_w)
        for cid, d in {**checks, **checks_w}.items():
            per_check.setdefault(cid, []).append(d)
    med = {cid: statistics.median(v) for cid, v in per_check.items()}
    slowest = max(med, key=lambda c: med[c])
    print(f"hostkit doctor, {len(med)} checks, {runs} runs each (median, min-max)")
    print(f"  cold (new process)        {statistics.median(cold):6.2f} s  ({min(cold):.2f}-{max(cold):.2f})")
    print(f"  warm (in process)         {statistics.median(warm):6.2f} s  ({min(warm):.2f}-{max(warm):.2f})")
    print(f"  sum of checks (serial)    {sum(med.values()):6.2f} s")
    print(f"  slowest check             {med[slowest]:6.2f} s  ({slowest})")
    print("  per check (median):")
    for cid in sorted(med, key=lambda c: -med[c]):
        print(f"    {cid:28} {med[cid] * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
