from __future__ import annotations

import datetime as dt
import ipaddress
import json
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_parameters
from fakes import FakeHost

from hostkit import certs
from hostkit.errors import HostkitError, UsageError


def _rfc7919_ffdhe2048() -> int:
    """p = 2^2048 - 2^1984 + (floor(2^1918 * e) + 560316) * 2^64 - 1 (RFC 7919, A.1)."""
    e = Fraction(0)
    term = Fraction(1)
    for k in range(0, 400):
        if k:
            term /= k
        e += term
    floor_e = (2**1918 * e.numerator) // e.denominator
    return 2**2048 - 2**1984 + (floor_e + 560316) * 2**64 - 1


def test_ffdhe2048_is_the_rfc7919_group() -> None:
    params = load_pem_parameters(certs.ffdhe2048_pem().encode()).parameter_numbers()
    assert params.p == _rfc7919_ffdhe2048()
    assert params.g == 2


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
def test_ffdhe2048_matches_openssl_named_group() -> None:
    out = subprocess.run(
        ["openssl", "genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt", "group:ffdhe2048"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    theirs = load_pem_parameters(out.encode()).parameter_numbers()
    assert theirs.p == _rfc7919_ffdhe2048()
    assert out == certs.ffdhe2048_pem()


def test_self_signed_cert_names_host_and_ips() -> None:
    ips = [ipaddress.ip_address("192.0.2.10"), ipaddress.ip_address("2001:db8::1")]
    cert_pem, key_pem = certs.make_self_signed("hub.example.org", ips, extra_names=("hub",), days=30)
    info = certs.describe(cert_pem)
    assert info.dns_names == ("hub.example.org", "hub", "localhost")
    assert info.ip_addresses == ("192.0.2.10", "2001:db8::1", "127.0.0.1")
    assert info.self_signed
    assert 29 <= info.days_left() <= 30
    assert certs.key_matches_cert(cert_pem, key_pem)
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


def test_key_of_another_cert_does_not_match() -> None:
    cert_a, _ = certs.make_self_signed("a", [])
    _, key_b = certs.make_self_signed("b", [])
    assert not certs.key_matches_cert(cert_a, key_b)


def test_ensure_certs_writes_key_0600_and_keeps_an_existing_pair(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    first = certs.ensure_certs(host, "/opt/hostkit/certs", hostname="hub.example.org", ip_addresses=[])
    key = host.path("/opt/hostkit/certs/hostkit.key")
    assert key.stat().st_mode & 0o777 == 0o600
    assert "/opt/hostkit/certs/hostkit.crt" in first.changed
    assert host.read_text("/opt/hostkit/certs/dhparam.pem") == certs.ffdhe2048_pem()
    before = key.read_text()
    second = certs.ensure_certs(host, "/opt/hostkit/certs", hostname="other", ip_addresses=[])
    assert second.changed == []
    assert key.read_text() == before
    assert second.info is not None
    assert second.info.dns_names[0] == "hub.example.org"
    forced = certs.ensure_certs(host, "/opt/hostkit/certs", hostname="other", ip_addresses=[], force=True)
    assert forced.info is not None
    assert forced.info.dns_names[0] == "other"


def test_ensure_certs_installs_the_admins_own_pair(tmp_path: Path) -> None:
    cert_pem, key_pem = certs.make_self_signed("own.example.org", [])
    host = FakeHost(tmp_path).files({"/root/own.crt": cert_pem, "/root/own.key": key_pem})
    result = certs.ensure_certs(
        host, "/opt/hostkit/certs", cert_file="/root/own.crt", key_file="/root/own.key"
    )
    assert host.read_text("/opt/hostkit/certs/hostkit.crt") == cert_pem
    assert host.path("/opt/hostkit/certs/hostkit.key").stat().st_mode & 0o777 == 0o600
    assert result.info is not None
    assert result.info.dns_names[0] == "own.example.org"


def test_ensure_certs_refuses_a_key_that_is_not_the_certs(tmp_path: Path) -> None:
    cert_pem, _ = certs.make_self_signed("a", [])
    _, other_key = certs.make_self_signed("b", [])
    host = FakeHost(tmp_path).files({"/c.crt": cert_pem, "/c.key": other_key})
    with pytest.raises(UsageError, match="not the key"):
        certs.ensure_certs(host, "/certs", cert_file="/c.crt", key_file="/c.key")
    with pytest.raises(UsageError, match="both"):
        certs.ensure_certs(host, "/certs", cert_file="/c.crt")


def test_an_existing_key_with_loose_mode_is_tightened(tmp_path: Path) -> None:
    host = FakeHost(tmp_path, binaries=("chmod",))
    certs.ensure_certs(host, "/certs", hostname="h", ip_addresses=[])
    host.path("/certs/hostkit.key").chmod(0o644)
    real = host.path("/certs/hostkit.key")
    host.commands[("chmod", "600", str(real))] = ""
    result = certs.ensure_certs(host, "/certs", hostname="h", ip_addresses=[])
    assert ("chmod", "600", str(real)) in host.calls
    assert any("mode 0600" in c for c in result.changed)


def test_show_without_a_certificate_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(HostkitError, match="no certificate"):
        certs.show(FakeHost(tmp_path), "/opt/hostkit/certs")


def test_ips_from_ip_json_skips_loopback_and_container_bridges() -> None:
    data = [
        {"ifname": "lo", "addr_info": [{"local": "127.0.0.1", "scope": "host"}]},
        {
            "ifname": "eth0",
            "addr_info": [
                {"local": "10.1.2.3", "scope": "global"},
                {"local": "fe80::1", "scope": "link"},
                {"local": "2001:db8::5", "scope": "global"},
            ],
        },
        {"ifname": "docker0", "addr_info": [{"local": "172.17.0.1", "scope": "global"}]},
        {"ifname": "br-1234", "addr_info": [{"local": "172.18.0.1", "scope": "global"}]},
    ]
    assert [str(ip) for ip in certs.ips_from_ip_json(json.dumps(data))] == ["10.1.2.3", "2001:db8::5"]


def test_cert_info_days_left_counts_from_now() -> None:
    now = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
    cert_pem, _ = certs.make_self_signed("h", [], days=10, now=now)
    assert certs.describe(cert_pem).days_left(now) == 10
    assert certs.describe(cert_pem).days_left(now + dt.timedelta(days=11)) < 0


def test_site_ca_signs_server_certificates_that_openssl_verifies(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    ip = [ipaddress.ip_address("192.0.2.10")]
    first = certs.ensure_certs(host, "/d/certs", hostname="hub.example.org", ip_addresses=ip)
    assert first.info is not None
    assert first.info.self_signed  # the zero-setup default
    lifespan = first.info.not_after - first.info.not_before
    assert lifespan.days <= 366  # Mozilla's intermediate profile
    signed = certs.ensure_certs(
        host, "/d/certs", hostname="hub.example.org", ip_addresses=ip, ca_dir="/d/ca", make_ca_if_missing=True
    )
    assert signed.info is not None
    assert not signed.info.self_signed  # the self-signed one was replaced
    ca_dir = tmp_path / "d" / "ca"
    assert ca_dir.stat().st_mode & 0o777 == 0o700
    assert (ca_dir / certs.CA_KEY_NAME).stat().st_mode & 0o777 == 0o600
    ca = x509.load_pem_x509_certificate((ca_dir / certs.CA_CERT_NAME).read_bytes())
    leaf = x509.load_pem_x509_certificate((tmp_path / "d/certs/hostkit.crt").read_bytes())
    leaf.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    if shutil.which("openssl"):
        proc = subprocess.run(
            ["openssl", "verify", "-CAfile", str(ca_dir / certs.CA_CERT_NAME), "-purpose", "sslserver",
             str(tmp_path / "d/certs/hostkit.crt")],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
    # a renewal (stack up passes ca_dir) keeps using the same CA, which is not remade
    renewed = certs.ensure_certs(host, "/d/certs", hostname="hub.example.org", ip_addresses=ip,
                                 ca_dir="/d/ca", force=True)  # fmt: skip
    assert f"/d/ca/{certs.CA_KEY_NAME}" not in renewed.changed
    again = x509.load_pem_x509_certificate((tmp_path / "d/certs/hostkit.crt").read_bytes())
    again.verify_directly_issued_by(ca)
    assert again.serial_number != leaf.serial_number
