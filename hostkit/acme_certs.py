"""Certificates from an ACME CA (Let's Encrypt) for hosts with a public name.

The protocol is certbot's `acme` library (the client Let's Encrypt maintains); hostkit adds
what is specific to its stack: the HTTP-01 challenge is answered by the stack's own nginx
on its plain-HTTP port (HOSTKIT_HTTP_PORT) from the deploy directory's acme-challenge/,
the account key stays in DIR/acme/ (0600, never mounted into a container) and is reused by
every renewal, and the certificate and key are replaced atomically, the previous pair kept
as *.previous, before nginx is reloaded.

The CA's own TLS certificate is verified against the system's trust store, or the bundle in
REQUESTS_CA_BUNDLE (a test CA such as pebble).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Callable, Optional

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from hostkit import certs as certs_mod
from hostkit.errors import HostkitError, UsageError
from hostkit.host import LocalHost

LETSENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
LETSENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"
DIRECTORY_SHORTCUTS = {"letsencrypt": LETSENCRYPT, "staging": LETSENCRYPT_STAGING}
ACME_DIR = "acme"  # in the deploy directory: the account key (0700, never mounted)
ACCOUNT_KEY_NAME = "account.key"
CHALLENGE_PATH = ".well-known/acme-challenge"
ISSUE_TIMEOUT = 180  # seconds for validation and finalization

Log = Callable[[str], None]


def directory_url(given: str) -> str:
    """The ACME directory: a shortcut (letsencrypt, staging) or an https URL; empty = Let's Encrypt."""
    value = given.strip() or "letsencrypt"
    if value in DIRECTORY_SHORTCUTS:
        return DIRECTORY_SHORTCUTS[value]
    if not value.startswith("https://"):
        raise UsageError(
            f"--acme-directory must be an https:// URL, letsencrypt or staging, not {given!r}"
        )
    return value


def _new_key_pem(bits: int) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def ensure_account_key(host: LocalHost, deploy_dir: str) -> tuple[str, bool]:
    """The ACME account key (RSA 2048, 0600 in a 0700 directory), made when missing."""
    directory = f"{deploy_dir}/{ACME_DIR}"
    path = f"{directory}/{ACCOUNT_KEY_NAME}"
    host.makedirs(directory, mode=0o700)
    host.chmod(directory, 0o700)
    if host.exists(path):
        if host.stat(path).st_mode & 0o077:
            host.chmod(path, 0o600)
        return host.read_text(path), False
    pem = _new_key_pem(2048)
    host.write_text(path, pem, mode=0o600, backup=False)
    return pem, True


@dataclass
class Webroot:
    """The challenge directory nginx serves at /.well-known/acme-challenge/ on plain HTTP."""

    host: LocalHost
    directory: str  # DIR/acme-challenge, mounted into nginx read-only
    written: list[str] = field(default_factory=list)

    def put(self, token: str, validation: str) -> None:
        if "/" in token or token.startswith("."):
            raise HostkitError(f"the ACME server sent an unusable challenge token {token!r}")
        self.host.makedirs(self.directory, mode=0o755)
        path = f"{self.directory}/{token}"
        self.host.write_text(path, validation, mode=0o644, backup=False)  # nginx's workers read it
        self.written.append(path)

    def clean(self) -> None:
        for path in self.written:
            if self.host.exists(path):
                self.host.unlink(path)
        self.written.clear()


def issue(
    *,
    directory: str,
    email: str,
    names: Sequence[str],
    account_key_pem: str,
    webroot: Webroot,
    log: Log,
    timeout: float = ISSUE_TIMEOUT,
) -> tuple[str, str]:
    """A certificate for `names` from the ACME CA at `directory`: (full chain PEM, key PEM)."""
    from acme import challenges, client, crypto_util, errors, messages
    from josepy.jwk import JWKRSA

    account_key = serialization.load_pem_private_key(account_key_pem.encode(), password=None)
    if not isinstance(account_key, rsa.RSAPrivateKey):
        raise HostkitError("the ACME account key is not an RSA key")
    net = client.ClientNetwork(JWKRSA(key=account_key), user_agent="hostkit")
    try:
        acme = client.ClientV2(client.ClientV2.get_directory(directory, net), net)
        registration = messages.NewRegistration.from_data(email=email, terms_of_service_agreed=True)
        try:
            acme.new_account(registration)
            log(f"registered an ACME account for {email} at {directory}")
        except errors.ConflictError as known:  # this key has an account there already
            net.account = messages.RegistrationResource(uri=known.location, body=messages.Registration())
        key_pem = _new_key_pem(2048)
        order = acme.new_order(crypto_util.make_csr(key_pem.encode(), list(names)))
        try:
            for authz in order.authorizations:
                if authz.body.status == messages.STATUS_VALID:
                    continue  # validated recently (CAs reuse authorizations): nothing to answer
                challenge = next(
                    (c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01)), None
                )
                if challenge is None:
                    raise HostkitError(
                        f"the ACME server offers no HTTP-01 challenge for {authz.body.identifier.value}"
                    )
                response, validation = challenge.chall.response_and_validation(net.key)
                webroot.put(challenge.chall.encode("token"), validation)
                acme.answer_challenge(challenge, response)
            deadline = dt.datetime.now() + dt.timedelta(seconds=timeout)
            finished = acme.poll_and_finalize(order, deadline)
        finally:
            webroot.clean()
    except errors.ValidationError as exc:
        problems = "; ".join(
            f"{a.body.identifier.value}: {c.error.detail if c.error else c.status}"
            for a in exc.failed_authzrs
            for c in a.body.challenges
            if c.error
        )
        raise HostkitError(
            f"the ACME CA could not validate {', '.join(names)}: {problems or exc}",
            "the name must resolve to this host and port 80 (HOSTKIT_HTTP_PORT) must reach nginx",
        ) from exc
    except (errors.Error, messages.Error) as exc:
        raise HostkitError(f"ACME at {directory}: {exc}") from exc
    except OSError as exc:  # requests' connection errors are OSErrors
        raise HostkitError(f"cannot reach the ACME directory {directory}: {exc}") from exc
    if not finished.fullchain_pem:
        raise HostkitError(f"ACME at {directory}: the order finished without a certificate")
    return str(finished.fullchain_pem), key_pem


