"""The `hostkit stack`, `hostkit certs` and `hostkit users` commands."""

from __future__ import annotations

import ipaddress
import json
import secrets
import sys
from pathlib import Path
from typing import List, Optional

import typer

from hostkit import certs as certs_mod
from hostkit.cli_options import (
    BaseMode,
    OutputFormat,
    PackageSet,
    RootOption,
    deploy_dir_option,
    format_option,
    hostname_option,
)
from hostkit.environments import (
    ENVIRONMENTS,
    PROFILES_KEY,
    environment_images,
    environment_readiness,
    parse_profiles,
)
from hostkit.errors import UsageError
from hostkit.facts import Facts
from hostkit.host import LocalHost
from hostkit.images import (
    DEFAULT_MIRROR,
    BuildOptions,
    ImageBuilder,
    resolve_ca_bundle,
)
from hostkit.renewal import ACME_RENEW_BEFORE_DAYS, RENEW_BEFORE_DAYS, install_schedule, renewal_due
from hostkit.settings import admission_settings
from hostkit.stack import DEFAULT_PORT, Stack, primary_ip

stack_app = typer.Typer(
    no_args_is_help=True, help="Build and run the JupyterHub stack (nginx, hub, users' servers)."
)
users_app = typer.Typer(no_args_is_help=True, help="Accounts on the live hub.")

DirOption = deploy_dir_option()


def _echo(message: str) -> None:
    typer.echo(message, err=True)


def _build_options(
    host: LocalHost,
    base: BaseMode,
    ca_bundle: str,
    mirror: str,
    package_set: PackageSet,
    octave: bool,
    r: bool,
    force: bool,
) -> BuildOptions:
    return BuildOptions(
        base=base.value,
        ca_bundle=resolve_ca_bundle(host, ca_bundle),
        mirror=mirror,
        package_set=package_set.value,
        with_octave=octave,
        with_r=r,
        force=force,
    )


