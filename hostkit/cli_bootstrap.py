"""`hostkit bootstrap` and `hostkit cleanup`: the command-line side of hostkit.bootstrap."""

from __future__ import annotations

import ipaddress
import logging
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from hostkit.bootstrap import BootstrapOptions, bootstrap_steps
from hostkit.cli_options import DockerSource, LogDriver
from hostkit.daemon_config import ROTATING_DRIVERS
from hostkit.errors import HostkitError, UsageError
from hostkit.facts import Facts
from hostkit.host import LocalHost
from hostkit.redact import redact_argv
from hostkit.settings import DEFAULTS
from hostkit.stack import primary_ip
from hostkit.steps import (
    CHANGED,
    FAILED,
    OK,
    SKIPPED,
    Change,
    Plan,
    PlanResult,
    Step,
    StepResult,
    render_step,
    render_summary,
)
from hostkit.subsystems.daemon_json import read_dns, restore_dns
from hostkit.subsystems.data_root import deletion_blocker
from hostkit.subsystems.data_root_state import STATE_FILE as STATE_FILE_PATH
from hostkit.subsystems.data_root_state import load_state, save_state
from hostkit.subsystems.docker_service import docker_api_info
from hostkit.subsystems.site_settings import SiteSettingsStep

LOG_DIR = "/var/log/hostkit"
out = Console(highlight=False)


def _start_log(host: LocalHost, verb: str) -> str:
    """Send every hostkit log record (commands and their output) to a file for this run."""
    host.makedirs(LOG_DIR, mode=0o750)
    path = f"{LOG_DIR}/{verb}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    handler = logging.FileHandler(host.path(path), encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger("hostkit")
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    root.propagate = False
    logging.getLogger("hostkit").info("hostkit %s: %s", verb, " ".join(redact_argv(sys.argv)))
    return path


class _RichProgress:
    """One rich progress bar per rsync pass."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def __call__(self, label: str) -> Callable[[float], None]:
        progress = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                            TimeElapsedColumn(), console=self.console, transient=False)
        task = progress.add_task(label, total=100)
        progress.start()
        done = False

        def update(pct: float) -> None:
            nonlocal done
            if done:
                return
            progress.update(task, completed=pct)
            if pct >= 100:
                done = True
                progress.stop()

        return update


def _confirm(yes: bool) -> Callable[[list[tuple[Step, Change]]], bool]:
    def ask(disruptive: list[tuple[Step, Change]]) -> bool:
        seconds = max(c.downtime_s for _, c in disruptive)
        out.print(f"\n[bold]Docker will be stopped[/bold] (every container with it) for about "
                  f"{seconds:.0f}s, for:")
        for step, change in disruptive:
            out.print(f"  - {escape(change.summary)}  [dim]({step.name})[/dim]")
        if yes:
            return True
        if not sys.stdin.isatty():
            raise UsageError("this plan stops Docker and there is nobody to confirm it",
                             "run it in a terminal, or pass --yes")
        return typer.confirm("Go ahead?", default=False)

    return ask


def _hostname(host: LocalHost) -> str:
    try:
        return host.read_text("/etc/hostname").strip() or "hostkit"
    except HostkitError:
        return "hostkit"


def _network_probe(host: LocalHost, options: BootstrapOptions) -> StepResult:
    """DNS and egress proven from a throwaway container, after every daemon change.

    The same probes as `hostkit doctor`'s dns.container and net.container-egress.
    """
    from hostkit.doctor import ProbeContext
    from hostkit.probes.containers import (
        NoProbeImage,
        container_dns,
        container_egress,
        pick_probe_image,
    )
    from hostkit.results import Status
    from hostkit.settings import Settings

    title = "containers resolve names and reach out"
    start = time.monotonic()
    if docker_api_info(host) is None:
        return StepResult("network", title, FAILED, message="Docker is not running")
    ctx = ProbeContext(host, Facts(host), Settings(probe_image=options.probe_image or ""))
    try:
        # one image for both probes, recorded for the doctor's later container checks
        ctx.settings = ctx.settings.with_overrides(probe_image=pick_probe_image(ctx))
        outcome = container_dns(ctx, name=options.probe_host)
        if outcome.status is Status.PASS:
            outcome = container_egress(ctx, target=f"{options.probe_host}:80")
    except NoProbeImage:
        return StepResult("network", title, SKIPPED,
                          message="no local image to probe with (there may be no registry)",
                          hint="pass --probe-image IMAGE")
    except HostkitError as exc:
        return StepResult("network", title, FAILED, message=exc.message, hint=exc.hint,
                          seconds=time.monotonic() - start)
    ok = outcome.status is Status.PASS
    if ok:
        _record_probe_image(host, ctx.settings.probe_image)
    return StepResult("network", title, OK if ok else FAILED, message=outcome.summary,
                      hint="" if ok else outcome.hint, seconds=time.monotonic() - start)


def _record_probe_image(host: LocalHost, image: str) -> None:
    """The image the network probe proved things with, for the doctor's container checks."""
    from hostkit.settings import load_settings

    if load_settings(host).probe_image == image:
        return
    step = SiteSettingsStep({"probe_image": image})
    facts = Facts(host)
    if step.check(host, facts):
        step.apply(host, facts, [])


