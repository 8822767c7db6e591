"""TLS probes on the certificate nginx serves: present, valid, matching, covering, protected."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import stat
from typing import Any, Optional

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from hostkit.doctor import ProbeContext
from hostkit.errors import HostkitError
from hostkit.ffdhe import FFDHE_PEM, ffdhe_prime, load_dh_parameters
from hostkit.probes import probe
from hostkit.results import Outcome

CERTS_FIX = "hostkit certs (or put your own cert/key at the configured paths)"
RELOAD_NGINX = (
    "reload nginx: docker compose exec nginx nginx -s reload (in the deploy directory), "
    "or `hostkit stack up`"
)


def load_cert(ctx: ProbeContext, path: str) -> x509.Certificate:
    data = ctx.host.read_bytes(path)
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise HostkitError(f"{path}: not a PEM certificate ({exc})", CERTS_FIX) from exc


def load_key(ctx: ProbeContext, path: str) -> Any:
    data = ctx.host.read_bytes(path)
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise HostkitError(f"{path}: not an unencrypted PEM private key ({exc})", CERTS_FIX) from exc


@probe("tls_files")
def tls_files(ctx: ProbeContext, cert: str, key: str) -> Outcome:
    gone = [p for p in (cert, key) if not ctx.host.exists(p)]
    if gone:
        return Outcome.fail(f"missing: {', '.join(gone)}", hint=CERTS_FIX)
    c = load_cert(ctx, cert)
    load_key(ctx, key)
    return Outcome.ok(f"{cert} and {key} parse; subject {c.subject.rfc4514_string()}")


def not_after(c: x509.Certificate) -> dt.datetime:
    if hasattr(c, "not_valid_after_utc"):
        return c.not_valid_after_utc
    return c.not_valid_after.replace(tzinfo=dt.timezone.utc)  # pragma: no cover - cryptography < 42


@probe("tls_expiry")
def tls_expiry(ctx: ProbeContext, cert: str, warn_days: int = 30, fail_days: int = 7) -> Outcome:
    end = not_after(load_cert(ctx, cert))
    days = (end - dt.datetime.now(dt.timezone.utc)).total_seconds() / 86400
    actual = f"expires {end:%Y-%m-%d} ({days:.0f} days)"
    if days < fail_days:
        what = "expired" if days < 0 else f"expires in {days:.0f} days"
        return Outcome.fail(
            f"certificate {what}",
            expected=f">= {warn_days} days",
            actual=actual,
            hint="hostkit certs --renew (or renew your CA-issued cert)",
        )
    if days < warn_days:
        return Outcome.warn(
            f"certificate expires in {days:.0f} days",
            expected=f">= {warn_days} days",
            actual=actual,
            hint="hostkit certs --renew",
        )
    return Outcome.ok(actual)


@probe("tls_key_match")
def tls_key_match(ctx: ProbeContext, cert: str, key: str) -> Outcome:
    pub = (
        load_cert(ctx, cert)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    priv = (
        load_key(ctx, key)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    if pub != priv:
        return Outcome.fail(
            f"{key} is not the key of {cert}: nginx will refuse to start",
            hint="put the matching pair in place, or " + CERTS_FIX,
        )
    return Outcome.ok("private key matches the certificate")


def names_in_cert(c: x509.Certificate) -> list[str]:
    try:
        san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(n) for n in san.get_values_for_type(x509.DNSName)] + [
        str(ip) for ip in san.get_values_for_type(x509.IPAddress)
    ]


def covers(names: list[str], wanted: str) -> bool:
    try:
        ip = ipaddress.ip_address(wanted)
        return any(n == str(ip) for n in names)
    except ValueError:
        pass
    wanted = wanted.lower().rstrip(".")
    for n in (x.lower() for x in names):
        if n == wanted:
            return True
        if n.startswith("*.") and wanted.count(".") >= 2 and wanted.split(".", 1)[1] == n[2:]:
            return True
    return False


@probe("tls_san")
def tls_san(ctx: ProbeContext, cert: str, server_name: str = "") -> Outcome:
    wanted = server_name or socket.getfqdn()
    names = names_in_cert(load_cert(ctx, cert))
    if covers(names, wanted):
        return Outcome.ok(f"SAN covers {wanted}", actual=", ".join(names))
    return Outcome.fail(
        f"SAN does not cover {wanted}: browsers will refuse the name",
        expected=wanted,
        actual=", ".join(names) or "no SAN",
        hint=f"hostkit certs --name {wanted} (or set server_name)",
    )


def key_strength(k: Any, min_rsa_bits: int = 2048, min_ec_bits: int = 256) -> tuple[bool, str, str, str]:
    """(strong enough, what the key is, its size, what is expected) for any key nginx can use.

    EC is judged by its curve's size: P-256 and larger are fine (128-bit security).
    """
    if isinstance(k, rsa.RSAPrivateKey):
        return k.key_size >= min_rsa_bits, f"RSA {k.key_size} bits", str(k.key_size), f">= {min_rsa_bits}"
    if isinstance(k, ec.EllipticCurvePrivateKey):
        bits = k.curve.key_size
        what = f"EC {k.curve.name} ({bits} bits)"
        return bits >= min_ec_bits, what, str(bits), f">= {min_ec_bits} (P-256 or larger)"
    if isinstance(k, ed25519.Ed25519PrivateKey):
        return True, "Ed25519", "256", ""
    if isinstance(k, ed448.Ed448PrivateKey):
        return True, "Ed448", "456", ""
    if isinstance(k, dsa.DSAPrivateKey):  # no browser accepts a DSA certificate
        return False, f"DSA {k.key_size} bits", str(k.key_size), "RSA or EC"
    return False, type(k).__name__, "", "RSA or EC"


@probe("tls_key_size")
def tls_key_size(ctx: ProbeContext, key: str, min_rsa_bits: int = 2048, min_ec_bits: int = 256) -> Outcome:
    strong, what, bits, expected = key_strength(load_key(ctx, key), min_rsa_bits, min_ec_bits)
    if strong:
        return Outcome.ok(what, expected=expected, actual=bits)
    kind, _, size = what.partition(" ")
    summary = f"{kind} key on {size}" if kind == "EC" else f"{kind} key of {size}" if size else what
    return Outcome.fail(summary, expected=expected, actual=bits, hint=CERTS_FIX)


@probe("tls_key_mode")
def tls_key_mode(ctx: ProbeContext, key: str) -> Outcome:
    mode = stat.S_IMODE(ctx.host.stat(key).st_mode)
    if mode & 0o077:
        return Outcome.fail(
            f"{key} is mode {mode:04o}: others can read the private key",
            expected="0600",
            actual=f"{mode:04o}",
            hint=f"chmod 600 {key}",
        )
    return Outcome.ok(f"{key} mode {mode:04o}")


@probe("tls_dhparam")
def tls_dhparam(ctx: ProbeContext, path: str, min_bits: int = 2048) -> Outcome:
    if not ctx.host.exists(path):
        return Outcome.fail(f"missing: {path}", hint=CERTS_FIX)
    try:
        params = load_dh_parameters(ctx.host.read_bytes(path))
    except ValueError as exc:
        return Outcome.fail(f"{path}: not PEM DH parameters ({exc})", hint=CERTS_FIX)
    bits = params.p.bit_length()
    named = next((f"ffdhe{b}" for b in FFDHE_PEM if b == bits and params.p == ffdhe_prime(b)), "")
    if bits < min_bits:
        return Outcome.fail(
            f"DH parameters of {bits} bits (Logjam-weak)",
            expected=f">= {min_bits}",
            actual=str(bits),
            hint="hostkit certs writes the RFC 7919 ffdhe2048 group",
        )
    return Outcome.ok(f"{named} (RFC 7919 named group)" if named else f"{bits}-bit DH parameters")


def served_certificate(address: str, port: int, server_name: str, timeout: float = 5.0) -> bytes:
    """The DER certificate a TLS endpoint presents (no verification: that is what we judge)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((address, port), timeout=timeout) as sock, context.wrap_socket(
        sock, server_hostname=server_name or None
    ) as tls:
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise HostkitError(f"{address}:{port} presented no certificate")
    return der


