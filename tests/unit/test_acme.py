"""ACME around the protocol: the plain-HTTP server, the account key, installing a chain,
when renewals are due, and the command line's refusals. The protocol itself runs against
pebble in tests/integration/test_acme_pebble.py."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from fakes import FakeHost
from typer.testing import CliRunner

from hostkit import acme_certs, certs, renewal
from hostkit import stack as stack_mod
from hostkit.cli import app
from hostkit.errors import HostkitError, UsageError

runner = CliRunner()


def test_plain_http_server_answers_challenges_and_redirects_the_rest() -> None:
    conf = stack_mod.plain_http_server("80", "9090")
    assert "listen 8080;" in conf
    assert "location ^~ /.well-known/acme-challenge/ {" in conf
    assert "alias /var/www/acme-challenge/;" in conf
    assert "return 301 https://$host:9090$request_uri;" in conf
    assert "proxy_pass" not in conf  # nothing reaches the hub in clear text
    assert "return 301 https://$host$request_uri;" in stack_mod.plain_http_server("80", "443")


def test_no_http_port_no_plain_http_server() -> None:
    conf = stack_mod.plain_http_server("", "9090")
    assert all(line.startswith("#") for line in conf.splitlines())
    with pytest.raises(UsageError):
        stack_mod.plain_http_server("eighty", "9090")


def test_compose_adds_the_plain_http_file_only_with_an_http_port(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    stack = stack_mod.Stack(host, "/opt/hostkit", _compose=["docker", "compose"])
    stack.write_env({})
    assert not any(a.endswith(stack_mod.HTTP_COMPOSE_FILE) for a in stack.compose_cmd())
    stack.write_env({"HOSTKIT_HTTP_PORT": "80"})
    files = [a for a in stack.compose_cmd() if a.endswith(".yml")]
    assert [Path(f).name for f in files] == ["docker-compose.yml", stack_mod.HTTP_COMPOSE_FILE]


def test_runtime_files_render_the_plain_http_server_and_the_challenge_dir(tmp_path: Path) -> None:
    chown = ("chown", "-R", "0:1000", str(tmp_path / "opt/hostkit/secrets/hub"))
    host = FakeHost(tmp_path, commands={chown: ""}, binaries=("docker", "chown"))
    stack = stack_mod.Stack(host, "/opt/hostkit")
    stack.write_env({"HOSTKIT_HTTP_PORT": "80", "HOSTKIT_PORT": "443"})
    changed = stack.write_runtime_files()
    assert "/opt/hostkit/nginx.d/plain-http.server" in changed
    assert "listen 8080;" in host.read_text("/opt/hostkit/nginx.d/plain-http.server")
    assert host.path("/opt/hostkit/acme-challenge").is_dir()
    assert "/opt/hostkit/nginx.d/plain-http.server" not in stack.write_runtime_files()


def test_directory_shortcuts_and_urls() -> None:
    assert acme_certs.directory_url("") == acme_certs.LETSENCRYPT
    assert acme_certs.directory_url("staging") == acme_certs.LETSENCRYPT_STAGING
    assert acme_certs.directory_url("https://ca.example/dir") == "https://ca.example/dir"
    with pytest.raises(UsageError, match="https://"):
        acme_certs.directory_url("http://ca.example/dir")


def test_account_key_is_private_and_kept(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    pem, made = acme_certs.ensure_account_key(host, "/opt/hostkit")
    assert made
    assert host.stat("/opt/hostkit/acme/account.key").st_mode & 0o777 == 0o600
    assert host.stat("/opt/hostkit/acme").st_mode & 0o777 == 0o700
    host.path("/opt/hostkit/acme/account.key").chmod(0o644)
    again, made = acme_certs.ensure_account_key(host, "/opt/hostkit")
    assert (again, made) == (pem, False)
    assert host.stat("/opt/hostkit/acme/account.key").st_mode & 0o777 == 0o600


def test_install_keeps_the_previous_pair_and_refuses_a_foreign_key(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    old_cert, old_key = certs.make_self_signed("hub.example.edu", [])
    new_cert, new_key = certs.make_self_signed("hub.example.edu", [])
    acme_certs.install(host, "/c", old_cert, old_key)
    written = acme_certs.install(host, "/c", new_cert, new_key)
    assert "/c/hostkit.key.previous" in written
    assert host.read_text("/c/hostkit.crt") == new_cert
    assert host.read_text("/c/hostkit.crt.previous") == old_cert
    assert host.read_text("/c/hostkit.key.previous") == old_key
    for name in ("hostkit.key", "hostkit.key.previous"):
        assert host.stat(f"/c/{name}").st_mode & 0o777 == 0o600
    with pytest.raises(HostkitError, match="does not match"):
        acme_certs.install(host, "/c", old_cert, new_key)
    assert host.read_text("/c/hostkit.crt") == new_cert


def test_webroot_writes_tokens_nginx_can_read_and_cleans_up(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    webroot = acme_certs.Webroot(host, "/opt/hostkit/acme-challenge")
    webroot.put("tok-EN_1", "tok-EN_1.thumb")
    assert host.read_text("/opt/hostkit/acme-challenge/tok-EN_1") == "tok-EN_1.thumb"
    assert host.stat("/opt/hostkit/acme-challenge/tok-EN_1").st_mode & 0o777 == 0o644
    with pytest.raises(HostkitError):
        webroot.put("../../certs/hostkit.crt", "x")
    webroot.clean()
    assert list(host.path("/opt/hostkit/acme-challenge").iterdir()) == []


def _info(days: int, self_signed: bool) -> certs.CertInfo:
    now = dt.datetime.now(dt.timezone.utc)
    issuer = "CN=hub" if self_signed else "CN=R3"
    end = now + dt.timedelta(days=days, hours=1)
    return certs.CertInfo("CN=hub", issuer, now, end, ("hub.example.edu",), (), self_signed)


def test_acme_certificates_renew_with_thirty_days_left() -> None:
    assert not renewal.renewal_due(_info(31, False), None, mode="acme")
    assert renewal.renewal_due(_info(30, False), None, mode="acme")
    # the same certificate outside ACME mode is the admin's own: never renewed
    assert not renewal.renewal_due(_info(5, False), None)


def test_served_names_come_from_the_certificate_being_renewed() -> None:
    cert, _ = certs.make_self_signed("hub.example.edu", [], extra_names=("jupyter.example.edu",))
    assert acme_certs.served_names(cert, None) == ["hub.example.edu", "jupyter.example.edu"]


def test_acme_needs_a_deployed_stack_and_excludes_other_sources(tmp_path: Path) -> None:
    result = runner.invoke(app, ["certs", "--root", str(tmp_path), "--acme", "--email", "a@b.c",
                                 "--hostname", "hub.example.edu"])  # fmt: skip
    assert result.exit_code != 0
    assert "ACME validates through the stack's nginx" in result.output
    result = runner.invoke(app, ["certs", "--root", str(tmp_path), "--acme", "--ca"])
    assert result.exit_code != 0
    assert "--acme cannot be combined" in result.output


def test_only_another_certificate_source_ends_acme_mode(tmp_path: Path) -> None:
    deploy = tmp_path / "opt/hostkit"
    (deploy / "certs").mkdir(parents=True)
    cert, key = certs.make_self_signed("hub.example.edu", [])
    (deploy / "certs/hostkit.crt").write_text(cert)
    (deploy / "certs/hostkit.key").write_text(key)
    (deploy / ".env").write_text("HOSTKIT_CERT_MODE=acme\n")
    base = ["certs", "--root", str(tmp_path), "--deploy-dir", "/opt/hostkit"]
    assert runner.invoke(app, base).exit_code == 0  # DH group written, certificate kept
    assert "HOSTKIT_CERT_MODE=acme" in (deploy / ".env").read_text()
    own_cert, own_key = tmp_path / "own.crt", tmp_path / "own.key"
    new_cert, new_key = certs.make_self_signed("hub.example.edu", [])
    # the option must exist as given, and hostkit reads it under --root
    for path, text in ((own_cert, new_cert), (own_key, new_key)):
        path.write_text(text)
        under_root = tmp_path / str(path).lstrip("/")
        under_root.parent.mkdir(parents=True, exist_ok=True)
        under_root.write_text(text)
    result = runner.invoke(app, [*base, "--cert", str(own_cert), "--key", str(own_key)])
    assert result.exit_code == 0, result.output
    assert "HOSTKIT_CERT_MODE=local" in (deploy / ".env").read_text()


def test_the_site_ca_replaces_an_acme_certificate(tmp_path: Path) -> None:
    deploy = tmp_path / "opt/hostkit"
    (deploy / "certs").mkdir(parents=True)
    ca = certs.make_ca("elsewhere")  # stands in for the ACME CA: not self-signed, not ours
    cert, key = certs.make_self_signed("hub.example.edu", [], ca=ca)
    (deploy / "certs/hostkit.crt").write_text(cert)
    (deploy / "certs/hostkit.key").write_text(key)
    (deploy / ".env").write_text("HOSTKIT_CERT_MODE=acme\n")
    result = runner.invoke(app, ["certs", "--root", str(tmp_path), "--deploy-dir", "/opt/hostkit", "--ca",
                                 "--hostname", "hub.example.edu"])  # fmt: skip
    assert result.exit_code == 0, result.output
    issuer = certs.describe((deploy / "certs/hostkit.crt").read_text()).issuer
    assert issuer == certs.describe((deploy / "ca/hostkit-ca.crt").read_text()).subject
    assert "HOSTKIT_CERT_MODE=local" in (deploy / ".env").read_text()