def _roll_back_dns(host: LocalHost, options: BootstrapOptions,
                   before: Optional[list[str]]) -> Optional[StepResult]:
    """Containers failed with the dns this run wrote: put back the one from before the run."""
    now = read_dns(host)
    if now == before or docker_api_info(host) is None:
        return None  # this run did not change the resolvers: nothing to go back to
    title = "daemon.json dns rolled back after the network probe failed"
    start = time.monotonic()
    facts = Facts(host)
    settings = SiteSettingsStep({"dns": before or []})
    try:
        restore_dns(host, facts, before)
        if settings.check(host, facts):
            settings.apply(host, facts, [])
    except HostkitError as exc:
        return StepResult("dns-rollback", title, FAILED, message=exc.message, hint=exc.hint,
                          seconds=time.monotonic() - start)
    again = _network_probe(host, options)
    return StepResult(
        "dns-rollback", title, CHANGED if again.status != FAILED else FAILED,
        message=f"containers failed with dns {', '.join(now or [])}; daemon.json's dns is back "
                f"to {', '.join(before or []) or 'unset'} (before this run), Docker restarted; "
                f"network probe again: {again.status} {again.message}".rstrip(),
        hint="give resolvers that containers can reach: --dns IP",
        seconds=time.monotonic() - start)


def _stack_fingerprint(host: LocalHost, directory: str) -> tuple[str, str]:
    """What `stack up` changes when it changes anything: the .env and the stack's containers."""
    env_file = f"{directory}/.env"
    env = host.read_text(env_file) if host.exists(env_file) else ""
    try:
        ids = host.run(["docker", "ps", "-aq", "--no-trunc", "--filter",
                        "label=com.docker.compose.project=hostkit"], timeout=30).stdout
    except HostkitError:
        ids = ""
    return env, " ".join(sorted(ids.split()))


def stack_up_in_process(host: LocalHost, stack: StackOptions, port: int) -> StepResult:
    """`hostkit stack up` with bootstrap's options, in this process: its errors arrive as
    errors (message and hint), not as text to scrape."""
    import typer.main

    from hostkit.cli_stack import stack_app, stack_up

    try:  # typer releases for Python >= 3.11 carry their own copy of click
        from typer._click import ClickException  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # pragma: no cover - older typer (Python 3.9/3.10) uses click itself
        from click import ClickException  # type: ignore[no-redef,assignment,unused-ignore]

    title = "certs, .env and the stack (hostkit stack up)"
    args = ["--deploy-dir", stack.directory, "--port", str(port), *stack.extra_args]
    if stack.hostname:
        args += ["--hostname", stack.hostname]
    if stack.admin:
        args += ["--admin", stack.admin]
    group = typer.main.get_command(stack_app)
    command = group.commands["up"]  # type: ignore[attr-defined]
    before = _stack_fingerprint(host, stack.directory)
    start = time.monotonic()
    try:
        with command.make_context("hostkit stack up", list(args)) as ctx:
            # the command itself, not its group: a HostkitError reaches us with its hint
            ctx.invoke(stack_up, **ctx.params)
    except ClickException as exc:
        return StepResult("stack", title, FAILED, message=f"--stack-arg: {exc.format_message()}",
                          hint="see `hostkit stack up --help`",
                          seconds=time.monotonic() - start)
    except HostkitError as exc:
        return StepResult("stack", title, FAILED, message=f"hostkit stack up: {exc.message}",
                          hint=exc.hint or "run `hostkit stack up` by hand to see why",
                          seconds=time.monotonic() - start)
    changed = _stack_fingerprint(host, stack.directory) != before
    return StepResult("stack", title, CHANGED if changed else OK,
                      seconds=time.monotonic() - start)