def chain_trust(ctx: ProbeContext, served: x509.Certificate, trust_file: str) -> Optional[tuple[str, str]]:
    """What the served chain is verified against: (its name, a CA file or "" for the system's
    trust store); None for a self-signed certificate, which chains to nothing."""
    from hostkit.certs import CA_CERT_NAME

    if trust_file:
        return trust_file, str(ctx.host.path(trust_file))
    if served.subject == served.issuer:
        return None
    site_ca = f"{ctx.settings.deploy_dir}/ca/{CA_CERT_NAME}"
    if ctx.host.exists(site_ca) and load_cert(ctx, site_ca).subject == served.issuer:
        return f"the site CA {site_ca}", str(ctx.host.path(site_ca))
    return "the system's trust store", ""


def chain_error(address: str, port: int, server_name: str, cafile: str, timeout: float = 5.0) -> str:
    """Why the chain a TLS endpoint sends does not verify against `cafile` ("" = the system's
    trust store), or "" when it does. The name is judged separately (tls_san)."""
    context = ssl.create_default_context(cafile=cafile or None)
    context.check_hostname = False
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock, context.wrap_socket(
            sock, server_hostname=server_name or None
        ):
            return ""
    except ssl.SSLCertVerificationError as exc:
        return str(exc.verify_message or exc)


