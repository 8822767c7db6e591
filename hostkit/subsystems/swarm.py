"""Several servers as one Docker Swarm: the manager (hub, nginx) and workers (users' servers).

The steps follow bootstrap's pattern (check, then change, then check again):

- `SwarmPortsStep`: the swarm's ports (2377/tcp, 7946/tcp+udp, 4789/udp) and IPsec ESP
  (the encrypted overlay) open in firewalld's default zone, only from the cluster's
  addresses, as rich rules. Adding rich rules leaves Docker's own chains alone, so Docker
  needs no restart; rules for addresses no longer in the cluster are removed.
- `SwarmInitStep` / `SwarmJoinStep`: this node becomes the manager, or joins one.
- `OverlayNetworkStep`: the stack's network as an attachable overlay (compose's containers on
  the manager and the users' services on the workers meet there).
- `ImageOnNodeStep`: the single-user image on a worker, streamed from the manager
  (`docker save | ssh NODE docker load`): there is no registry, and building it on every
  worker costs each one ~10 minutes and the same internet access as the manager had.

Reading the cluster (`cluster_status`) is pure over `docker node inspect` and
`docker inspect` of the stack's tasks, so it is tested against recorded JSON.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Callable, Optional

from hostkit.errors import HostkitError, UsageError
from hostkit.facts import Facts
from hostkit.host import CommandResult, LocalHost
from hostkit.steps import Change, StepNotReady
from hostkit.volumes import At

SWARM_PORTS = ("2377/tcp", "7946/tcp", "7946/udp", "4789/udp")
# a node label naming the node that holds a user's files, set where `hostkit restore` put
# them when the node they were on is gone; the hub's spawner places the user there
FILES_LABEL = "org.hostkit.files."
# the label hostkit's docker-api proxy puts on what the hub creates (containers and services)
STACK_LABEL = "org.hostkit.stack"
Progress = Callable[[str], None]


# ---- reading the swarm (pure parsers + thin readers) ----------------------------------------
@dataclass(frozen=True)
class SwarmState:
    """This node's place in a swarm, from `docker info`."""

    state: str  # inactive, pending, active, error, locked
    node_id: str = ""
    node_addr: str = ""
    is_manager: bool = False
    cluster_id: str = ""
    managers: tuple[str, ...] = ()  # "ADDR:PORT" of the managers this node knows
    error: str = ""

    @property
    def active(self) -> bool:
        return self.state == "active"


def parse_swarm_info(text: str) -> SwarmState:
    """`docker info --format '{{json .Swarm}}'` as a SwarmState."""
    try:
        data = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise HostkitError(f"docker info: unreadable swarm state: {exc}") from exc
    return SwarmState(
        state=str(data.get("LocalNodeState") or "inactive"),
        node_id=str(data.get("NodeID") or ""),
        node_addr=str(data.get("NodeAddr") or ""),
        is_manager=bool(data.get("ControlAvailable")),
        cluster_id=str((data.get("Cluster") or {}).get("ID") or ""),
        managers=tuple(str(m.get("Addr", "")) for m in data.get("RemoteManagers") or []),
        error=str(data.get("Error") or ""),
    )


def swarm_state(host: LocalHost) -> SwarmState:
    res = host.run(["docker", "info", "--format", "{{json .Swarm}}"], timeout=30)
    if not res.ok:
        raise StepNotReady("the swarm is checked once Docker runs",
                           res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "")
    return parse_swarm_info(res.stdout)


def refuse_live_restore(host: LocalHost) -> None:
    """dockerd refuses swarm mode while live-restore is on: say so before trying."""
    res = host.run(["docker", "info", "--format", "{{.LiveRestoreEnabled}}"], timeout=30)
    if res.ok and res.stdout.strip() == "true":
        raise HostkitError("Docker runs with live-restore, which it refuses in swarm mode",
                           'remove "live-restore" from /etc/docker/daemon.json, restart Docker, '
                           "then run this again")


def require_manager(host: LocalHost) -> SwarmState:
    state = swarm_state(host)
    if not (state.active and state.is_manager):
        raise HostkitError("this host is not a swarm manager",
                           "run this on the hub's host, after `hostkit cluster init`")
    return state


@dataclass(frozen=True)
class Node:
    """One node of the swarm as the manager sees it."""

    id: str
    hostname: str
    role: str  # manager / worker
    availability: str  # active / pause / drain
    state: str  # ready / down / unknown / disconnected
    addr: str
    memory_bytes: int
    cpus: float
    leader: bool = False
    labels: dict[str, str] = field(default_factory=dict)


