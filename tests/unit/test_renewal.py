"""Certificates that renew themselves: the schedule, and what `certs --renew-if-due` renews."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from cryptography import x509
from fakes import FakeHost
from typer.testing import CliRunner

from hostkit import certs, renewal
from hostkit.cli import app

runner = CliRunner()


def test_systemd_gets_a_daily_persistent_timer_and_others_a_cron_entry() -> None:
    cmd = ["/opt/venv/bin/python", "-m", "hostkit"]
    systemd = renewal.render_schedule("systemd", "/opt/hostkit", cmd)
    name = renewal.unit_name("/opt/hostkit")
    service = systemd.files[f"/etc/systemd/system/{name}.service"]
    command = "/opt/venv/bin/python -m hostkit certs --renew-if-due --deploy-dir /opt/hostkit"
    assert f"ExecStart={command}" in service
    timer = systemd.files[f"/etc/systemd/system/{name}.timer"]
    assert "OnCalendar=daily" in timer
    assert "Persistent=true" in timer
    assert ("systemctl", "enable", "--now", f"{name}.timer") in systemd.commands
    cron = renewal.render_schedule("sysvinit", "/opt/hostkit", cmd)
    (entry,) = cron.files.values()
    assert " root /opt/venv/bin/python -m hostkit certs --renew-if-due --deploy-dir /opt/hostkit" in entry
    assert list(cron.files) == [f"/etc/cron.d/{name}"]
    assert renewal.unit_name("/srv/other") != name  # one schedule per stack


def test_install_writes_once(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)  # no systemd as PID 1 here: cron
    first = renewal.install_schedule(host, "/opt/hostkit", ["hostkit"])
    assert first == [f"/etc/cron.d/{renewal.unit_name('/opt/hostkit')}"]
    assert renewal.install_schedule(host, "/opt/hostkit", ["hostkit"]) == []
    assert renewal.remove_schedule(host, "/opt/hostkit") == first


def _write_cert(tmp_path: Path, days: int) -> None:
    cert, key = certs.make_self_signed("hub.example.org", [ipaddress.ip_address("192.0.2.7")],
                                       extra_names=("hub",), days=days)  # fmt: skip
    directory = tmp_path / "opt/hostkit/certs"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "hostkit.crt").write_text(cert)
    (directory / "hostkit.key").write_text(key)
    (directory / "hostkit.key").chmod(0o600)


def test_renew_if_due_renews_before_the_doctor_warns_with_the_same_names(tmp_path: Path) -> None:
    _write_cert(tmp_path, days=200)
    quiet = runner.invoke(app, ["certs", "--root", str(tmp_path), "--renew-if-due"])
    assert quiet.exit_code == 0, quiet.output
    assert "not due" in quiet.output
    _write_cert(tmp_path, days=40)  # the doctor warns at 30 days left
    renewed = runner.invoke(app, ["certs", "--root", str(tmp_path), "--renew-if-due"])
    assert renewed.exit_code == 0, renewed.output
    cert = x509.load_pem_x509_certificate((tmp_path / "opt/hostkit/certs/hostkit.crt").read_bytes())
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days >= 364
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName)[:2] == ["hub.example.org", "hub"]
    assert "192.0.2.7" in [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]


def test_a_certificate_the_admin_brought_is_never_renewed() -> None:
    info = certs.describe(certs.make_self_signed("x.example.org", [], days=5)[0])
    assert renewal.renewal_due(info, None)
    brought = info.__class__(**{**info.__dict__, "self_signed": False, "issuer": "CN=Some Public CA"})
    assert not renewal.renewal_due(brought, None)
    assert not renewal.renewal_due(brought, "CN=hostkit CA x")
    assert renewal.renewal_due(brought, "CN=Some Public CA")
