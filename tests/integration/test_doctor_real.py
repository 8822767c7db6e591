"""The doctor against the real thing: this machine's dockerd, resolvers, sockets and openssl."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from hostkit.catalogue import load_catalogue
from hostkit.doctor import ProbeContext, evaluate
from hostkit.facts import Facts
from hostkit.ffdhe import FFDHE_PEM
from hostkit.host import LocalHost
from hostkit.probes.containers import PREFERRED_IMAGES
from hostkit.results import CheckResult, Status
from hostkit.settings import Settings

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MINBASE = "hostkit-test/minbase:bookworm"
LOCK = "/tmp/hostkit-build.lock"


def debian_mirror() -> str:
    for line in Path("/etc/apt/sources.list.d/debian.sources").read_text().splitlines() \
            if Path("/etc/apt/sources.list.d/debian.sources").exists() else []:
        if line.startswith("URIs:"):
            return line.split()[1]
    return "http://deb.debian.org/debian"


@pytest.fixture(scope="session")
def client() -> docker.DockerClient:
    c = docker.from_env(timeout=30)
    c.ping()
    return c


@pytest.fixture(scope="session")
def probe_image(client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A local image with getent and python3: one hostkit built, else a debootstrapped minbase."""
    tags = {t for img in client.images.list() for t in img.tags}
    for tag in sorted(tags):
        if tag.split(":")[0] in PREFERRED_IMAGES:
            return tag
    rootfs = tmp_path_factory.mktemp("minbase")
    subprocess.run(["flock", LOCK, "debootstrap", "--variant=minbase", "--include=python3",
                    "bookworm", str(rootfs), debian_mirror()], check=True, capture_output=True)
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    subprocess.run(["docker", "import", "-", MINBASE], stdin=tar.stdout, check=True, capture_output=True)
    tar.wait()
    shutil.rmtree(rootfs, ignore_errors=True)
    return MINBASE


def check(check_id: str, host: LocalHost | None = None, **settings) -> CheckResult:
    spec = {s.id: s for s in load_catalogue()}[check_id]
    host = host or LocalHost()
    return evaluate(spec, ProbeContext(host, Facts(host), Settings(**settings)))


def hostkit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hostkit", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})}, cwd=REPO, check=False)


@pytest.fixture
def internal_network(client: docker.DockerClient) -> Iterator[str]:
    """A network with no way out: the real shape of 'containers cannot reach the network'."""
    name = f"hostkit-test-internal-{uuid.uuid4().hex[:6]}"
    net = client.networks.create(name, internal=True)
    yield name
    net.remove()


def test_doctor_json_on_this_host_reports_the_real_daemon() -> None:
    proc = hostkit("doctor", "--format", "json", "--only", "docker", "--only", "storage")
    data = json.loads(proc.stdout)
    by_id = {c["id"]: c for c in data["checks"]}
    assert by_id["docker.daemon"]["status"] == "pass"
    info = docker.from_env().info()
    assert info["ServerVersion"] in by_id["docker.version"]["summary"]
    assert by_id["storage.driver"]["summary"].startswith(info["Driver"])
    assert proc.returncode == (1 if any(c["status"] in ("fail", "error") for c in data["checks"]) else 0)


def test_container_resolves_and_reaches_out_on_the_default_bridge(probe_image: str) -> None:
    r = check("dns.container", probe_image=probe_image)
    assert r.status is Status.PASS, r.summary
    r = check("net.container-egress", probe_image=probe_image)
    assert r.status is Status.PASS, r.summary


def test_container_on_a_network_without_egress_fails_dns_and_tcp(probe_image: str,
                                                                 internal_network: str) -> None:
    r = check("dns.container-service", probe_image=probe_image, network=internal_network)
    assert r.status is Status.FAIL  # nothing named jupyterhub on it
    spec_params = {"probe_image": probe_image}
    from hostkit.probes.containers import container_dns, container_egress

    ctx = ProbeContext(LocalHost(), Facts(LocalHost()), Settings(**spec_params))
    dns_outcome = container_dns(ctx, name="pypi.org", network=internal_network)
    assert dns_outcome.status is Status.FAIL
    assert "cannot resolve pypi.org" in dns_outcome.summary
    tcp_outcome = container_egress(ctx, target="pypi.org:443", network=internal_network)
    assert tcp_outcome.status is Status.FAIL