def doctor_in_process(host: LocalHost, stack: StackOptions, port: int,
                      data_root: Optional[str]) -> StepResult:
    """The doctor's whole catalogue against what bootstrap just set up, printed as its table."""
    from hostkit.catalogue import load_catalogue, select
    from hostkit.doctor import ProbeContext, run_checks
    from hostkit.render import render_human
    from hostkit.results import Status
    from hostkit.settings import load_settings

    start = time.monotonic()
    settings = load_settings(host).with_overrides(public_port=port, deploy_dir=stack.directory,
                                                  data_root=data_root)
    results = run_checks(select(load_catalogue(), None, None),
                         ProbeContext(host, Facts(host), settings))
    render_human(results, out)
    bad = [r for r in results if r.status in (Status.FAIL, Status.ERROR)]
    if bad:
        return StepResult("doctor", "hostkit doctor", FAILED,
                          message=f"{len(bad)} check(s) failed: "
                                  + ", ".join(r.id for r in bad[:5]),
                          hint="each failure above comes with its fix",
                          seconds=time.monotonic() - start)
    return StepResult("doctor", "hostkit doctor", OK, seconds=time.monotonic() - start)


def _stack_and_doctor(host: LocalHost, stack: StackOptions, port: int,
                      data_root: Optional[str]) -> list[StepResult]:
    """Certs, .env and the stack through `hostkit stack up`, then the doctor's table."""
    results = [stack_up_in_process(host, stack, port)]
    if results[0].status == FAILED:
        return results
    results.append(doctor_in_process(host, stack, port, data_root))
    return results


@dataclass(frozen=True)
class StackOptions:
    """What bootstrap hands to `hostkit stack up`."""

    enabled: bool = True
    directory: str = DEFAULTS.deploy_dir
    hostname: Optional[str] = None
    admin: Optional[str] = None
    extra_args: tuple[str, ...] = ()


# The host's options, shared by `bootstrap` and `cluster init`/`join` (every node of a
# cluster gets the same host steps).
DataRootOpt = typer.Option(
    None, "--data-root", metavar="DIR",
    help="Move Docker's data here (absolute path on a real disk).")
AdoptOpt = typer.Option(
    False, "--adopt",
    help="--data-root already holds a Docker root: run Docker on it as it is, copying "
         "nothing (the current root is left in place).")
DnsOpt = typer.Option(
    None, "--dns", metavar="IP",
    help="Resolver for containers (repeat for several); each must answer from this host. "
         f"Default: keep daemon.json's, else {', '.join(DEFAULTS.dns)} where it answers, "
         "else this host's resolvers.")
LogMaxSizeOpt = typer.Option(
    None, "--log-max-size", metavar="SIZE",
    help=f"Container log rotation: size per file, e.g. 10m (default: keep, else "
         f"{DEFAULTS.log_max_size}).")
LogMaxFileOpt = typer.Option(
    None, "--log-max-file", metavar="COUNT",
    help=f"Container log rotation: files kept (default: keep, else "
         f"{DEFAULTS.log_max_file}).")
LogDriverOpt = typer.Option(
    None, "--log-driver",
    help="Switch containers' log driver (default: keep the one daemon.json names).")
DockerSourceOpt = typer.Option(
    DockerSource.distro, "--docker-source",
    help="Where Docker comes from on Debian/Ubuntu: the distro's packages or Docker's.")
