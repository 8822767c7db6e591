"""Attacks on the live stack, each run from where the attacker sits, each refused for the
stated reason while the normal path keeps working.

One deployment for the module (`hostkit stack up` on a free port); tests run in order.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest
from stack_support import (
    BUILD_FLAGS,
    GIVEN_HUB_IMAGE,
    REPO,
    Deployment,
    HubUser,
    docker_json,
    free_port,
    hostkit,
    new_deployment,
    sslyze_mozilla_intermediate,
    torn_down,
)

from hostkit import certs, renewal
from hostkit.host import LocalHost

pytestmark = [pytest.mark.integration, pytest.mark.slow]

METADATA_IP = "169.254.169.254"


def _docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=timeout)


class _Listener:
    """A TCP listener on this host that answers every connection with a marker."""

    def __init__(self, address: str, port: int) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((address, port))
        self.sock.listen(16)
        self.port = port
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.sendall(b"reached\n")
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def host_ports() -> Iterator[dict[str, int]]:
    """Two listeners on all of the host's addresses: one allowed to users, one not."""
    allowed, denied = _Listener("0.0.0.0", free_port()), _Listener("0.0.0.0", free_port())  # noqa: S104
    yield {"allowed": allowed.port, "denied": denied.port}
    allowed.close()
    denied.close()


@pytest.fixture(scope="module")
def metadata_service() -> Iterator[int]:
    """A stand-in for a cloud metadata service at 169.254.169.254 (an address on lo)."""
    added = subprocess.run(["ip", "addr", "add", f"{METADATA_IP}/32", "dev", "lo"], check=False)
    try:
        listener = _Listener(METADATA_IP, 80)
        yield 80
        listener.close()
    finally:
        if added.returncode == 0:
            subprocess.run(["ip", "addr", "del", f"{METADATA_IP}/32", "dev", "lo"], check=False)


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory, host_ports: dict[str, int]) -> Iterator[Deployment]:
    deployment = new_deployment(tmp_path_factory.mktemp("attacks"))
    deployment.settings["HOSTKIT_HOST_PORTS"] = str(host_ports["allowed"])
    deployment.settings["HOSTKIT_PIDS_LIMIT"] = "512"
    deployment.settings["HOSTKIT_CERT_RENEWAL"] = "on"  # removed again below
    with torn_down(deployment, "attacks"):
        deployment.settings["HOSTKIT_HUB_IMAGE"] = _pinned_hub_image(deployment.prefix)
        try:
            proc = deployment.up()
            assert f"https://localhost:{deployment.port}/" in proc.stdout, proc.stderr
            yield deployment
        finally:
            renewal.remove_schedule(LocalHost("/"), str(deployment.directory))
    _docker("rmi", deployment.settings["HOSTKIT_HUB_IMAGE"], check=False)


def _pinned_hub_image(prefix: str) -> str:
    """This checkout's hub image under a tag of its own.

    Other checkouts on a shared test machine build the same tag from their own inputs; the
    stack must not start from theirs.
    """
    wanted = (REPO / "stack" / "hostkit_dockerproxy.py").read_text()
    if GIVEN_HUB_IMAGE:
        script = "/srv/hostkit/hostkit_dockerproxy.py"
        inside = _docker("run", "--rm", "--entrypoint", "cat", GIVEN_HUB_IMAGE, script)
        assert inside.stdout == wanted, "HOSTKIT_TEST_HUB_IMAGE lacks this checkout's docker-api proxy"
        return GIVEN_HUB_IMAGE
    for _ in range(3):
        built = hostkit("stack", "build", *BUILD_FLAGS).stdout
        name = next(line.split()[1] for line in built.splitlines() if line.startswith("hub "))
        image_id = _docker("image", "inspect", "-f", "{{.Id}}", name).stdout.strip()
        script = "/srv/hostkit/hostkit_dockerproxy.py"
        inside = _docker("run", "--rm", "--entrypoint", "cat", image_id, script)
        if inside.stdout == wanted:
            tag = f"{name.split(':')[0]}:{prefix}"
            _docker("tag", image_id, tag)
            return tag
    pytest.fail("the hub image kept being rebuilt from other inputs")