def parse_nodes(text: str) -> list[Node]:
    """`docker node inspect ID...` output as Nodes."""
    out = []
    for item in json.loads(text or "[]"):
        spec, desc, status = item.get("Spec") or {}, item.get("Description") or {}, item.get("Status") or {}
        res = desc.get("Resources") or {}
        manager = item.get("ManagerStatus") or {}
        addr = str(status.get("Addr") or "")
        if addr in ("", "0.0.0.0") and manager.get("Addr"):  # noqa: S104 - a manager's own view
            addr = str(manager["Addr"]).rsplit(":", 1)[0]
        out.append(Node(
            id=str(item.get("ID", "")),
            hostname=str(desc.get("Hostname", "")),
            role=str(spec.get("Role", "")),
            availability=str(spec.get("Availability", "")),
            state=str(status.get("State", "")),
            addr=addr,
            memory_bytes=int(res.get("MemoryBytes") or 0),
            cpus=int(res.get("NanoCPUs") or 0) / 1e9,
            leader=bool(manager.get("Leader")),
            labels=dict(spec.get("Labels") or {}),
        ))
    return sorted(out, key=lambda n: (n.role != "manager", n.hostname, n.id))


@dataclass(frozen=True)
class UserTask:
    """A user's server (one task of a service the hub created)."""

    service: str
    node_id: str
    state: str
    memory_limit: int


def parse_user_tasks(text: str, stack: str, names: dict[str, str]) -> list[UserTask]:
    """`docker inspect TASK...`: the tasks of the stack's services that are meant to run.

    `names` maps service ids (or their prefixes, as `docker service ls` prints them) to names."""
    out = []
    for task in json.loads(text or "[]"):
        spec = task.get("Spec") or {}
        labels = (spec.get("ContainerSpec") or {}).get("Labels") or {}
        if labels.get(STACK_LABEL) != stack or task.get("DesiredState") != "running":
            continue
        limits = (spec.get("Resources") or {}).get("Limits") or {}
        service_id = str(task.get("ServiceID", ""))
        name = next((n for i, n in names.items() if service_id.startswith(i)), service_id)
        out.append(UserTask(
            service=name,
            node_id=str(task.get("NodeID") or ""),
            state=str((task.get("Status") or {}).get("State", "")),
            memory_limit=int(limits.get("MemoryBytes") or 0),
        ))
    return out


@dataclass(frozen=True)
class NodeStatus:
    node: Node
    servers: tuple[str, ...]
    committed_bytes: int  # memory limits of the users' servers placed there

    @property
    def uncommitted_bytes(self) -> int:
        return max(0, self.node.memory_bytes - self.committed_bytes)


def cluster_status(nodes: Sequence[Node], tasks: Sequence[UserTask]) -> list[NodeStatus]:
    """Per node: the users' servers on it and the memory their limits leave uncommitted."""
    out = []
    for node in nodes:
        mine = [t for t in tasks if t.node_id == node.id]
        out.append(NodeStatus(node, tuple(sorted(t.service for t in mine)),
                              sum(t.memory_limit for t in mine)))
    return out


def read_nodes(host: LocalHost) -> list[Node]:
    ids = host.run(["docker", "node", "ls", "-q"], timeout=30, check=True).stdout.split()
    if not ids:
        return []
    return parse_nodes(host.run(["docker", "node", "inspect", *ids], timeout=30, check=True).stdout)


def read_user_tasks(host: LocalHost, stack: str) -> list[UserTask]:
    """The stack's users' servers: tasks of the services carrying the stack's label."""
    listed = host.run(["docker", "service", "ls", "--filter", f"label={STACK_LABEL}={stack}",
                       "--format", "{{.ID}} {{.Name}}"], timeout=30, check=True).stdout
    names = dict(line.split(None, 1) for line in listed.splitlines() if " " in line.strip())
    if not names:
        return []
    tasks = host.run(["docker", "service", "ps", "-q", "--no-trunc", "--filter", "desired-state=running",
                      *names.values()], timeout=30, check=True).stdout.split()
    if not tasks:
        return []
    res = host.run(["docker", "inspect", "--type", "task", *tasks], timeout=30, check=True)
    return parse_user_tasks(res.stdout, stack, names)


