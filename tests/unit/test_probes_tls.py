"""TLS checks on certificates made in the test: expired, wrong SAN, mismatched key, weak DH."""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dh, ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from fakes import FakeHost

from hostkit.catalogue import load_catalogue, select
from hostkit.doctor import ProbeContext, run_checks
from hostkit.facts import Facts
from hostkit.ffdhe import FFDHE_PEM
from hostkit.results import CheckResult, Status
from hostkit.settings import Settings

RunCheck = Callable[..., CheckResult]
CERT, KEY, DH = "/certs/hub.crt", "/certs/hub.key", "/certs/dhparam.pem"
SETTINGS = {"cert_file": CERT, "key_file": KEY, "dhparam_file": DH, "server_name": "hub.example.edu"}


def make_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def make_cert(
    key: rsa.RSAPrivateKey,
    days: float = 365,
    names: tuple[str, ...] = ("hub.example.edu",),
    ips: tuple[str, ...] = ("192.0.2.10",),
) -> bytes:
    now = dt.datetime.now(dt.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "x")])
    san = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=400))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return make_key()


def tls_host(
    tmp_path: Path,
    key: rsa.RSAPrivateKey,
    cert: Optional[bytes] = None,
    key_bytes: Optional[bytes] = None,
    key_mode: int = 0o600,
    dh_pem: str = FFDHE_PEM[2048],
) -> FakeHost:
    host = FakeHost(tmp_path)
    host.path("/certs").mkdir()
    host.path(CERT).write_bytes(cert if cert is not None else make_cert(key))
    host.path(KEY).write_bytes(key_bytes if key_bytes is not None else key_pem(key))
    host.path(KEY).chmod(key_mode)
    host.path(DH).write_text(dh_pem)
    return host


def test_good_cert_passes_every_tls_check(tmp_path: Path, key, run_check: RunCheck) -> None:
    host = tls_host(tmp_path, key)
    for check in (
        "tls.files",
        "tls.expiry",
        "tls.key-match",
        "tls.san",
        "tls.key-size",
        "tls.key-mode",
        "tls.dhparam",
    ):
        r = run_check(check, host, **SETTINGS)
        assert r.status is Status.PASS, (check, r.summary)


def test_expired_cert_fails(tmp_path: Path, key, run_check: RunCheck) -> None:
    r = run_check("tls.expiry", tls_host(tmp_path, key, make_cert(key, days=-1)), **SETTINGS)
    assert r.status is Status.FAIL
    assert r.summary == "certificate expired"


def test_cert_expiring_in_three_weeks_warns(tmp_path: Path, key, run_check: RunCheck) -> None:
    r = run_check("tls.expiry", tls_host(tmp_path, key, make_cert(key, days=21)), **SETTINGS)
    assert r.status is Status.WARN


def test_cert_expiring_in_three_days_fails(tmp_path: Path, key, run_check: RunCheck) -> None:
    r = run_check("tls.expiry", tls_host(tmp_path, key, make_cert(key, days=3)), **SETTINGS)
    assert r.status is Status.FAIL


def test_wrong_san_fails_and_names_what_it_covers(tmp_path: Path, key, run_check: RunCheck) -> None:
    host = tls_host(tmp_path, key, make_cert(key, names=("other.example.org",), ips=()))
    r = run_check("tls.san", host, **SETTINGS)
    assert r.status is Status.FAIL
    assert r.actual == "other.example.org"


def test_san_ip_address_is_matched(tmp_path: Path, key, run_check: RunCheck) -> None:
    r = run_check("tls.san", tls_host(tmp_path, key), **{**SETTINGS, "server_name": "192.0.2.10"})
    assert r.status is Status.PASS


def test_wildcard_san_covers_one_label_only(tmp_path: Path, key, run_check: RunCheck) -> None:
    host = tls_host(tmp_path, key, make_cert(key, names=("*.example.edu",), ips=()))
    assert run_check("tls.san", host, **SETTINGS).status is Status.PASS
    r = run_check("tls.san", host, **{**SETTINGS, "server_name": "a.hub.example.edu"})
    assert r.status is Status.FAIL


def test_mismatched_key_fails(tmp_path: Path, key, run_check: RunCheck) -> None:
    other = make_key()
    host = tls_host(tmp_path, key, make_cert(key), key_bytes=key_pem(other))
    r = run_check("tls.key-match", host, **SETTINGS)
    assert r.status is Status.FAIL
    assert "nginx will refuse to start" in r.summary


