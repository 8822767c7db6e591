"""Is the deployed hub usable? The doctor's stack checks, and a canary user whose kernel runs code.

`restore` ends with the stack checks; `upgrade` gates on both before it keeps new images.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import Callable

from hostkit.errors import HostkitError
from hostkit.results import CheckResult, Status
from hostkit.stack import ENV_DEFAULTS, Stack

CANARY_USER = "hostkitcanary"  # letters only: DockerSpawner escapes "-" in names
CANARY_CODE = "1+1"
CANARY_EXPECTED = "2"
BAD = (Status.FAIL, Status.ERROR)

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


def stack_checks(stack: Stack) -> list[CheckResult]:
    """The doctor's `stack` checks, pointed at this deploy directory's .env (port, project,
    network, single-user image) rather than the site settings file's defaults."""
    from hostkit.catalogue import load_catalogue, select
    from hostkit.doctor import ProbeContext, run_checks
    from hostkit.facts import Facts
    from hostkit.settings import load_settings

    env = stack.env()
    settings = load_settings(stack.host).with_overrides(
        deploy_dir=stack.directory,
        public_port=int(env.get("HOSTKIT_PORT", ENV_DEFAULTS["HOSTKIT_PORT"])),
        compose_project=env.get("COMPOSE_PROJECT_NAME", ENV_DEFAULTS["COMPOSE_PROJECT_NAME"]),
        network=env.get("HOSTKIT_NETWORK", ENV_DEFAULTS["HOSTKIT_NETWORK"]),
        singleuser_image=env.get("HOSTKIT_NOTEBOOK_IMAGE", ENV_DEFAULTS["HOSTKIT_NOTEBOOK_IMAGE"]),
    )
    specs = select(load_catalogue(), ["stack"], None)
    return run_checks(specs, ProbeContext(stack.host, Facts(stack.host), settings))


def failed_checks(results: list[CheckResult]) -> list[str]:
    """`id: summary` of each check that failed or could not be made."""
    return [f"{r.id}: {r.summary}" for r in results if r.status in BAD]


# Run by python3 inside the canary's own container: its Jupyter server's REST API (with the
# server's own hub token, which may use its server) starts a kernel, and the kernel's
# websocket runs the code. The path a user's notebook takes, from the server inward.
KERNEL_CLIENT = r"""
import json, os, sys, uuid, urllib.request
from tornado.httpclient import HTTPRequest
from tornado.ioloop import IOLoop
from tornado.websocket import websocket_connect

code = sys.argv[1]
base = os.environ["JUPYTERHUB_SERVICE_URL"].replace("0.0.0.0", "127.0.0.1").rstrip("/")
auth = {"Authorization": "token " + os.environ["JUPYTERHUB_API_TOKEN"]}

def call(method, path, body=None):
    req = urllib.request.Request(base + "/api" + path, method=method, headers=auth,
                                 data=None if body is None else json.dumps(body).encode())
    with urllib.request.urlopen(req, timeout=60) as resp:
        text = resp.read().decode()
    return json.loads(text) if text else None

async def run(kernel_id):
    url = base.replace("http", "ws", 1) + f"/api/kernels/{kernel_id}/channels"
    ws = await websocket_connect(HTTPRequest(url, headers=auth, connect_timeout=60, request_timeout=60))
    msg_id = uuid.uuid4().hex
    ws.write_message(json.dumps({
        "header": {"msg_id": msg_id, "username": "", "session": uuid.uuid4().hex,
                   "msg_type": "execute_request", "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False,
                    "user_expressions": {}, "allow_stdin": False}}))
    while True:
        raw = await ws.read_message()
        if raw is None:
            return "the kernel's websocket closed"
        msg = json.loads(raw)
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind = msg.get("msg_type") or msg["header"]["msg_type"]
        if kind == "execute_result":
            return msg["content"]["data"]["text/plain"]
        if kind == "error":
            return "error: " + msg["content"].get("ename", "") + " " + msg["content"].get("evalue", "")

kernel = call("POST", "/kernels", {"name": "python3"})
try:
    result = IOLoop.current().run_sync(lambda: run(kernel["id"]), timeout=120)
finally:
    call("DELETE", "/kernels/" + kernel["id"])
print(json.dumps({"result": result}))
"""