def find_node(nodes: Sequence[Node], name: str) -> Node:
    """A node by hostname, id or id prefix; one line naming the known nodes otherwise."""
    exact = [n for n in nodes if name in (n.hostname, n.id)]
    hits = exact or [n for n in nodes if n.id.startswith(name)]
    if len(hits) == 1:
        return hits[0]
    known = ", ".join(f"{n.hostname} ({n.id[:12]})" for n in nodes)
    if hits:
        raise UsageError(f"{name!r} names {len(hits)} nodes", f"give the node id; nodes: {known}")
    raise UsageError(f"no node {name!r} in this swarm", f"nodes: {known}")


# ---- firewalld -----------------------------------------------------------------------------
def normalise_peers(peers: Sequence[str]) -> tuple[str, ...]:
    """Addresses or networks (CIDR) of the cluster's servers, validated and sorted."""
    out = set()
    for peer in peers:
        try:
            net = ipaddress.ip_network(peer.strip(), strict=False)
        except ValueError as exc:
            raise UsageError(f"--peer {peer!r}: not an address or network",
                             "give each server's address (10.0.0.5) or the network (10.0.0.0/24)") from exc
        out.add(str(net.network_address) if net.num_addresses == 1 else str(net))
    return tuple(sorted(out))


def rich_rule(peer: str, what: str) -> str:
    """The rich rule opening `what` (PORT/PROTO or "esp") to `peer`, as firewalld lists it."""
    family = "ipv6" if ":" in peer else "ipv4"
    if what == "esp":
        target = 'protocol value="esp"'
    else:
        port, proto = what.split("/")
        target = f'port port="{port}" protocol="{proto}"'
    return f'rule family="{family}" source address="{peer}" {target} accept'


def wanted_rules(peers: Sequence[str]) -> list[str]:
    return [rich_rule(p, w) for p in peers for w in (*SWARM_PORTS, "esp")]


_SWARM_RULE = re.compile(
    r'^rule family="ipv[46]" source address="[^"]+" '
    r'(port port="(2377|7946|4789)" protocol="(tcp|udp)"|protocol value="esp") accept$')


def stale_rules(listed: Sequence[str], wanted: Sequence[str]) -> list[str]:
    """Swarm rules for addresses that are no longer the cluster's."""
    return [r for r in listed if _SWARM_RULE.match(r.strip()) and r.strip() not in wanted]


class SwarmPortsStep:
    """The swarm's ports open in firewalld, only from the cluster's addresses."""

    name = "swarm-firewall"
    title = "firewalld: swarm ports open to the cluster's addresses only"

    def __init__(self, peers: Sequence[str]) -> None:
        self.peers = normalise_peers(peers)

    def _fw(self, host: LocalHost, *args: str) -> CommandResult:
        return host.run(["firewall-cmd", *args], timeout=60)

    def _zone(self, host: LocalHost) -> str:
        return self._fw(host, "--get-default-zone").stdout.strip() or "public"

    def check(self, host: LocalHost, facts: Facts) -> list[Change]:
        if not host.which("firewall-cmd") or not self._fw(host, "--state").ok:
            self.title = "firewalld: not running (swarm ports: nothing to do)"
            return []
        zone = self._zone(host)
        changes = []
        for layer, flags in (("permanent", ["--permanent"]), ("runtime", [])):
            listed = self._fw(host, *flags, f"--zone={zone}", "--list-rich-rules").stdout.splitlines()
            have = {line.strip() for line in listed}
            for rule in wanted_rules(self.peers):
                if rule not in have:
                    changes.append(Change(f"add ({layer}) {rule}", f"+ {zone}: {rule}"))
            for rule in stale_rules(listed, wanted_rules(self.peers)):
                changes.append(Change(f"remove ({layer}) {rule.strip()}",
                                      f"- {zone}: {rule.strip()}   (not a cluster address)"))
        return changes

    def apply(self, host: LocalHost, facts: Facts, changes: Sequence[Change]) -> None:
        zone = self._zone(host)
        # Never `firewall-cmd --reload` (before Docker 28.3.3 it wiped Docker's rules): each
        # rule is added to the permanent and the runtime configuration separately.
        for ch in changes:
            verb, layer, rule = re.match(r"^(add|remove) \((permanent|runtime)\) (.*)$", ch.summary).groups()  # type: ignore[union-attr]
            flags = ["--permanent"] if layer == "permanent" else []
            host.run(["firewall-cmd", *flags, f"--zone={zone}", f"--{verb}-rich-rule={rule}"],
                     timeout=60, check=True)


