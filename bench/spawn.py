"""Spawn benchmark: a class logging in at once, phase by phase, with CPU-seconds per spawn.

For each variant (a stack deployed here with `hostkit stack up --no-build` and its own
`--set` values, e.g. another single-user image) and each burst size, N users log in at once
through nginx, start their server, start a kernel and run `1+1` over its websocket. Bursts
alternate between the variants (A 1, B 1, A 10, B 10, ...) so that both see the same noise
on a shared machine.

Per user, phases from the client's clock and the hub's log (same host clock):
  login     POST /hub/login answered (bcrypt in the hub)
  create    server requested -> DockerSpawner logged "Starting container" (queue + create)
  boot      "Starting container" -> the hub's "User X took ... to start" (server answered)
  route     that -> the spawn's progress stream says ready (proxy route), as a browser waits
  kernel    POST /api/kernels answered (kernel process started)
  execute   `1+1` sent -> result received over the websocket
CPU-seconds: the user's container (cgroup cpuacct) when `1+1` returned, and the hub
container's CPU over the burst divided by N. The hub's Prometheus metrics
(jupyterhub_server_spawn_duration_seconds, jupyterhub_proxy_add_duration_seconds) give the
mean spawn and route duration as the hub sees them, and the throttled count.

    python3 bench/spawn.py --users 1 10 20 40 \
        --variant before \
        --variant after:HOSTKIT_NOTEBOOK_IMAGE=hostkit-exp/singleuser:rfc3987

With --prestart each burst runs twice: as above, then with everyone's server started
before the burst by `hostkit users start` (the admin's move before a lecture), so the
burst is login -> a running server -> `1+1`. The container CPU then includes that earlier
boot; the hub's is the burst's alone.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stack_support import Deployment, HubUser, _execute, new_deployment

from hostkit.images import parse_versions, stack_assets_dir

PASSWORD = "Bench-" + "x" * 12
PHASES = ("login", "create", "boot", "route", "kernel", "execute", "total")
CGROUP_CPU = Path("/sys/fs/cgroup/cpuacct/docker")  # cgroup v1 (cgroupfs driver)
CGROUP_V2 = Path("/sys/fs/cgroup/system.slice")
LOG_LINE = re.compile(r"^\[\w (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) JupyterHub \S+\] (.*)$")


@dataclass
class Sample:
    user: str
    marks: dict[str, float] = field(default_factory=dict)  # wall-clock seconds (time.time)
    container_cpu: float = 0.0
    cpu_at_ready: float = 0.0
    container_mib: float = 0.0
    error: str = ""


@dataclass
class Variant:
    name: str
    settings: dict[str, str]
    dep: Optional[Deployment] = None


def container_cpu_seconds(container: str) -> float:
    """CPU-seconds a running container has used, from its cgroup (v1, else v2)."""
    full = subprocess.run(
        ["docker", "inspect", "-f", "{{.Id}}", container], capture_output=True, text=True, check=True
    ).stdout.strip()
    v1 = CGROUP_CPU / full / "cpuacct.usage"
    if v1.exists():
        return int(v1.read_text()) / 1e9
    stat = (CGROUP_V2 / f"docker-{full}.scope" / "cpu.stat").read_text()
    usage = next(line.split()[1] for line in stat.splitlines() if line.startswith("usage_usec"))
    return int(usage) / 1e6


def container_rss_mib(container: str) -> float:
    """Resident memory of a running container (cgroup v1 total_rss, else v2 anon), MiB."""
    full = subprocess.run(
        ["docker", "inspect", "-f", "{{.Id}}", container], capture_output=True, text=True, check=True
    ).stdout.strip()
    v1 = Path("/sys/fs/cgroup/memory/docker") / full / "memory.stat"
    stat = v1 if v1.exists() else CGROUP_V2 / f"docker-{full}.scope" / "memory.stat"
    fields = dict(line.split() for line in stat.read_text().splitlines())
    return int(fields.get("total_rss", fields.get("anon", "0"))) / 2**20


def one(dep: Deployment, name: str, per_container: bool = True) -> Sample:
    """One student, login to `1+1`; per_container=False where the user's container is not
    this machine's (a box's dockerd runs it): its CPU and memory are then not read."""
    sample = Sample(name)
    marks = sample.marks
    user = HubUser(dep, name, PASSWORD)
    try:
        marks["start"] = time.time()
        if not user.login():
            raise AssertionError("login refused")
        marks["login"] = time.time()
        r = user.api("POST", f"/users/{name}/server")
        running = r.status_code == 400 and "already running" in r.text  # started ahead (--prestart)
        if r.status_code not in (201, 202) and not running:
            raise AssertionError(f"spawn request: {r.status_code} {r.text[:120]}")
        marks["requested"] = time.time()
        wait_ready_like_a_browser(user)
        marks["ready"] = time.time()
        if per_container:
            sample.cpu_at_ready = container_cpu_seconds(dep.container_name(name))
        token = user.token()
        kernel = user.server_api("POST", "/kernels", token, json={"name": "python3"})
        if kernel.status_code != 201:
            raise AssertionError(f"kernel: {kernel.status_code}")
        marks["kernel"] = time.time()
        result = _execute(dep, name, kernel.json()["id"], token, "1+1", 300)
        marks["execute"] = time.time()
        if result != "2":
            raise AssertionError(f"1+1 gave {result!r}")
        if per_container:
            sample.container_cpu = container_cpu_seconds(dep.container_name(name))
            sample.container_mib = container_rss_mib(dep.container_name(name))
    except Exception as exc:  # every failure is counted, not raised
        sample.error = f"{type(exc).__name__}: {exc}"[:200]
    return sample


def wait_ready_like_a_browser(user: HubUser) -> None:
    """Wait on the spawn's progress event stream, as the hub's spawn page does in a browser.

    One long request per user: polling the REST API instead would add hub CPU that no
    student's browser costs, and inflate the hub's share per spawn.
    """
    with user.api("GET", f"/users/{user.name}/server/progress", stream=True, timeout=(30, 900)) as r:
        r.raise_for_status()
        for line in r.iter_lines(decode_unicode=True):
            if not line or not line.startswith("data:"):
                continue  # keepalive comments between events
            event = json.loads(line[len("data:") :])
            if event.get("failed"):
                raise AssertionError(f"spawn failed: {event.get('message', '')[:160]}")
            if event.get("ready"):
                return
    raise AssertionError("progress stream ended before the server was ready")


def stop_all(dep: Deployment, names: list[str]) -> None:
    def stop(name: str) -> None:
        user = HubUser(dep, name, PASSWORD)
        if user.login():
            r = user.api("DELETE", f"/users/{name}/server")
            if r.status_code in (202, 204):
                user.wait_stopped(300)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(stop, names))


def hub_log_marks(dep: Deployment, since: float) -> dict[str, dict[str, float]]:
    """Per user: when the container was started and when the hub saw the server answer."""
    out = subprocess.run(
        ["docker", "logs", "--since", str(int(since) - 1), dep.hub_container()],
        capture_output=True,
        text=True,
        check=True,
    )
    return parse_hub_log(out.stdout + out.stderr, dep.prefix)


def parse_hub_log(text: str, prefix: str) -> dict[str, dict[str, float]]:
    """The hub log's marks per user: "started" (DockerSpawner's "Starting container", which
    SwarmSpawner does not log) and "answered" (the hub's own "User X took ... to start")."""
    marks: dict[str, dict[str, float]] = {}
    starting = re.compile(rf"Starting container {re.escape(prefix)}-(\S+) ")
    took = re.compile(r"User (\S+?)(?::\S*)? took [\d.]+ seconds to start")
    for line in text.splitlines():
        m = LOG_LINE.match(line)
        if not m:
            continue
        stamp = (
            datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f")
            .replace(tzinfo=datetime.timezone.utc)
            .timestamp()
        )
        for key, pattern in (("started", starting), ("answered", took)):
            hit = pattern.search(m.group(2))
            if hit:
                marks.setdefault(hit.group(1), {})[key] = stamp
    return marks


def hub_metrics(admin: HubUser, token: str) -> dict[str, float]:
    r = admin.http.get(
        f"{admin.dep.url}/hub/metrics", headers={"Authorization": f"token {token}"}, timeout=30
    )
    r.raise_for_status()
    wanted = {
        'jupyterhub_server_spawn_duration_seconds_sum{status="success"}': "spawn_sum",
        'jupyterhub_server_spawn_duration_seconds_count{status="success"}': "spawn_count",
        'jupyterhub_server_spawn_duration_seconds_count{status="throttled"}': "throttled",
        'jupyterhub_proxy_add_duration_seconds_sum{status="success"}': "route_sum",
        'jupyterhub_proxy_add_duration_seconds_count{status="success"}': "route_count",
    }
    values: dict[str, float] = dict.fromkeys(wanted.values(), 0.0)
    for line in r.text.splitlines():
        key, _, value = line.rpartition(" ")
        if key in wanted:
            values[wanted[key]] = float(value)
    return values


def phases(sample: Sample, log: dict[str, float]) -> dict[str, float]:
    m = sample.marks
    started = log.get("started", m["requested"])
    answered = log.get("answered", m["ready"])
    return {
        "login": m["login"] - m["start"],
        "create": started - m["login"],
        "boot": answered - started,
        "route": m["ready"] - answered,
        "kernel": m["kernel"] - m["ready"],
        "execute": m["execute"] - m["kernel"],
        "total": m["execute"] - m["start"],
    }


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def burst(variant: Variant, n: int, admin: HubUser, token: str, prestart: bool = False) -> str:
    dep = variant.dep
    assert dep is not None
    names = [f"bench{i}" for i in range(n)]
    if prestart:  # the admin started everyone's server before the lecture: `hostkit users start`
        dep.cli("users", "start", *names)
    before = hub_metrics(admin, token)
    hub_cpu = container_cpu_seconds(dep.hub_container())
    since = time.time()
    with ThreadPoolExecutor(max_workers=n) as pool:
        samples = list(pool.map(lambda name: one(dep, name), names))
    hub_cpu = container_cpu_seconds(dep.hub_container()) - hub_cpu
    after = hub_metrics(admin, token)
    # servers started ahead boot before the burst: their log lines are not this burst's
    log = {} if prestart else hub_log_marks(dep, since)
    stop_all(dep, names)
    good = [s for s in samples if not s.error]
    label = variant.name + ("+prestart" if prestart else "")
    lines = [f"{label:>10} {n:3} users: {len(samples) - len(good)} errors"]
    for s in samples:
        if s.error:
            lines.append(f"{'':15}{s.user}: {s.error}")
    if not good:
        return "\n".join(lines)
    table = [phases(s, log.get(s.user, {})) for s in good]
    for phase in PHASES:
        vals = [row[phase] for row in table]
        lines.append(
            f"{'':15}{phase:8} p50 {statistics.median(vals):6.2f}  p95 {pct(vals, 0.95):6.2f}"
            f"  max {max(vals):6.2f}"
        )
    cpu = [s.container_cpu for s in good]
    spawns = after["spawn_count"] - before["spawn_count"]
    routes = after["route_count"] - before["route_count"]
    lines.append(
        f"{'':15}CPU-s    container p50 {statistics.median(cpu):.2f} max {max(cpu):.2f}"
        f"  hub {hub_cpu / n:.2f}/spawn  total {statistics.median(cpu) + hub_cpu / n:.2f}/spawn"
    )
    ready_cpu = statistics.median(s.cpu_at_ready for s in good)
    lines.append(f"{'':15}CPU-s    container at ready p50 {ready_cpu:.2f} (the rest: kernel and 1+1)")
    lines.append(f"{'':15}memory   container p50 {statistics.median(s.container_mib for s in good):.0f} MiB")
    lines.append(
        f"{'':15}hub metrics: spawn mean "
        f"{(after['spawn_sum'] - before['spawn_sum']) / max(1, spawns):.2f} s"
        f"  route mean {(after['route_sum'] - before['route_sum']) / max(1, routes):.3f} s"
        f"  throttled {after['throttled'] - before['throttled']:.0f}"
    )
    return "\n".join(lines)


def deploy(variant: Variant, root: Path, users: int) -> None:
    dep = new_deployment(root / variant.name)
    # the default stack's limits, not the integration tests' smaller ones
    for key in ("HOSTKIT_MEM_LIMIT", "HOSTKIT_CPU_LIMIT"):
        dep.settings.pop(key, None)
    dep.settings.update(shipped_images())
    dep.settings.update(variant.settings)
    print(f"deploying {variant.name} as {dep.prefix}", flush=True)
    dep.up("--no-build")  # never rebuild a shared image from a bench run
    variant.dep = dep
    with ThreadPoolExecutor(max_workers=4) as pool:  # each call runs docker compose: slow alone
        names = [f"bench{i}" for i in range(users)]
        list(pool.map(lambda name: dep.cli("users", "create", name, "--password", PASSWORD), names))


def shipped_images() -> dict[str, str]:
    """The images `hostkit stack build` makes from this tree (named, as --no-build needs)."""
    versions = parse_versions((stack_assets_dir() / "versions.env").read_text())
    return {
        "HOSTKIT_HUB_IMAGE": f"hostkit/jupyterhub:{versions['JUPYTERHUB_VERSION']}",
        "HOSTKIT_NGINX_IMAGE": f"hostkit/nginx:{versions['DEBIAN_SUITE']}",
        "HOSTKIT_NOTEBOOK_IMAGE": "hostkit/singleuser:full",
    }


def parse_variant(text: str) -> Variant:
    name, _, rest = text.partition(":")
    settings = dict(item.split("=", 1) for item in rest.split(",") if item)
    return Variant(name, settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--users", type=int, nargs="+", default=[1, 10, 20, 40])
    parser.add_argument(
        "--variant",
        action="append",
        type=parse_variant,
        help="NAME[:KEY=VALUE,...] a stack with these settings (repeatable; default: one, as shipped)",
    )
    parser.add_argument(
        "--prestart",
        action="store_true",
        help="also measure each burst with the servers started ahead (`hostkit users start`)",
    )
    parser.add_argument("--keep", action="store_true", help="leave the stacks running")
    args = parser.parse_args()
    variants: list[Variant] = args.variant or [Variant("default", {})]
    with tempfile.TemporaryDirectory(prefix="hostkit-bench-") as tmp:
        try:
            for variant in variants:
                deploy(variant, Path(tmp), max(args.users))
            admins = {}
            for variant in variants:
                assert variant.dep is not None
                admin = HubUser(variant.dep, "admin", variant.dep.admin_password)
                assert admin.login(), "admin cannot log in"
                admins[variant.name] = (admin, admin.token())
            print("login -> ready -> 1+1 through nginx, seconds (phases: see bench/spawn.py)")
            for n in args.users:
                for variant in variants:
                    print(burst(variant, n, *admins[variant.name]), flush=True)
                    if args.prestart:
                        print(burst(variant, n, *admins[variant.name], prestart=True), flush=True)
        finally:
            if not args.keep:
                for variant in variants:
                    if variant.dep is not None:
                        variant.dep.remove()


if __name__ == "__main__":
    main()
