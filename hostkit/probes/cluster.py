"""Probes of a Swarm cluster, run on the manager: the swarm ports between the nodes, the
nodes' clocks, and the single-user image on every worker. On a host that is not a swarm
manager they SKIP.

The manager reaches a worker's ports directly, and asks each worker (over the same ssh
`hostkit cluster sync-images` uses) to reach the manager's: a closed port is named with
its node, in both directions. UDP (7946, 4789) cannot be told open by connecting; a node
whose gossip is cut shows as down in the node list, which the first check reports too.
"""

from __future__ import annotations

import shlex
import time
from typing import Optional

from hostkit.doctor import ProbeContext
from hostkit.errors import HostkitError
from hostkit.probes import probe
from hostkit.results import Outcome
from hostkit.subsystems import swarm

GOSSIP = 7946
MANAGEMENT = 2377


def _cluster(ctx: ProbeContext) -> tuple[Optional[Outcome], list[swarm.Node], swarm.Node]:
    """(a SKIP when this is no manager, the other nodes, this node)."""
    try:
        state = swarm.swarm_state(ctx.host)
    except HostkitError as exc:
        return Outcome.skip(f"Docker does not answer: {exc.message}"), [], _nobody()
    if not (state.active and state.is_manager):
        return Outcome.skip("not a swarm manager: nothing to check"), [], _nobody()
    nodes = swarm.read_nodes(ctx.host)
    me = next((n for n in nodes if n.id == state.node_id), _nobody())
    if not me.addr:
        me = swarm.Node(me.id, me.hostname, me.role, me.availability, me.state, state.node_addr,
                        me.memory_bytes, me.cpus, me.leader)
    return None, [n for n in nodes if n.id != state.node_id], me


def _nobody() -> swarm.Node:
    return swarm.Node("", "", "", "", "", "", 0, 0.0)


def _reach_from(ctx: ProbeContext, node: swarm.Node, ssh_user: str, address: str, port: int) -> str:
    """From the node (over ssh), whether address:port answers; "" when it does."""
    script = f"timeout 5 bash -c {shlex.quote(f'exec 3<>/dev/tcp/{address}/{port}')}"
    res = ctx.host.run([*swarm.ssh_argv(ssh_user, node.addr), script], timeout=30)
    if res.returncode == 255:
        raise HostkitError(f"ssh {node.hostname}: {res.stderr.strip()}")
    return "" if res.ok else (res.stderr.strip().splitlines() or ["no answer"])[-1]


@probe("cluster_ports")
def cluster_ports(ctx: ProbeContext, ssh_user: str = "root") -> Outcome:
    early, others, me = _cluster(ctx)
    if early:
        return early
    closed, unreached = [], []
    for node in others:
        if node.state != "ready":
            closed.append(f"{node.hostname} ({node.addr}) is {node.state}")
        ports = [GOSSIP] + ([MANAGEMENT] if node.role == "manager" else [])
        for port in ports:
            why = ctx.host.tcp_connect(node.addr, port)
            if why:
                closed.append(f"{node.hostname} ({node.addr}): {port}/tcp closed from "
                              f"{me.hostname} ({why})")
        if node.state != "ready":
            continue
        for port in (MANAGEMENT, GOSSIP):
            try:
                why = _reach_from(ctx, node, ssh_user, me.addr, port)
            except HostkitError as exc:
                unreached.append(exc.message)
                break
            if why:
                closed.append(f"{me.hostname} ({me.addr}): {port}/tcp closed from {node.hostname}")
    if closed:
        return Outcome.fail("; ".join(closed), hint="on that node: hostkit cluster join (or init on "
                            "the manager) --peer ADDR for every server; see hostkit cluster status")
    if unreached:
        return Outcome.warn("checked from the manager only: " + "; ".join(unreached),
                            hint="the manager logs in to the workers with a key: ssh-copy-id")
    return Outcome.ok(f"{GOSSIP}/tcp and {MANAGEMENT}/tcp open between {me.hostname} and "
                      f"{len(others)} node(s) (UDP is not probed)")


def clock_offset(before: float, remote: float, after: float) -> float:
    """The node's clock minus ours, taking the midpoint of the round trip as the moment read."""
    return remote - (before + after) / 2


@probe("cluster_clocks")
def cluster_clocks(ctx: ProbeContext, ssh_user: str = "root", max_offset_s: float = 1.0) -> Outcome:
    early, others, _me = _cluster(ctx)
    if early:
        return early
    off, unreached = [], []
    worst = 0.0
    for node in others:
        if node.state != "ready":
            continue
        before = time.time()
        res = ctx.host.run([*swarm.ssh_argv(ssh_user, node.addr), "date +%s.%N"], timeout=30)
        after = time.time()
        if not res.ok:
            unreached.append(f"{node.hostname}: {res.stderr.strip() or 'ssh failed'}")
            continue
        offset = clock_offset(before, float(res.stdout.strip()), after)
        worst = max(worst, abs(offset))
        if abs(offset) > max_offset_s:
            off.append(f"{node.hostname} is {offset:+.2f}s off")
    if off:
        return Outcome.fail("; ".join(off), expected=f"within {max_offset_s:g}s",
                            hint="run chrony or systemd-timesyncd on every node (TLS between "
                            "nodes and the hub's activity times rely on it)")
    if unreached:
        return Outcome.warn("clocks not read: " + "; ".join(unreached), hint="ssh-copy-id to the workers")
    return Outcome.ok(f"clocks of {len(others)} node(s) within {worst:.2f}s of this one")


@probe("cluster_images")
def cluster_images(ctx: ProbeContext, ssh_user: str = "root", deploy_dir: str = "/opt/hostkit") -> Outcome:
    early, others, _me = _cluster(ctx)
    if early:
        return early
    env_path = f"{deploy_dir}/.env"
    from hostkit.stack import parse_env

    env = parse_env(ctx.host.read_text(env_path)) if ctx.host.exists(env_path) else {}
    image = env.get("HOSTKIT_NOTEBOOK_IMAGE", "hostkit/singleuser:full")
    want = swarm.image_id(ctx.host, image)
    if want is None:
        return Outcome.fail(f"{image} is not on the manager", hint="hostkit stack build")
    bad = []
    workers = [n for n in others if n.role == "worker" and n.state == "ready"]
    for node in workers:
        try:
            have = swarm.image_id(ctx.host, image, swarm.ssh_argv(ssh_user, node.addr))
        except HostkitError as exc:
            bad.append(f"{node.hostname}: {exc.message}")
            continue
        if have != want:
            bad.append(f"{node.hostname}: {'missing' if have is None else 'a different build'}")
    if bad:
        return Outcome.fail(f"{image}: " + "; ".join(bad), hint="hostkit cluster sync-images")
    return Outcome.ok(f"{image} on all {len(workers)} ready worker(s), the same as here")
