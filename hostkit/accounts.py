"""Accounts on the live hub: delete, reset a password, volumes per user.

Changes go through the hub's own REST API (the `hostkit` service token in .env), never by
writing the database behind the hub's back: JupyterHub keeps ORM objects in memory
(`expire_on_commit=False`), so a row changed by another process is not seen until a
restart. The request is made from inside the hub container (the API listens there only);
the body travels on standard input, so a password never appears in a command line.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from hostkit.errors import HostkitError, UsageError
from hostkit.stack import Stack
from hostkit.volumes import tree_fingerprint, user_volumes, volume_mountpoint

# Run by the hub container's python3; reads {"method", "path", "body", "token", "accept"} on stdin: the
# token comes from .env on stdin (never in the hub's environment, never on a command line).
HUB_API_CLIENT = r"""
import json, os, sys, urllib.error, urllib.request
req = json.load(sys.stdin)
body = req.get("body")
r = urllib.request.Request(
    "http://127.0.0.1:8081/hub" + req["path"], method=req["method"],
    data=None if body is None else json.dumps(body).encode(),
    headers={"Authorization": "token " + (req.get("token") or os.environ.get("HOSTKIT_API_TOKEN", "")),
             "Content-Type": "application/json", "Accept": req.get("accept") or "application/json"})
try:
    with urllib.request.urlopen(r, timeout=120) as resp:
        status, text = resp.status, resp.read().decode()
except urllib.error.HTTPError as exc:
    status, text = exc.code, exc.read().decode()
print(json.dumps({"status": status, "body": text}))
"""


def hub_api(stack: Stack, method: str, path: str, body: Optional[dict[str, Any]] = None,
            accept: str = "") -> tuple[int, str]:
    """(HTTP status, body) of a request to the hub's API as the `hostkit` service."""
    cid = stack.hub_container()
    result = stack.host.run(
        ["docker", "exec", "-i", cid, "python3", "-c", HUB_API_CLIENT],
        input=json.dumps({"method": method, "path": path, "body": body, "accept": accept,
                          "token": stack.env().get("HOSTKIT_API_TOKEN", "")}),
        timeout=180,
    )
    try:
        answer = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError) as exc:
        raise HostkitError(f"the hub API call failed: {(result.stderr or result.stdout).strip()[-300:]}") \
            from exc
    return int(answer["status"]), str(answer["body"])


def _message(text: str) -> str:
    try:
        return str(json.loads(text).get("message", text))
    except (ValueError, AttributeError):
        return text.strip()[:300]


def _missing_route(status: int, text: str) -> bool:
    """A 404 from the hub itself (no such handler), not from hostkit's handlers."""
    return status == 404 and "(hostkit)" not in _message(text)


OLD_CONFIG = ("the hub runs an older jupyterhub_config.py without hostkit's account API",
              "run `hostkit stack up`, then `docker restart` the hub container")


def reset_password(stack: Stack, name: str, password: str) -> None:
    """Set a user's password (NativeAuthenticator's strength rules apply) and lift a lockout."""
    status, text = hub_api(stack, "POST", f"/hostkit/password/{name}", {"password": password})
    if _missing_route(status, text):
        raise HostkitError(*OLD_CONFIG)
    if status == 404:
        raise UsageError(f"no account named {name}", "`hostkit users list` shows them")
    if status != 200:
        raise UsageError(f"the hub refused the password: {_message(text)}")


def delete_account(stack: Stack, name: str) -> list[str]:
    """Remove the account (its server is stopped first) and its sign-up; the volume stays."""
    done = []
    status, text = hub_api(stack, "DELETE", f"/api/users/{name}")
    if status in (200, 204):
        done.append(f"deleted hub user {name} (server stopped)")
    elif status != 404:
        raise HostkitError(f"the hub refused to delete {name}: HTTP {status} {_message(text)}")
    status, text = hub_api(stack, "DELETE", f"/hostkit/signup/{name}")
    if _missing_route(status, text):
        raise HostkitError(*OLD_CONFIG)
    if status in (200, 204):
        done.append(f"deleted the sign-up of {name}")
    if not done:
        raise UsageError(f"no account named {name}", "`hostkit users list` shows them")
    return done


def restore_signup(stack: Stack, name: str, password_hash: bytes, approved: bool) -> None:
    """Bring back a deleted account (its password hash and approval) from a backup."""
    body = {"password_b64": base64.b64encode(password_hash).decode(), "approved": approved}
    status, text = hub_api(stack, "POST", f"/hostkit/signup/{name}", body)
    if status == 405 or _missing_route(status, text):
        raise HostkitError(*OLD_CONFIG)
    if status != 201:
        raise HostkitError(f"the hub refused to restore {name}'s account: {_message(text)}")


