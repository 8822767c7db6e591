"""The `hostkit stack`, `hostkit certs` and `hostkit users` commands."""

from __future__ import annotations

import ipaddress
import json
import secrets
import sys
from functools import wraps
from typing import Any, Callable, List, Optional, TypeVar

import typer

from hostkit import certs as certs_mod
from hostkit.errors import HostkitError, UsageError
from hostkit.host import LocalHost
from hostkit.images import (
    BASE_MODES,
    DEFAULT_MIRROR,
    PACKAGE_SETS,
    BuildOptions,
    ImageBuilder,
    resolve_ca_bundle,
)
from hostkit.renewal import RENEW_BEFORE_DAYS, install_schedule, renewal_due
from hostkit.stack import DEFAULT_DIR, DEFAULT_PORT, Stack, primary_ip

stack_app = typer.Typer(
    no_args_is_help=True, help="Build and run the JupyterHub stack (nginx, hub, users' servers)."
)
users_app = typer.Typer(no_args_is_help=True, help="Accounts on the live hub.")

F = TypeVar("F", bound=Callable[..., Any])

DirOption = typer.Option(DEFAULT_DIR, "--dir", help="Deploy directory.")
RootOption = typer.Option("/", "--root", hidden=True, help="Resolve host paths under this root.")


def _echo(message: str) -> None:
    typer.echo(message, err=True)