def install(host: LocalHost, certs_dir: str, fullchain_pem: str, key_pem: str) -> list[str]:
    """Put the new chain and key in place, each atomically; the pair they replace stays as
    *.previous (key 0600). Returns the paths written."""
    if not certs_mod.key_matches_cert(fullchain_pem, key_pem):
        raise HostkitError("the ACME CA returned a certificate that does not match the key sent")
    cert_path = f"{certs_dir}/{certs_mod.CERT_NAME}"
    key_path = f"{certs_dir}/{certs_mod.KEY_NAME}"
    host.makedirs(certs_dir, mode=0o755)
    written = []
    for path, mode in ((key_path, 0o600), (cert_path, 0o644)):
        if host.exists(path):
            host.write_text(f"{path}.previous", host.read_text(path), mode=mode, backup=False)
            written.append(f"{path}.previous")
    host.write_text(key_path, key_pem, mode=0o600, backup=False)
    host.write_text(cert_path, fullchain_pem, mode=0o644, backup=False)
    return [*written, key_path, cert_path]


def served_names(cert_pem: str, fallback: Optional[str]) -> list[str]:
    """The DNS names a renewal asks for: those of the current certificate, else `fallback`."""
    info = certs_mod.describe(cert_pem)
    names = [n for n in info.dns_names if n != "localhost"]
    if names:
        return names
    if fallback:
        return [fallback]
    raise UsageError("no host name to ask the ACME CA for", "give --hostname")


@dataclass
class AcmeResult:
    changed: list[str]
    info: certs_mod.CertInfo
    reloaded: bool


def obtain(
    host: LocalHost,
    deploy_dir: str,
    *,
    names: Sequence[str],
    email: str,
    directory: str,
    log: Log,
) -> AcmeResult:
    """Get a certificate through the deployed stack's nginx and make nginx serve it.

    Opens the plain-HTTP port first when the stack has none (HOSTKIT_HTTP_PORT=80), records
    the mode in .env (HOSTKIT_CERT_MODE=acme, with the directory and e-mail) so that renewals
    and the doctor know it, and reloads nginx rather than restarting it.
    """
    from hostkit.stack import ACME_CHALLENGE_DIR, Stack

    stack = Stack(host, deploy_dir, log=log)
    env = stack.env()
    if not email:
        raise UsageError("an ACME account needs an e-mail address", "give --email ADDR")
    if not env.get("HOSTKIT_HTTP_PORT"):
        stack.write_env({"HOSTKIT_HTTP_PORT": "80"})
        log("opened plain HTTP on port 80 for the ACME challenge (HOSTKIT_HTTP_PORT=80)")
        stack.up(changed=stack.write_runtime_files())
    else:
        changed = stack.write_runtime_files()
        if changed:
            stack.up(changed=changed)
    account_key, made = ensure_account_key(host, deploy_dir)
    if made:
        log(f"wrote {deploy_dir}/{ACME_DIR}/{ACCOUNT_KEY_NAME} (ACME account key, mode 0600)")
    webroot = Webroot(host, f"{deploy_dir}/{ACME_CHALLENGE_DIR}")
    fullchain, key = issue(
        directory=directory, email=email, names=names, account_key_pem=account_key, webroot=webroot, log=log
    )
    changed = install(host, stack.certs_dir, fullchain, key)
    stack.write_env(
        {"HOSTKIT_CERT_MODE": "acme", "HOSTKIT_ACME_DIRECTORY": directory, "HOSTKIT_ACME_EMAIL": email}
    )
    changed += stack.write_runtime_files()  # HSTS "auto" follows a trusted certificate
    reloaded = stack.reload_nginx()
    return AcmeResult(changed, certs_mod.describe(fullchain), reloaded)
