"""Storage probes: the data-root's filesystem, d_type, free space and inodes, log sizes."""

from __future__ import annotations

import os

from hostkit.doctor import ProbeContext
from hostkit.errors import HostkitError
from hostkit.probes import probe
from hostkit.results import Outcome

GIB = 1024**3
MIB = 1024**2


def data_root(ctx: ProbeContext) -> str:
    try:
        return str(ctx.facts.docker_info().get("DockerRootDir") or "/var/lib/docker")
    except HostkitError:
        return ctx.settings.data_root or "/var/lib/docker"


def statvfs_nearest(ctx: ProbeContext, path: str) -> os.statvfs_result:
    """statvfs of `path`, or of its nearest existing parent (the disk it would land on)."""
    real = ctx.host.path(path)
    while not real.exists() and real != real.parent:
        real = real.parent
    return os.statvfs(real)


@probe("storage_driver")
def storage_driver(ctx: ProbeContext) -> Outcome:
    info = ctx.facts.docker_info()
    driver = info.get("Driver", "")
    status = dict(info.get("DriverStatus") or [])
    backing = status.get("Backing Filesystem", "?")
    dtype = status.get("Supports d_type")
    actual = f"{driver} on {backing}, d_type {dtype or '?'}"
    if driver not in ("overlay2", "overlayfs", "btrfs", "zfs"):
        return Outcome.fail(
            f"storage driver {driver}",
            expected="overlay2",
            actual=actual,
            hint="move the data-root to an ext4 or xfs (ftype=1) filesystem",
        )
    if dtype == "false":
        return Outcome.fail(
            f"{backing} under {data_root(ctx)} lacks d_type",
            expected="d_type true",
            actual=actual,
            hint="xfs needs ftype=1 (mkfs.xfs -n ftype=1): move the "
            "data-root with hostkit bootstrap --data-root",
        )
    return Outcome.ok(actual)


@probe("storage_free")
def storage_free(ctx: ProbeContext, min_free_gib: float = 10.0, min_free_inodes_pct: float = 5.0) -> Outcome:
    root = data_root(ctx)
    st = statvfs_nearest(ctx, root)
    free = st.f_bavail * st.f_frsize
    inodes_pct = 100.0 * st.f_favail / st.f_files if st.f_files else 100.0
    actual = f"{free / GIB:.1f} GiB free, {inodes_pct:.0f}% inodes free on {root}"
    if free < min_free_gib * GIB or inodes_pct < min_free_inodes_pct:
        return Outcome.fail(
            actual,
            expected=f">= {min_free_gib:g} GiB and >= {min_free_inodes_pct:g}% inodes",
            actual=actual,
            hint="docker system prune (unused images), or move the data-root to a "
            "bigger disk: hostkit bootstrap --data-root /srv/docker",
        )
    return Outcome.ok(actual)


@probe("container_logs")
def container_logs(ctx: ProbeContext, max_mib: int = 500) -> Outcome:
    root = data_root(ctx)
    if not ctx.facts.is_root():
        return Outcome.skip(f"needs root to read {root}/containers")
    big = []
    for log in ctx.host.glob(f"{root}/containers", "*/*-json.log"):
        try:
            size = ctx.host.stat(log).st_size
        except OSError:
            continue
        if size > max_mib * MIB:
            big.append((size, log))
    if big:
        big.sort(reverse=True)
        worst = ", ".join(f"{p.split('/')[-2][:12]} {s / MIB:.0f} MiB" for s, p in big[:3])
        return Outcome.fail(
            f"{len(big)} container log(s) over {max_mib} MiB: {worst}",
            hint="set log-opts max-size/max-file (hostkit bootstrap) and recreate "
            "those containers; rotation applies only to new containers",
        )
    return Outcome.ok(f"no container log over {max_mib} MiB")


