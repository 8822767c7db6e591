"""Stack probes: before deploy they SKIP, after it they judge; the public port where it is bound."""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, Callable

import pytest
from fakes import FakeContainer, FakeDocker, FakeHost

from hostkit.results import CheckResult, Status

RunCheck = Callable[..., CheckResult]
ALL = "0.0.0.0"  # noqa: S104 - what Docker reports for a port published on every address
HUB = {"Config": {"Labels": {"com.docker.compose.service": "nginx"}}, "State": {"Status": "running"}}


def deployed(tmp_path: Path, ports: dict[str, Any] | None = None) -> FakeHost:
    docker = FakeDocker()
    attrs = {**HUB, "NetworkSettings": {"Ports": ports or {}}}
    docker.containers.items = [FakeContainer("hostkit_nginx_1", attrs)]
    return FakeHost(tmp_path, docker=docker)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_singleuser_image_before_deploy_is_a_skip_like_the_other_stack_checks(tmp_path, run_check) -> None:
    r = run_check("stack.singleuser-image", FakeHost(tmp_path))
    assert (r.status, r.summary) == (Status.SKIP, "stack not deployed")


def test_singleuser_image_missing_after_deploy_fails(tmp_path, run_check) -> None:
    r = run_check("stack.singleuser-image", deployed(tmp_path))
    assert r.status is Status.FAIL


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=30))
            .sign(key, hashes.SHA256()))
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return tmp_path / "c.pem", tmp_path / "k.pem"


class Hub(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"version": "5.5.4"}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hub_on_127_0_0_2(tmp_path: Path) -> Iterator[int]:
    """nginx published on one address only (HOSTKIT_BIND=127.0.0.2): 127.0.0.1 has nothing."""
    cert, key = self_signed(tmp_path)
    server = HTTPServer(("127.0.0.2", 0), Hub)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def test_stack_https_asks_on_the_bind_address_from_settings(tmp_path, run_check, hub_on_127_0_0_2) -> None:
    r = run_check("stack.https", deployed(tmp_path), public_port=hub_on_127_0_0_2, bind_address="127.0.0.2")
    assert r.status is Status.PASS, r.summary
    assert f"https://127.0.0.2:{hub_on_127_0_0_2}/hub/api" in r.summary


def test_stack_https_follows_the_deployed_bind_address(tmp_path, run_check, hub_on_127_0_0_2) -> None:
    host = deployed(tmp_path).files({"/opt/hostkit/.env": "HOSTKIT_BIND=127.0.0.2\n"})
    r = run_check("stack.https", host, public_port=hub_on_127_0_0_2)
    assert r.status is Status.PASS, r.summary


def test_public_port_published_without_a_userland_proxy_passes(tmp_path, run_check) -> None:
    # userland-proxy false: Docker publishes by DNAT only, no docker-proxy process listens
    port = free_port()
    host = deployed(tmp_path, {"8443/tcp": [{"HostIp": ALL, "HostPort": str(port)}]})
    r = run_check("net.public-port", host, public_port=port)
    assert r.status is Status.PASS, r.summary
    assert r.summary == f"{port} published by hostkit_nginx_1 on {ALL} (Docker forwards it; no proxy process)"


def test_public_port_published_on_loopback_only_warns(tmp_path, run_check) -> None:
    port = free_port()
    host = deployed(tmp_path, {"8443/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]})
    assert run_check("net.public-port", host, public_port=port).status is Status.WARN


def test_public_port_neither_published_nor_listening_after_deploy_fails(tmp_path, run_check) -> None:
    r = run_check("net.public-port", deployed(tmp_path), public_port=free_port())
    assert r.status is Status.FAIL