def cert_mode(ctx: ProbeContext) -> str:
    """Where the deployed stack's certificate comes from (HOSTKIT_CERT_MODE in its .env)."""
    from hostkit.probes.stack import deployed_setting

    return deployed_setting(ctx, "HOSTKIT_CERT_MODE", "local")


@probe("tls_served")
def tls_served(
    ctx: ProbeContext,
    port: int,
    cert: str,
    server_name: str = "",
    warn_days: int = 30,
    fail_days: int = 7,
    trust_file: str = "",
) -> Outcome:
    """The certificate nginx serves on the public port: the file on disk, valid, chained to
    a trusted root (the site CA's, ACME's or the admin's CA), naming us."""
    from hostkit.probes.stack import host_port, public_address, stack_containers

    address = public_address(ctx)
    where = host_port(address, port)
    wanted = server_name or socket.getfqdn()
    try:
        der = served_certificate(address, port, wanted)
    except (OSError, ssl.SSLError) as exc:
        if not stack_containers(ctx):
            return Outcome.skip("stack not deployed")
        return Outcome.fail(f"no TLS answer on {where}: {getattr(exc, 'strerror', None) or exc}",
                            hint="hostkit stack status; hostkit stack logs nginx")
    served = x509.load_der_x509_certificate(der)
    on_disk = load_cert(ctx, cert)
    days = (not_after(served) - dt.datetime.now(dt.timezone.utc)).total_seconds() / 86400
    renew = "hostkit certs --renew"
    if cert_mode(ctx) == "acme":
        renew += " (an ACME certificate: the daily renewal should have renewed it; see its timer or cron log)"
    failures: list[tuple[str, str]] = []
    if served.public_bytes(serialization.Encoding.DER) != on_disk.public_bytes(serialization.Encoding.DER):
        failures.append((f"{where} serves a certificate that is not the certificate in {cert}", RELOAD_NGINX))
    if days < fail_days:
        what = "expired" if days < 0 else f"expires in {days:.0f} days"
        failures.append((f"the served certificate {what}", f"{renew}, then {RELOAD_NGINX}"))
    if not covers(names_in_cert(served), wanted):
        failures.append((f"the served certificate does not cover {wanted}", f"hostkit certs --name {wanted}"))
    trust = chain_trust(ctx, served, trust_file)
    chained = ""
    if trust is not None:
        error = chain_error(address, port, wanted, trust[1])
        if error:
            failures.append((
                f"the served chain does not verify against {trust[0]}: {error}",
                "serve the full chain (certificate, then intermediates) in the certificate file, "
                "or name the CA that issued it in the tls_trust_file setting",
            ))
        chained = f", chained to {trust[0]}"
    actual = (f"served: serial {served.serial_number:x}, expires {not_after(served):%Y-%m-%d}; "
              f"{cert}: serial {on_disk.serial_number:x}, expires {not_after(on_disk):%Y-%m-%d}")
    if failures:
        return Outcome.fail("; ".join(f for f, _ in failures), actual=actual, hint=failures[0][1])
    summary = f"{where} serves {cert} (expires {not_after(served):%Y-%m-%d}, covers {wanted}{chained})"
    if days < warn_days:
        return Outcome.warn(f"{summary}: expires in {days:.0f} days", actual=actual,
                            hint=f"{renew}, then {RELOAD_NGINX}")
    return Outcome.ok(summary, actual=actual)
