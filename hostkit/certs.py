"""TLS material for the stack's nginx: certificate, key and a named DH group.

`hostkit certs` makes a self-signed certificate whose SANs name the host and its IP
addresses (or installs the admin's own certificate and key), writes the key with mode
0600, and writes RFC 7919's ffdhe2048 group as dhparam.pem: a predefined group, as
Mozilla's "intermediate" profile uses, instead of minutes of `openssl dhparam`.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from dataclasses import dataclass, field
from typing import Optional, Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from hostkit.errors import HostkitError, UsageError
from hostkit.ffdhe import FFDHE_PEM
from hostkit.host import LocalHost

CERT_NAME = "hostkit.crt"
KEY_NAME = "hostkit.key"
DHPARAM_NAME = "dhparam.pem"
DEFAULT_DAYS = 365  # Mozilla's "intermediate" profile allows at most 366 days


IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
_SKIPPED_INTERFACES = ("lo", "docker", "br-", "veth", "virbr", "cni", "flannel", "cali")


def ffdhe2048_pem() -> str:
    """RFC 7919's ffdhe2048 group as PEM "DH PARAMETERS" (what nginx's ssl_dhparam reads)."""
    return FFDHE_PEM[2048]


@dataclass(frozen=True)
class CertInfo:
    """What `hostkit certs --show` reports about a certificate."""

    subject: str
    issuer: str
    not_before: dt.datetime
    not_after: dt.datetime
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    self_signed: bool

    def days_left(self, now: Optional[dt.datetime] = None) -> int:
        now = now or dt.datetime.now(dt.timezone.utc)
        return (self.not_after - now).days

    def as_dict(self) -> dict[str, object]:
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "days_left": self.days_left(),
            "dns_names": list(self.dns_names),
            "ip_addresses": list(self.ip_addresses),
            "self_signed": self.self_signed,
        }


CA_CERT_NAME = "hostkit-ca.crt"
CA_KEY_NAME = "hostkit-ca.key"
CA_DAYS = 3650  # the site CA is distributed once; its server certificates renew yearly


def _pem_key(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


def make_ca(name: str, *, days: int = CA_DAYS, now: Optional[dt.datetime] = None) -> tuple[str, str]:
    """A small site CA (certificate and key, PEM) that signs only server certificates."""
    now = now or dt.datetime.now(dt.timezone.utc)
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hostkit site CA"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"hostkit CA {name}"[:64]),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), _pem_key(key)


def make_self_signed(
    hostname: str,
    ip_addresses: list[IPAddress],
    *,
    extra_names: tuple[str, ...] = (),
    days: int = DEFAULT_DAYS,
    now: Optional[dt.datetime] = None,
    ca: Optional[tuple[str, str]] = None,
) -> tuple[str, str]:
    """A server certificate and its RSA key, both PEM: self-signed, or signed by `ca`
    (its certificate and key, PEM)."""
    if not hostname:
        raise UsageError("a host name is needed for the certificate")
    now = now or dt.datetime.now(dt.timezone.utc)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    names: list[str] = []
    for name in (hostname, *extra_names, "localhost"):
        if name and name not in names:
            names.append(name)
    ips: list[IPAddress] = []
    for ip in (*ip_addresses, ipaddress.ip_address("127.0.0.1")):
        if ip not in ips:
            ips.append(ip)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64])])
    san: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    san += [x509.IPAddress(ip) for ip in ips]
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    if ca is None:
        cert = builder.issuer_name(subject).sign(key, hashes.SHA256())
    else:
        ca_cert = x509.load_pem_x509_certificate(ca[0].encode())
        ca_key = serialization.load_pem_private_key(ca[1].encode(), password=None)
        if not isinstance(ca_key, rsa.RSAPrivateKey):
            raise HostkitError("the site CA's key is not an RSA key")
        cert = (
            builder.issuer_name(ca_cert.subject)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=True,
                    data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), _pem_key(key)


def ensure_ca(host: LocalHost, ca_dir: str, name: str) -> tuple[str, str, bool]:
    """The site CA in `ca_dir` (key 0600, directory 0700), made when missing; (cert, key, made)."""
    cert_path, key_path = f"{ca_dir}/{CA_CERT_NAME}", f"{ca_dir}/{CA_KEY_NAME}"
    host.makedirs(ca_dir, mode=0o700)
    host.chmod(ca_dir, 0o700)
    if host.exists(cert_path) and host.exists(key_path):
        return host.read_text(cert_path), host.read_text(key_path), False
    cert_pem, key_pem = make_ca(name)
    host.write_text(key_path, key_pem, mode=0o600, backup=False)
    host.write_text(cert_path, cert_pem, mode=0o644, backup=False)
    return cert_pem, key_pem, True


def describe(cert_pem: str) -> CertInfo:
    """Parse a PEM certificate into what an admin wants to see."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
    except ValueError as exc:
        raise HostkitError(f"not a PEM certificate: {exc}") from exc
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns_names = tuple(san.get_values_for_type(x509.DNSName))
        ips = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        dns_names, ips = (), ()
    return CertInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        dns_names=dns_names,
        ip_addresses=ips,
        self_signed=cert.subject == cert.issuer,
    )