@pytest.fixture(scope="module")
def admin(dep: Deployment) -> HubUser:
    return HubUser(dep, "admin", dep.admin_password)


def _approved_user(dep: Deployment, name: str) -> HubUser:
    user = HubUser(dep, name, f"Pw-{uuid.uuid4().hex[:14]}")
    dep.cli("users", "create", name, "--password", user.password)
    assert user.login()
    return user


@pytest.fixture(scope="module")
def alice(dep: Deployment) -> HubUser:
    return _approved_user(dep, "alice")


@pytest.fixture(scope="module")
def bob(dep: Deployment) -> HubUser:
    return _approved_user(dep, "bob")


# ---- finding 1: the hub holds root on the host ------------------------------------------
HUB_ATTACK = r"""
import json, os, sys
import docker
from docker.errors import APIError

image, prefix, network, kind = sys.argv[1:5]
client = docker.from_env(version="auto").api  # DOCKER_HOST, else the default socket
# what the spawner sends, so that only the attack's own field can be the reason
kwargs = dict(network_mode=network, mem_limit="1g", pids_limit=100,
              binds=[f"{prefix}-user-x:/home/jovyan/work"])
# a user volume that dockerd would create as a bind mount of the host's /
bind_root = docker.types.DriverConfig("local", {"type": "none", "o": "bind", "device": "/"})
root_volume = docker.types.Mount("/host", f"{prefix}-user-x", type="volume", driver_config=bind_root)
kwargs.update({"privileged": dict(privileged=True),
               "host-root": dict(binds=["/:/host:rw"]),
               "host-root-volume": dict(binds=[], mounts=[root_volume]),
               "host-network": dict(network_mode="host")}[kind])
try:
    created = client.create_container(
        image, command=["sleep", "60"], name=f"{prefix}-attack-{kind}",
        host_config=client.create_host_config(**kwargs),
    )
    print(json.dumps({"status": 201, "id": created["Id"]}))
except APIError as exc:
    print(json.dumps({"status": exc.status_code, "reason": str(exc.explanation)}))
"""


def _hub_exec(dep: Deployment, *argv: str) -> subprocess.CompletedProcess[str]:
    return _docker("exec", dep.hub_container(), *argv, check=False)


@pytest.mark.parametrize(
    ("kind", "reason"),
    [("privileged", "Privileged"), ("host-root", "bind mount"), ("host-root-volume", "volume driver options"),
     ("host-network", "NetworkMode")],
)
def test_hub_cannot_create_a_container_that_owns_the_host(dep: Deployment, kind: str, reason: str) -> None:
    image = dep.env()["HOSTKIT_NOTEBOOK_IMAGE"]
    proc = _hub_exec(dep, "python3", "-c", HUB_ATTACK, image, dep.prefix, dep.network, kind)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["status"] == 201:
        _docker("rm", "-f", result["id"], check=False)
    assert result["status"] == 403, result
    assert reason in result["reason"], result


def test_hub_runs_unprivileged_without_the_docker_socket(dep: Deployment) -> None:
    assert _hub_exec(dep, "id", "-u").stdout.strip() != "0"
    assert _hub_exec(dep, "test", "-e", "/var/run/docker.sock").returncode != 0
    info = docker_json("inspect", dep.hub_container())[0]
    assert not any(m.get("Source") == "/var/run/docker.sock" for m in info["Mounts"])
    assert "ALL" in (info["HostConfig"]["CapDrop"] or [])