@probe("volume_sources")
def volume_sources(ctx: ProbeContext) -> Outcome:
    """Named volumes of every container must live under the current data-root.

    After a data-root move done by hand, dockerd keeps each container's recorded volume path:
    a restart=always container then goes on writing to the old copy, or fails to start.
    """
    root = data_root(ctx).rstrip("/") + "/"
    stray = []
    # sparse: one list call, no inspect per container, which would race with containers
    # that go away meanwhile (the doctor's own throwaway ones among them)
    containers = ctx.facts.docker_client().containers.list(all=True, sparse=True)
    for c in containers:
        name = (c.attrs.get("Names") or ["?"])[0].lstrip("/")
        for mount in c.attrs.get("Mounts") or []:
            source = str(mount.get("Source", ""))
            if mount.get("Type") == "volume" and source and not source.startswith(root):
                stray.append(f"{name}: {mount.get('Name', '?')} at {source}")
    if stray:
        return Outcome.fail(f"{len(stray)} volume mount(s) outside {root}: " + "; ".join(stray[:5]),
                            expected=f"under {root}", actual="; ".join(stray),
                            hint="left behind by a data-root move: hostkit bootstrap --data-root "
                                 "rewrites them; or recreate those containers")
    return Outcome.ok(f"every volume of {len(containers)} container(s) is under {root}")


QUOTA_FIX = (
    "put the Docker data root on xfs mounted with prjquota (the `prjquota` option in /etc/fstab; "
    "an xfs root filesystem needs rootflags=prjquota on the kernel command line), restart "
    "Docker, then `hostkit stack up --set HOSTKIT_USER_DISK_QUOTA=10G`"
)


def mount_of(ctx: ProbeContext, path: str) -> tuple[str, list[str]]:
    """The filesystem type and mount options of the mount holding `path` (its nearest
    existing parent)."""
    real = ctx.host.path(path)
    while not real.exists() and real != real.parent:
        real = real.parent
    result = ctx.host.run(["findmnt", "-n", "-o", "FSTYPE,OPTIONS", "-T", str(real)], timeout=10)
    if not result.ok or not result.stdout.split():
        raise HostkitError(f"findmnt cannot tell which filesystem holds {path}: {result.stderr.strip()}")
    fstype, _, options = result.stdout.strip().partition(" ")
    return fstype, options.strip().split(",")


@probe("storage_user_quota")
def storage_user_quota(ctx: ProbeContext) -> Outcome:
    """Whether users' volumes have a size limit: Docker's local volume driver takes a `size`
    option (Docker 20.10+) only where the volumes live on xfs mounted with project quotas."""
    from hostkit.probes.stack import deployed_setting

    volumes = f"{data_root(ctx)}/volumes"
    fstype, options = mount_of(ctx, volumes)
    quota = deployed_setting(ctx, "HOSTKIT_USER_DISK_QUOTA")
    enforcing = fstype == "xfs" and bool({"prjquota", "pquota"} & set(options))
    what = f"{fstype} with project quotas" if enforcing else (
        f"{fstype} without project quotas (no prjquota)" if fstype == "xfs" else fstype)
    actual = f"{volumes} on {what}; HOSTKIT_USER_DISK_QUOTA={quota or 'off'}"
    if enforcing and quota:
        return Outcome.ok(f"users' volumes are limited to {quota} each", actual=actual)
    if enforcing:
        return Outcome.warn(
            f"{volumes} can enforce a per-user disk quota, but HOSTKIT_USER_DISK_QUOTA is off: "
            "one user can fill the data root",
            actual=actual,
            hint="hostkit stack up --set HOSTKIT_USER_DISK_QUOTA=10G (volumes created from then on)",
        )
    if quota:
        return Outcome.fail(
            f"HOSTKIT_USER_DISK_QUOTA={quota}, but {what} cannot enforce it: Docker refuses to create "
            "users' volumes (\"quota size requested but no quota support\")",
            actual=actual,
            hint=QUOTA_FIX + "; or unset HOSTKIT_USER_DISK_QUOTA",
        )
    return Outcome.warn(
        f"{what} under {volumes} cannot enforce a per-user disk quota: one user can fill the data root",
        actual=actual,
        hint=QUOTA_FIX,
    )
