"""Helpers for the stack's integration tests: the real CLI, and a hub user over HTTPS.

Everything goes through nginx on the published port, as a browser would.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pytest
import requests
import urllib3
import websocket

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("HOSTKIT_TEST_ARTIFACTS", "/tmp/hostkit-test-artifacts"))
PACKAGE_SET = os.environ.get("HOSTKIT_TEST_PACKAGE_SET", "full")
BUILD_FLAGS = ["--base", "local", "--package-set", PACKAGE_SET]
# A hub image made by hand from this checkout's inputs (e.g. FROM the shared tag with this
# checkout's hostkit_dockerproxy.py copied in): stacks start from it and nothing is built, so
# a checkout whose hub inputs differ does not rebuild a tag others share on the machine.
GIVEN_HUB_IMAGE = os.environ.get("HOSTKIT_TEST_HUB_IMAGE", "")


def given_images() -> dict[str, str]:
    """With HOSTKIT_TEST_HUB_IMAGE: the settings that name it and the other images as
    `stack build` tags them (already on this machine); empty otherwise."""
    if not GIVEN_HUB_IMAGE:
        return {}
    from hostkit.images import parse_versions

    suite = parse_versions((REPO / "stack" / "versions.env").read_text())["DEBIAN_SUITE"]
    return {
        "HOSTKIT_HUB_IMAGE": GIVEN_HUB_IMAGE,
        "HOSTKIT_NGINX_IMAGE": f"hostkit/nginx:{suite}",
        "HOSTKIT_NOTEBOOK_IMAGE": f"hostkit/singleuser:{PACKAGE_SET}",
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def hostkit(
    *args: str, timeout: float = 3600, check: bool = True, env: Optional[dict[str, str]] = None
) -> subprocess.CompletedProcess[str]:
    """Run the real `hostkit` command line."""
    proc = subprocess.run(
        [sys.executable, "-m", "hostkit", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"hostkit {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def sslyze_command() -> list[str]:
    """sslyze (PyPI) from HOSTKIT_SSLYZE, PATH, or this interpreter; its pins want a venv of its own."""
    given = os.environ.get("HOSTKIT_SSLYZE") or shutil.which("sslyze")
    if given:
        return [given]
    if subprocess.run([sys.executable, "-c", "import sslyze"], check=False).returncode == 0:
        return [sys.executable, "-m", "sslyze"]
    pytest.fail("sslyze is needed: python3 -m venv V; V/bin/pip install sslyze; HOSTKIT_SSLYZE=V/bin/sslyze")


def sslyze_mozilla_intermediate(target: str, ca_file: Path, report_name: str) -> None:
    """sslyze's Mozilla "intermediate" check of TARGET (host:port{ip}) trusting CA_FILE; its
    output is kept in the artifacts directory as REPORT_NAME.txt."""
    scan = subprocess.run(
        [*sslyze_command(), "--mozilla_config=intermediate", f"--certinfo_ca_file={ca_file}",
         f"--json_out={ARTIFACTS / (report_name + '.json')}", target],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"{report_name}.txt").write_text(scan.stdout + scan.stderr)
    assert scan.returncode == 0, scan.stdout[-3000:] + scan.stderr[-2000:]
    assert "Compliant" in scan.stdout, scan.stdout[-3000:]


def docker_json(*args: str) -> Any:
    out = subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout
    return json.loads(out)


@dataclass
class Deployment:
    """A stack deployed by `hostkit stack up` into a temp directory on a free port."""

    directory: Path
    port: int
    prefix: str  # unique per test run: project, network, volumes and containers carry it
    admin_password: str
    settings: dict[str, str] = field(default_factory=dict)
    base_url: str = ""  # another way in than nginx (the benchmark goes straight to the proxy)

    @property
    def url(self) -> str:
        return self.base_url or f"https://127.0.0.1:{self.port}"

    @property
    def network(self) -> str:
        return f"{self.prefix}-net"

    def container_name(self, user: str) -> str:
        return f"{self.prefix}-{user}"

    def volume_name(self, user: str) -> str:
        return f"{self.prefix}-user-{user}"

    def env(self) -> dict[str, str]:
        out = {}
        for line in (self.directory / ".env").read_text().splitlines():
            if line and not line.startswith("#") and "=" in line:
                key, _, value = line.partition("=")
                out[key] = value
        return out

    def cli(self, *args: str, check: bool = True, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
        return hostkit(*args, "--deploy-dir", str(self.directory), check=check, timeout=timeout)

    def up(self, *extra: str) -> subprocess.CompletedProcess[str]:
        flags: list[str] = ["--no-build"] if GIVEN_HUB_IMAGE else []
        for key, value in {**given_images(), **self.settings}.items():
            flags += ["--set", f"{key}={value}"]
        return hostkit(
            "stack",
            "up",
            "--deploy-dir",
            str(self.directory),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--hostname",
            "localhost",
            *BUILD_FLAGS,
            *flags,
            *extra,
            env={"HOSTKIT_ADMIN_PASSWORD": self.admin_password} if self.admin_password else None,
        )

    def remove(self) -> None:
        """Stop the stack and remove every container and volume with its prefix (the hub's
        and every user's)."""
        self.cli("stack", "down", check=False)
        for kind in ("container", "volume"):
            listed = subprocess.run(["docker", kind, "ls", "-aq" if kind == "container" else "-q",
                                     "--filter", f"name={self.prefix}"],
                                    capture_output=True, text=True, check=False)
            for name in listed.stdout.split():
                subprocess.run(["docker", kind, "rm", "-f", name], capture_output=True, check=False)

    def hub_container(self) -> str:
        """The hub's container id (compose v1 and v2 name containers differently)."""
        out = subprocess.run(
            [
                "docker",
                "ps",
                "-q",
                "--filter",
                f"label=com.docker.compose.project={self.prefix}",
                "--filter",
                "label=com.docker.compose.service=jupyterhub",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert len(out) == 1, out
        return out[0]


def require_dockerd() -> None:
    """Fail (not skip) without a daemon: a stack test that did not run did not pass."""
    import shutil

    import pytest

    if shutil.which("docker") is None or subprocess.run(["docker", "info"], capture_output=True,
                                                         check=False).returncode != 0:
        pytest.fail("these tests need a running dockerd")


@contextmanager
def torn_down(dep: Deployment, logs_name: str) -> Iterator[Deployment]:
    """Around a module's deployment: afterwards keep the stack's logs in the artifacts
    directory, take the stack down, and remove every container and volume with its prefix."""
    require_dockerd()
    try:
        yield dep
    finally:
        logs = dep.cli("stack", "logs", "--tail", "300", check=False)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / f"{logs_name}-stack-logs.txt").write_text(logs.stdout + logs.stderr)
        dep.remove()


def new_deployment(tmp: Path) -> Deployment:
    prefix = "hk" + uuid.uuid4().hex[:8]
    dep = Deployment(tmp / "deploy", free_port(), prefix, "Admin-" + uuid.uuid4().hex[:12])
    dep.settings = {
        "COMPOSE_PROJECT_NAME": prefix,
        "HOSTKIT_NETWORK": dep.network,
        "HOSTKIT_HUB_VOLUME": f"{prefix}-hub-data",
        "HOSTKIT_USER_VOLUME": f"{prefix}-user-{{username}}",
        "HOSTKIT_CONTAINER_PREFIX": prefix,
        "HOSTKIT_MEM_LIMIT": "2G",
        "HOSTKIT_CPU_LIMIT": "1",
        "HOSTKIT_CERT_RENEWAL": "off",  # no timer or cron entry on the test machine for a temp stack
    }
    return dep


class HubUser:
    """One person's browser-like session against the hub, through nginx."""

    def __init__(self, dep: Deployment, name: str, password: str) -> None:
        self.dep = dep
        self.name = name
        self.password = password
        self.http = requests.Session()
        self.http.verify = False
        self.http.trust_env = False  # REQUESTS_CA_BUNDLE would override verify=False

    # ---- hub pages ---------------------------------------------------------------------
    def _xsrf(self, path: str) -> str:
        r = self.http.get(f"{self.dep.url}{path}", timeout=30)
        r.raise_for_status()
        token = self.http.cookies.get("_xsrf", path="/hub/") or self.http.cookies.get("_xsrf")
        assert token, f"no _xsrf cookie from {path}"
        return str(token)

    def signup(self) -> requests.Response:
        xsrf = self._xsrf("/hub/signup")
        return self.http.post(
            f"{self.dep.url}/hub/signup",
            data={
                "username": self.name,
                "signup_password": self.password,
                "signup_password_confirmation": self.password,
                "_xsrf": xsrf,
            },
            timeout=30,
        )

    def login(self, password: Optional[str] = None) -> bool:
        """True when the hub accepted the credentials (it redirects and sets its cookie)."""
        self.http.cookies.clear()
        xsrf = self._xsrf("/hub/login")
        r = self.http.post(
            f"{self.dep.url}/hub/login",
            data={"username": self.name, "password": password or self.password, "_xsrf": xsrf},
            allow_redirects=False,
            timeout=30,
        )
        return r.status_code == 302 and any(
            c.name.startswith("jupyterhub-session") or c.name == "jupyterhub-hub-login"
            for c in self.http.cookies
        )

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """The hub's REST API with the session cookie (and the XSRF header it requires)."""
        token = self.http.cookies.get("_xsrf", path="/hub/") or self.http.cookies.get("_xsrf") or ""
        headers = {"X-XSRFToken": str(token), "Referer": f"{self.dep.url}/hub/"}
        kwargs.setdefault("timeout", 60)
        return self.http.request(method, f"{self.dep.url}/hub/api{path}", headers=headers, **kwargs)

    # ---- the user's server -------------------------------------------------------------
    def server_state(self) -> dict[str, Any]:
        r = self.api("GET", f"/users/{self.name}")
        r.raise_for_status()
        data: dict[str, Any] = r.json()
        return data

    def start_server(self, timeout: float = 600, options: Optional[dict[str, Any]] = None) -> None:
        r = self.api("POST", f"/users/{self.name}/server", json=options)
        assert r.status_code in (201, 202, 400), r.text  # 400: already running
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            servers = self.server_state().get("servers", {})
            if servers.get("", {}).get("ready"):
                return
            time.sleep(2)
        raise AssertionError(f"{self.name}'s server did not become ready in {timeout}s")

    def stop_server(self, timeout: float = 120) -> None:
        r = self.api("DELETE", f"/users/{self.name}/server")
        assert r.status_code in (202, 204), r.text
        self.wait_stopped(timeout)

    def wait_stopped(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.server_state().get("servers"):
                return
            time.sleep(2)
        raise AssertionError(f"{self.name}'s server did not stop in {timeout}s")

    def token(self) -> str:
        """An API token for this user's own server (made through the hub's API)."""
        r = self.api(
            "POST", f"/users/{self.name}/tokens", json={"note": "integration test", "expires_in": 3600}
        )
        assert r.status_code in (200, 201), r.text
        return str(r.json()["token"])

    def server_api(self, method: str, path: str, token: str, **kwargs: Any) -> requests.Response:
        return self.http.request(
            method,
            f"{self.dep.url}/user/{self.name}/api{path}",
            headers={"Authorization": f"token {token}"},
            timeout=60,
            **kwargs,
        )

    def run_code(self, code: str, token: str, timeout: float = 120, kernel: str = "python3") -> str:
        """Start a kernel, run `code` over its websocket through nginx, return the result text."""
        r = self.server_api("POST", "/kernels", token, json={"name": kernel})
        assert r.status_code == 201, r.text
        kernel_id = r.json()["id"]
        try:
            return _execute(self.dep, self.name, kernel_id, token, code, timeout)
        finally:
            self.server_api("DELETE", f"/kernels/{kernel_id}", token)


def _execute(dep: Deployment, user: str, kernel_id: str, token: str, code: str, timeout: float) -> str:
    url = dep.url.replace("https://", "wss://").replace("http://", "ws://")
    url += f"/user/{user}/api/kernels/{kernel_id}/channels"
    ws = websocket.create_connection(
        url,
        header=[f"Authorization: token {token}"],
        origin=dep.url,
        sslopt={"cert_reqs": ssl.CERT_NONE, "check_hostname": False},
        timeout=timeout,
    )
    msg_id = uuid.uuid4().hex
    ws.send(
        json.dumps(
            {
                "header": {
                    "msg_id": msg_id,
                    "username": user,
                    "session": uuid.uuid4().hex,
                    "msg_type": "execute_request",
                    "version": "5.3",
                },
                "parent_header": {},
                "metadata": {},
                "content": {
                    "code": code,
                    "silent": False,
                    "store_history": False,
                    "user_expressions": {},
                    "allow_stdin": False,
                },
                "channel": "shell",
                "buffers": [],
            }
        )
    )
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            msg = json.loads(ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg.get("msg_type") or msg["header"]["msg_type"]
            if kind == "execute_result":
                return str(msg["content"]["data"]["text/plain"])
            if kind == "error":
                raise AssertionError(f"kernel error: {msg['content']}")
    finally:
        ws.close()
    raise AssertionError("no execute_result within the timeout")