def key_matches_cert(cert_pem: str, key_pem: str) -> bool:
    """True when the private key belongs to the certificate."""
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    return bool(cert.public_key().public_bytes(enc, fmt) == key.public_key().public_bytes(enc, fmt))


def host_identity(host: LocalHost) -> tuple[str, list[IPAddress]]:
    """The host's name and its global IP addresses (container bridges left out)."""
    name = host.run(["hostname", "-f"]).stdout.strip() or host.run(["hostname"]).stdout.strip()
    ips: list[IPAddress] = []
    result = host.run(["ip", "-j", "addr", "show"])
    if result.ok:
        ips = ips_from_ip_json(result.stdout)
    return name, ips


def ips_from_ip_json(text: str) -> list[IPAddress]:
    """Global addresses from `ip -j addr show`, skipping loopback and container bridges."""
    out: list[IPAddress] = []
    for iface in json.loads(text or "[]"):
        ifname = str(iface.get("ifname", ""))
        if ifname.startswith(_SKIPPED_INTERFACES):
            continue
        for addr in iface.get("addr_info", []):
            if addr.get("scope") != "global":
                continue
            try:
                ip = ipaddress.ip_address(addr.get("local", ""))
            except ValueError:
                continue
            if ip not in out:
                out.append(ip)
    return out


@dataclass
class CertsResult:
    """What `hostkit certs` did in the certs directory."""

    directory: str
    changed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    info: Optional[CertInfo] = None


def ensure_certs(
    host: LocalHost,
    directory: str,
    *,
    hostname: Optional[str] = None,
    ip_addresses: Optional[list[IPAddress]] = None,
    extra_names: tuple[str, ...] = (),
    cert_file: Optional[str] = None,
    key_file: Optional[str] = None,
    days: int = DEFAULT_DAYS,
    force: bool = False,
    ca_dir: Optional[str] = None,
    make_ca_if_missing: bool = False,
) -> CertsResult:
    """Put certificate, key (0600) and DH group in `directory`; an existing pair is kept.

    With `ca_dir` holding a site CA (or `make_ca_if_missing`), new certificates are signed
    by it; a self-signed one in place is then replaced.
    """
    result = CertsResult(directory)
    cert_path, key_path = f"{directory}/{CERT_NAME}", f"{directory}/{KEY_NAME}"
    dh_path = f"{directory}/{DHPARAM_NAME}"
    host.makedirs(directory, mode=0o755)
    if (cert_file is None) != (key_file is None):
        raise UsageError("give both --cert and --key, or neither")
    if cert_file and key_file:
        cert_pem, key_pem = host.read_text(cert_file), host.read_text(key_file)
        describe(cert_pem)
        if not key_matches_cert(cert_pem, key_pem):
            raise UsageError(f"{key_file} is not the key of {cert_file}")
        _write_pair(host, cert_path, key_path, cert_pem, key_pem, result)
    else:
        ca: Optional[tuple[str, str]] = None
        have_ca = ca_dir is not None and host.exists(f"{ca_dir}/{CA_CERT_NAME}")
        if ca_dir is not None and (have_ca or make_ca_if_missing):
            found_name = hostname or host_identity(host)[0]
            ca_cert, ca_key, made = ensure_ca(host, ca_dir, found_name)
            ca = (ca_cert, ca_key)
            if made:
                result.changed += [f"{ca_dir}/{CA_CERT_NAME}", f"{ca_dir}/{CA_KEY_NAME}"]
        present = host.exists(cert_path) and host.exists(key_path)
        replace_self_signed = ca is not None and present and describe(host.read_text(cert_path)).self_signed
        if force or not present or replace_self_signed:
            if hostname is None or ip_addresses is None:
                found_name, found_ips = host_identity(host)
                hostname = hostname or found_name
                ip_addresses = found_ips if ip_addresses is None else ip_addresses
            cert_pem, key_pem = make_self_signed(
                hostname, ip_addresses, extra_names=extra_names, days=days, ca=ca
            )
            _write_pair(host, cert_path, key_path, cert_pem, key_pem, result)
        else:
            result.kept += [cert_path, key_path]
    if cert_path in result.kept and host.stat(key_path).st_mode & 0o077:
        host.run(["chmod", "600", str(host.path(key_path))], check=True)
        result.changed.append(f"{key_path} (mode 0600)")
    wanted_dh = ffdhe2048_pem()
    if not host.exists(dh_path) or host.read_text(dh_path) != wanted_dh:
        host.write_text(dh_path, wanted_dh, mode=0o644, backup=False)
        result.changed.append(dh_path)
    else:
        result.kept.append(dh_path)
    result.info = describe(host.read_text(cert_path))
    return result


def _write_pair(
    host: LocalHost, cert_path: str, key_path: str, cert_pem: str, key_pem: str, result: CertsResult
) -> None:
    host.write_text(key_path, key_pem, mode=0o600, backup=False)
    host.write_text(cert_path, cert_pem, mode=0o644, backup=False)
    result.changed += [cert_path, key_path]


def show(host: LocalHost, directory: str) -> CertInfo:
    """The installed certificate's subject, SANs and expiry."""
    path = f"{directory}/{CERT_NAME}"
    if not host.exists(path):
        raise HostkitError(f"{path}: no certificate yet", "run `hostkit certs` first")
    return describe(host.read_text(path))
