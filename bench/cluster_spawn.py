"""Spawn benchmark across servers: a class logging in at once, one host against a Swarm
cluster (a manager and two workers), bursts alternating, printed side by side.

Both run in the same kind of systemd box with its own dockerd and firewalld, on this
machine: the one-host stack in a box of its own, the cluster in three boxes formed by
hostkit (`cluster init`, `cluster join --data-root`, `sync-images`, `stack up --set
HOSTKIT_CLUSTER=swarm`), with the same images and settings. Bursts alternate (one host 1,
cluster 1, one host 20, cluster 20) so that both see the same noise.

Per user, through nginx: login, spawn (logged in -> the hub's "User X took ... to start",
read from the hub's log inside the entry box: the server answered; the hub holds the spawn
request open while the server starts, and SwarmSpawner logs no "Starting container", so
queue, create and boot are one phase here, on both sides), route (that -> the spawn's
progress stream says ready, as a browser waits), kernel, execute (`1+1`), total.
CPU: the boxes' own CPU (their cgroups on this machine) over the burst, per spawn. For the
cluster that includes the workers' dockerd, the swarm's agents and the overlay: what
placing servers on other servers costs. Where each user's server landed is counted per node.

The nodes of this cluster share this machine's cores, so it cannot be faster here than one
host: what the comparison shows is the overhead of placement (a service and a network per
user, the overlay) and that a class gets through without errors. On real servers each
worker adds its own cores and memory.

    python3 bench/cluster_spawn.py --users 1 20
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration" / "box"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from boxlib import Box, running_box
from cluster_support import (
    ADMIN_PASSWORD,
    NOTEBOOK_IMAGE,
    PORT,
    Cluster,
    form_cluster,
    running_cluster,
    stack_up,
)
from spawn import PASSWORD, container_cpu_seconds, one, parse_hub_log, pct, phases, stop_all
from stack_support import Deployment

SHOWN = ("login", "spawn", "route", "kernel", "execute", "total")
# the same for both: the stack's defaults, without the daily certificate renewal
SETTINGS = {"HOSTKIT_CERT_RENEWAL": "off"}


@dataclass
class Target:
    name: str
    entry: Box  # where nginx and the hub run
    boxes: list[Box]
    cluster: Cluster | None = None
    dep: Deployment = field(init=False)

    def __post_init__(self) -> None:
        self.dep = Deployment(Path("/nonexistent"), PORT, "jupyter", ADMIN_PASSWORD,
                              base_url=f"https://{self.entry.address()}:{PORT}")

    def cpu_seconds(self) -> float:
        return sum(container_cpu_seconds(b.name) for b in self.boxes)

    def placement(self) -> str:
        if self.cluster is None:
            return ""
        counts = {host: len(n["servers"]) for host, n in self.cluster.status().items()}  # type: ignore[arg-type]
        return "  servers per node: " + ", ".join(f"{h} {c}" for h, c in sorted(counts.items()))

    def hub_answered(self, since: float) -> dict[str, dict[str, float]]:
        """Per user, when the hub saw their server answer, from the hub's log in the entry
        box (the box's clock is this machine's)."""
        hub = self.entry.sh(
            "docker ps -q --filter label=com.docker.compose.service=jupyterhub").stdout.strip()
        log = self.entry.sh(f"docker logs --since {int(since) - 1} {hub} 2>&1").stdout
        return {user: {"answered": m["answered"]} for user, m in parse_hub_log(log, "jupyter").items()
                if "answered" in m}


def _with_spawn(row: dict[str, float]) -> dict[str, float]:
    """spawn: logged in -> the hub saw the server answer. The hub holds the spawn request
    open while the server starts (up to its slow_spawn_timeout), so without DockerSpawner's
    "Starting container" line the queue, create and boot are one phase here, on both sides."""
    return {**row, "spawn": row["create"] + row["boot"]}


def create_users(box: Box, n: int) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda i: box.sh(f"hostkit users create bench{i} --password {PASSWORD}"), range(n)))


def burst(target: Target, n: int) -> str:
    names = [f"bench{i}" for i in range(n)]
    cpu = target.cpu_seconds()
    since = time.time()
    with ThreadPoolExecutor(max_workers=n) as pool:
        samples = list(pool.map(lambda name: one(target.dep, name, per_container=False), names))
    cpu = target.cpu_seconds() - cpu
    placed = target.placement()
    log = target.hub_answered(since)
    stop_all(target.dep, names)
    good = [s for s in samples if not s.error]
    errors = Counter(s.error for s in samples if s.error)
    lines = [f"{target.name:>9} {n:3} users: {len(samples) - len(good)} errors{placed}"]
    lines += [f"{'':14}{count} x {error}" for error, count in errors.items()]
    if good:
        table = [_with_spawn(phases(s, log.get(s.user, {}))) for s in good]
        for phase in SHOWN:
            vals = [row[phase] for row in table]
            lines.append(f"{'':14}{phase:8} p50 {statistics.median(vals):6.2f}  p95 {pct(vals, 0.95):6.2f}"
                         f"  max {max(vals):6.2f}")
        lines.append(f"{'':14}CPU-s    all its boxes {cpu:.1f} over the burst, {cpu / n:.2f}/spawn")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--users", type=int, nargs="+", default=[1, 20])
    args = parser.parse_args()
    most = max(args.users)
    start = time.monotonic()
    with contextlib.ExitStack() as stack:
        cluster = stack.enter_context(running_cluster(NOTEBOOK_IMAGE, prefix="hostkit-bench-cl"))
        single = stack.enter_context(running_box("hostkit-bench-one", hostname="onehost"))
        # the one host as bootstrap leaves it, as the workers are after `cluster join`
        single.sh("hostkit bootstrap --no-stack --data-root /srv/docker --yes", timeout=900)
        for image in cluster.images.values():
            single.load_image(image)
        print(f"boxes up and images loaded in {time.monotonic() - start:.0f} s", flush=True)
        form_cluster(cluster)
        stack_up(single, cluster.images, SETTINGS)
        stack_up(cluster.manager, cluster.images, {**SETTINGS, "HOSTKIT_CLUSTER": "swarm"})
        create_users(single, most)
        create_users(cluster.manager, most)
        targets = [Target("one host", single, [single]),
                   Target("cluster", cluster.manager, cluster.boxes, cluster)]
        print(f"ready in {time.monotonic() - start:.0f} s; single-user image {NOTEBOOK_IMAGE}", flush=True)
        print("login -> server ready -> 1+1 through nginx, seconds (client clock)", flush=True)
        for n in args.users:
            for target in targets:
                print(burst(target, n), flush=True)


if __name__ == "__main__":
    main()