ProbeImageOpt = typer.Option(
    None, "--probe-image", metavar="IMAGE",
    help="Local image for the container DNS/egress probe (default: one of hostkit's, "
         "made here if need be).")
ProbeHostOpt = typer.Option(
    "deb.debian.org", "--probe-host", metavar="HOST",
    help="Name a container must resolve and reach over HTTP.")
GpuOpt = typer.Option(
    False, "--gpu", help="Where an NVIDIA driver runs: install NVIDIA's container toolkit "
                         "so users' containers can be given GPUs.")
YesOpt = typer.Option(False, "--yes", "-y", help="Do not ask before stopping Docker.")
ForceOpt = typer.Option(False, "--force", help="Try on an unsupported distro.")


def host_options(*, data_root: Optional[str], adopt: bool, dns: Optional[List[str]],
                 log_max_size: Optional[str], log_max_file: Optional[int],
                 log_driver: Optional[LogDriver], docker_source: DockerSource,
                 probe_image: Optional[str], probe_host: str, gpu: bool, force: bool,
                 port: int = DEFAULTS.public_port) -> BootstrapOptions:
    """The command line's host options, checked (one-line errors before anything changes)."""
    if adopt and not data_root:
        raise UsageError("--adopt needs --data-root DIR (the Docker root to use as it is)")
    driver = log_driver.value if log_driver else None
    check_daemon_inputs(dns or [], log_max_size, log_max_file, driver)
    return BootstrapOptions(
        data_root=data_root, adopt=adopt, gpu=gpu, dns=tuple(dns) if dns else None, port=port,
        log_max_size=log_max_size, log_max_file=None if log_max_file is None else
        str(log_max_file), log_driver=driver, force=force,
        docker_source=docker_source.value, probe_image=probe_image, probe_host=probe_host)


def run_host_plan(host: LocalHost, steps: list[Step], notes: list[str], *, dry_run: bool,
                  yes: bool) -> PlanResult:
    """Check every step, print the plan, ask before Docker stops, apply with progress."""
    out.print("[bold]Plan[/bold]" + (" (dry run: nothing will change)" if dry_run else ""))
    plan = Plan(steps, dry_run=dry_run, confirm=_confirm(yes),
                on_planned=lambda r: out.print(render_step(r)))
    plan.notes = notes
    plan.on_result = _print_result
    planned, result = plan.run(host, Facts(host))
    logging.getLogger("hostkit").info("plan: %s", [(s.name, s.status) for s in planned.steps])
    return result


def converge_node(host: LocalHost, verb: str, options: BootstrapOptions, then: list[Step], *,
                  public_port: bool, dry_run: bool, yes: bool) -> bool:
    """A cluster node's plan: bootstrap's host steps (Docker, data-root, daemon.json,
    firewalld), then the given steps (the swarm's), then the network proven from a
    container (dns rolled back if it fails). True when everything went through."""
    log_path = _start_log(host, verb)
    recorded: dict[str, Any] = {"public_port": options.port} if public_port else {}
    if options.data_root:
        recorded["data_root"] = options.data_root
    dns_before = read_dns(host)
    steps, relocate = bootstrap_steps(options, recorded, progress=_RichProgress(out),
                                      public_port=public_port)
    result = run_host_plan(host, [*steps, *then], relocate.notes, dry_run=dry_run, yes=yes)
    no_stack = StackOptions(False, DEFAULTS.deploy_dir)
    extra = [] if dry_run or result.failed else _after_the_plan(host, options, no_stack, dns_before)
    for note in result.notes:
        out.print(f"[cyan]note:[/cyan] {escape(note)}")
    out.print(render_summary(result) + _extra_summary(extra))
    out.print(f"[dim]log: {log_path}[/dim]")
    return not (result.failed or any(r.status == FAILED for r in extra))