def test_hub_cannot_touch_containers_it_did_not_create(dep: Deployment) -> None:
    code = (
        "import docker, json, sys\n"
        "from docker.errors import APIError\n"
        "c = docker.from_env(version='auto').api\n"
        "try:\n"
        "    c.stop(sys.argv[1]); print(json.dumps({'status': 204}))\n"
        "except APIError as e:\n"
        "    print(json.dumps({'status': e.status_code, 'reason': str(e.explanation)}))\n"
    )
    nginx = _docker(
        "ps",
        "-q",
        "--filter",
        f"label=com.docker.compose.project={dep.prefix}",
        "--filter",
        "label=com.docker.compose.service=nginx",
    ).stdout.split()[0]
    try:
        result = json.loads(_hub_exec(dep, "python3", "-c", code, nginx).stdout.strip().splitlines()[-1])
    finally:
        _docker("start", nginx, check=False)  # undo a successful attack for the tests that follow
    assert result["status"] == 403, result
    assert "not a user container" in result["reason"]
    assert docker_json("inspect", nginx)[0]["State"]["Running"]


def test_spawning_still_works_with_limits(dep: Deployment, alice: HubUser) -> None:
    alice.start_server()
    info = docker_json("inspect", dep.container_name("alice"))[0]
    assert info["HostConfig"]["PidsLimit"] == 512
    assert info["HostConfig"]["Privileged"] is False
    assert alice.run_code("6*7", alice.token()) == "42"


# ---- finding 4: users reach each other and the host ---------------------------------------
PROBE = (
    "import socket\n"
    "def probe(host, port):\n"
    "    try:\n"
    "        s = socket.create_connection((host, port), timeout=4)\n"
    "    except OSError as e:\n"
    "        return type(e).__name__\n"
    "    s.settimeout(2)\n"
    "    try:\n"
    "        data = s.recv(16).decode().strip()\n"
    "    except OSError:\n"
    "        data = ''\n"
    "    s.close()\n"
    "    return data or 'open'\n"
)


def test_users_cannot_reach_each_other_only_the_hub(dep: Deployment, alice: HubUser, bob: HubUser) -> None:
    alice.start_server()
    bob.start_server()
    bob_token = bob.token()
    # bob serves something on 4040 (as PySpark's UI would)
    started = bob.run_code(
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-m', 'http.server', '4040', '--bind', '0.0.0.0'],\n"
        "                     start_new_session=True)\n"
        "time.sleep(2); p.poll() is None",
        bob_token,
    )
    assert started == "True"
    bob_ip = docker_json("inspect", dep.container_name("bob"))[0]["NetworkSettings"]["Networks"][dep.network][
        "IPAddress"
    ]
    # bob reaches his own service: it is up
    assert bob.run_code(PROBE + "probe('127.0.0.1', 4040)", bob_token) == "'open'"
    token = alice.token()
    assert alice.run_code(PROBE + f"probe('{bob_ip}', 4040)", token) == "'TimeoutError'"
    assert alice.run_code(PROBE + f"probe('{bob_ip}', 8888)", token) == "'TimeoutError'"
    # the hub's API stays reachable from alice's server
    hub = alice.run_code(
        "import os, urllib.request\n"
        "urllib.request.urlopen(os.environ['JUPYTERHUB_API_URL'], timeout=10).status",
        token,
    )
    assert hub == "200"


def test_users_reach_only_the_allowed_host_ports_and_no_metadata_service(
    dep: Deployment, alice: HubUser, host_ports: dict[str, int], metadata_service: int
) -> None:
    alice.start_server()
    token = alice.token()
    alias = dep.env()["HOSTKIT_HOST_ALIAS"]
    # the host's listeners answer the host itself: a refusal below is the stack's doing
    with socket.create_connection((METADATA_IP, metadata_service), timeout=4) as s:
        assert s.recv(16) == b"reached\n"
    assert alice.run_code(PROBE + f"probe('{alias}', {host_ports['allowed']})", token) == "'reached'"
    assert alice.run_code(PROBE + f"probe('{alias}', {host_ports['denied']})", token) == "'TimeoutError'"
    assert alice.run_code(PROBE + f"probe('{METADATA_IP}', {metadata_service})", token) == "'TimeoutError'"


