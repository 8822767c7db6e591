"""Host-level probes: distro, privileges, capacity."""

from __future__ import annotations

import math

from hostkit.doctor import ProbeContext
from hostkit.probes import probe
from hostkit.probes.storage import data_root, statvfs_nearest
from hostkit.results import Outcome

GIB = 1024**3


@probe("distro_supported")
def distro_supported(ctx: ProbeContext) -> Outcome:
    d = ctx.facts.distro()
    if d.supported:
        return Outcome.ok(f"{d.name} ({d.family} family, {d.package_manager})")
    return Outcome.fail(
        d.reason,
        expected="CentOS 7/Stream 8-9, RHEL/Rocky/Alma/Oracle 8+, Fedora, Debian 11-13, Ubuntu 20.04+",
        actual=d.name,
    )


@probe("root")
def running_as_root(ctx: ProbeContext) -> Outcome:
    if ctx.facts.is_root():
        return Outcome.ok("running as root: every check can look everywhere")
    return Outcome.warn("not root: checks that need root are skipped", hint="sudo hostkit doctor")


def _total_bytes(ctx: ProbeContext, path: str) -> int:
    st = statvfs_nearest(ctx, path)
    return st.f_blocks * st.f_frsize


@probe("resources")
def resources(ctx: ProbeContext) -> Outcome:
    s = ctx.settings
    res = ctx.facts.resources()
    need_mem = 2 * GIB + s.users * s.mem_per_user_gib * GIB
    need_cpus = max(1, math.ceil(s.users / max(1, s.users_per_cpu)))
    need_disk = s.users * s.disk_per_user_gib * GIB
    root = data_root(ctx)
    disk = _total_bytes(ctx, root)
    have = (f"{res['cpus']} CPUs, {res['memory_bytes'] / GIB:.1f} GiB RAM, "
            f"{disk / GIB:.0f} GiB disk at {root}")
    want = (f">= {need_cpus} CPUs, >= {need_mem / GIB:.1f} GiB RAM, >= {need_disk / GIB:.0f} GiB disk "
            f"for {s.users} users")
    if res["memory_bytes"] < need_mem or res["cpus"] < need_cpus or disk < need_disk:
        return Outcome.fail(
            f"{have}: short for {s.users} concurrent users",
            expected=want,
            actual=have,
            hint="lower per-user mem_limit/cpu_limit, or set `users` in "
            "/etc/hostkit/hostkit.toml to what this host can carry",
        )
    return Outcome.ok(f"{have} is enough for {s.users} users", expected=want, actual=have)
