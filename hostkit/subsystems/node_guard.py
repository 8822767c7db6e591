"""A cluster worker's guard: what users' servers may reach on and through their own node.

On a worker, users' servers are swarm tasks; their way out of the overlay is the node's
`docker_gwbridge`. Without a filter there, a server reaches the worker's own ports (sshd,
anything listening), the node's published ports, link-local addresses (cloud metadata at
169.254.169.254) and the swarm's own ports on every node (2377/tcp management, 7946 gossip,
4789/udp VXLAN: an unencrypted overlay accepts injected VXLAN frames from any source the
firewall lets in, and the cluster's firewall lets every node in). The single-host stack
guards its users' bridge from the docker-api proxy; nothing of the stack runs on a worker,
so this guard is a host step of `hostkit cluster join`: an nftables table of its own, loaded
now and at every boot by a oneshot unit, never touching firewalld's or Docker's tables.

It matches the interface by name, which works before Docker creates the bridge (at join).
Everything else a server does is left as it is: the internet, DNS, the manager's public
port, and the hub over the user's own overlay network (that traffic never crosses
`docker_gwbridge`).
"""

from __future__ import annotations

from collections.abc import Sequence

from hostkit.errors import HostkitError
from hostkit.facts import Facts
from hostkit.host import LocalHost
from hostkit.steps import Change

TABLE = "hostkit_node_guard"
BRIDGE = "docker_gwbridge"
RULES_FILE = "/etc/hostkit/node-guard.nft"
UNIT = "hostkit-node-guard.service"
UNIT_FILE = f"/etc/systemd/system/{UNIT}"
SWARM_TCP = (2377, 7946)
SWARM_UDP = (4789, 7946)


def _set(items: Sequence[int]) -> str:
    return "{ " + ", ".join(str(i) for i in items) + " }"


def render_node_guard() -> str:
    """An `nft -f` script that replaces the guard's table in one transaction."""
    br = f'"{BRIDGE}"'
    forward = [
        f"iifname != {br} accept",
        "ct state established,related accept",
        'ip daddr 169.254.0.0/16 counter drop comment "link-local: cloud metadata"',
        f'tcp dport {_set(SWARM_TCP)} counter drop comment "the swarm\'s management and gossip"',
        f'udp dport {_set(SWARM_UDP)} counter drop comment "the swarm\'s VXLAN and gossip"',
        'ct status dnat counter drop comment "ports published on this node"',
    ]
    node_input = [
        f"iifname != {br} accept",
        "ct state established,related accept",
        # a task's name lookups go to Docker's resolver in its own namespace, which forwards
        # to daemon.json's servers: a node that is its own resolver must still answer
        "meta l4proto { tcp, udp } th dport 53 accept",
        'counter drop comment "this node\'s own ports"',
    ]
    lines = [
        "# hostkit: what users' servers may reach on and through this node",
        f"# (written by `hostkit cluster join`; {UNIT} loads it at boot)",
        f"table inet {TABLE} {{}}",
        f"delete table inet {TABLE}",
        f"table inet {TABLE} {{",
        "  chain forward {",
        "    type filter hook forward priority -10; policy accept;",
        *(f"    {rule}" for rule in forward),
        "  }",
        "  chain input {",
        "    type filter hook input priority -10; policy accept;",
        *(f"    {rule}" for rule in node_input),
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def render_guard_unit(nft: str = "/usr/sbin/nft") -> str:
    """The oneshot unit that loads the table at boot, and again after firewalld starts."""
    return (
        "[Unit]\n"
        "Description=hostkit: filter what users' servers reach on this node (docker_gwbridge)\n"
        "After=network-pre.target firewalld.service docker.service\n"
        "PartOf=firewalld.service\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        "RemainAfterExit=yes\n"
        f"ExecStart={nft} -f {RULES_FILE}\n"
        f"ExecStop=-{nft} delete table inet {TABLE}\n"
        "\n"
        "[Install]\n"
        "WantedBy=multi-user.target firewalld.service\n"
    )


def table_loaded(host: LocalHost) -> bool:
    res = host.run(["nft", "list", "table", "inet", TABLE], timeout=30)
    return res.ok and "ports published on this node" in res.stdout


class NodeGuardStep:
    """On a worker: users' servers cannot reach the node, its published ports, cloud
    metadata or the swarm's ports (an nftables table, loaded now and at boot)."""

    name = "node-guard"
    title = "users' servers kept off this node's ports, metadata and the swarm's ports"

    def check(self, host: LocalHost, facts: Facts) -> list[Change]:
        nft = host.which("nft")
        if not nft:
            raise HostkitError("nft is not installed: the node guard is an nftables table",
                               "install nftables (firewalld's own backend), then run this again")
        changes = []
        if not host.exists(RULES_FILE) or host.read_text(RULES_FILE) != render_node_guard():
            changes.append(Change(f"write {RULES_FILE}", render_node_guard()))
        if facts.init_system() == "systemd":
            unit = render_guard_unit(nft)
            if not host.exists(UNIT_FILE) or host.read_text(UNIT_FILE) != unit:
                changes.append(Change(f"write {UNIT_FILE}", unit))
            if not host.run(["systemctl", "is-enabled", "--quiet", UNIT], timeout=30).ok:
                changes.append(Change(f"enable {UNIT} (loads the table at boot)"))
        if changes or not table_loaded(host):
            changes.append(Change(f"load the nftables table {TABLE}"))
        return changes

    def apply(self, host: LocalHost, facts: Facts, changes: Sequence[Change]) -> None:
        nft = host.which("nft") or "nft"
        wanted = {c.summary for c in changes}
        host.makedirs("/etc/hostkit", mode=0o755)
        if f"write {RULES_FILE}" in wanted:
            host.write_text(RULES_FILE, render_node_guard(), mode=0o644)
        if f"write {UNIT_FILE}" in wanted:
            host.write_text(UNIT_FILE, render_guard_unit(nft), mode=0o644)
            host.run(["systemctl", "daemon-reload"], timeout=60, check=True)
        if any(s.startswith("enable ") for s in wanted):
            host.run(["systemctl", "enable", UNIT], timeout=60, check=True)
        host.run([nft, "-f", RULES_FILE], timeout=60, check=True,
                 hint=f"nft -c -f {RULES_FILE} says what the kernel refused")
        if not table_loaded(host):
            raise HostkitError(f"the table {TABLE} is not loaded after nft -f")
