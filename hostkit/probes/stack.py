"""Probes of the deployed stack: services, HTTPS through nginx, the single-user image."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from typing import Any

from hostkit.doctor import ProbeContext
from hostkit.errors import HostkitError
from hostkit.probes import probe
from hostkit.results import Outcome


def stack_containers(ctx: ProbeContext) -> list[Any]:
    """The compose project's service containers (spawned user servers are not part of it)."""
    client = ctx.facts.docker_client()
    label = f"com.docker.compose.project={ctx.settings.compose_project}"
    return list(client.containers.list(all=True, filters={"label": label}))


def public_address(ctx: ProbeContext) -> str:
    """Where this host reaches the public port: the bind address, or loopback when it is all."""
    bind = ctx.settings.bind_address or _deployed_bind(ctx)
    if bind in ("", "0.0.0.0", "*"):  # noqa: S104 - comparing, not binding
        return "127.0.0.1"
    if bind in ("::", "[::]"):
        return "::1"
    return bind.strip("[]")


def deployed_setting(ctx: ProbeContext, key: str, default: str = "") -> str:
    """A setting of the stack deployed in deploy_dir (its .env); `default` without one."""
    from hostkit.stack import parse_env

    env_path = f"{ctx.settings.deploy_dir}/.env"
    if not ctx.host.exists(env_path):
        return default
    try:
        return parse_env(ctx.host.read_text(env_path)).get(key, default) or default
    except (HostkitError, OSError):  # not readable (not root): the default
        return default


def _deployed_bind(ctx: ProbeContext) -> str:
    return deployed_setting(ctx, "HOSTKIT_BIND")  # empty: all addresses


def published(ctx: ProbeContext, port: int) -> list[tuple[str, str]]:
    """(host address, container) for every stack container publishing `port` on the host.

    What Docker forwards, whether or not a docker-proxy process listens: with
    `"userland-proxy": false` only the DNAT rule carries the port and no process holds it.
    """
    found = []
    for c in stack_containers(ctx):
        ports = ((c.attrs.get("NetworkSettings") or {}).get("Ports")) or {}
        for bindings in ports.values():
            for b in bindings or []:
                if str(b.get("HostPort")) == str(port):
                    found.append((str(b.get("HostIp") or "0.0.0.0"), c.name))  # noqa: S104
    return sorted(set(found))


def host_port(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


@probe("stack_services")
def stack_services(ctx: ProbeContext, max_restarts: int = 3) -> Outcome:
    containers = stack_containers(ctx)
    if not containers:
        return Outcome.skip(f"stack not deployed (no compose project {ctx.settings.compose_project})")
    bad: list[str] = []
    good: list[str] = []
    for c in containers:
        attrs = c.attrs
        service = attrs["Config"]["Labels"].get("com.docker.compose.service", c.name)
        state = attrs.get("State", {})
        health = (state.get("Health") or {}).get("Status", "")
        restarts = int(attrs.get("RestartCount", 0))
        problems = []
        if state.get("Status") != "running":
            problems.append(f"{state.get('Status')} (exit {state.get('ExitCode')})")
        if health and health != "healthy":
            problems.append(f"health {health}")
        if state.get("OOMKilled"):
            problems.append("OOM-killed")
        if restarts > max_restarts:
            problems.append(f"restarted {restarts}x")
        (bad if problems else good).append(
            f"{service}: {', '.join(problems) or 'running'}"
            + (f" ({health})" if health and not problems else "")
        )
    if bad:
        return Outcome.fail(
            "; ".join(bad),
            actual="; ".join(good + bad),
            hint="hostkit stack logs SERVICE; hostkit stack up restarts it",
        )
    return Outcome.ok("; ".join(good))


def https_get(url: str, timeout: float = 10) -> tuple[int, str]:
    # The certificate itself is judged by the tls.* checks; here only the path through nginx.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as resp:  # noqa: S310
            return int(resp.status), resp.read(4096).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read(4096).decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise HostkitError(f"{url}: {reason}") from exc


@probe("stack_https")
def stack_https(ctx: ProbeContext, port: int = 9090, path: str = "/hub/api") -> Outcome:
    if not stack_containers(ctx):
        return Outcome.skip("stack not deployed")
    url = f"https://{host_port(public_address(ctx), port)}{path}"
    try:
        status, body = https_get(url)
    except HostkitError as exc:
        return Outcome.fail(exc.message, hint="hostkit stack status; hostkit stack logs nginx")
    try:
        version = json.loads(body).get("version")
    except (ValueError, AttributeError):
        version = None
    if status == 200 and version:
        return Outcome.ok(f"JupyterHub {version} answers through nginx at {url}")
    return Outcome.fail(
        f"{url} -> HTTP {status}",
        actual=body[:200],
        hint="502: the hub is down (hostkit stack logs jupyterhub); "
        "404: nginx routes elsewhere (hostkit stack up rewrites its config)",
    )


@probe("stack_image")
def stack_image(ctx: ProbeContext, image: str = "hostkit/singleuser") -> Outcome:
    if not stack_containers(ctx):  # `hostkit stack up` builds it: before deploy, not yet a fault
        return Outcome.skip("stack not deployed")
    client = ctx.facts.docker_client()
    repo = image.split(":", maxsplit=1)[0]
    tags = [t for img in client.images.list(name=repo) for t in img.tags]
    present = image in tags if ":" in image else bool(tags)
    if present:
        return Outcome.ok(f"{', '.join(tags[:3])} present: spawns need no pull")
    return Outcome.fail(
        f"{image} is not on this host: the first spawn would pull or fail", hint="hostkit stack build"
    )
