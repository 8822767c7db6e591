"""Probes of a Swarm cluster, run on the manager: the swarm ports between the nodes, the
nodes' clocks, and the single-user image on every worker. On a host that is not a swarm
manager they SKIP.

The manager reaches a worker's ports directly, and asks each worker (over the same ssh
`hostkit cluster sync-images` uses) to reach the manager's: a closed port is named with
its node, in both directions. UDP (7946, 4789) cannot be told open by connecting, and
both ports are held by dockerd and the kernel: `cluster_udp` reads every node's firewalld
rules instead, and `cluster_overlay` sends the overlay's own traffic (VXLAN over 4789/udp)
from the hub to a test server on every worker. `cluster_mtu` compares the underlay MTU the
overlay was built for with every node's uplink.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Optional

from hostkit.doctor import ProbeContext
from hostkit.errors import HostkitError
from hostkit.probes import probe
from hostkit.results import Outcome
from hostkit.stack import ENV_DEFAULTS
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


def judge_clock(before: float, remote: float, after: float, max_offset_s: float) -> str:
    """'within', 'off' or 'unsure': the node's clock was read somewhere in [before, after],
    so its offset is only known to half the round trip. A loaded host's slow ssh login must
    not pass for a clock that is off, nor hide one that is."""
    offset, half = abs(clock_offset(before, remote, after)), (after - before) / 2
    if offset - half > max_offset_s:
        return "off"
    return "within" if offset + half <= max_offset_s else "unsure"


CLOCK_SAMPLES = 3  # the quickest round trip of these is judged


@probe("cluster_clocks")
def cluster_clocks(ctx: ProbeContext, ssh_user: str = "root", max_offset_s: float = 1.0) -> Outcome:
    early, others, _me = _cluster(ctx)
    if early:
        return early
    off, unsure, unreached = [], [], []
    worst = 0.0
    for node in others:
        if node.state != "ready":
            continue
        samples = []
        for _ in range(CLOCK_SAMPLES):
            before = time.time()
            res = ctx.host.run([*swarm.ssh_argv(ssh_user, node.addr), "date +%s.%N"], timeout=30)
            after = time.time()
            if not res.ok:
                break
            samples.append((after - before, before, float(res.stdout.strip()), after))
        if not samples:
            unreached.append(f"{node.hostname}: {res.stderr.strip() or 'ssh failed'}")
            continue
        _rtt, before, remote, after = min(samples)
        offset = clock_offset(before, remote, after)
        worst = max(worst, abs(offset))
        verdict = judge_clock(before, remote, after, max_offset_s)
        if verdict == "off":
            off.append(f"{node.hostname} is {offset:+.2f}s off")
        elif verdict == "unsure":
            unsure.append(f"{node.hostname} reads {offset:+.2f}s, but the quickest of "
                          f"{CLOCK_SAMPLES} ssh round trips took {after - before:.1f}s")
    if off:
        return Outcome.fail("; ".join(off), expected=f"within {max_offset_s:g}s",
                            hint="run chrony or systemd-timesyncd on every node (TLS between "
                            "nodes and the hub's activity times rely on it)")
    if unreached or unsure:
        return Outcome.warn("; ".join(["clocks not read: " + "; ".join(unreached)] * bool(unreached)
                                      + ["cannot tell: " + "; ".join(unsure)] * bool(unsure)),
                            hint="ssh-copy-id to the workers; run the doctor again when the "
                            "manager is less loaded")
    return Outcome.ok(f"clocks of {len(others)} node(s) within {worst:.2f}s of this one")


@probe("cluster_images")
def cluster_images(ctx: ProbeContext, ssh_user: str = "root", deploy_dir: str = "/opt/hostkit") -> Outcome:
    early, others, _me = _cluster(ctx)
    if early:
        return early
    image = _stack_env(ctx, deploy_dir).get("HOSTKIT_NOTEBOOK_IMAGE", "hostkit/singleuser:full")
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


# ---- every node's own host checks -----------------------------------------------------------
# The doctor's host groups, as a node runs them; the public port is the manager's alone (nginx).
NODE_CHECKS = ("host", "docker", "daemon", "storage", "firewall", "dns", "net")
NOT_ON_NODES = ("firewall.public-port", "net.public-port")
NODE_DOCTOR = ("hostkit doctor --format json "
               + " ".join(f"--only {c}" for c in NODE_CHECKS)
               + " " + " ".join(f"--skip {c}" for c in NOT_ON_NODES))


def node_findings(hostname: str, report: dict[str, Any]) -> tuple[list[str], list[str], int]:
    """(failures, warnings, passed) of one node's doctor report, each named with the node."""
    failed, warned, passed = [], [], 0
    for check in report.get("checks") or []:
        status, what = check["status"], f"{hostname}: {check['id']} {check['summary']}"
        fix = f" (fix there: {check['hint']})" if check.get("hint") else ""
        if status in ("fail", "error"):
            failed.append(what + fix)
        elif status == "warn":
            warned.append(what)
        elif status == "pass":
            passed += 1
    return failed, warned, passed


