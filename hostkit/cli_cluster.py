"""`hostkit cluster`: the same hub across several servers, as one Docker Swarm.

init (on the hub's host) -> join (on each worker) -> sync-images (on the manager) ->
`hostkit stack up --set HOSTKIT_CLUSTER=swarm`; status and remove on the manager.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape

from hostkit.cli_bootstrap import (
    AdoptOpt,
    DataRootOpt,
    DnsOpt,
    DockerSourceOpt,
    ForceOpt,
    GpuOpt,
    LogDriverOpt,
    LogMaxFileOpt,
    LogMaxSizeOpt,
    ProbeHostOpt,
    ProbeImageOpt,
    YesOpt,
    converge_node,
    host_options,
)
from hostkit.cli_options import DockerSource, LogDriver, OutputFormat, deploy_dir_option, format_option
from hostkit.errors import HostkitError, UsageError
from hostkit.facts import Facts
from hostkit.host import LocalHost
from hostkit.settings import DEFAULTS, SETTINGS_FILE, load_settings, render_settings_toml
from hostkit.stack import Stack, primary_ip
from hostkit.steps import Plan, Step, render_step, render_summary
from hostkit.subsystems import swarm
from hostkit.subsystems.node_guard import NodeGuardStep

cluster_app = typer.Typer(
    no_args_is_help=True,
    help="Several servers as one Docker Swarm: init on the hub's host, join on each worker, "
    "sync-images, then `hostkit stack up --set HOSTKIT_CLUSTER=swarm`.")
out = Console()

PeerOpt = typer.Option(
    None, "--peer", metavar="ADDR|CIDR",
    help="A server of the cluster (address or network), repeatable: the swarm ports open to these only.")
DryRunOpt = typer.Option(False, "--dry-run", help="Show what would change; change nothing.")


def _run(host: LocalHost, steps: List[Step], dry_run: bool) -> None:
    plan = Plan(steps, dry_run=dry_run, on_planned=lambda r: out.print(render_step(r)))
    plan.on_result = lambda r: out.print(render_step(r, show_diff=False))
    _planned, result = plan.run(host, Facts(host))
    out.print(render_summary(result))
    if result.failed:
        raise typer.Exit(1)


def _root(host: LocalHost) -> None:
    if not host.is_root():
        raise UsageError("cluster commands change the system and must run as root", "run it with sudo")


def _record_peers(host: LocalHost, peers: tuple[str, ...]) -> None:
    """The cluster's addresses in the settings file: the doctor and a later init use them."""
    text = host.read_text(SETTINGS_FILE) if host.exists(SETTINGS_FILE) else ""
    wanted = render_settings_toml(text, {"cluster_peers": list(peers)})
    if wanted != text:
        host.write_text(SETTINGS_FILE, wanted, mode=0o644)