# ---- the swarm itself --------------------------------------------------------------------
class SwarmInitStep:
    """This host is the swarm's manager."""

    name = "swarm-init"
    title = "this host manages a Docker Swarm"

    def __init__(self, advertise_addr: str) -> None:
        self.advertise_addr = advertise_addr

    def check(self, host: LocalHost, facts: Facts) -> list[Change]:
        state = swarm_state(host)
        if state.active and state.is_manager:
            self.title = f"this host manages the swarm (advertised on {state.node_addr})"
            return []
        if state.active:
            raise HostkitError("this host is a worker of another swarm",
                               "remove it there first (`hostkit cluster remove` on that manager, "
                               "then `docker swarm leave` here)")
        if state.state not in ("inactive", ""):
            raise HostkitError(f"this host's swarm state is {state.state}: {state.error}",
                               "docker swarm leave --force, then run this again")
        refuse_live_restore(host)
        return [Change(f"create a swarm advertised on {self.advertise_addr}")]

    def apply(self, host: LocalHost, facts: Facts, changes: Sequence[Change]) -> None:
        host.run(["docker", "swarm", "init", "--advertise-addr", self.advertise_addr],
                 timeout=120, check=True, hint="is the address one of this host's own?")


def parse_join_target(target: str) -> tuple[str, str]:
    """TOKEN@HOST[:PORT] -> (token, HOST:PORT)."""
    token, sep, addr = target.rpartition("@")
    if not sep or not token.startswith("SWMTKN-") or not addr:
        raise UsageError(f"{_redact_token(target)!r} is not TOKEN@HOST",
                         "copy the join command `hostkit cluster init` printed on the manager")
    if addr.count(":") == 0 or (addr.startswith("[") and "]:" not in addr):
        addr += ":2377"
    return token, addr


def _redact_token(text: str) -> str:
    return re.sub(r"SWMTKN-[A-Za-z0-9-]+", "SWMTKN-…", text)


class SwarmJoinStep:
    """This host is a node of the manager's swarm."""

    name = "swarm-join"
    title = "this host is a node of the swarm"

    def __init__(self, token: str, manager: str, advertise_addr: str = "") -> None:
        self.token, self.manager, self.advertise_addr = token, manager, advertise_addr

    def check(self, host: LocalHost, facts: Facts) -> list[Change]:
        state = swarm_state(host)
        if state.active:
            if state.managers and self.manager not in state.managers:
                raise HostkitError(
                    f"this host is already in a swarm managed by {', '.join(state.managers)}",
                    "leave it first: `docker swarm leave`")
            self.title = f"this host is a node of the swarm (manager {self.manager})"
            return []
        refuse_live_restore(host)
        return [Change(f"join the swarm managed by {self.manager}")]

    def apply(self, host: LocalHost, facts: Facts, changes: Sequence[Change]) -> None:
        argv = ["docker", "swarm", "join", "--token", self.token]
        if self.advertise_addr:
            argv += ["--advertise-addr", self.advertise_addr]
        res = host.run([*argv, self.manager], timeout=120)
        if not res.ok:
            raise HostkitError(
                f"docker swarm join {self.manager}: {res.stderr.strip() or res.stdout.strip()}",
                "the manager's 2377/tcp must be open to this host: run `hostkit cluster init "
                "--peer THIS_HOST` on the manager")


class OverlayNetworkStep:
    """The stack's network as an attachable overlay (encrypted unless told otherwise)."""

    name = "swarm-network"
    title = "the stack's overlay network"

    def __init__(self, network: str, encrypted: bool = True) -> None:
        self.network, self.encrypted = network, encrypted

    def check(self, host: LocalHost, facts: Facts) -> list[Change]:
        res = host.run(["docker", "network", "inspect", self.network], timeout=30)
        if not res.ok:
            how = "encrypted, attachable" if self.encrypted else "attachable, not encrypted"
            return [Change(f"create the overlay network {self.network} ({how})")]
        net = json.loads(res.stdout)[0]
        if net.get("Driver") != "overlay":
            raise HostkitError(
                f"{self.network} is a {net.get('Driver')} network (the single-host stack's)",
                "stop the stack first (`hostkit stack down`); `hostkit stack up --set "
                "HOSTKIT_CLUSTER=swarm` brings it back on the overlay")
        encrypted = "encrypted" in (net.get("Options") or {})
        if encrypted != self.encrypted:
            raise HostkitError(
                f"{self.network} is {'' if encrypted else 'not '}encrypted",
                "an overlay's options cannot change: `hostkit stack down`, "
                f"`docker network rm {self.network}`, then run this again")
        if not net.get("Attachable"):
            raise HostkitError(f"{self.network} is not attachable: compose cannot start the hub on it",
                               f"hostkit stack down; docker network rm {self.network}; run this again")
        self.title = f"the stack's overlay network {self.network}"
        return []

    def apply(self, host: LocalHost, facts: Facts, changes: Sequence[Change]) -> None:
        argv = ["docker", "network", "create", "--driver", "overlay", "--attachable"]
        if self.encrypted:
            argv += ["--opt", "encrypted"]
        host.run([*argv, self.network], timeout=60, check=True)