def test_without_any_known_image_hostkit_makes_its_own_and_the_container_checks_run(
        client: docker.DockerClient, monkeypatch: pytest.MonkeyPatch, internal_network: str) -> None:
    from hostkit.probes import containers

    monkeypatch.setattr(containers, "PREFERRED_IMAGES", ())  # as on a fresh host: no stack images
    start = time.monotonic()
    r = check("dns.container")
    assert r.status is Status.PASS, r.summary
    assert time.monotonic() - start < 20  # an import of a few MB, not a build
    assert check("net.container-egress").status is Status.PASS
    images = client.images.list(filters={"label": "org.hostkit.probe=1"})
    assert any(t.startswith("hostkit/probe:") for img in images for t in img.tags)
    # and it tells a broken network from a working one
    assert check("dns.container-service", network=internal_network).status is Status.FAIL


def test_throwaway_containers_are_removed(client: docker.DockerClient, probe_image: str) -> None:
    check("dns.container", probe_image=probe_image)
    assert client.containers.list(all=True, filters={"label": "hostkit.probe=1"}) == []


def test_resolver_that_does_not_answer_fails_upstream_check(tmp_path: Path) -> None:
    host = LocalHost(tmp_path)
    (tmp_path / "etc/docker").mkdir(parents=True)
    # nothing listens on this loopback address: the query goes unanswered
    (tmp_path / "etc/docker/daemon.json").write_text('{"dns": ["127.0.0.9"]}')
    r = check("dns.upstreams", host)
    assert r.status is Status.FAIL
    assert "127.0.0.9" in r.summary


def test_the_hosts_own_resolvers_answer() -> None:
    r = check("dns.upstreams", LocalHost())
    assert r.status in (Status.PASS, Status.FAIL)
    # with no daemon.json on this machine, the host's resolv.conf servers are asked directly
    if not Path("/etc/docker/daemon.json").exists():
        assert r.status is Status.PASS, r.summary


def test_port_taken_before_deploy_fails_and_names_the_process() -> None:
    sock = socket.socket()
    sock.bind(("0.0.0.0", 0))  # noqa: S104 - the public port is bound on all addresses
    sock.listen()
    port = sock.getsockname()[1]
    try:
        r = check("net.public-port", public_port=port)
        assert r.status is Status.FAIL
        assert f"{port} is taken before deploy by 0.0.0.0 (python" in r.summary
    finally:
        sock.close()
    assert check("net.public-port", public_port=port).status is Status.PASS


def test_hanging_daemon_costs_one_timeout_not_a_hang(tmp_path: Path) -> None:
    """A socket that accepts and never answers, like a wedged dockerd."""
    path = tmp_path / "docker.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    threading.Thread(target=accept, daemon=True).start()
    try:
        start = time.monotonic()
        proc = hostkit("doctor", "--format", "json", "--only", "docker", env={
            "DOCKER_HOST": f"unix://{path}"})
        elapsed = time.monotonic() - start
    finally:
        stop.set()
        server.close()
    data = json.loads(proc.stdout)
    by_id = {c["id"]: c for c in data["checks"]}
    assert by_id["docker.daemon"]["status"] == "fail"
    assert "does not answer" in by_id["docker.daemon"]["summary"]
    assert proc.returncode == 1
    assert elapsed < 60  # bounded by the probe timeouts, not the hang