NodeReport = tuple[Optional[dict[str, Any]], str]  # (the node's doctor report, why none)


def _node_report(ctx: ProbeContext, node: swarm.Node, ssh_user: str) -> NodeReport:
    res = ctx.host.run([*swarm.ssh_argv(ssh_user, node.addr), NODE_DOCTOR], timeout=240)
    if res.returncode == 255:
        return None, f"{node.hostname}: ssh failed ({res.stderr.strip()[-200:]})"
    if res.returncode == 127:
        return None, f"{node.hostname}: hostkit is not installed there, its host checks were not run"
    try:
        return json.loads(res.stdout), ""
    except ValueError:
        said = (res.stderr or res.stdout).strip()[-200:]
        return None, f"{node.hostname}: the doctor gave no report ({said})"


@probe("cluster_hosts")
def cluster_hosts(ctx: ProbeContext, ssh_user: str = "root") -> Outcome:
    """Every other node's own host checks (Docker, daemon.json, storage, firewalld, DNS,
    egress), run there by its hostkit over ssh: one place to read the whole cluster."""
    early, others, _me = _cluster(ctx)
    if early:
        return early
    ready = [n for n in others if n.state == "ready"]
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(ready)))) as pool:
        reports = list(pool.map(lambda n: (n, *_node_report(ctx, n, ssh_user)), ready))
    failed, warned, unread, passed = [], [], [], 0
    unread += [f"{n.hostname} is {n.state}: not checked" for n in others if n.state != "ready"]
    for node, report, why in reports:
        if report is None:
            unread.append(why)
            continue
        f, w, p = node_findings(node.hostname, report)
        failed += f
        warned += w
        passed += p
    if failed:
        return Outcome.fail("; ".join(failed + warned + unread),
                            hint="on that node: hostkit cluster join (it converges Docker, "
                            "daemon.json and firewalld), or `hostkit doctor --fix` there")
    if warned or unread:
        return Outcome.warn("; ".join(warned + unread),
                            hint="install hostkit on every node (it joins with `hostkit cluster "
                            "join`) and let the manager log in with a key (ssh-copy-id)")
    return Outcome.ok(f"{passed} host checks pass on {', '.join(n.hostname for n in ready)}")


# ---- the overlay's own traffic: UDP rules, MTU, a server on every worker -------------------
UDP_PORTS = (GOSSIP, 4789)  # gossip's UDP half and VXLAN, the overlay's data
VXLAN_OVERHEAD = 50  # outer Ethernet 14 + IP 20 + UDP 8 + VXLAN 8
DOCKER_UNDERLAY_MTU = 1500  # what Docker assumes under an overlay without the mtu option
FIREWALL_SCRIPT = (
    "firewall-cmd --state >/dev/null 2>&1 || { echo NOFIREWALLD; exit 0; }; "
    "z=$(firewall-cmd --get-default-zone); "
    "echo \"TARGET $(firewall-cmd --permanent --zone=$z --get-target)\"; "
    "for p in $(firewall-cmd --zone=$z --list-ports); do echo \"PORT $p\"; done; "
    "firewall-cmd --zone=$z --list-rich-rules | sed 's/^/RULE /'"
)