@dataclass(frozen=True)
class CanaryResult:
    ok: bool
    detail: str  # what happened, one line


class Canary:
    """A hostkit-owned account that signs in, spawns a server and runs code on its kernel.

    It is created approved with a random password nobody is shown, and removed afterwards
    with its server and volume, so it never lingers as an account someone could use.
    """

    def __init__(self, stack: Stack, name: str = CANARY_USER, log: Log = _quiet) -> None:
        self.stack = stack
        self.name = name
        self.log = log

    def run(self, spawn_timeout: float = 600) -> CanaryResult:
        from hostkit.accounts import hub_api

        try:
            self._ensure_account()
            self.log(f"canary {self.name}: spawning a server")
            status, text = hub_api(self.stack, "POST", f"/api/users/{self.name}/server")
            if status not in (201, 202, 400):
                return CanaryResult(False, f"the hub refused to spawn {self.name}: HTTP {status} "
                                           f"{text[:200]}")
            problem = self._wait_ready(spawn_timeout)
            if problem:
                return CanaryResult(False, problem)
            container = self.container()
            self.log(f"canary {self.name}: running {CANARY_CODE} on a kernel in {container}")
            result = self.stack.host.run(
                ["docker", "exec", container, "python3", "-c", KERNEL_CLIENT, CANARY_CODE], timeout=240)
            try:
                answer = str(json.loads(result.stdout.strip().splitlines()[-1])["result"])
            except (ValueError, IndexError, KeyError):
                tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
                return CanaryResult(False, f"{self.name}'s kernel did not run code: {tail[0][:300]}")
            if answer != CANARY_EXPECTED:
                return CanaryResult(False, f"{self.name}'s kernel answered {answer!r} to {CANARY_CODE}")
            return CanaryResult(True, f"{self.name} spawned a server and its kernel ran "
                                      f"{CANARY_CODE} = {answer}")
        except HostkitError as exc:
            return CanaryResult(False, f"canary {self.name}: {exc.message}")
        finally:
            self.remove()

    def container(self) -> str:
        prefix = self.stack.env().get("HOSTKIT_CONTAINER_PREFIX", ENV_DEFAULTS["HOSTKIT_CONTAINER_PREFIX"])
        return f"{prefix}-{self.name}"

    def _ensure_account(self) -> None:
        """An approved sign-up (what a person logs in with) and the hub user (what spawns):
        the hub makes the latter only at a first login, which the canary never does."""
        from hostkit.accounts import hub_api, reset_password

        password = secrets.token_urlsafe(24)
        if any(u["name"] == self.name for u in self.stack.users()):
            reset_password(self.stack, self.name, password)
        else:
            self.stack.create_user(self.name, password)
        status, text = hub_api(self.stack, "POST", f"/api/users/{self.name}")
        if status not in (201, 409):  # 409: the hub user exists already
            raise HostkitError(f"the hub refused to add user {self.name}: HTTP {status} {text[:200]}")

    def _wait_ready(self, timeout: float) -> str:
        from hostkit.accounts import hub_api

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, text = hub_api(self.stack, "GET", f"/api/users/{self.name}")
            if status != 200:
                return f"the hub does not list {self.name}: HTTP {status}"
            server = json.loads(text).get("servers", {}).get("")
            if server is None:
                return f"{self.name}'s server stopped while starting (see `hostkit stack logs jupyterhub`)"
            if server.get("ready"):
                return ""
            time.sleep(2)
        return f"{self.name}'s server was not ready within {timeout:.0f}s"

    def remove(self) -> None:
        """The account, its server and its volume go (best effort: the hub may be down)."""
        from hostkit.accounts import delete_account
        from hostkit.volumes import user_volumes

        with contextlib.suppress(HostkitError):
            delete_account(self.stack, self.name)
        self.stack.host.run(["docker", "rm", "-f", self.container()], timeout=120)
        volume = user_volumes(self.stack.host, self.stack.read_env()).get(self.name)
        if volume:
            self.stack.host.run(["docker", "volume", "rm", volume], timeout=120)
