"""firewalld as the doctor reads it: over D-Bus with busctl, else with firewall-cmd.

`firewall-cmd` is a Python program: each call starts an interpreter (0.5-2 s on a small
server). firewalld answers the same questions on the system bus in milliseconds, and
`busctl` ships with systemd on every RHEL and Debian host. Where there is no system bus
(a container, an old busctl), firewall-cmd answers instead.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from hostkit.errors import HostkitError
from hostkit.host import LocalHost

DEST = "org.fedoraproject.FirewallD1"
OBJECT = "/org/fedoraproject/FirewallD1"
ZONE_IFACE = f"{DEST}.zone"
FIREWALLD_CONF = "/etc/firewalld/firewalld.conf"


@dataclass(frozen=True)
class FirewalldInfo:
    running: bool
    state: str
    backend: str  # nftables / iptables / unknown
    via: str = "firewall-cmd"  # how it was asked: "D-Bus" or "firewall-cmd"


class NoBus(HostkitError):
    """busctl cannot reach the system bus here: ask firewall-cmd."""


def configured_backend(host: LocalHost) -> str:
    backend = "unknown"
    if host.exists(FIREWALLD_CONF):
        for line in host.read_text(FIREWALLD_CONF).splitlines():
            key, _, value = line.strip().partition("=")
            if key == "FirewallBackend":
                backend = value.strip() or backend
    return backend


def busctl_values(text: str) -> list[str]:
    """The values of busctl's text output: 's "public"' -> ['public'];
    'aas 2 2 "9090" "tcp" 2 "53" "udp"' -> ['9090', 'tcp', '53', 'udp'] (counts dropped)."""
    words = shlex.split(text)
    if not words:
        return []
    signature, rest = words[0], words[1:]
    if signature == "s":
        return rest[:1]
    if signature == "aas":  # count, then per inner array: count, items
        out, at = [], 1
        for _ in range(int(rest[0]) if rest else 0):
            n = int(rest[at])
            out += rest[at + 1 : at + 1 + n]
            at += 1 + n
        return out
    return rest


def _busctl(host: LocalHost, *args: str) -> list[str]:
    res = host.run(["busctl", *args], timeout=10)
    if res.ok:
        return busctl_values(res.stdout)
    if "was not provided by any" in res.stderr or "ServiceUnknown" in res.stderr:
        raise HostkitError("firewalld not running")
    raise NoBus(f"busctl: {res.stderr.strip() or f'exit {res.returncode}'}")


def observe_state(host: LocalHost) -> FirewalldInfo:
    """Whether firewalld runs, and its backend (read from firewalld.conf)."""
    backend = configured_backend(host)
    has_cmd = bool(host.which("firewall-cmd"))
    if host.which("busctl"):
        try:
            (state,) = _busctl(host, "get-property", DEST, OBJECT, DEST, "state") or ["unknown"]
            return FirewalldInfo(state.lower() == "running", state.lower(), backend, "D-Bus")
        except NoBus:
            pass
        except HostkitError:  # not on the bus: not running (or not installed)
            return FirewalldInfo(False, "not running" if has_cmd else "not installed", backend, "D-Bus")
    if not has_cmd:
        return FirewalldInfo(False, "not installed", backend)
    res = host.run(["firewall-cmd", "--state"], timeout=15)
    state = (res.stdout or res.stderr).strip() or "unknown"
    return FirewalldInfo(res.ok and state == "running", state, backend)


def zone_of_interface(host: LocalHost, info: FirewalldInfo, interface: str) -> str:
    """The zone an interface is in; "none" when it is in none."""
    if info.via == "D-Bus":
        zone = _busctl(host, "call", DEST, OBJECT, ZONE_IFACE, "getZoneOfInterface", "s", interface)
        return (zone[0] if zone else "") or "none"
    res = host.run(["firewall-cmd", f"--get-zone-of-interface={interface}"], timeout=15)
    return res.stdout.strip() if res.ok else "none"


def default_zone_ports(host: LocalHost, info: FirewalldInfo) -> tuple[str, tuple[str, ...]]:
    """The default zone and its open ports ("9090/tcp"), as firewalld runs now."""
    if info.via == "D-Bus":
        (zone,) = _busctl(host, "call", DEST, OBJECT, DEST, "getDefaultZone") or [""]
        values = _busctl(host, "call", DEST, OBJECT, ZONE_IFACE, "getPorts", "s", zone)
        return zone, tuple(f"{port}/{proto}" for port, proto in zip(values[::2], values[1::2]))
    zone = host.run(["firewall-cmd", "--get-default-zone"], timeout=15).stdout.strip()
    ports = host.run(["firewall-cmd", f"--zone={zone}", "--list-ports"], timeout=15).stdout.split()
    return zone, tuple(ports)