@dataclass(frozen=True)
class FirewallView:
    """What firewalld of one node lets in (its default zone, runtime)."""

    running: bool
    target: str = ""
    ports: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()


def parse_firewall(text: str) -> FirewallView:
    if "NOFIREWALLD" in text:
        return FirewallView(False)
    target, ports, rules = "", [], []
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "TARGET":
            target = rest.strip()
        elif kind == "PORT":
            ports.append(rest.strip())
        elif kind == "RULE":
            rules.append(rest.strip())
    return FirewallView(True, target, tuple(ports), tuple(rules))


_UDP_RULE = re.compile(r'^rule family="ipv[46]" source address="([^"]+)" '
                       r'port port="(\d+)" protocol="udp" accept$')


def udp_open(view: FirewallView, source: str, port: int) -> bool:
    """Whether firewalld lets datagrams from source to port in."""
    if not view.running or view.target.upper() == "ACCEPT" or f"{port}/udp" in view.ports:
        return True
    for rule in view.rules:
        found = _UDP_RULE.match(rule)
        if found and int(found.group(2)) == port:
            try:
                if ipaddress.ip_address(source) in ipaddress.ip_network(found.group(1), strict=False):
                    return True
            except ValueError:
                continue
    return False


def udp_gaps(views: dict[str, tuple[swarm.Node, FirewallView]], nodes: list[swarm.Node]) -> list[str]:
    """"NODE (ADDR): PORT/udp not open to PEER (ADDR)" for every pair firewalld would drop."""
    gaps = []
    for node, view in views.values():
        for peer in nodes:
            shut = [f"{p}/udp" for p in UDP_PORTS if peer.id != node.id and not udp_open(view, peer.addr, p)]
            if shut:
                gaps.append(f"{node.hostname} ({node.addr}): {' and '.join(shut)} not open to "
                            f"{peer.hostname} ({peer.addr})")
    return gaps


def _on(ctx: ProbeContext, node: swarm.Node, me: swarm.Node, ssh_user: str, script: str) -> str:
    """A shell line's output here (the manager) or on a node over ssh."""
    argv = ["sh", "-c", script] if node.id == me.id else [*swarm.ssh_argv(ssh_user, node.addr), script]
    res = ctx.host.run(argv, timeout=30)
    if res.returncode == 255 and node.id != me.id:
        raise HostkitError(f"ssh {node.hostname}: {res.stderr.strip()}")
    if not res.ok:
        raise HostkitError(f"{node.hostname}: {res.stderr.strip() or 'failed'}")
    return res.stdout


@probe("cluster_udp")
def cluster_udp(ctx: ProbeContext, ssh_user: str = "root") -> Outcome:
    """7946/udp and 4789/udp open in every node's firewalld to every other node.

    UDP has no handshake and both ports are held by the kernel and dockerd, so no listener
    can stand in for them: this reads the rules. What it cannot see (a cloud security group,
    a router, nftables outside firewalld) the overlay check finds, by traffic."""
    early, others, me = _cluster(ctx)
    if early:
        return early
    nodes = [me, *others]
    views, unreached = {}, []
    for node in [me, *[n for n in others if n.state == "ready"]]:
        try:
            views[node.id] = (node, parse_firewall(_on(ctx, node, me, ssh_user, FIREWALL_SCRIPT)))
        except HostkitError as exc:
            unreached.append(exc.message)
    gaps = udp_gaps(views, nodes)
    if gaps:
        return Outcome.fail("; ".join(gaps), hint="on that node: hostkit cluster join (or init on the "
                            "manager) --peer ADDR for every server")
    if unreached:
        return Outcome.warn("rules not read: " + "; ".join(unreached), hint="ssh-copy-id to the workers")
    plain = [n.hostname for n, v in views.values() if not v.running]
    return Outcome.ok(f"{GOSSIP}/udp and 4789/udp open to every node in the firewalld rules of "
                      f"{len(views)} node(s)" + (f" (no firewalld on {', '.join(plain)})" if plain else ""))


def underlay_mtu(options: dict[str, str]) -> int:
    """The underlay MTU Docker builds the overlay for: its mtu option, else 1500 (the containers
    get that minus the VXLAN header, minus ESP's expansion when encrypted)."""
    return int(options.get("com.docker.network.driver.mtu") or DOCKER_UNDERLAY_MTU)