# ---- images on the workers ---------------------------------------------------------------------
def ssh_argv(user: str, addr: str) -> list[str]:
    """How the manager runs a command on a node: key-based ssh, never a password prompt."""
    return ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
            "-o", "StrictHostKeyChecking=accept-new", f"{user}@{addr}"]


def image_id(host: LocalHost, image: str, via: Sequence[str] = ()) -> Optional[str]:
    """The image's id here, or on a node through ssh (`via`); None when it is missing."""
    fmt = "{{.Id}}"
    argv = ["docker", "image", "inspect", "--format", fmt, image]
    res = host.run([*via, shlex.join(argv)] if via else argv, timeout=60)
    if res.returncode == 255 and via:  # ssh's own failure, not docker's answer
        raise HostkitError(f"ssh {via[-1]}: {res.stderr.strip()}",
                           "the manager logs in to every node with a key: ssh-copy-id "
                           f"{via[-1]}")
    return res.stdout.strip() or None if res.ok else None


class ImageOnNodeStep:
    """The image is on the node, the same as on the manager (streamed from it over ssh)."""

    def __init__(self, node: Node, image: str, ssh_user: str = "root",
                 progress: Optional[Progress] = None) -> None:
        self.node, self.image, self.ssh_user = node, image, ssh_user
        self.progress = progress
        self.name = f"image-{node.hostname}"
        self.title = f"{image} on {node.hostname}"

    def check(self, host: LocalHost, facts: Facts) -> list[Change]:
        local = image_id(host, self.image)
        if local is None:
            raise HostkitError(f"{self.image} is not on this host",
                               "build it first: hostkit stack build")
        remote = image_id(host, self.image, ssh_argv(self.ssh_user, self.node.addr))
        if remote == local:
            return []
        what = "missing" if remote is None else f"different ({remote[:19]})"
        return [Change(f"copy {self.image} to {self.node.hostname} ({what} there)")]

    def apply(self, host: LocalHost, facts: Facts, changes: Sequence[Change]) -> None:
        start = time.monotonic()
        total = image_size(host, self.image)

        def report(done: int) -> None:
            if self.progress:
                share = f" of {total / 1e9:.2f} GB" if total else ""
                self.progress(f"{self.node.hostname}: {done / 1e9:.2f} GB{share} "
                              f"({time.monotonic() - start:.0f}s)")

        host.pipe(["docker", "save", self.image],
                  [*ssh_argv(self.ssh_user, self.node.addr), "docker load -q"],
                  on_bytes=report, timeout=3600)


def image_size(host: LocalHost, image: str) -> int:
    res = host.run(["docker", "image", "inspect", "--format", "{{.Size}}", image], timeout=30)
    return int(res.stdout.strip() or 0) if res.ok else 0


# ---- removing a node ---------------------------------------------------------------------------
def running_task_count(host: LocalHost, node: Node) -> int:
    res = host.run(["docker", "node", "ps", node.id, "--filter", "desired-state=running",
                    "--format", "{{.CurrentState}}"], timeout=30, check=True)
    return sum(1 for line in res.stdout.splitlines() if line.strip())