def stop_server(stack: Stack, name: str) -> bool:
    """Stop a user's server through the hub; True when one was running."""
    status, text = hub_api(stack, "DELETE", f"/api/users/{name}/server")
    if status in (202, 204):
        for _ in range(60):
            status, text = hub_api(stack, "GET", f"/api/users/{name}")
            if status != 200 or not json.loads(text).get("servers"):
                return True
            stack.host.run(["sleep", "2"])
        raise HostkitError(f"{name}'s server did not stop within two minutes")
    return False


@dataclass(frozen=True)
class VolumeUsage:
    user: str
    volume: str
    bytes: int
    account: Optional[bool]  # False: nobody of that name has an account; None: hub not running


def volume_usage(stack: Stack) -> list[VolumeUsage]:
    """Each user volume with its size and whether its user still has an account."""
    env = stack.env()
    accounts: Optional[set[str]]
    try:
        accounts = {u["name"] for u in stack.users()}
    except HostkitError:
        accounts = None
    out = []
    for user, volume in user_volumes(stack.host, env).items():
        mountpoint = volume_mountpoint(stack.host, volume)
        size = tree_fingerprint(stack.host, mountpoint)[2] if mountpoint else 0
        out.append(VolumeUsage(user, volume, size, None if accounts is None else user in accounts))
    return out


# ---- servers started ahead of a class ------------------------------------------------------
@dataclass(frozen=True)
class ServerStart:
    user: str
    outcome: str  # "ready", "running already", or why not
    ok: bool


PAGINATION = "application/jupyterhub-pagination+json"
PAGE_SIZE = 200  # the hub's own ceiling by default (api_page_max_limit)


def hub_users(stack: Stack) -> list[dict[str, Any]]:
    """Every hub user's model. The hub answers a page at a time (200 at most), so a class
    larger than a page is read page by page, following the hub's own `next`."""
    users: list[dict[str, Any]] = []
    offset: Optional[int] = 0
    while offset is not None:
        status, text = hub_api(stack, "GET", f"/api/users?offset={offset}&limit={PAGE_SIZE}",
                               accept=PAGINATION)
        if status != 200:
            raise HostkitError(f"the hub did not list its users: HTTP {status} {_message(text)}")
        page = json.loads(text)
        users += page["items"]
        following = (page.get("_pagination") or {}).get("next")
        offset = int(following["offset"]) if following else None
    return users


def users_without_a_server(stack: Stack) -> list[str]:
    """Hub users (everyone who has logged in once) with no server, the admin left out."""
    admin = stack.env().get("HOSTKIT_ADMIN", "admin")
    return sorted(u["name"] for u in hub_users(stack) if not u.get("servers") and u["name"] != admin)


def _refusal(status: int, text: str) -> str:
    if status == 404:
        return "not a hub user yet (appears at the first login)"
    if status == 429:
        return "refused: the hub is full (HOSTKIT_ACTIVE_SERVER_LIMIT, HOSTKIT_SPAWN_QUEUE_LIMIT)"
    return f"refused: HTTP {status} {_message(text)}"


def start_servers(
    stack: Stack,
    names: list[str],
    log: Callable[[str], None],
    timeout: float = 1800,
    every: float = 3.0,
) -> list[ServerStart]:
    """Start these users' servers through the hub and wait until each answers.

    They go through the hub's own queue (`HOSTKIT_SPAWN_SLOTS` at a time), with each user's
    own volume, limits and image, exactly as if they had pressed "Start": only earlier.
    """
    outcomes: dict[str, ServerStart] = {}
    waiting: list[str] = []
    for name in names:
        status, text = hub_api(stack, "POST", f"/api/users/{name}/server")
        if status in (201, 202):
            waiting.append(name)
        elif status == 400 and "already" in _message(text):
            outcomes[name] = ServerStart(name, "running already", True)
        else:
            outcomes[name] = ServerStart(name, _refusal(status, text), False)
    log(f"asked for {len(waiting)} servers; the hub starts them in turn")
    deadline = time.monotonic() + timeout
    while waiting:
        try:
            servers = {u["name"]: u.get("servers", {}).get("") for u in hub_users(stack)}
            listed = True
        except HostkitError:  # a hub busy starting servers may miss one poll; the next one counts
            servers, listed = {}, False
        for name in list(waiting):
            server = servers.get(name)
            if server and server.get("ready"):
                outcomes[name] = ServerStart(name, "ready", True)
                waiting.remove(name)
            elif listed and not server:  # neither pending nor ready: the spawn failed
                outcomes[name] = ServerStart(name, "failed to start (`hostkit stack logs` says why)", False)
                waiting.remove(name)
        ready = sum(o.outcome == "ready" for o in outcomes.values())
        log(f"{ready} ready, {len(waiting)} starting")
        if waiting and time.monotonic() > deadline:
            for name in waiting:
                outcomes[name] = ServerStart(name, f"not ready after {timeout:.0f} s", False)
            break
        if waiting:
            stack.host.run(["sleep", str(every)])
    return [outcomes[name] for name in names]