def bootstrap(
    *,
    data_root: Optional[str] = DataRootOpt,
    adopt: bool = AdoptOpt,
    dns: Optional[List[str]] = DnsOpt,
    port: int = typer.Option(
        DEFAULTS.public_port, "--port", metavar="PORT",
        help="Public HTTPS port to open in firewalld."),
    log_max_size: Optional[str] = LogMaxSizeOpt,
    log_max_file: Optional[int] = LogMaxFileOpt,
    log_driver: Optional[LogDriver] = LogDriverOpt,
    docker_source: DockerSource = DockerSourceOpt,
    probe_image: Optional[str] = ProbeImageOpt,
    probe_host: str = ProbeHostOpt,
    gpu: bool = GpuOpt,
    yes: bool = YesOpt,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan; change nothing."),
    force: bool = ForceOpt,
    stack: bool = typer.Option(
        True, "--stack/--no-stack", help="Deploy the hub (hostkit stack up) and run the doctor."),
    deploy_dir: Path = typer.Option(
        Path(DEFAULTS.deploy_dir), "--deploy-dir", metavar="DIR", file_okay=False,
        help="Deploy directory of the stack (setting deploy_dir)."),
    hostname: Optional[str] = typer.Option(
        None, "--hostname", metavar="NAME", help="Host name clients use (certificate and URL)."),
    admin: Optional[str] = typer.Option(
        None, "--admin", metavar="NAME", help="The hub's admin user name."),
    stack_arg: Optional[List[str]] = typer.Option(
        None, "--stack-arg", metavar="ARG",
        help="Extra argument for `hostkit stack up` (repeat), e.g. --stack-arg=--package-set=slim."),
) -> None:
    """Take this server to a running hub: Docker, data-root, daemon.json, firewalld."""
    options = host_options(
        data_root=data_root, adopt=adopt, dns=dns, log_max_size=log_max_size,
        log_max_file=log_max_file, log_driver=log_driver, docker_source=docker_source,
        probe_image=probe_image, probe_host=probe_host, gpu=gpu, force=force, port=port)
    host = LocalHost()
    if not host.is_root():
        raise UsageError("bootstrap changes the system and must run as root",
                         "run it with sudo")
    stack_options = StackOptions(stack, str(deploy_dir), hostname, admin,
                                 tuple(stack_arg or ()))
    log_path = _start_log(host, "bootstrap")
    # dns and log rotation are added by the daemon-json step: what daemon.json really says
    recorded: dict[str, Any] = {"public_port": port, "deploy_dir": stack_options.directory}
    dns_before = read_dns(host)
    if data_root:
        recorded["data_root"] = data_root
    steps, relocate = bootstrap_steps(options, recorded, progress=_RichProgress(out))

    result = run_host_plan(host, steps, relocate.notes, dry_run=dry_run, yes=yes)
    if dry_run and stack_options.enabled and not result.failed:
        out.print(f"then: would run: hostkit stack up --deploy-dir {stack_options.directory} "
                  f"--port {port} and hostkit doctor")
    if dry_run or result.aborted:
        out.print(render_summary(result))
        out.print(f"[dim]log: {log_path}[/dim]")
        raise typer.Exit(1 if result.failed else 0)

    extra = [] if result.failed else _after_the_plan(host, options, stack_options, dns_before)
    for note in result.notes:
        out.print(f"[cyan]note:[/cyan] {escape(note)}")
    out.print(render_summary(result) + _extra_summary(extra))
    failed = result.failed or any(r.status == FAILED for r in extra)
    if not failed:
        ip = primary_ip(host) or "127.0.0.1"
        when = "" if stack_options.enabled else " (once `hostkit stack up` has run)"
        name = stack_options.hostname or _hostname(host)
        out.print(f"URL{when}: https://{ip}:{port}/   (clients' /etc/hosts: {ip} {name})")
    out.print(f"[dim]log: {log_path}[/dim]")
    raise typer.Exit(1 if failed else 0)


def _after_the_plan(host: LocalHost, options: BootstrapOptions, stack_options: StackOptions,
                    dns_before: Optional[list[str]]) -> list[StepResult]:
    """The network proven from a container (dns rolled back if it fails), then the stack
    and the doctor; each result printed as it comes."""
    extra = [_network_probe(host, options)]
    _print_result(extra[-1])
    if extra[-1].status == FAILED:
        rollback = _roll_back_dns(host, options, dns_before)
        if rollback:
            extra.append(rollback)
            _print_result(rollback)
    if stack_options.enabled and extra[-1].status != FAILED:
        for r in _stack_and_doctor(host, stack_options, options.port, options.data_root):
            extra.append(r)
            _print_result(r)
    return extra