def expected_errors(func: F) -> F:
    """Print a HostkitError as one or two lines and exit non-zero (no traceback)."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except HostkitError as exc:
            typer.echo(f"error: {exc.message}", err=True)
            if exc.hint:
                typer.echo(f"hint: {exc.hint}", err=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


def _build_options(
    host: LocalHost,
    base: str,
    ca_bundle: str,
    mirror: str,
    package_set: str,
    octave: bool,
    r: bool,
    force: bool,
) -> BuildOptions:
    return BuildOptions(
        base=base,
        ca_bundle=resolve_ca_bundle(host, ca_bundle),
        mirror=mirror,
        package_set=package_set,
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
    "auto",
    "--base",
    help=f"Base images: {'|'.join(BASE_MODES)} (auto: upstream if it can be pulled, else built here).",
)
CaOpt = typer.Option(
    "system",
    "--ca-bundle",
    help="CA certificates (PEM) trusted in image builds: 'system' (this host's store), a path, or 'none'.",
)
MirrorOpt = typer.Option(DEFAULT_MIRROR, "--mirror", help="Debian mirror for the locally built base image.")
SetOpt = typer.Option("full", "--package-set", help=f"Single-user image contents: {'|'.join(PACKAGE_SETS)}.")
OctaveOpt = typer.Option(True, "--octave/--no-octave", help="GNU Octave and its kernel in the user image.")
ROpt = typer.Option(True, "--r/--no-r", help="R and its kernel in the local notebook base.")


@stack_app.command("build")
@expected_errors
def stack_build(
    base: str = BaseOpt,
    ca_bundle: str = CaOpt,
    mirror: str = MirrorOpt,
    package_set: str = SetOpt,
    octave: bool = OctaveOpt,
    r: bool = ROpt,
    force: bool = typer.Option(False, "--force", help="Rebuild even when the inputs did not change."),
    work_dir: str = typer.Option("/var/lib/hostkit/build", "--work-dir", help="Scratch space for builds."),
    root: str = RootOption,
) -> None:
    """Build the hub, nginx and single-user images (without a registry if need be)."""
    host = LocalHost(root)
    options = _build_options(host, base, ca_bundle, mirror, package_set, octave, r, force)
    report = ImageBuilder(host, options, work_dir=work_dir, log=_echo).build_all()
    for role, image in report.images.items():
        state = "built" if image in report.built else "up to date"
        seconds = f" in {report.seconds[image]:.0f}s" if image in report.seconds else ""
        typer.echo(f"{role:14} {image:40} {state}{seconds}")


@stack_app.command("up")
@expected_errors
def stack_up(
    directory: str = DirOption,
    port: Optional[int] = typer.Option(None, "--port", help=f"Public HTTPS port (default {DEFAULT_PORT})."),
    bind: Optional[str] = typer.Option(None, "--bind", help="Address to publish the port on (default all)."),
    admin: Optional[str] = typer.Option(None, "--admin", help="Admin user name (default admin)."),
    admin_password: Optional[str] = typer.Option(
        None,
        "--admin-password",
        envvar="HOSTKIT_ADMIN_PASSWORD",
        help="The admin's password (first run only); generated and shown once if not given. "
        "Prefer --admin-password-file: an option shows in `ps`.",
    ),
    admin_password_file: Optional[str] = typer.Option(
        None,
        "--admin-password-file",
        help="Read the admin's password from this file ('-': standard input).",
    ),
    hostname: Optional[str] = typer.Option(None, "--hostname", help="Host name for the certificate and URL."),
    settings: List[str] = typer.Option([], "--set", help="KEY=VALUE written to .env (repeatable)."),
    build: bool = typer.Option(True, "--build/--no-build", help="Build missing or outdated images first."),
    base: str = BaseOpt,
    ca_bundle: str = CaOpt,
    mirror: str = MirrorOpt,
    package_set: str = SetOpt,
    octave: bool = OctaveOpt,
    r: bool = ROpt,
    timeout: float = typer.Option(300, "--timeout", help="Seconds to wait for the stack to be healthy."),
    root: str = RootOption,
) -> None:
    """Deploy: files, certs, .env (secrets once), images, start, wait for health, admin."""
    host = LocalHost(root)
    if admin_password_file is not None:
        admin_password = _read_password(admin_password_file)
    stack = Stack(host, directory, log=_echo)
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
    installed = stack.install_files()
    for path in installed:
        _echo(f"wrote {path}")

    if build:
        options = _build_options(host, base, ca_bundle, mirror, package_set, octave, r, False)
        report = ImageBuilder(host, options, log=_echo).build_all()
        overrides.setdefault("HOSTKIT_HUB_IMAGE", report.images["hub"])
        overrides.setdefault("HOSTKIT_NGINX_IMAGE", report.images["nginx"])
        overrides.setdefault("HOSTKIT_NOTEBOOK_IMAGE", report.images["singleuser"])

    result = certs_mod.ensure_certs(host, stack.certs_dir, hostname=hostname, ca_dir=f"{directory}/ca")
    for path in result.changed:
        _echo(f"wrote {path}")

    if "HOSTKIT_HOST_IP" not in existing and "HOSTKIT_HOST_IP" not in overrides:
        overrides["HOSTKIT_HOST_IP"] = primary_ip(host) or "host-gateway"

    shown_password = _admin_password(stack, existing, overrides, admin_password)
    env, changed = stack.write_env(overrides)
    if changed:
        _echo(f"wrote {stack.env_path} (mode 0600)")
    _echo("starting the stack")
    stack.up(timeout=timeout, changed=[*installed, *result.changed])
    _schedule_renewal(host, directory, env)
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
@expected_errors
def stack_down(directory: str = DirOption, root: str = RootOption) -> None:
    """Stop the stack and the users' servers; volumes (hub data, users' work) stay."""
    stack = Stack(LocalHost(root), directory)
    stack.env()
    for name in stack.down():
        _echo(f"removed user container {name}")
    typer.echo("stack stopped")


@stack_app.command("status")
@expected_errors
def stack_status(
    directory: str = DirOption,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    root: str = RootOption,
) -> None:
    """Services with their state and health, and the spawned users' containers."""
    stack = Stack(LocalHost(root), directory)
    env = stack.env()
    services = stack.service_states()
    users = stack.user_containers()
    healthy = all(s["state"] == "running" and s["health"] in ("healthy", "") for s in services.values())
    if as_json:
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
@expected_errors
def stack_logs(
    service: Optional[str] = typer.Argument(None, help="jupyterhub, nginx or a user container name."),
    tail: int = typer.Option(200, "--tail", help="Lines per container."),
    directory: str = DirOption,
    root: str = RootOption,
) -> None:
    """Recent logs of the services (or one service or user container)."""
    stack = Stack(LocalHost(root), directory)
    stack.env()
    sys.stdout.write(stack.logs(service, tail))


