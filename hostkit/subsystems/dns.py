"""Resolvers: which ones this host uses, and whether each one answers when asked directly.

One implementation for the doctor's `dns.upstreams` and for bootstrap, which writes a
resolver into daemon.json only once it has answered here.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from hostkit.daemon_config import DEFAULT_DNS, DaemonOptions
from hostkit.errors import HostkitError, UsageError
from hostkit.facts import Facts
from hostkit.host import LocalHost

STUB_RESOLVERS = ("127.0.0.53", "127.0.0.54")
RESOLV_CONF = "/etc/resolv.conf"
# a name every resolver should know; any answer proves the server answers from here
DNS_PROOF_NAME = "deb.debian.org"


def ask_resolver(server: str, name: str, timeout: float = 3.0, port: int = 53) -> str:
    """Ask one nameserver directly (no fallback to others); returns the first address."""
    import dns.exception
    import dns.resolver

    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [server]
    resolver.port = port
    resolver.lifetime = timeout
    resolver.timeout = timeout
    try:
        answer = resolver.resolve(name, "A")
    except dns.exception.Timeout as exc:
        raise HostkitError(f"{server} did not answer within {timeout:g}s") from exc
    except dns.exception.DNSException as exc:
        raise HostkitError(f"{server}: {type(exc).__name__}: {exc}") from exc
    return str(answer[0])


def host_nameservers(host: LocalHost) -> list[str]:
    """The `nameserver` lines of /etc/resolv.conf, in order (the stub included)."""
    try:
        text = host.read_text(RESOLV_CONF)
    except HostkitError:
        return []
    servers = []
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            servers.append(words[1])
    return servers


def resolved_upstreams(host: LocalHost) -> list[str]:
    """systemd-resolved's own upstream servers (`resolvectl dns`), behind its 127.0.0.53 stub."""
    if not host.which("resolvectl"):
        return []
    try:
        res = host.run(["resolvectl", "dns"], timeout=10)
    except HostkitError:
        return []
    found: list[str] = []
    for line in res.stdout.splitlines():
        for word in line.split(":", 1)[-1].split():
            address = re.sub(r"[#%].*$", "", word)  # 1.1.1.1#cloudflare-dns.com, fe80::1%2
            try:
                ipaddress.ip_address(address)
            except ValueError:
                continue
            if address not in found and address not in STUB_RESOLVERS:
                found.append(address)
    return found


def host_upstreams(host: LocalHost) -> list[str]:
    """The resolvers this host really asks: resolv.conf, with the stub replaced by its upstreams."""
    servers: list[str] = []
    for server in host_nameservers(host):
        candidates = resolved_upstreams(host) if server in STUB_RESOLVERS else [server]
        servers += [s for s in candidates if s not in servers]
    return servers


def answering(host: LocalHost, servers: list[str], name: str,
              timeout: float = 3.0) -> tuple[list[str], list[str]]:
    """(servers that answered for name, why each of the others did not)."""
    good: list[str] = []
    bad: list[str] = []
    for server in servers:
        try:
            host.ask_dns(server, name, timeout)
        except HostkitError as exc:
            bad.append(exc.message)
        else:
            good.append(server)
    return good, bad


def _refuse_unanswered(host: LocalHost, facts: Facts, servers: Sequence[str],
                       why: list[str]) -> UsageError:
    upstreams = [s for s in host_upstreams(host) if s not in servers]
    working = [s for s in upstreams if not facts.resolver_answers(s, DNS_PROOF_NAME)]
    hint = (f"this host's resolvers that answer: {', '.join(working)} (--dns {working[0]})"
            if working else "no resolver of this host answers either: check the network, "
            "then give resolvers that answer here with --dns IP")
    return UsageError(f"--dns {' --dns '.join(servers)}: {'; '.join(why)} (asked for "
                      f"{DNS_PROOF_NAME}); hostkit writes only resolvers that answer", hint)


def choose_dns(host: LocalHost, facts: Facts, options: DaemonOptions,
               existing: dict[str, Any]) -> tuple[DaemonOptions, list[str]]:
    """The dns to write, proven to answer from this host: --dns, the file's own, or a default.

    Given servers must all answer (UsageError otherwise, naming the host's working ones).
    Without --dns an existing `dns` stays; on a first run 8.8.8.8 is written where it answers,
    else the host's own resolvers that do.
    """
    if options.dns is not None:
        failing = [s for s in options.dns if facts.resolver_answers(s, DNS_PROOF_NAME)]
        if failing:
            why = [facts.resolver_answers(s, DNS_PROOF_NAME) for s in failing]
            raise _refuse_unanswered(host, facts, failing, why)
        return options, []
    if existing.get("dns"):
        return options, []  # the admin's choice; the doctor's dns.upstreams judges it
    why = [w for s in DEFAULT_DNS if (w := facts.resolver_answers(s, DNS_PROOF_NAME))]
    if not why:
        return replace(options, dns=DEFAULT_DNS), []
    working = [s for s in host_upstreams(host) if s not in DEFAULT_DNS
               and not facts.resolver_answers(s, DNS_PROOF_NAME)]
    if not working:
        raise _refuse_unanswered(host, facts, DEFAULT_DNS, why)
    note = (f"{', '.join(DEFAULT_DNS)} does not answer here; using this host's resolvers "
            f"{', '.join(working)} for containers")
    return replace(options, dns=tuple(working)), [note]