@cluster_app.command("init")
def cluster_init(
    advertise_addr: Optional[str] = typer.Option(
        None, "--advertise-addr", metavar="ADDR",
        help="The address the workers reach this host on (default: its primary address)."),
    peers: Optional[List[str]] = PeerOpt,
    encrypt: bool = typer.Option(True, "--encrypt/--no-encrypt",
                                 help="Encrypt the overlay network (IPsec; the kernel needs ESP)."),
    deploy_dir: Path = deploy_dir_option(),
    data_root: Optional[str] = DataRootOpt,
    adopt: bool = AdoptOpt,
    dns: Optional[List[str]] = DnsOpt,
    log_max_size: Optional[str] = LogMaxSizeOpt,
    log_max_file: Optional[int] = LogMaxFileOpt,
    log_driver: Optional[LogDriver] = LogDriverOpt,
    docker_source: DockerSource = DockerSourceOpt,
    probe_image: Optional[str] = ProbeImageOpt,
    probe_host: str = ProbeHostOpt,
    gpu: bool = GpuOpt,
    yes: bool = YesOpt,
    force: bool = ForceOpt,
    dry_run: bool = DryRunOpt,
) -> None:
    """Make this host (the hub's) the swarm's manager, after bootstrap's host steps (Docker,
    data-root, daemon.json, firewalld); run again with more --peer to add servers."""
    host = LocalHost()
    settings = load_settings(host)
    options = host_options(
        data_root=data_root, adopt=adopt, dns=dns, log_max_size=log_max_size,
        log_max_file=log_max_file, log_driver=log_driver, docker_source=docker_source,
        probe_image=probe_image, probe_host=probe_host, gpu=gpu, force=force,
        port=settings.public_port)
    _root(host)
    addr = advertise_addr or primary_ip(host)
    if not addr:
        raise UsageError("cannot tell this host's address", "give --advertise-addr ADDR")
    known = tuple(settings.cluster_peers)
    all_peers = swarm.normalise_peers([*known, *(peers or []), addr])
    network = Stack(host, str(deploy_dir)).read_env().get("HOSTKIT_NETWORK", DEFAULTS.network)
    steps: List[Step] = [swarm.SwarmPortsStep(all_peers), swarm.SwarmInitStep(addr),
                         swarm.OverlayNetworkStep(network, encrypt)]
    if not converge_node(host, "cluster-init", options, steps, public_port=True, dry_run=dry_run,
                         yes=yes):
        raise typer.Exit(1)
    if dry_run:
        return
    _record_peers(host, all_peers)
    token = host.run(["docker", "swarm", "join-token", "-q", "worker"], timeout=30, check=True).stdout.strip()
    peer_args = " ".join(f"--peer {p}" for p in all_peers)
    out.print("On each worker (it takes the same host steps there first: add --data-root DIR "
              "to move Docker's storage, --yes to restart Docker without asking):")
    out.print(f"  hostkit cluster join {token}@{addr} {peer_args}", soft_wrap=True)
    out.print("Then here: hostkit cluster sync-images; hostkit stack up --set HOSTKIT_CLUSTER=swarm")


@cluster_app.command("join")
def cluster_join(
    target: Optional[str] = typer.Argument(None, metavar="TOKEN@HOST",
                                           help="What `hostkit cluster init` printed."),
    token: Optional[str] = typer.Option(None, "--token", metavar="TOKEN", help="The join token."),
    manager: Optional[str] = typer.Option(None, "--manager", metavar="HOST[:PORT]",
                                          help="The manager's address."),
    peers: Optional[List[str]] = PeerOpt,
    advertise_addr: Optional[str] = typer.Option(
        None, "--advertise-addr", metavar="ADDR", help="This host's address in the cluster."),
    data_root: Optional[str] = DataRootOpt,
    adopt: bool = AdoptOpt,
    dns: Optional[List[str]] = DnsOpt,
    log_max_size: Optional[str] = LogMaxSizeOpt,
    log_max_file: Optional[int] = LogMaxFileOpt,
    log_driver: Optional[LogDriver] = LogDriverOpt,
    docker_source: DockerSource = DockerSourceOpt,
    probe_image: Optional[str] = ProbeImageOpt,
    probe_host: str = ProbeHostOpt,
    gpu: bool = GpuOpt,
    yes: bool = YesOpt,
    force: bool = ForceOpt,
    dry_run: bool = DryRunOpt,
) -> None:
    """Join this host to the hub's swarm as a worker (users' servers run here), after
    bootstrap's host steps (Docker, data-root, daemon.json, firewalld; no public port)."""
    options = host_options(
        data_root=data_root, adopt=adopt, dns=dns, log_max_size=log_max_size,
        log_max_file=log_max_file, log_driver=log_driver, docker_source=docker_source,
        probe_image=probe_image, probe_host=probe_host, gpu=gpu, force=force)
    host = LocalHost()
    _root(host)
    if target:
        token_value, manager_addr = swarm.parse_join_target(target)
    elif token and manager:
        token_value, manager_addr = swarm.parse_join_target(f"{token}@{manager}")
    else:
        raise UsageError("give TOKEN@HOST, or --token and --manager",
                         "`hostkit cluster init` on the manager prints the command")
    manager_host = manager_addr.rsplit(":", 1)[0].strip("[]")
    all_peers = swarm.normalise_peers([*(peers or []), manager_host])
    # the guard before the join: no user's server runs here unguarded, even for a moment
    steps: List[Step] = [swarm.SwarmPortsStep(all_peers), NodeGuardStep(),
                         swarm.SwarmJoinStep(token_value, manager_addr, advertise_addr or "")]
    if not converge_node(host, "cluster-join", options, steps, public_port=False,
                         dry_run=dry_run, yes=yes):
        raise typer.Exit(1)
    if not dry_run:
        _record_peers(host, all_peers)
        out.print("Joined. On the manager: hostkit cluster sync-images; hostkit cluster status")