def remove_node(host: LocalHost, node: Node, stack: str, *, timeout: float = 300, poll: float = 2.0,
                log: Progress = lambda _m: None) -> str:
    """Stop the users' servers on the node, drain it, wait until it runs no task, then take
    it out of the swarm. Returns what the node's own admin still has to do (or "").

    A user's server is pinned to the node that holds their files, so Swarm cannot move it:
    drained, it would wait forever as "pending", which the hub takes for running. Its service
    is removed instead; the hub sees the server gone and the user can start again."""
    if node.role == "manager":
        raise UsageError(f"{node.hostname} is a manager",
                         "demote it first (docker node demote), or keep it: it runs the hub")
    servers = sorted({t.service for t in read_user_tasks(host, stack) if t.node_id == node.id})
    if servers:
        host.run(["docker", "service", "rm", *servers], timeout=120, check=True)
        log(f"{node.hostname}: stopped the users' servers {', '.join(servers)}")
    if node.availability != "drain":
        host.run(["docker", "node", "update", "--availability", "drain", node.id], timeout=60, check=True)
        log(f"{node.hostname}: drained (no new servers go there)")
    deadline = time.monotonic() + timeout
    left = running_task_count(host, node)
    while left and node.state == "ready":
        if time.monotonic() > deadline:
            raise HostkitError(f"{node.hostname} still runs {left} task(s) after {timeout:g}s",
                               "see `docker node ps " + node.hostname + "`; run this again to keep waiting")
        log(f"{node.hostname}: waiting for {left} task(s) to stop")
        time.sleep(poll)
        left = running_task_count(host, node)
    force = ["--force"] if node.state == "ready" else []
    host.run(["docker", "node", "rm", *force, node.id], timeout=60, check=True)
    log(f"{node.hostname}: removed from the swarm")
    if force:
        return f"on {node.hostname}: docker swarm leave (it still believes it is a node)"
    return ""


def stack_of(env: dict[str, str]) -> str:
    return env.get("COMPOSE_PROJECT_NAME", "hostkit")


# ---- users' volumes on the workers (backup, restore) ----------------------------------------
def cluster_mode(env: dict[str, str]) -> bool:
    return env.get("HOSTKIT_CLUSTER") == "swarm"


def node_place(node: Node, ssh_user: str) -> At:
    return At(node=node.hostname, via=tuple(ssh_argv(ssh_user, node.addr)), node_id=node.id)


def worker_places(nodes: Sequence[Node], ssh_user: str) -> tuple[list[At], list[str]]:
    """Where the users' volumes of a cluster are: the ready workers, and "NODE is STATE"
    of the others, whose volumes cannot be read now."""
    workers = [n for n in nodes if n.role == "worker"]
    down = [f"{n.hostname} is {n.state}" for n in workers if n.state != "ready"]
    return [node_place(n, ssh_user) for n in workers if n.state == "ready"], down


def unreadable_workers(down: Sequence[str]) -> HostkitError:
    """A full backup with a worker down would say it is complete without that node's users."""
    return HostkitError("the users' volumes on " + "; ".join(down) + " cannot be read",
                        "bring the node back, or take it out (`hostkit cluster remove NODE`) once "
                        "its users' files are elsewhere; `--users NAME` backs up the others")


def restore_node(nodes: Sequence[Node], tasks: Sequence[UserTask], node_id: str, hostname: str,
                 pinned: str = "") -> Node:
    """The node a backed-up volume goes back to: the one it was on; else (gone from the swarm)
    the node the hub pins the user to now, a ready worker of the same name, or the ready
    worker with the most uncommitted memory, which is where the hub would place a new user."""
    by_id = next((n for n in nodes if n.id == node_id), None)
    if by_id is not None:
        if by_id.state != "ready":
            raise HostkitError(f"{by_id.hostname}, which held the volume, is {by_id.state}",
                               "bring it back, or `hostkit cluster remove "
                               f"{by_id.hostname}` and restore again: the volume then goes "
                               "to another worker")
        return by_id
    if pinned and pinned != node_id and any(n.id == pinned for n in nodes):
        return restore_node(nodes, tasks, pinned, hostname)
    ready = [n for n in nodes if n.role == "worker" and n.state == "ready" and n.availability == "active"]
    same = [n for n in ready if n.hostname == hostname]
    if same:
        return same[0]
    if not ready:
        raise HostkitError("no worker is ready to take the volume", "hostkit cluster status")
    freest = max(cluster_status(ready, tasks), key=lambda s: (s.uncommitted_bytes, s.node.id))
    return freest.node


def label_files_node(host: LocalHost, nodes: Sequence[Node], user: str, volume: str, node: Node) -> None:
    """Label the node that now holds the user's files (and no other node)."""
    key = FILES_LABEL + user
    for other in nodes:
        if other.id != node.id and key in other.labels:
            host.run(["docker", "node", "update", "--label-rm", key, other.id], timeout=60, check=True)
    if node.labels.get(key) != volume:
        host.run(["docker", "node", "update", "--label-add", f"{key}={volume}", node.id],
                 timeout=60, check=True)