def test_small_rsa_key_fails(tmp_path: Path, run_check: RunCheck) -> None:
    weak = make_key(1024)
    r = run_check("tls.key-size", tls_host(tmp_path, weak), **SETTINGS)
    assert r.status is Status.FAIL
    assert r.actual == "1024"


def test_world_readable_key_fails_with_chmod_fix(tmp_path: Path, key, run_check: RunCheck) -> None:
    r = run_check("tls.key-mode", tls_host(tmp_path, key, key_mode=0o644), **SETTINGS)
    assert r.status is Status.FAIL
    assert r.hint == f"chmod 600 {KEY}"


def test_weak_dh_parameters_fail(tmp_path: Path, key, run_check: RunCheck) -> None:
    weak = (
        dh.generate_parameters(generator=2, key_size=512)
        .parameter_bytes(serialization.Encoding.PEM, serialization.ParameterFormat.PKCS3)
        .decode()
    )
    r = run_check("tls.dhparam", tls_host(tmp_path, key, dh_pem=weak), **SETTINGS)
    assert r.status is Status.FAIL
    assert r.actual == "512"


def test_rfc7919_group_is_recognised_by_name(tmp_path: Path, key, run_check: RunCheck) -> None:
    r = run_check("tls.dhparam", tls_host(tmp_path, key, dh_pem=FFDHE_PEM[4096]), **SETTINGS)
    assert r.status is Status.PASS
    assert r.summary == "ffdhe4096 (RFC 7919 named group)"


def test_garbage_cert_is_a_clear_error_not_a_crash(tmp_path: Path, key, run_check: RunCheck) -> None:
    r = run_check("tls.files", tls_host(tmp_path, key, cert=b"not a cert"), **SETTINGS)
    assert r.status is Status.ERROR
    assert r.summary.startswith(f"{CERT}: not a PEM certificate")


def test_missing_files_fail_once_and_dependents_skip(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    specs = select(load_catalogue(), ["tls"], ["tls.dhparam", "tls.served"])
    results = run_checks(specs, ProbeContext(host, Facts(host), Settings(**SETTINGS)))
    assert [(r.id, r.status) for r in results if r.status is not Status.SKIP] == [("tls.files", Status.FAIL)]
    assert {r.summary for r in results if r.status is Status.SKIP} == {"needs tls.files"}


# ---- tls.served: the certificate nginx actually serves ------------------------------------
class TlsServer:
    """A local TLS endpoint serving a given certificate, as nginx does on the public port."""

    def __init__(self, tmp_path: Path, cert: bytes, key: rsa.RSAPrivateKey) -> None:
        (tmp_path / "served.crt").write_bytes(cert)
        (tmp_path / "served.key").write_bytes(key_pem(key))
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(tmp_path / "served.crt", tmp_path / "served.key")
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with contextlib.suppress(OSError), self.context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def served(tmp_path: Path, key) -> Iterator[Callable[[bytes], TlsServer]]:
    servers: list[TlsServer] = []

    def start(cert: bytes) -> TlsServer:
        servers.append(TlsServer(tmp_path, cert, key))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def test_served_certificate_matching_the_file_passes(tmp_path: Path, key, served, run_check) -> None:
    cert = make_cert(key)
    server = served(cert)
    host = tls_host(tmp_path, key, cert)
    r = run_check("tls.served", host, public_port=server.port, bind_address="127.0.0.1", **SETTINGS)
    assert r.status is Status.PASS, r.summary
    assert r.summary.startswith(f"127.0.0.1:{server.port} serves {CERT}")


def test_renewed_file_nginx_never_loaded_fails_with_reload(tmp_path: Path, key, served, run_check) -> None:
    server = served(make_cert(key, days=365))
    host = tls_host(tmp_path, key, make_cert(key, days=700))  # renewed on disk, not reloaded
    r = run_check("tls.served", host, public_port=server.port, bind_address="127.0.0.1", **SETTINGS)
    assert r.status is Status.FAIL
    assert "not the certificate in " + CERT in r.summary
    assert "docker compose exec nginx nginx -s reload" in r.hint
    assert "hostkit stack up" in r.hint


def test_served_certificate_for_another_name_fails(tmp_path: Path, key, served, run_check) -> None:
    cert = make_cert(key, names=("other.example.org",), ips=())
    server = served(cert)
    host = tls_host(tmp_path, key, cert)
    r = run_check("tls.served", host, public_port=server.port, bind_address="127.0.0.1", **SETTINGS)
    assert r.status is Status.FAIL
    assert "does not cover hub.example.edu" in r.summary


def test_expiring_served_certificate_fails(tmp_path: Path, key, served, run_check) -> None:
    cert = make_cert(key, days=3)
    server = served(cert)
    host = tls_host(tmp_path, key, cert)
    r = run_check("tls.served", host, public_port=server.port, bind_address="127.0.0.1", **SETTINGS)
    assert r.status is Status.FAIL
    assert "served certificate expires in 3 days" in r.summary


def test_nothing_served_before_deploy_is_a_skip(tmp_path: Path, key, run_check) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # a port nothing listens on
    r = run_check("tls.served", tls_host(tmp_path, key), public_port=port, bind_address="127.0.0.1",
                  **SETTINGS)
    assert (r.status, r.summary) == (Status.SKIP, "stack not deployed")


def make_ca_signed(key: rsa.RSAPrivateKey, ca_name: str) -> tuple[bytes, bytes]:
    """(CA certificate, certificate for `key` it signed), PEM: as a public CA's chain would be."""
    ca_key = make_key()
    now = dt.datetime.now(dt.timezone.utc)
    ca_subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_name)])
    ca = (
        x509.CertificateBuilder().subject_name(ca_subject).issuer_name(ca_subject)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hub.example.edu")]))
        .issuer_name(ca_subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=90))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("hub.example.edu")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return ca.public_bytes(serialization.Encoding.PEM), leaf.public_bytes(serialization.Encoding.PEM)


