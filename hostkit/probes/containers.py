"""Probes that run a throwaway container: what a user's server will see of the network."""

from __future__ import annotations

import contextlib
import ipaddress
import shlex
import urllib.parse
from typing import Any, Optional

from hostkit.doctor import ProbeContext
from hostkit.errors import CheckNotApplicable, HostkitError
from hostkit.probes import probe
from hostkit.results import Outcome

# Images hostkit builds or tests with, best first: each has a shell, getent and python3
# (the probes also make do with busybox: nslookup and nc).
PREFERRED_IMAGES = ("hostkit/jupyterhub", "hostkit/singleuser", "hostkit/debian-base", "hostkit-test/minbase")


# images hostkit makes; a recorded one that is gone is replaced, not reported
OWN_IMAGES = ("hostkit/",)


class NoProbeImage(CheckNotApplicable):
    """No image to start a test container from: the check cannot be made."""


def pick_probe_image(ctx: ProbeContext) -> str:
    """The image for throwaway containers: the configured one, a local one we know, else ours.

    Ours is hostkit's tiny probe image (hostkit.probe_image), made from the host's own files.
    """
    client = ctx.facts.docker_client()
    images = client.images.list()
    tags = [t for img in images for t in img.tags]
    configured = ctx.settings.probe_image
    if configured:
        names = {*tags, *(str(getattr(img, "id", "")) for img in images)}
        if configured in names or f"{configured}:latest" in names:
            return configured
        if not configured.startswith(OWN_IMAGES):
            raise NoProbeImage(f"probe_image {configured} is not on this host",
                               f"load it (docker load / docker pull {configured}), or remove "
                               "probe_image from /etc/hostkit/hostkit.toml")
        # one of hostkit's own, recorded by bootstrap and gone since (pruned, upgraded):
        # any other will do, as it did before it was recorded
    for repo in PREFERRED_IMAGES:
        for tag in tags:
            if tag.split(":")[0] == repo:
                return str(tag)
    try:
        return ctx.facts.probe_image()  # made once per run, however many checks ask
    except HostkitError as exc:
        raise NoProbeImage(
            f"no local image to run a test container from, and none could be made: {exc.message}",
            "run `hostkit stack build`, or set probe_image in /etc/hostkit/hostkit.toml",
        ) from exc


def run_in_container(
    ctx: ProbeContext, script: str, network: Optional[str] = None, limit: int = 12
) -> tuple[int, str]:
    """Run `sh -c script` in a fresh container that is always removed; (exit code, output).

    The wait is bounded here, not by a `timeout` binary in the image (busybox images may
    lack one): a resolver that never answers makes glibc retry for far longer than a check
    may take. A container still running after `limit` seconds is killed and reported as
    exit 124, the code `timeout` uses.
    """
    import requests

    client = ctx.facts.docker_client()
    image = pick_probe_image(ctx)  # NoProbeImage propagates: evaluate() reports it as SKIP
    kwargs: dict[str, Any] = {"labels": {"hostkit.probe": "1"}, "entrypoint": ["sh", "-c"]}
    if network:
        kwargs["network"] = network
    container = client.containers.create(image, [script], **kwargs)
    try:
        container.start()
        try:
            code = int(container.wait(timeout=limit).get("StatusCode", 1))
        except requests.exceptions.RequestException:  # the wait's read timed out
            container.kill()
            code = 124
        output = container.logs(stdout=True, stderr=True).decode("utf-8", "replace").strip()
        if code == 124:
            output = (output + f"\n(gave up after {limit}s)").strip()
        return code, output
    except Exception as exc:
        if isinstance(exc, HostkitError):
            raise
        raise HostkitError(f"test container in {image} failed: {exc}") from exc
    finally:
        # removing a throwaway container is best effort; its label lets an admin find leftovers
        with contextlib.suppress(Exception):
            container.remove(force=True)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _network_or_skip(ctx: ProbeContext, network: str) -> Optional[Outcome]:
    if not network:
        return None
    client = ctx.facts.docker_client()
    if not client.networks.list(names=[network]):
        return Outcome.skip(f"network {network} does not exist (stack not deployed)")
    return None