# ---- finding 2: anyone can lock the admin out ---------------------------------------------
LOGIN_CLIENT = r"""
import json, sys, time
import requests, urllib3
urllib3.disable_warnings()
url, name, password, tries = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
out = []
for _ in range(tries):
    s = requests.Session()
    s.get(url + "/hub/login", timeout=30, verify=False)
    r = s.post(url + "/hub/login", data={"username": name, "password": password,
               "_xsrf": s.cookies.get("_xsrf") or ""}, allow_redirects=False, timeout=30, verify=False)
    out.append(r.status_code)
print(json.dumps(out))
"""


class _Client:
    """A machine on the stack's network with its own address, talking to nginx directly."""

    def __init__(self, dep: Deployment) -> None:
        self.name = f"{dep.prefix}-client-{uuid.uuid4().hex[:6]}"
        _docker(
            "run", "-d", "--rm", "--name", self.name, "--network", dep.network,
            "--entrypoint", "sleep", dep.env()["HOSTKIT_HUB_IMAGE"], "600",
        )  # fmt: skip

    def logins(self, name: str, password: str, tries: int) -> list[int]:
        proc = _docker(
            "exec", "-e", "REQUESTS_CA_BUNDLE=", self.name, "python3", "-c", LOGIN_CLIENT,
            "https://nginx:8443", name, password, str(tries),
        )  # fmt: skip
        return list(json.loads(proc.stdout.strip().splitlines()[-1]))

    def close(self) -> None:
        _docker("rm", "-f", self.name, check=False)


def test_a_stranger_cannot_lock_the_admin_out_and_brute_force_stays_slow(
    dep: Deployment, admin: HubUser
) -> None:
    stranger, colleague = _Client(dep), _Client(dep)
    try:
        statuses = stranger.logins("admin", "Wrong-password-123", 80)
        assert 429 in statuses, statuses  # nginx's rate limit per address
        assert statuses.index(429) >= 60  # the burst (a class behind one NAT address)
        assert 302 not in statuses
        time.sleep(4)  # one more request is allowed by the rate limit: the lockout answers it
        assert stranger.logins("admin", dep.admin_password, 1) != [302]
        # the admin, from another address, logs in at once
        assert colleague.logins("admin", dep.admin_password, 1) == [302]
    finally:
        stranger.close()
        colleague.close()
    assert admin.login()


# ---- finding 3: state-changing GETs -----------------------------------------------------
def _chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("Debian's chromium is needed: apt-get install chromium")
    return path


class _AttackerSite:
    """A page on another origin whose links point at the hub."""

    def __init__(self, links: dict[str, str]) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        body = "".join(f'<p><a id="{k}" href="{v}">{k}</a></p>' for k, v in links.items()).encode()

        class Page(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
        self.url = f"http://localhost:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def _browser_login(page: Any, dep: Deployment) -> None:
    """The admin logs in; retried when Chromium aborts on a host network change."""
    for _ in range(3):
        try:
            page.goto(f"{dep.url}/hub/login", timeout=60_000)
            page.fill("input[name=username]", "admin")
            page.fill("input[name=password]", dep.admin_password)
            page.click("#login_submit, input[type=submit], button[type=submit]")
            page.wait_for_url(lambda url: "/hub/login" not in url, timeout=60_000)
        except Exception as exc:  # only the network-change abort is retried
            if "ERR_NETWORK_CHANGED" not in str(exc):
                raise
        if any(c["name"].startswith("jupyterhub-") for c in page.context.cookies()):
            return
    raise AssertionError(f"the admin's browser login did not succeed (at {page.url})")


def _follow_link(page: Any, site: str, link: str) -> Optional[int]:
    """The admin opens the other site and follows one of its links; the hub's answer."""
    for attempt in range(3):
        try:
            page.goto(site, timeout=60_000)
            with page.expect_navigation(timeout=60_000) as nav:
                page.click(f"#{link}")
            response = nav.value
            return int(response.status) if response else None
        except Exception as exc:  # Chromium aborts on host network changes (other containers)
            if "ERR_NETWORK_CHANGED" not in str(exc) or attempt == 2:
                raise
    return None


def _approved(dep: Deployment) -> dict[str, bool]:
    users = json.loads(dep.cli("users", "list", "--format", "json").stdout)["users"]
    return {u["name"]: u["approved"] for u in users}


def test_a_cross_site_link_cannot_approve_discard_or_unapprove(dep: Deployment, admin: HubUser) -> None:
    from playwright.sync_api import sync_playwright

    mallory = HubUser(dep, "mallory", f"Pw-{uuid.uuid4().hex[:14]}")
    assert mallory.signup().status_code == 200
    assert _approved(dep)["mallory"] is False
    site = _AttackerSite(
        {
            "approve": f"{dep.url}/hub/authorize/mallory",
            "unapprove": f"{dep.url}/hub/authorize/admin",
            "discard": f"{dep.url}/hub/discard/mallory",
        }
    )
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=_chromium(),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"],
        )  # fmt: skip
        try:
            page = browser.new_context(ignore_https_errors=True).new_page()
            _browser_login(page, dep)
            # the admin's session works for a same-site page
            assert page.goto(f"{dep.url}/hub/authorize", timeout=60_000).status == 200
            statuses = {}
            for link in ("approve", "unapprove", "discard"):
                statuses[link] = _follow_link(page, site.url, link)
            assert statuses == {"approve": 403, "unapprove": 403, "discard": 403}, statuses
            state = _approved(dep)
            assert state["mallory"] is False  # neither approved nor discarded
            assert state["admin"] is True
            # the admin's own path: the authorize page's link approves
            for _ in range(3):  # (a host network change can abort the navigation)
                page.goto(f"{dep.url}/hub/authorize", timeout=60_000)
                with page.expect_navigation(timeout=60_000):
                    page.click("a[href$='authorize/mallory']")
                if _approved(dep)["mallory"]:
                    break
            assert _approved(dep)["mallory"] is True
        finally:
            browser.close()
            site.close()
    assert mallory.login()


