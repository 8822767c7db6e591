"""Spawn benchmark: login -> server ready -> `1+1` on a kernel, for N concurrent users.

Runs against a stack deployed with `hostkit stack up` (its --deploy-dir and port), once through
nginx (https://127.0.0.1:PORT) and once straight to the hub's proxy on the compose network
(http://HUB_IP:8000), so the difference is nginx's share. Users bench-N are created with
`hostkit users create` on the first run and reused.

    python bench/spawn.py --deploy-dir /opt/hostkit --users 1 10 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

from stack_support import Deployment, HubUser, hostkit

PASSWORD = "Bench-" + "x" * 12


def _hub_ip(dep: Deployment, project: str) -> str:
    cid = subprocess.run(
        [
            "docker",
            "ps",
            "-q",
            "--filter",
            f"label=com.docker.compose.project={project}",
            "--filter",
            "label=com.docker.compose.service=jupyterhub",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[0]
    nets = json.loads(
        subprocess.run(["docker", "inspect", cid], capture_output=True, text=True, check=True).stdout
    )[0]["NetworkSettings"]["Networks"]
    return str(next(iter(nets.values()))["IPAddress"])


def one(dep: Deployment, name: str) -> float:
    user = HubUser(dep, name, PASSWORD)
    started = time.monotonic()
    assert user.login(), f"{name} cannot log in"
    user.start_server()
    token = user.token()
    assert user.run_code("1+1", token) == "2"
    elapsed = time.monotonic() - started
    user.stop_server()
    return elapsed


def run(dep: Deployment, n: int) -> list[float]:
    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(lambda i: one(dep, f"bench{i}"), range(n)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deploy-dir", default="/opt/hostkit")
    parser.add_argument("--users", type=int, nargs="+", default=[1, 10, 20])
    args = parser.parse_args()
    directory = Path(args.deploy_dir)
    env = dict(
        line.split("=", 1)
        for line in (directory / ".env").read_text().splitlines()
        if line and not line.startswith("#") and "=" in line
    )
    dep = Deployment(directory, int(env["HOSTKIT_PORT"]), env["COMPOSE_PROJECT_NAME"], "")
    listing = hostkit("users", "list", "--format", "json", "--deploy-dir", str(directory))
    listed = json.loads(listing.stdout)["users"]
    existing = {u["name"] for u in listed}
    for i in range(max(args.users)):
        if f"bench{i}" not in existing:
            hostkit("users", "create", f"bench{i}", "--password", PASSWORD, "--deploy-dir", str(directory))
    direct = f"http://{_hub_ip(dep, env['COMPOSE_PROJECT_NAME'])}:8000"
    print(f"run {uuid.uuid4().hex[:6]}: login -> ready -> 1+1, seconds")
    for n in args.users:
        for label, url in (("nginx", dep.url), ("direct", direct)):
            target = Deployment(directory, dep.port, dep.prefix, "", base_url=url)
            times = sorted(run(target, n))
            p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
            print(f"{n:3} users via {label:6}: p50 {statistics.median(times):6.1f}  p95 {p95:6.1f}")


if __name__ == "__main__":
    main()
