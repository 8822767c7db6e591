"""Network probes on the host: name resolution, upstream resolvers, forwarding, the public port."""

from __future__ import annotations

import contextlib
import socket

import psutil

from hostkit.daemon_config import DaemonJsonError
from hostkit.doctor import ProbeContext
from hostkit.errors import HostkitError
from hostkit.probes import probe
from hostkit.probes.daemon import read_daemon_json
from hostkit.results import Outcome
from hostkit.subsystems.dns import STUB_RESOLVERS, answering, host_nameservers


@probe("dns_host")
def dns_host(ctx: ProbeContext, name: str = "pypi.org") -> Outcome:
    try:
        addrs = sorted({str(ai[4][0]) for ai in socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)})
    except socket.gaierror as exc:
        return Outcome.fail(
            f"the host cannot resolve {name}: {exc.strerror}",
            hint="check /etc/resolv.conf and that its nameservers answer",
        )
    return Outcome.ok(f"{name} -> {', '.join(addrs[:3])}")


@probe("dns_upstreams")
def dns_upstreams(ctx: ProbeContext, name: str = "pypi.org", timeout: float = 3.0) -> Outcome:
    """The resolvers containers get: daemon.json `dns`, else the host's (minus the stub)."""
    try:
        configured = list((read_daemon_json(ctx) or {}).get("dns") or [])
    except DaemonJsonError:
        configured = []
    source = "daemon.json dns"
    if not configured:
        source = "/etc/resolv.conf"
        configured = host_nameservers(ctx.host)
        usable = [s for s in configured if s not in STUB_RESOLVERS]
        if configured and not usable:
            return Outcome.fail(
                "the host uses the systemd-resolved stub (127.0.0.53) and daemon.json sets no dns: "
                "containers get no usable resolver",
                hint="hostkit bootstrap --dns <your site's resolvers>",
            )
        configured = usable
    if not configured:
        return Outcome.fail("no nameserver configured anywhere", hint="hostkit bootstrap --dns IP")
    good, bad = answering(ctx.host, configured, name, timeout)
    if bad:
        return Outcome.fail(
            f"{len(bad)} of {len(configured)} resolvers from {source} fail: " + "; ".join(bad),
            expected=f"each answers for {name}",
            actual="; ".join(good + bad),
            hint="use resolvers that answer from this network: hostkit bootstrap "
            "--dns IP (a campus VPN often has its own)",
        )
    return Outcome.ok(f"every resolver from {source} answers for {name}: " + ", ".join(good))


@probe("ip_forward")
def ip_forward(ctx: ProbeContext) -> Outcome:
    value = ctx.host.read_text("/proc/sys/net/ipv4/ip_forward").strip()
    if value == "1":
        return Outcome.ok("net.ipv4.ip_forward = 1")
    return Outcome.fail(
        "net.ipv4.ip_forward = 0: containers cannot reach the network",
        expected="1",
        actual=value,
        hint="sysctl -w net.ipv4.ip_forward=1 and persist it in /etc/sysctl.d/",
    )


def listeners(port: int) -> list[tuple[str, str]]:
    """(address, process) for every TCP socket listening on `port`."""
    found = []
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            name = "?"
            if conn.pid:
                with contextlib.suppress(psutil.Error):  # the process may be gone already
                    name = psutil.Process(conn.pid).name()
            found.append((str(conn.laddr.ip), f"{name}[{conn.pid}]" if conn.pid else name))
    return sorted(set(found))


def _loopback(addr: str) -> bool:
    return addr.startswith("127.") or addr == "::1"


@probe("public_port")
def public_port(ctx: ProbeContext, port: int = 9090) -> Outcome:
    from hostkit.probes.stack import published, stack_containers

    try:
        deployed = bool(stack_containers(ctx))
    except HostkitError:
        deployed = False
    found = listeners(port)
    where = ", ".join(f"{addr} ({proc})" for addr, proc in found)
    if deployed:
        if not found:
            # no docker-proxy process with "userland-proxy": false: judge what Docker publishes
            return _published_verdict(port, published(ctx, port))
        if all(_loopback(addr) for addr, _ in found):
            return Outcome.warn(
                f"{port} listens on loopback only: {where}",
                hint="publish the port on 0.0.0.0 so clients can connect",
            )
        return Outcome.ok(f"{port} listening on {where}")
    if found:
        return Outcome.fail(
            f"{port} is taken before deploy by {where}",
            hint="stop that service or choose another port (public_port in /etc/hostkit/hostkit.toml)",
        )
    return Outcome.ok(f"{port} is free for the stack")


def _published_verdict(port: int, bindings: list[tuple[str, str]]) -> Outcome:
    if not bindings:
        return Outcome.fail(
            f"the stack is deployed but nothing listens on {port} and no container publishes it",
            hint="hostkit stack status; hostkit stack logs nginx",
        )
    where = ", ".join(f"{name} on {addr}" for addr, name in bindings)
    if all(_loopback(addr) for addr, _ in bindings):
        return Outcome.warn(
            f"{port} published by {where} only",
            hint="publish the port on 0.0.0.0 so clients can connect (hostkit stack up --bind)",
        )
    return Outcome.ok(f"{port} published by {where} (Docker forwards it; no proxy process)")