# ---- finding 5: secrets where anyone with Docker access reads them ------------------------
def test_docker_inspect_shows_no_secret(dep: Deployment) -> None:
    env = dep.env()
    secrets = {k: env[k] for k in ("HOSTKIT_ADMIN_HASH_B64", "HOSTKIT_API_TOKEN", "CONFIGPROXY_AUTH_TOKEN")}
    assert all(secrets.values())
    ids = _docker("ps", "-q", "--filter", f"label=com.docker.compose.project={dep.prefix}").stdout.split()
    assert len(ids) == 3
    for cid in ids:
        text = _docker("inspect", cid).stdout
        leaked = [k for k, v in secrets.items() if v in text]
        assert not leaked, f"{cid}: {leaked}"
    # the hub reads them from files only it can read
    hub = dep.hub_container()
    listing = _docker("exec", hub, "ls", "-ln", "/run/hostkit-secrets").stdout
    assert "api_token" in listing
    nobody = _docker("exec", "--user", "65534", hub, "cat", "/run/hostkit-secrets/api_token", check=False)
    assert nobody.returncode != 0
    secret_dir = dep.directory / "secrets"
    assert secret_dir.stat().st_mode & 0o777 == 0o700
    # and they work: the admin logs in (hash), `users list` talks to the hub (token)
    assert HubUser(dep, "admin", dep.admin_password).login()
    assert dep.cli("users", "list", "--format", "json").returncode == 0


# ---- findings 7 and 6: HSTS on a self-signed port; changes that never reached containers --
def _served_certificate(dep: Deployment) -> str:
    import ssl as ssl_mod

    return ssl_mod.get_server_certificate(("127.0.0.1", dep.port))


def test_no_hsts_for_a_self_signed_certificate_unless_asked(dep: Deployment) -> None:
    import requests

    r = requests.get(f"{dep.url}/hub/login", verify=False, timeout=30)  # noqa: S501 - self-signed
    assert r.status_code == 200
    assert "Strict-Transport-Security" not in r.headers