def test_served_chain_is_verified_against_the_trust_store(tmp_path: Path, key, served, run_check) -> None:
    ca, cert = make_ca_signed(key, "Issuing Test CA")
    other_ca, _ = make_ca_signed(key, "Another Test CA")
    server = served(cert)
    host = tls_host(tmp_path, key, cert)
    host.path("/certs/ca.pem").write_bytes(ca)
    host.path("/certs/other.pem").write_bytes(other_ca)
    where = {"public_port": server.port, "bind_address": "127.0.0.1", **SETTINGS}
    r = run_check("tls.served", host, tls_trust_file="/certs/ca.pem", **where)
    assert r.status is Status.PASS, r.summary
    assert "chained to /certs/ca.pem" in r.summary
    r = run_check("tls.served", host, tls_trust_file="/certs/other.pem", **where)
    assert r.status is Status.FAIL
    assert "the served chain does not verify against /certs/other.pem" in r.summary
    assert "tls_trust_file" in r.hint
    # no trust store given: the system's, which does not know this CA
    r = run_check("tls.served", host, **where)
    assert r.status is Status.FAIL
    assert "does not verify against the system's trust store" in r.summary


def test_a_site_ca_certificate_is_chained_to_the_site_ca(tmp_path: Path, key, served, run_check) -> None:
    ca, cert = make_ca_signed(key, "hostkit CA hub")
    server = served(cert)
    host = tls_host(tmp_path, key, cert)
    host.files({"/opt/hostkit/ca/hostkit-ca.crt": ca.decode()})
    r = run_check("tls.served", host, public_port=server.port, bind_address="127.0.0.1",
                  deploy_dir="/opt/hostkit", **SETTINGS)  # fmt: skip
    assert r.status is Status.PASS, r.summary
    assert "chained to the site CA /opt/hostkit/ca/hostkit-ca.crt" in r.summary


# ---- tls.key-size judges every key type nginx can use --------------------------------------
@pytest.mark.parametrize(
    ("make", "status", "summary"),
    [
        (lambda: ec.generate_private_key(ec.SECP256R1()), Status.PASS, "EC secp256r1 (256 bits)"),
        (lambda: ec.generate_private_key(ec.SECP384R1()), Status.PASS, "EC secp384r1 (384 bits)"),
        (lambda: ec.generate_private_key(ec.SECP224R1()), Status.FAIL, "EC key on secp224r1 (224 bits)"),
        (lambda: ec.generate_private_key(ec.SECP192R1()), Status.FAIL, "EC key on secp192r1 (192 bits)"),
        (ed25519.Ed25519PrivateKey.generate, Status.PASS, "Ed25519"),
    ],
)
def test_key_size_judges_ec_curves_and_ed25519(tmp_path: Path, run_check: RunCheck, make, status,
                                              summary) -> None:
    host = FakeHost(tmp_path).files({KEY: key_pem(make()).decode()})
    r = run_check("tls.key-size", host, **SETTINGS)
    assert (r.status, r.summary) == (status, summary)