def _parse_settings(pairs: List[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise UsageError(f"--set {pair!r}: expected KEY=VALUE")
        out[key] = value
    return out


BaseOpt = typer.Option(
    BaseMode.auto,
    "--base",
    help="Base images (auto: upstream if it can be pulled, else built here).",
)
CaOpt = typer.Option(
    "system",
    "--ca-bundle",
    metavar="FILE|system|none",
    help="CA certificates (PEM) trusted in image builds: this host's store, a file, or none.",
)
MirrorOpt = typer.Option(
    DEFAULT_MIRROR, "--mirror", metavar="URL", help="Debian mirror for the locally built base image."
)
SetOpt = typer.Option(PackageSet.full, "--package-set", help="Single-user image contents.")
OctaveOpt = typer.Option(True, "--octave/--no-octave", help="GNU Octave and its kernel in the user image.")
ROpt = typer.Option(True, "--r-kernel/--no-r-kernel", help="R and its kernel in the local notebook base.")
ProfilesOpt = typer.Option(
    None,
    "--profiles",
    metavar="KEY,KEY",
    help=f"Environments to offer (setting {PROFILES_KEY}; known: {', '.join(ENVIRONMENTS)}; "
    "default: the deployed .env's, else datascience).",
)


def _profiles(existing: dict[str, str], overrides: dict[str, str], given: Optional[str]) -> tuple[str, ...]:
    """The enabled environments: --profiles, else --set, else .env, else the default."""
    value = given if given is not None else overrides.get(PROFILES_KEY, existing.get(PROFILES_KEY, ""))
    return parse_profiles(value)


@stack_app.command("build")
def stack_build(
    base: BaseMode = BaseOpt,
    ca_bundle: str = CaOpt,
    mirror: str = MirrorOpt,
    package_set: PackageSet = SetOpt,
    octave: bool = OctaveOpt,
    r: bool = ROpt,
    force: bool = typer.Option(False, "--force", help="Rebuild even when the inputs did not change."),
    work_dir: str = typer.Option(
        "/var/lib/hostkit/build", "--work-dir", metavar="DIR", help="Scratch space for builds."
    ),
    profiles: Optional[str] = ProfilesOpt,
    directory: Path = DirOption,
    root: str = RootOption,
) -> None:
    """Build the hub, nginx and single-user images (without a registry if need be), and
    those of the other enabled environments."""
    host = LocalHost(root)
    options = _build_options(host, base, ca_bundle, mirror, package_set, octave, r, force)
    enabled = _profiles(Stack(host, str(directory)).read_env(), {}, profiles)
    report = ImageBuilder(host, options, work_dir=work_dir, log=_echo).build_all(enabled)
    for role, image in report.images.items():
        state = "built" if image in report.built else "up to date"
        seconds = f" in {report.seconds[image]:.0f}s" if image in report.seconds else ""
        typer.echo(f"{role:14} {image:40} {state}{seconds}")


@stack_app.command("up")
def stack_up(
    directory: Path = DirOption,
    port: Optional[int] = typer.Option(
        None, "--port", metavar="PORT", help=f"Public HTTPS port (default {DEFAULT_PORT})."
    ),
    bind: Optional[str] = typer.Option(
        None, "--bind", metavar="IP", help="Address to publish the port on (default all)."
    ),
    admin: Optional[str] = typer.Option(
        None, "--admin", metavar="NAME", help="Admin user name (default admin)."
    ),
    admin_password: Optional[str] = typer.Option(
        None,
        "--admin-password",
        metavar="PASSWORD",
        envvar="HOSTKIT_ADMIN_PASSWORD",
        help="The admin's password (first run only); generated and shown once if not given. "
        "Prefer --admin-password-file: an option shows in `ps`.",
    ),
    admin_password_file: Optional[str] = typer.Option(
        None,
        "--admin-password-file",
        metavar="FILE|-",
        help="Read the admin's password from this file ('-': standard input).",
    ),
    hostname: Optional[str] = hostname_option(),
    settings: List[str] = typer.Option(
        [], "--set", metavar="KEY=VALUE", help="Written to .env (repeatable)."
    ),
    build: bool = typer.Option(True, "--build/--no-build", help="Build missing or outdated images first."),
    base: BaseMode = BaseOpt,
    ca_bundle: str = CaOpt,
    mirror: str = MirrorOpt,
    package_set: PackageSet = SetOpt,
    octave: bool = OctaveOpt,
    r: bool = ROpt,
    timeout: float = typer.Option(
        300, "--timeout", metavar="SECONDS", help="How long to wait for the stack to be healthy."
    ),
    profiles: Optional[str] = ProfilesOpt,
    root: str = RootOption,
) -> None:
    """Deploy: files, certs, .env (secrets once), images, start, wait for health, admin."""
    host = LocalHost(root)
    if admin_password_file is not None:
        admin_password = _read_password(admin_password_file)
    stack = Stack(host, str(directory), log=_echo)
    existing = stack.read_env()
    overrides = _parse_settings(settings)
    if port is not None:
        overrides["HOSTKIT_PORT"] = str(port)
    if bind is not None:
        overrides["HOSTKIT_BIND"] = bind
    if admin is not None:
        if existing.get("HOSTKIT_ADMIN") and existing["HOSTKIT_ADMIN"] != admin:
            raise UsageError(f"the admin is already {existing['HOSTKIT_ADMIN']}; it cannot change here")
        overrides["HOSTKIT_ADMIN"] = admin
    enabled = _profiles(existing, overrides, profiles)
    overrides[PROFILES_KEY] = ",".join(enabled)
    installed = stack.install_files()
    for path in installed:
        _echo(f"wrote {path}")

    if build:
        options = _build_options(host, base, ca_bundle, mirror, package_set, octave, r, False)
        report = ImageBuilder(host, options, log=_echo).build_all(enabled)
        overrides.setdefault("HOSTKIT_HUB_IMAGE", report.images["hub"])
        overrides.setdefault("HOSTKIT_NGINX_IMAGE", report.images["nginx"])
        overrides.setdefault("HOSTKIT_NOTEBOOK_IMAGE", report.images["singleuser"])
        for key, value in environment_images(report.images).items():
            overrides.setdefault(key, value)
    overrides.update(environment_readiness(host, enabled, _echo))

    result = certs_mod.ensure_certs(host, stack.certs_dir, hostname=hostname, ca_dir=f"{directory}/ca")
    for path in result.changed:
        _echo(f"wrote {path}")

    _size_from_host(host, existing, overrides)

    shown_password = _admin_password(stack, existing, overrides, admin_password)
    env, changed = stack.write_env(overrides)
    if changed:
        _echo(f"wrote {stack.env_path} (mode 0600)")
    _echo("starting the stack")
    stack.up(timeout=timeout, changed=[*installed, *result.changed])
    _schedule_renewal(host, str(directory), env)
    name = hostname or (result.info.dns_names[0] if result.info and result.info.dns_names else "localhost")
    typer.echo(f"JupyterHub is up: https://{name}:{env['HOSTKIT_PORT']}/")
    typer.echo(f"admin user: {env['HOSTKIT_ADMIN']}")
    if shown_password:
        typer.echo(f"admin password (shown once, not stored): {shown_password}")


def _schedule_renewal(host: LocalHost, directory: str, env: dict[str, str]) -> None:
    """The daily certificate renewal (HOSTKIT_CERT_RENEWAL=off: none)."""
    if env.get("HOSTKIT_CERT_RENEWAL", "on") == "off":
        return
    # the interpreter running now has hostkit (pipx's venv, a system install)
    for path in install_schedule(host, directory, [sys.executable, "-m", "hostkit"]):
        _echo(f"wrote {path} (daily certificate renewal)")


def _read_password(source: str) -> str:
    """A password from a file or standard input ('-'): its first line."""
    try:
        text = sys.stdin.read() if source == "-" else open(source, encoding="utf-8").read()  # noqa: SIM115
    except OSError as exc:
        raise UsageError(f"cannot read the password from {source}: {exc.strerror or exc}") from exc
    password = text.splitlines()[0] if text.strip() else ""
    if not password:
        raise UsageError(f"no password in {source}")
    return password


def _size_from_host(host: LocalHost, existing: dict[str, str], overrides: dict[str, str]) -> None:
    """Settings that follow from this host, set once: `.env` keeps what an admin put there."""
    resources = Facts(host).resources()
    sized = admission_settings(resources["cpus"], resources["memory_bytes"])
    if "HOSTKIT_HOST_IP" not in existing and "HOSTKIT_HOST_IP" not in overrides:
        sized["HOSTKIT_HOST_IP"] = primary_ip(host) or "host-gateway"
    for key, value in sized.items():
        if key not in existing and key not in overrides:
            overrides[key] = value


def _admin_password(
    stack: Stack, existing: dict[str, str], overrides: dict[str, str], given: Optional[str]
) -> Optional[str]:
    """Put the admin's password hash in the overrides on the first run; the password if generated."""
    if existing.get("HOSTKIT_ADMIN_HASH_B64"):
        if given is not None:
            _echo("the admin account exists already: --admin-password is ignored (change it in the hub)")
        return None
    key = "HOSTKIT_MIN_PASSWORD_LENGTH"
    minimum = int(overrides.get(key, existing.get(key, "10")))
    password = given if given is not None else secrets.token_urlsafe(15)
    if len(password) < minimum:
        raise UsageError(f"the admin password must have at least {minimum} characters")
    hub_image = overrides.get("HOSTKIT_HUB_IMAGE") or existing.get("HOSTKIT_HUB_IMAGE", "")
    if not hub_image:
        raise UsageError("no hub image yet", "run without --no-build")
    overrides["HOSTKIT_ADMIN_HASH_B64"] = stack.hash_password(hub_image, password)
    return None if given is not None else password


@stack_app.command("down")
def stack_down(directory: Path = DirOption, root: str = RootOption) -> None:
    """Stop the stack and the users' servers; volumes (hub data, users' work) stay."""
    stack = Stack(LocalHost(root), str(directory))
    stack.env()
    for name in stack.down():
        _echo(f"removed user container {name}")
    typer.echo("stack stopped")


@stack_app.command("status")
def stack_status(
    directory: Path = DirOption,
    fmt: OutputFormat = format_option(),
    root: str = RootOption,
) -> None:
    """Services with their state and health, and the spawned users' containers."""
    stack = Stack(LocalHost(root), str(directory))
    env = stack.env()
    services = stack.service_states()
    users = stack.user_containers()
    healthy = all(s["state"] == "running" and s["health"] in ("healthy", "") for s in services.values())
    if fmt is OutputFormat.json:
        report = {
            "version": 1,
            "healthy": healthy,
            "port": env.get("HOSTKIT_PORT"),
            "services": services,
            "user_containers": users,
        }
        typer.echo(json.dumps(report, indent=2))
    else:
        for name, s in services.items():
            typer.echo(f"{name:12} {s['state']:10} {s['health'] or '-':10} {s['container']}")
        typer.echo(f"user servers: {len(users)}")
        for u in users:
            typer.echo(f"  {u['name']:30} {u['status']}")
    if not healthy:
        raise typer.Exit(1)


@stack_app.command("logs")
def stack_logs(
    service: Optional[str] = typer.Argument(
        None, metavar="[SERVICE]", help="jupyterhub, nginx or a user container name."
    ),
    tail: int = typer.Option(200, "--tail", metavar="LINES", help="Lines per container."),
    directory: Path = DirOption,
    root: str = RootOption,
) -> None:
    """Recent logs of the services (or one service or user container)."""
    stack = Stack(LocalHost(root), str(directory))
    stack.env()
    sys.stdout.write(stack.logs(service, tail))


def certs_command(
    directory: Path = DirOption,
    hostname: Optional[str] = hostname_option("Name in the certificate (default: this host's)."),
    names: List[str] = typer.Option([], "--name", metavar="NAME", help="Extra DNS name (repeatable)."),
    cert: Optional[Path] = typer.Option(
        None, "--cert", metavar="FILE", exists=True, dir_okay=False,
        help="Install this certificate (PEM) instead.",
    ),
    key: Optional[Path] = typer.Option(
        None, "--key", metavar="FILE", exists=True, dir_okay=False, help="...with this private key (PEM)."
    ),
    days: int = typer.Option(
        certs_mod.DEFAULT_DAYS, "--days", metavar="DAYS", help="Validity of a self-signed certificate."
    ),
    force: bool = typer.Option(False, "--force", "--renew", help="Replace an existing certificate."),
    show: bool = typer.Option(False, "--show", help="Only show the installed certificate."),
    ca: bool = typer.Option(
        False,
        "--ca",
        help="Sign with a site CA (made in DIR/ca/ when missing, key 0600, never mounted into "
        "a container); later renewals use it. Distribute DIR/ca/hostkit-ca.crt to browsers once.",
    ),
    renew_if_due: bool = typer.Option(
        False,
        "--renew-if-due",
        help=f"Renew a certificate hostkit made when it has {RENEW_BEFORE_DAYS} days or fewer left "
        f"({ACME_RENEW_BEFORE_DAYS} for ACME), with the same names (what the daily timer runs).",
    ),
    acme: bool = typer.Option(
        False,
        "--acme",
        help="Get the certificate from an ACME CA (Let's Encrypt) for --hostname, a public name of "
        "this host: HTTP-01 through the stack's nginx on HOSTKIT_HTTP_PORT (80 when unset). "
        "Renewals then use ACME too.",
    ),
    email: Optional[str] = typer.Option(
        None, "--email", metavar="ADDR", help="ACME account contact (expiry notices)."
    ),
    acme_directory: Optional[str] = typer.Option(
        None,
        "--acme-directory",
        metavar="URL",
        help="ACME directory URL, or `staging` for Let's Encrypt's staging CA (default: Let's Encrypt).",
    ),
    root: str = RootOption,
) -> None:
    """TLS certificate (self-signed with SANs, ACME, or your own), key 0600, RFC 7919 DH group."""
    host = LocalHost(root)
    certs_dir = f"{directory}/certs"
    ip_addresses = None
    stack_env = Stack(host, str(directory)).read_env()
    mode = stack_env.get("HOSTKIT_CERT_MODE", "local")
    if acme and (cert or key or ca):
        raise UsageError("--acme cannot be combined with --cert/--key or --ca")
    if mode == "acme" and ca:
        force = True  # the site CA replaces the ACME certificate (it would keep a trusted one)
    if renew_if_due:
        current = certs_mod.show(host, certs_dir)
        ca_cert = f"{directory}/ca/{certs_mod.CA_CERT_NAME}"
        ca_subject = certs_mod.describe(host.read_text(ca_cert)).subject if host.exists(ca_cert) else None
        if not renewal_due(current, ca_subject, mode=mode):
            typer.echo(f"not due: {current.days_left()} days left")
            return
        if mode != "acme":  # an ACME renewal asks for the names of the certificate it renews
            hostname = hostname or (current.dns_names[0] if current.dns_names else None)
            names = list(names) or list(current.dns_names[1:])
            ip_addresses = [ipaddress.ip_address(ip) for ip in current.ip_addresses]
        force = True
    if show:
        info = certs_mod.show(host, certs_dir)
    elif acme or (mode == "acme" and force and not (cert or ca)):
        info = _acme_certificate(host, str(directory), hostname, email, acme_directory, stack_env)
    else:
        result = certs_mod.ensure_certs(
            host,
            certs_dir,
            hostname=hostname,
            extra_names=tuple(names),
            ip_addresses=ip_addresses,
            cert_file=str(cert) if cert else None,
            key_file=str(key) if key else None,
            days=days,
            force=force,
            ca_dir=f"{directory}/ca",
            make_ca_if_missing=ca,
        )
        for path in result.changed:
            _echo(f"wrote {path}")
        if mode == "acme" and (cert or ca) and result.changed:  # the admin chose another source
            Stack(host, str(directory)).write_env({"HOSTKIT_CERT_MODE": "local"})
            _echo("renewals no longer use ACME (HOSTKIT_CERT_MODE=local)")
        if result.changed and Stack(host, str(directory)).reload_nginx():
            _echo("reloaded nginx: it serves the new certificate")
        for path in result.kept:
            _echo(f"kept {path}")
        assert result.info is not None  # noqa: S101 - ensure_certs always describes the cert
        info = result.info
    typer.echo(f"subject:   {info.subject}")
    typer.echo(f"issuer:    {info.issuer}{' (self-signed)' if info.self_signed else ''}")
    typer.echo(f"expires:   {info.not_after:%Y-%m-%d %H:%M} UTC ({info.days_left()} days)")
    typer.echo(f"DNS names: {', '.join(info.dns_names) or '-'}")
    typer.echo(f"IPs:       {', '.join(info.ip_addresses) or '-'}")


def _acme_certificate(
    host: LocalHost,
    directory: str,
    hostname: Optional[str],
    email: Optional[str],
    given_directory: Optional[str],
    stack_env: dict[str, str],
) -> certs_mod.CertInfo:
    """Issue or renew through ACME; the account, CA and names default to the last issuance."""
    from hostkit import acme_certs

    if not stack_env:
        raise UsageError(
            f"no stack in {directory}: ACME validates through the stack's nginx",
            "run `hostkit stack up` first (or give --deploy-dir)",
        )
    cert_path = f"{directory}/certs/{certs_mod.CERT_NAME}"
    current = host.read_text(cert_path) if host.exists(cert_path) else ""
    recorded = stack_env.get("HOSTKIT_CERT_MODE") == "acme"
    if hostname:
        names = [hostname]
    elif recorded and current:
        names = acme_certs.served_names(current, None)
    else:
        raise UsageError("--acme needs the host's public name", "give --hostname NAME")
    url = acme_certs.directory_url(given_directory or stack_env.get("HOSTKIT_ACME_DIRECTORY", ""))
    result = acme_certs.obtain(
        host,
        directory,
        names=names,
        email=email or stack_env.get("HOSTKIT_ACME_EMAIL", ""),
        directory=url,
        log=_echo,
    )
    for path in result.changed:
        _echo(f"wrote {path}")
    if result.reloaded:
        _echo("reloaded nginx: it serves the new certificate")
    return result.info


@users_app.command("list")
def users_list(
    directory: Path = DirOption,
    fmt: OutputFormat = format_option(),
    root: str = RootOption,
) -> None:
    """Accounts with their approval, admin and server state."""
    users = Stack(LocalHost(root), str(directory)).users()
    if fmt is OutputFormat.json:
        typer.echo(json.dumps({"version": 1, "users": users}, indent=2))
        return
    for u in users:
        flags = ["approved" if u["approved"] else "PENDING"]
        if u["admin"]:
            flags.append("admin")
        if u["server_running"]:
            flags.append("server running")
        typer.echo(f"{u['name']:24} {', '.join(flags)}")


@users_app.command("approve")
def users_approve(
    name: str = typer.Argument(..., metavar="NAME", help="The user who signed up."),
    directory: Path = DirOption,
    root: str = RootOption,
) -> None:
    """Approve a sign-up (as the admin would at /hub/authorize)."""
    changed = Stack(LocalHost(root), str(directory)).approve(name)
    typer.echo(f"{name} approved" if changed else f"{name} was already approved")


@users_app.command("create")
def users_create(
    name: str = typer.Argument(..., metavar="NAME", help="New user name."),
    password: Optional[str] = typer.Option(
        None,
        "--password",
        metavar="PASSWORD",
        envvar="HOSTKIT_USER_PASSWORD",
        help="Password; generated and shown once if not given.",
    ),
    directory: Path = DirOption,
    root: str = RootOption,
) -> None:
    """Create an approved account with a password."""
    shown = password is None
    password = password or secrets.token_urlsafe(12)
    Stack(LocalHost(root), str(directory)).create_user(name, password)
    typer.echo(f"{name} created")
    if shown:
        typer.echo(f"password (shown once): {password}")