def test_missing_docker_binary_is_a_result_not_a_traceback(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    proc = hostkit("doctor", "--format", "json", "--only", "docker.installed", "--only",
                   "docker.compose", env={"PATH": str(bin_dir)})
    assert "Traceback" not in proc.stderr
    by_id = {c["id"]: c for c in json.loads(proc.stdout)["checks"]}
    assert by_id["docker.installed"]["status"] == "fail"
    assert by_id["docker.compose"]["status"] == "fail"
    assert proc.returncode == 1


def test_bad_selector_is_a_one_line_usage_error() -> None:
    proc = hostkit("doctor", "--only", "no.such.check")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == ["error: --only/--skip: nothing matches 'no.such.check'",
                                        "hint: see `hostkit doctor --list`"]


def test_embedded_ffdhe_groups_are_what_openssl_publishes() -> None:
    for bits, pem in FFDHE_PEM.items():
        proc = subprocess.run(["openssl", "genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt",
                               f"group:ffdhe{bits}"], capture_output=True, text=True, check=True)
        assert proc.stdout == pem


def test_every_output_format_renders_a_real_run(tmp_path: Path) -> None:
    for fmt in ("human", "json", "junit", "prometheus", "nagios"):
        out = tmp_path / f"report.{fmt}"
        proc = hostkit("doctor", "--format", fmt, "--only", "docker", "--output", str(out))
        assert out.read_text().strip(), fmt
        assert proc.returncode in (0, 1, 2) if fmt == "nagios" else proc.returncode in (0, 1)
        assert "Traceback" not in proc.stderr


def test_a_full_run_prints_no_warning_on_stderr(tmp_path: Path) -> None:
    (tmp_path / "dhparam.pem").write_text(FFDHE_PEM[2048])
    settings = tmp_path / "hostkit.toml"
    settings.write_text(f'dhparam_file = "{tmp_path}/dhparam.pem"\n')
    proc = subprocess.run([sys.executable, "-W", "default", "-m", "hostkit", "doctor", "--settings",
                           str(settings), "--format", "json"], capture_output=True, text=True,
                          timeout=300, cwd=REPO, check=False)
    assert json.loads(proc.stdout)["checks"]
    assert proc.stderr == ""


# ---- storage.user-quota on real filesystems --------------------------------------------------
def test_user_quota_check_agrees_with_dockerd_on_this_data_root(tmp_path: Path) -> None:
    """The doctor says whether this host's data root can limit a volume; dockerd, asked for a
    sized volume, must agree."""
    result = check("storage.user-quota", deploy_dir=str(tmp_path))  # no stack: setting off
    name = f"hostkit-quota-probe-{uuid.uuid4().hex[:8]}"
    created = subprocess.run(["docker", "volume", "create", "--opt", "size=10M", name],
                             capture_output=True, text=True, check=False)  # fmt: skip
    if created.returncode == 0:
        subprocess.run(["docker", "volume", "rm", name], capture_output=True, check=True)
        assert result.status is Status.WARN, result.summary
        assert "HOSTKIT_USER_DISK_QUOTA is off" in result.summary
    else:
        assert "quota size requested but no quota support" in created.stderr, created.stderr
        assert result.status is Status.WARN, result.summary
        assert "cannot enforce a per-user disk quota" in result.summary
        assert "prjquota" in result.hint


@pytest.fixture
def xfs_mount(tmp_path: Path) -> Iterator[Path]:
    """A 300 MB xfs file system, loop-mounted without quota options."""
    if shutil.which("mkfs.xfs") is None:
        pytest.fail("mkfs.xfs is needed: apt-get install xfsprogs")
    image, mount = tmp_path / "xfs.img", tmp_path / "mnt"
    with image.open("wb") as fh:
        fh.truncate(300 * 1024 * 1024)
    subprocess.run(["mkfs.xfs", "-q", str(image)], check=True, capture_output=True)
    mount.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(mount)], check=True, capture_output=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True, capture_output=True)


def test_user_quota_check_on_xfs_without_prjquota(xfs_mount: Path, tmp_path: Path) -> None:
    (xfs_mount / "volumes").mkdir()
    host = LocalHost()
    facts = Facts(host)
    facts.docker_info = lambda: {"DockerRootDir": str(xfs_mount)}  # type: ignore[method-assign]
    spec = {s.id: s for s in load_catalogue()}["storage.user-quota"]
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    (deploy / ".env").write_text("HOSTKIT_USER_DISK_QUOTA=10G\n")
    result = evaluate(spec, ProbeContext(host, facts, Settings(deploy_dir=str(deploy))))
    assert result.status is Status.FAIL, result.summary  # Docker would refuse every user's volume
    assert "xfs without project quotas (no prjquota) cannot enforce it" in result.summary
    assert "prjquota" in result.hint