def _stack_name(deploy_dir: Path) -> str:
    return swarm.stack_of(Stack(LocalHost(), str(deploy_dir)).read_env())


@cluster_app.command("status")
def cluster_status(deploy_dir: Path = deploy_dir_option(), fmt: OutputFormat = format_option()) -> None:
    """The nodes, their health and uncommitted memory, and the users' servers on each."""
    host = LocalHost()
    swarm.require_manager(host)
    rows = swarm.cluster_status(swarm.read_nodes(host), swarm.read_user_tasks(host, _stack_name(deploy_dir)))
    if fmt is OutputFormat.json:
        typer.echo(json.dumps({"nodes": [{
            "id": r.node.id, "hostname": r.node.hostname, "role": r.node.role, "leader": r.node.leader,
            "state": r.node.state, "availability": r.node.availability, "address": r.node.addr,
            "memory_bytes": r.node.memory_bytes, "committed_bytes": r.committed_bytes,
            "uncommitted_bytes": r.uncommitted_bytes, "cpus": r.node.cpus, "servers": list(r.servers),
        } for r in rows]}, indent=2))
        return
    out.print(f"{'NODE':16} {'ROLE':8} {'STATE':6} {'AVAIL':7} {'ADDRESS':15} {'MEMORY':>8} "
              f"{'FREE*':>8}  SERVERS")
    for r in rows:
        role = r.node.role + ("*" if r.node.leader else "")
        out.print(f"{escape(r.node.hostname):16} {role:8} {r.node.state:6} {r.node.availability:7} "
                  f"{r.node.addr:15} {r.node.memory_bytes / 2**30:7.1f}G "
                  f"{r.uncommitted_bytes / 2**30:7.1f}G  "
                  f"{escape(', '.join(r.servers)) or '-'}", soft_wrap=True)
    out.print("[dim]FREE*: memory not committed to users' servers (their limits); what the hub "
              "places new servers by[/dim]")


@cluster_app.command("sync-images")
def cluster_sync_images(
    images: Optional[List[str]] = typer.Option(
        None, "--image", metavar="IMAGE", help="Image to copy (default: the stack's single-user image)."),
    ssh_user: str = typer.Option("root", "--ssh-user", metavar="USER",
                                 help="Who the manager logs in as on the workers (key-based ssh)."),
    deploy_dir: Path = deploy_dir_option(),
    dry_run: bool = DryRunOpt,
) -> None:
    """Copy the single-user image from this manager to every worker that lacks it (over ssh)."""
    host = LocalHost()
    swarm.require_manager(host)
    env = Stack(host, str(deploy_dir)).read_env()
    wanted = images or [env.get("HOSTKIT_NOTEBOOK_IMAGE", "hostkit/singleuser:full")]
    workers = [n for n in swarm.read_nodes(host) if n.role == "worker" and n.state == "ready"]
    if not workers:
        raise HostkitError("no worker is ready", "join one: hostkit cluster init prints how")
    steps: List[Step] = [swarm.ImageOnNodeStep(node, image, ssh_user, progress=lambda m: out.print(f"  {m}"))
                         for node in workers for image in wanted]
    _run(host, steps, dry_run)


@cluster_app.command("remove")
def cluster_remove(
    node: str = typer.Argument(..., metavar="NODE", help="Hostname or id (see `hostkit cluster status`)."),
    timeout: float = typer.Option(300, "--timeout", metavar="SECONDS",
                                  help="How long to wait for the drain."),
    deploy_dir: Path = deploy_dir_option(),
) -> None:
    """Stop the users' servers on NODE, drain it, and take it out of the swarm."""
    host = LocalHost()
    _root(host)
    swarm.require_manager(host)
    target = swarm.find_node(swarm.read_nodes(host), node)
    todo = swarm.remove_node(host, target, _stack_name(deploy_dir), timeout=timeout,
                             log=lambda m: out.print(escape(m)))
    if todo:
        out.print(f"then {escape(todo)}")
    out.print(f"[dim]users' files stay in their volumes on {escape(target.hostname)}: see README, "
              "\"Several servers\"[/dim]")