def _extra_summary(extra: list[StepResult]) -> str:
    if not extra:
        return ""
    return "; after the plan: " + ", ".join(f"{r.name} {r.status}" for r in extra)


# go-units' FromHumanSize, which dockerd uses for max-size: "10m", "10MB", "1.5g", "500k"
_HUMAN_SIZE = re.compile(r"^\d+(\.\d+)?\s*([kKmMgGtTpP][iI]?[bB]?|[bB])?$")


def check_daemon_inputs(dns: list[str], log_max_size: Optional[str],
                        log_max_file: Optional[int], log_driver: Optional[str] = None) -> None:
    """Refuse values dockerd would reject, before anything is stopped or written.

    dockerd 20.10 accepts a bad max-size at start and fails every container creation
    later; a bad resolver makes it refuse to start. Both are cheaper to catch here.
    """
    for server in dns:
        try:
            ipaddress.ip_address(server)
        except ValueError:
            raise UsageError(f"--dns {server}: not an IP address",
                             "give the resolver's address, e.g. --dns 10.0.0.53") from None
    if log_max_size is not None and not _HUMAN_SIZE.match(log_max_size):
        raise UsageError(f"--log-max-size {log_max_size}: not a size",
                         "write it like 10m, 100k or 1g")
    if log_driver is not None and log_driver not in ROTATING_DRIVERS:
        raise UsageError(f"--log-driver {log_driver}: hostkit sets only "
                         f"{' or '.join(ROTATING_DRIVERS)}, the drivers it can rotate",
                         "set another driver in daemon.json yourself; bootstrap keeps it")
    if log_max_file is not None and log_max_file < 1:
        raise UsageError(f"--log-max-file {log_max_file}: must be at least 1")


def _print_result(res: StepResult) -> None:
    out.print(render_step(res, show_diff=False))
    logging.getLogger("hostkit").info("step %s: %s %s", res.name, res.status, res.message)


def cleanup(
    *,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before deleting."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be removed."),
) -> None:
    """Delete the old Docker data roots that bootstrap moved aside (after asking)."""
    host = LocalHost()
    if not host.is_root():
        raise UsageError("cleanup deletes system data and must run as root", "run it with sudo")
    entries = load_state(host)
    present = [e for e in entries if host.exists(e["path"])]
    if not present:
        out.print("nothing to clean up: no old Docker data root is kept")
        return
    info = docker_api_info(host)
    current = str(info.get("DockerRootDir", "")) if info else ""
    for e in present:
        pending = " [interrupted move: left alone]" if e.get("status") == "pending" else ""
        out.print(f"old data root {e['path']} (moved from {e.get('from')} to {e.get('to')} "
                  f"on {e.get('when')}){pending}")
    if dry_run:
        return
    if not info:
        raise HostkitError("Docker is not running, so hostkit cannot prove the old roots are "
                           "unused", "start Docker, check your containers, then run cleanup")
    # Checked on the paths themselves (device and inode, mounts), never on their names: a
    # bind mount or a link can make a recorded path Docker's running root.
    blocked = [why for e in present if (why := deletion_blocker(host, e["path"], current))]
    if blocked:
        raise HostkitError(f"not deleting anything: {blocked[0]}",
                           f"fix or remove that entry in {STATE_FILE_PATH}, then retry")
    doomed = [e for e in present if e.get("status") != "pending"]
    if not doomed:
        out.print("nothing to delete: the only old roots kept are from interrupted moves")
        return
    if not yes and not typer.confirm(f"Delete {len(doomed)} old data root(s)? This cannot be "
                                     "undone", default=False):
        raise typer.Exit(1)
    log_path = _start_log(host, "cleanup")
    for e in doomed:
        host.run(["rm", "-rf", "--one-file-system", "--", e["path"]], timeout=7200, check=True)
        out.print(f"removed {e['path']}")
    save_state(host, [e for e in entries if host.exists(e["path"])])
    out.print(f"[dim]log: {log_path}[/dim]")