@probe("container_dns")
def container_dns(ctx: ProbeContext, name: str = "pypi.org", network: str = "") -> Outcome:
    skip = _network_or_skip(ctx, network)
    if skip:
        return skip
    quoted = shlex.quote(name)
    # getent where glibc is (Debian/RHEL images), busybox nslookup where it is not
    script = f"getent hosts {quoted} 2>/dev/null || nslookup {quoted}"
    code, out = run_in_container(ctx, script, network or None)
    where = f"a container on {network}" if network else "a container"
    if code == 0 and out:
        first = out.split()[0]
        shown = f" -> {first}" if _is_ip(first) else ""  # nslookup output starts otherwise
        return Outcome.ok(f"{where} resolves {name}{shown}")
    why = "no resolver answered" if code == 124 else f"exit {code}"
    return Outcome.fail(
        f"{where} cannot resolve {name} ({why})",
        actual=out[-200:],
        hint="set reachable resolvers: hostkit bootstrap --dns IP; on firewalld "
        "hosts check docker0's zone; then restart Docker",
    )


# Whatever the image has: python3 (most), bash's /dev/tcp (Debian/RHEL bases), busybox nc.
_TCP_SCRIPT = (
    'if command -v python3 >/dev/null; then python3 -c "import socket,sys; '
    'socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout={t}).close()" {h} {p}; '
    "elif command -v bash >/dev/null; then bash -c 'exec 3<>/dev/tcp/{h}/{p}'; "
    "else nc -w {t} {h} {p} -e true; fi"
)


@probe("container_egress")
def container_egress(ctx: ProbeContext, target: str = "pypi.org:443", network: str = "") -> Outcome:
    skip = _network_or_skip(ctx, network)
    if skip:
        return skip
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise HostkitError(f"egress target must be HOST:PORT, got {target!r}")
    script = _TCP_SCRIPT.format(t=8, h=shlex.quote(host), p=int(port))
    code, out = run_in_container(ctx, script, network or None)
    if code == 0:
        return Outcome.ok(f"a container opens TCP to {target}")
    return Outcome.fail(
        f"a container cannot open TCP to {target} (exit {code})",
        actual=out[-200:],
        hint="check masquerade/forwarding: net.ipv4.ip_forward=1, docker0 in the "
        "`docker` zone (firewalld), then restart Docker",
    )


def http_get_script(url: str) -> str:
    """A shell script that GETs url with whatever the image has: python3, curl, wget (busybox
    too), else bash's /dev/tcp; hostkit's own probe image has busybox or bash."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "localhost", parts.port or 80
    path = parts.path or "/"
    q = shlex.quote(url)
    raw = shlex.quote(f"exec 3<>/dev/tcp/{host}/{port}; "
                      f"printf 'GET {path} HTTP/1.0\\r\\nHost: {host}\\r\\n\\r\\n' >&3; cat <&3")
    return (
        'if command -v python3 >/dev/null; then python3 -c "import sys,urllib.request; '
        f'print(urllib.request.urlopen(sys.argv[1], timeout=8).read().decode()[:300])" {q}; '
        f"elif command -v curl >/dev/null; then curl -fsS --max-time 8 {q}; "
        f"elif command -v wget >/dev/null; then wget -q -O - {q}; "
        f"elif command -v bash >/dev/null; then bash -c {raw}; "
        'else echo "no python3, curl, wget or bash in the probe image" >&2; exit 127; fi'
    )


@probe("container_http")
def container_http(
    ctx: ProbeContext,
    url: str = "http://jupyterhub:8081/hub/api",
    network: str = "",
    expect: str = '"version"',
) -> Outcome:
    """From a container on `network`, GET `url` (what a spawned server needs of the hub)."""
    skip = _network_or_skip(ctx, network)
    if skip:
        return skip
    script = http_get_script(url)
    code, out = run_in_container(ctx, script, network or None)
    if code == 0 and expect in out:
        return Outcome.ok(f"{url} answers from {network or 'the default bridge'}")
    return Outcome.fail(
        f"{url} does not answer from {network or 'the default bridge'} (exit {code})",
        actual=out[-200:],
        hint="spawned servers need the hub: hub_ip 0.0.0.0, hub_connect_ip = the hub "
        "service name, both on this network (hostkit stack status)",
    )
