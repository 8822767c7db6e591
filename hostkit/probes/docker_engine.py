"""Docker engine probes: installed, answering, recent enough, compose, `docker info` warnings."""

from __future__ import annotations

from hostkit.doctor import ProbeContext
from hostkit.errors import HostkitError
from hostkit.facts import version_tuple
from hostkit.probes import probe
from hostkit.results import Outcome
from hostkit.subsystems.docker_install import compose_install_hint


@probe("docker_installed")
def docker_installed(ctx: ProbeContext) -> Outcome:
    docker = ctx.facts.docker_binary()
    dockerd = ctx.host.which("dockerd")
    if docker and dockerd:
        return Outcome.ok(f"docker CLI {docker}, daemon {dockerd}")
    missing = " and ".join(n for n, p in (("docker", docker), ("dockerd", dockerd)) if not p)
    return Outcome.fail(f"{missing} not found on PATH", expected="docker and dockerd installed")


@probe("docker_daemon")
def docker_daemon(ctx: ProbeContext) -> Outcome:
    try:
        info = ctx.facts.docker_info()
    except HostkitError as exc:
        return Outcome.fail(exc.message, hint=exc.hint)
    return Outcome.ok(
        f"dockerd {info.get('ServerVersion')} answers "
        f"({info.get('Containers', 0)} containers, {info.get('Images', 0)} images)"
    )


@probe("docker_version")
def docker_version(ctx: ProbeContext, minimum: str = "20.10", firewalld_safe: str = "28.3.3") -> Outcome:
    version = ctx.facts.docker_version()
    have = version_tuple(version)
    if have < version_tuple(minimum):
        return Outcome.fail(
            f"Docker {version} is older than {minimum}",
            expected=f">= {minimum}",
            actual=version,
            hint="upgrade Docker: hostkit bootstrap installs a current one",
        )
    fw = ctx.facts.firewalld()
    if fw.running and have < version_tuple(firewalld_safe):
        return Outcome.warn(
            f"Docker {version} with firewalld running: `firewall-cmd --reload` drops Docker's rules "
            "(CVE-2025-54388)",
            expected=f">= {firewalld_safe}",
            actual=version,
            hint=f"upgrade Docker to {firewalld_safe}+; until then restart Docker after every "
            "firewalld reload",
        )
    return Outcome.ok(f"Docker {version}", expected=f">= {minimum}", actual=version)


@probe("compose_available")
def compose_available(ctx: ProbeContext) -> Outcome:
    compose = ctx.facts.compose()
    if compose is None:
        return Outcome.fail(
            "neither `docker compose` (v2) nor `docker-compose` (v1) found",
            hint=compose_install_hint(ctx.facts.distro()),
        )
    return Outcome.ok(f"{' '.join(compose.argv)} {compose.version} ({compose.flavour})")


# `docker info` warning text -> the fix an admin should apply
_WARNING_FIXES = (
    (
        "bridge-nf-call-iptables",
        "modprobe br_netfilter && sysctl -w net.bridge.bridge-nf-call-iptables=1 "
        "net.bridge.bridge-nf-call-ip6tables=1 (persist in /etc/sysctl.d/)",
    ),
    ("IPv4 forwarding is disabled", "sysctl -w net.ipv4.ip_forward=1 (persist in /etc/sysctl.d/)"),
    (
        "without encryption",
        "remove the tcp:// host from daemon.json/unit or protect it with TLS (--tlsverify)",
    ),
    (
        "No swap limit support",
        "enable the memory cgroup's swap accounting (kernel cmdline swapaccount=1) or use cgroup v2",
    ),
    (
        "No memory limit support",
        "enable the memory cgroup (cgroup_enable=memory) so per-user mem_limit works",
    ),
    ("No cpu cfs", "enable CFS quota in the kernel so per-user cpu_limit works"),
    ("devicemapper", "switch the storage driver to overlay2"),
    ("aufs", "switch the storage driver to overlay2"),
    ("loopback", "switch the storage driver to overlay2"),
)


def fix_for_warning(warning: str) -> str:
    for needle, fix in _WARNING_FIXES:
        if needle.lower() in warning.lower():
            return fix
    return "see the Docker documentation for this warning"


@probe("docker_info_warnings")
def docker_info_warnings(ctx: ProbeContext) -> Outcome:
    warnings = [w for w in (ctx.facts.docker_info().get("Warnings") or []) if w.strip()]
    if not warnings:
        return Outcome.ok("`docker info` reports no warnings")
    lines = [f"{w.strip()} -> {fix_for_warning(w)}" for w in warnings]
    return Outcome.fail(
        f"{len(warnings)} warning(s) from `docker info`",
        actual="; ".join(w.strip() for w in warnings),
        hint=" | ".join(lines),
    )