def test_settings_certificates_and_admin_config_reach_the_running_containers(
    dep: Deployment, alice: HubUser
) -> None:
    import requests
    from cryptography import x509

    alice.start_server()
    server_before = docker_json("inspect", dep.container_name("alice"))[0]["Id"]
    # the admin's own hub setting, in the directory hostkit never overwrites
    marker = f"hostkit-site-{uuid.uuid4().hex[:8]}"
    site = dep.directory / "jupyterhub_config.d" / "site.py"
    site.parent.mkdir(exist_ok=True)
    site.write_text(f'c.JupyterHub.template_vars = {{"announcement_login": "{marker}"}}\n')
    dep.settings["HOSTKIT_HSTS"] = "on"
    dep.up()
    page = requests.get(f"{dep.url}/hub/login", verify=False, timeout=30)  # noqa: S501 - self-signed
    assert marker in page.text
    assert page.headers["Strict-Transport-Security"].startswith("max-age=")
    assert site.read_text().count(marker) == 1  # untouched by `stack up`
    # a renewed certificate is what nginx serves, without a restart by hand
    renewed = dep.cli("certs", "--renew", "--hostname", "localhost")
    assert "reloaded nginx" in renewed.stderr
    on_disk = x509.load_pem_x509_certificate((dep.directory / "certs" / "hostkit.crt").read_bytes())
    deadline = time.monotonic() + 20  # a reload starts new workers; old ones finish their connections
    while True:
        served = x509.load_pem_x509_certificate(_served_certificate(dep).encode())
        if served.serial_number == on_disk.serial_number or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert served.serial_number == on_disk.serial_number
    lifespan = served.not_valid_after_utc - served.not_valid_before_utc
    assert lifespan.days <= 366  # Mozilla's intermediate profile
    # users' servers kept running through all of it
    assert docker_json("inspect", dep.container_name("alice"))[0]["Id"] == server_before
    assert alice.run_code("2**5", alice.token()) == "32"


# ---- certificates a client can validate: the site CA, checked by sslyze --------------------
def test_site_ca_certificate_passes_sslyze_mozilla_intermediate(dep: Deployment) -> None:
    proc = dep.cli("certs", "--ca", "--hostname", "localhost")
    assert "reloaded nginx" in proc.stderr
    ca_file = dep.directory / "ca" / "hostkit-ca.crt"
    assert (dep.directory / "ca" / "hostkit-ca.key").stat().st_mode & 0o777 == 0o600
    hub = docker_json("inspect", dep.hub_container())[0]
    ca_dir = str(dep.directory / "ca")
    assert not any(str(m.get("Source", "")).startswith(ca_dir) for m in hub["Mounts"])  # the CA stays out
    time.sleep(2)  # nginx's reload
    sslyze_mozilla_intermediate(f"localhost:{dep.port}{{127.0.0.1}}", ca_file, "sslyze")


def test_the_daily_renewal_renews_a_certificate_near_expiry_and_nginx_serves_it(dep: Deployment) -> None:
    from cryptography import x509

    schedule = renewal.render_schedule("sysvinit", str(dep.directory), ["x"])
    (path,) = schedule.files
    entry = Path(path).read_text().splitlines()[-1]  # "M H * * * root COMMAND >/dev/null 2>&1"
    command = entry.split(" root ", 1)[1].rsplit(" >/dev/null", 1)[0]
    assert "certs --renew-if-due --deploy-dir " + str(dep.directory) in command
    # a certificate with 10 days left, as the site CA would have made it a year ago
    ca_dir = dep.directory / "ca"
    ca = ((ca_dir / certs.CA_CERT_NAME).read_text(), (ca_dir / certs.CA_KEY_NAME).read_text())
    old_cert, old_key = certs.make_self_signed("localhost", [], days=10, ca=ca)
    (dep.directory / "certs" / "hostkit.key").write_text(old_key)
    (dep.directory / "certs" / "hostkit.crt").write_text(old_cert)
    proc = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=120, check=False,
                          cwd="/", env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    deadline = time.monotonic() + 20
    while True:
        served = x509.load_pem_x509_certificate(_served_certificate(dep).encode())
        days = (served.not_valid_after_utc - served.not_valid_before_utc).days
        if days >= 364 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert days >= 364
    assert served.issuer.rfc4514_string() == certs.describe(ca[0]).subject  # still the site CA's