@expected_errors
def certs_command(
    directory: str = DirOption,
    hostname: Optional[str] = typer.Option(
        None, "--hostname", help="Name in the certificate (default: this host's)."
    ),
    names: List[str] = typer.Option([], "--name", help="Extra DNS name (repeatable)."),
    cert: Optional[str] = typer.Option(None, "--cert", help="Install this certificate (PEM) instead."),
    key: Optional[str] = typer.Option(None, "--key", help="...with this private key (PEM)."),
    days: int = typer.Option(certs_mod.DEFAULT_DAYS, "--days", help="Validity of a self-signed certificate."),
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
        help=f"Renew a certificate hostkit made when it has {RENEW_BEFORE_DAYS} days or fewer left, "
        "with the same names (what the daily timer runs).",
    ),
    root: str = RootOption,
) -> None:
    """TLS certificate (self-signed with SANs, or your own), key 0600, RFC 7919 DH group."""
    host = LocalHost(root)
    certs_dir = f"{directory}/certs"
    ip_addresses = None
    if renew_if_due:
        current = certs_mod.show(host, certs_dir)
        ca_cert = f"{directory}/ca/{certs_mod.CA_CERT_NAME}"
        ca_subject = certs_mod.describe(host.read_text(ca_cert)).subject if host.exists(ca_cert) else None
        if not renewal_due(current, ca_subject):
            typer.echo(f"not due: {current.days_left()} days left")
            return
        hostname = hostname or (current.dns_names[0] if current.dns_names else None)
        names = list(names) or list(current.dns_names[1:])
        ip_addresses = [ipaddress.ip_address(ip) for ip in current.ip_addresses]
        force = True
    if show:
        info = certs_mod.show(host, certs_dir)
    else:
        result = certs_mod.ensure_certs(
            host,
            certs_dir,
            hostname=hostname,
            extra_names=tuple(names),
            ip_addresses=ip_addresses,
            cert_file=cert,
            key_file=key,
            days=days,
            force=force,
            ca_dir=f"{directory}/ca",
            make_ca_if_missing=ca,
        )
        for path in result.changed:
            _echo(f"wrote {path}")
        if result.changed and Stack(host, directory).reload_nginx():
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


@users_app.command("list")
@expected_errors
def users_list(
    directory: str = DirOption,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    root: str = RootOption,
) -> None:
    """Accounts with their approval, admin and server state."""
    users = Stack(LocalHost(root), directory).users()
    if as_json:
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
@expected_errors
def users_approve(
    name: str = typer.Argument(..., help="The user who signed up."),
    directory: str = DirOption,
    root: str = RootOption,
) -> None:
    """Approve a sign-up (as the admin would at /hub/authorize)."""
    changed = Stack(LocalHost(root), directory).approve(name)
    typer.echo(f"{name} approved" if changed else f"{name} was already approved")


@users_app.command("create")
@expected_errors
def users_create(
    name: str = typer.Argument(..., help="New user name."),
    password: Optional[str] = typer.Option(
        None,
        "--password",
        envvar="HOSTKIT_USER_PASSWORD",
        help="Password; generated and shown once if not given.",
    ),
    directory: str = DirOption,
    root: str = RootOption,
) -> None:
    """Create an approved account with a password."""
    shown = password is None
    password = password or secrets.token_urlsafe(12)
    Stack(LocalHost(root), directory).create_user(name, password)
    typer.echo(f"{name} created")
    if shown:
        typer.echo(f"password (shown once): {password}")