def mtu_problems(assumed: int, uplinks: dict[str, tuple[str, int]]) -> list[str]:
    """Nodes whose uplink (device, MTU) is smaller than the underlay the overlay assumes."""
    return [f"{node}: {dev} MTU {mtu} < {assumed} (the overlay's {assumed - VXLAN_OVERHEAD} + "
            f"{VXLAN_OVERHEAD} VXLAN)" for node, (dev, mtu) in sorted(uplinks.items()) if mtu < assumed]


def _uplink_script(addr: str) -> str:
    awk = "{split($4,a,\"/\"); if (a[1]==addr) print $2}"
    return (f"dev=$(ip -o addr show | awk -v addr={shlex.quote(addr)} {shlex.quote(awk)} | head -1); "
            "[ -n \"$dev\" ] && echo \"$dev $(cat /sys/class/net/$dev/mtu)\"")


@probe("cluster_mtu")
def cluster_mtu(ctx: ProbeContext, ssh_user: str = "root", deploy_dir: str = "/opt/hostkit") -> Outcome:
    early, others, me = _cluster(ctx)
    if early:
        return early
    network = _stack_env(ctx, deploy_dir).get("HOSTKIT_NETWORK", ENV_DEFAULTS["HOSTKIT_NETWORK"])
    res = ctx.host.run(["docker", "network", "inspect", "--format", "{{json .Options}}", network], timeout=30)
    if not res.ok:
        return Outcome.skip(f"no network {network} yet", hint="hostkit cluster init creates it")
    assumed = underlay_mtu(json.loads(res.stdout or "{}") or {})
    uplinks, unreached = {}, []
    for node in [me, *[n for n in others if n.state == "ready"]]:
        try:
            dev, mtu = _on(ctx, node, me, ssh_user, _uplink_script(node.addr)).split()
        except (HostkitError, ValueError) as exc:
            unreached.append(f"{node.hostname}: {getattr(exc, 'message', 'no device has ' + node.addr)}")
            continue
        uplinks[node.hostname] = (dev, int(mtu))
    problems = mtu_problems(assumed, uplinks)
    if problems:
        return Outcome.fail("; ".join(problems) + ": larger packets between nodes are dropped "
                            "(TLS handshakes and large outputs hang)",
                            hint=f"recreate {network} for the smallest uplink: hostkit stack down; docker "
                            f"network rm {network}; docker network create --driver overlay --attachable "
                            f"--opt com.docker.network.driver.mtu=N {network}")
    if unreached:
        return Outcome.warn("uplink MTU not read: " + "; ".join(unreached), hint="ssh-copy-id to the workers")
    smallest = min(m for _, m in uplinks.values())
    return Outcome.ok(f"overlay {network}: {assumed - VXLAN_OVERHEAD} + {VXLAN_OVERHEAD} VXLAN fits every "
                      f"node's uplink (smallest MTU {smallest}, {len(uplinks)} node(s))")


def _stack_env(ctx: ProbeContext, deploy_dir: str) -> dict[str, str]:
    from hostkit.stack import parse_env

    env_path = f"{deploy_dir}/.env"
    return parse_env(ctx.host.read_text(env_path)) if ctx.host.exists(env_path) else {}


PROBE_SERVICE = "hostkit-probe-"  # + the node's hostname
PROBE_PORT = 8099


def _probe_reply(ctx: ProbeContext, hub: str, target: str) -> str:
    """From the hub's container, GET http://target:PORT/ ; "" when it answers."""
    code = ("import sys,urllib.request\n"
            f"urllib.request.urlopen('http://{target}:{PROBE_PORT}/', timeout=5).read()\n")
    res = ctx.host.run(["docker", "exec", hub, "python3", "-c", code], timeout=30)
    return "" if res.ok else ((res.stderr.strip().splitlines() or ["no answer"])[-1])


