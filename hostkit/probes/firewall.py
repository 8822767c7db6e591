"""firewalld probes: running, docker0's zone, backend, the public port (facts over D-Bus)."""

from __future__ import annotations

from hostkit.doctor import ProbeContext
from hostkit.errors import HostkitError
from hostkit.facts import version_tuple
from hostkit.probes import probe
from hostkit.results import Outcome


def _not_running(ctx: ProbeContext) -> Outcome | None:
    fw = ctx.facts.firewalld()
    if not fw.running:
        return Outcome.skip(f"firewalld {fw.state}: nothing to check")
    if not ctx.facts.is_root():
        return Outcome.skip("needs root to ask firewalld")
    return None


@probe("firewalld_running")
def firewalld_running(ctx: ProbeContext) -> Outcome:
    fw = ctx.facts.firewalld()
    if fw.running:
        return Outcome.ok(f"firewalld running ({fw.backend} backend; asked over {fw.via})")
    return Outcome.skip(f"firewalld {fw.state}")


@probe("docker0_zone")
def docker0_zone(ctx: ProbeContext) -> Outcome:
    early = _not_running(ctx)
    if early:
        return early
    zone = ctx.facts.firewalld_docker0_zone()
    try:
        modern = version_tuple(ctx.facts.docker_version()) >= (20, 10, 0)
    except HostkitError:
        modern = True  # any Docker installed today is 20.10+
    if modern:
        if zone == "trusted":
            return Outcome.fail(
                "docker0 is in the trusted zone: Docker >= 20.10 fails to start with ZONE_CONFLICT",
                expected="docker",
                actual=zone,
                # never `firewall-cmd --reload`: before Docker 28.3.3 it drops Docker's rules
                hint="hostkit bootstrap, or: firewall-cmd --permanent --zone=trusted "
                "--remove-interface=docker0 && firewall-cmd --zone=docker --change-interface=docker0",
            )
        if zone != "docker":
            return Outcome.warn(
                f"docker0 is in zone {zone}, not Docker's own `docker` zone",
                expected="docker",
                actual=zone,
                hint="restart Docker after firewalld so it re-registers docker0",
            )
        return Outcome.ok("docker0 in Docker's own `docker` zone", expected="docker", actual=zone)
    if zone != "trusted":
        return Outcome.fail(
            f"Docker < 20.10 needs docker0 in trusted (it is in {zone})",
            expected="trusted",
            actual=zone,
            hint="hostkit bootstrap, or: firewall-cmd --permanent --zone=trusted --add-interface=docker0 "
            "&& firewall-cmd --permanent --zone=trusted --add-masquerade && "
            "firewall-cmd --zone=trusted --change-interface=docker0 && "
            "firewall-cmd --zone=trusted --add-masquerade",
        )
    return Outcome.ok("docker0 in trusted (Docker < 20.10)")


@probe("firewalld_backend")
def firewalld_backend(ctx: ProbeContext) -> Outcome:
    fw = ctx.facts.firewalld()
    if not fw.running:
        return Outcome.skip(f"firewalld {fw.state}")
    try:
        old = version_tuple(ctx.facts.docker_version()) < (20, 10, 0)
    except HostkitError:
        old = False
    if fw.backend == "nftables" and old:
        return Outcome.fail(
            "nftables backend with Docker < 20.10 breaks container DNS and egress",
            actual=fw.backend,
            hint="set FirewallBackend=iptables in /etc/firewalld/firewalld.conf or upgrade Docker",
        )
    return Outcome.ok(f"{fw.backend} backend")


@probe("firewalld_port")
def firewalld_port(ctx: ProbeContext, port: int = 9090) -> Outcome:
    early = _not_running(ctx)
    if early:
        return early
    zone, ports = ctx.facts.firewalld_default_zone_ports()
    if f"{port}/tcp" in ports:
        return Outcome.ok(f"{port}/tcp open in zone {zone}")
    return Outcome.fail(
        f"{port}/tcp not open in zone {zone}",
        expected=f"{port}/tcp",
        actual=" ".join(ports) or "no ports",
        hint=f"hostkit bootstrap, or: firewall-cmd --permanent --zone={zone} --add-port={port}/tcp && "
        f"firewall-cmd --zone={zone} --add-port={port}/tcp (Docker-published ports bypass zones, "
        "other hosts' rules may not)",
    )


@probe("node_guard")
def node_guard(ctx: ProbeContext) -> Outcome:
    """On a swarm worker: the nftables table that keeps users' servers off the node."""
    from hostkit.subsystems import node_guard as guard
    from hostkit.subsystems import swarm

    try:
        state = swarm.swarm_state(ctx.host)
    except HostkitError as exc:
        return Outcome.skip(f"Docker does not answer: {exc.message}")
    if not state.active or state.is_manager:
        return Outcome.skip("not a swarm worker: no users' servers run here as swarm tasks")
    if guard.table_loaded(ctx.host):
        return Outcome.ok(f"nftables table {guard.TABLE} keeps users' servers off this node's "
                          "ports, cloud metadata and the swarm's ports")
    return Outcome.fail(f"no nftables table {guard.TABLE}: users' servers reach this node's own "
                        "ports, cloud metadata and the swarm's ports on every node",
                        hint=f"systemctl enable --now {guard.UNIT}, or run `hostkit cluster join` "
                        "again")