def _task_address(ctx: ProbeContext, service: str, network: str, wait_s: float) -> tuple[str, str]:
    """(overlay address, "") of the service's running task, or ("", what went wrong)."""
    deadline = time.monotonic() + wait_s
    state = "not scheduled"
    while time.monotonic() < deadline:
        ids = ctx.host.run(["docker", "service", "ps", "-q", "--no-trunc", service],
                           timeout=30).stdout.split()
        if ids:
            found = ctx.host.run(["docker", "inspect", "--type", "task", ids[0]], timeout=30)
            task = json.loads(found.stdout or "[{}]")[0]
            status = task.get("Status") or {}
            state = f"{status.get('State')} {status.get('Err', '')}".strip()
            if status.get("State") == "running":
                for att in task.get("NetworksAttachments") or []:
                    if (att.get("Network") or {}).get("Spec", {}).get("Name") == network:
                        return str((att.get("Addresses") or [""])[0]).split("/")[0], ""
            if status.get("State") in ("failed", "rejected", "shutdown", "complete"):
                return "", state
        time.sleep(1)
    return "", f"did not start in {wait_s:g}s ({state})"


@probe("cluster_overlay")
def cluster_overlay(ctx: ProbeContext, deploy_dir: str = "/opt/hostkit", wait_s: float = 60) -> Outcome:
    """The hub reaches a test server on every ready worker over the stack's overlay: a
    short-lived service pinned to each worker (the single-user image's python serving
    HTTP), asked by name and by address from the hub's container, then removed."""
    early, others, _me = _cluster(ctx)
    if early:
        return early
    env = _stack_env(ctx, deploy_dir)
    network = env.get("HOSTKIT_NETWORK", ENV_DEFAULTS["HOSTKIT_NETWORK"])
    image = env.get("HOSTKIT_NOTEBOOK_IMAGE", ENV_DEFAULTS["HOSTKIT_NOTEBOOK_IMAGE"])
    project = swarm.stack_of(env)
    hub = ctx.host.run(["docker", "ps", "-q", "--filter", "label=com.docker.compose.service=jupyterhub",
                        "--filter", f"label=com.docker.compose.project={project}"], timeout=30).stdout.split()
    if not hub:
        return Outcome.skip("the hub is not running here", hint="hostkit stack up")
    workers = [n for n in others if n.role == "worker" and n.state == "ready"]
    if not workers:
        return Outcome.skip("no ready worker")
    failed, reached = [], []
    services = {n.hostname: PROBE_SERVICE + re.sub(r"[^A-Za-z0-9-]", "-", n.hostname)[:40] for n in workers}
    try:
        for node in workers:
            ctx.host.run(["docker", "service", "rm", services[node.hostname]], timeout=60)  # a leftover
            ctx.host.run(["docker", "service", "create", "--detach", "--name", services[node.hostname],
                          "--network", network, "--constraint", f"node.id=={node.id}",
                          "--endpoint-mode", "dnsrr", "--restart-condition", "none",
                          "--label", "org.hostkit.probe=overlay", "--limit-memory", "128M",
                          "--entrypoint", "python3", image, "-m", "http.server", str(PROBE_PORT)],
                         timeout=60, check=True)
        for node in workers:
            name = services[node.hostname]
            addr, why = _task_address(ctx, name, network, wait_s)
            if not addr:
                failed.append(f"{node.hostname}: the test server {why}")
                continue
            by_address = _probe_reply(ctx, hub[0], addr)
            by_name = _probe_reply(ctx, hub[0], name) if not by_address else "not tried"
            if by_address:
                failed.append(f"{node.hostname}: its test server ({addr}) does not answer the hub "
                              f"({by_address}): the overlay's VXLAN (4789/udp) does not pass")
            elif by_name:
                failed.append(f"{node.hostname}: its test server answers on {addr} but its name does "
                              f"not ({by_name}): names travel by the swarm's gossip (7946/tcp+udp)")
            else:
                reached.append(node.hostname)
    finally:
        ctx.host.run(["docker", "service", "rm", *services.values()], timeout=60)
    if failed:
        return Outcome.fail("; ".join(failed), hint="open 4789/udp and 7946/tcp+udp between the nodes "
                            "(hostkit cluster init/join --peer ADDR), then restart Docker on that node "
                            "if a firewall changed after it started")
    return Outcome.ok(f"the hub reached a test server on {', '.join(reached)} over {network}")
