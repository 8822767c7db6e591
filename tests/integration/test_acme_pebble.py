"""`hostkit certs --acme` end to end against pebble, the ACME test CA, and its challenge test
server as the DNS that sends the host name to this machine.

One stack for the module, with its plain-HTTP port (HOSTKIT_HTTP_PORT) on a free port that
pebble validates HTTP-01 on (pebble's httpPort). Tests run in order: issue, doctor, renew,
sslyze.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from stack_support import (
    ARTIFACTS,
    Deployment,
    docker_json,
    free_port,
    hostkit,
    new_deployment,
    sslyze_mozilla_intermediate,
    torn_down,
)

from hostkit import certs

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NAME = "hub.hostkit.test"  # resolved by pebble-challtestsrv to 127.0.0.1, where nginx listens


@dataclass
class Pebble:
    directory: str  # the ACME directory URL
    tls_ca: Path  # the CA of pebble's own HTTPS certificate (REQUESTS_CA_BUNDLE for hostkit)
    root: Path  # pebble's issuing root: the trust store for what it issues


def _wait_for(url: str, verify: str, what: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(url, verify=verify, timeout=5)
            return
        except requests.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{what} did not start: {log.read_text()[-2000:]}")
            time.sleep(0.3)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    deployment = new_deployment(tmp_path_factory.mktemp("acme"))
    deployment.settings["HOSTKIT_HTTP_PORT"] = str(free_port())
    with torn_down(deployment, "acme"):
        deployment.up()
        yield deployment


@pytest.fixture(scope="module")
def pebble(stack: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    """pebble (ACME on a free port, HTTP-01 on the stack's plain-HTTP port) and
    pebble-challtestsrv (DNS: every name is 127.0.0.1), both from Debian's `pebble` package."""
    if not (shutil.which("pebble") and shutil.which("pebble-challtestsrv")):
        pytest.fail("pebble is needed: apt-get install pebble (Debian 12's 2.4.0)")
    work = tmp_path_factory.mktemp("pebble")
    ca_cert, ca_key = certs.make_ca("pebble test TLS")
    cert, key = certs.make_self_signed("localhost", [], ca=(ca_cert, ca_key))
    (work / "tls-ca.pem").write_text(ca_cert)
    (work / "cert.pem").write_text(cert)
    (work / "key.pem").write_text(key)
    acme_port, management_port, dns_port, dns_management = (free_port() for _ in range(4))
    config = {
        "pebble": {
            "listenAddress": f"127.0.0.1:{acme_port}",
            "managementListenAddress": f"127.0.0.1:{management_port}",
            "certificate": str(work / "cert.pem"),
            "privateKey": str(work / "key.pem"),
            "httpPort": int(stack.settings["HOSTKIT_HTTP_PORT"]),
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
            "certificateValidityPeriod": 90 * 86400,  # Let's Encrypt's; pebble's default is 5 years
        }
    }
    (work / "pebble.json").write_text(json.dumps(config))
    env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
    logs = [(work / "challtestsrv.log").open("wb"), (work / "pebble.log").open("wb")]
    dns = subprocess.Popen(
        ["pebble-challtestsrv", "-dns01", f"127.0.0.1:{dns_port}", "-http01", "", "-https01", "",
         "-tlsalpn01", "", "-management", f"127.0.0.1:{dns_management}",
         "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""],
        stdout=logs[0], stderr=subprocess.STDOUT,
    )  # fmt: skip
    server = subprocess.Popen(
        ["pebble", "-config", str(work / "pebble.json"), "-dnsserver", f"127.0.0.1:{dns_port}"],
        stdout=logs[1], stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    try:
        tls_ca = str(work / "tls-ca.pem")
        _wait_for(f"http://127.0.0.1:{dns_management}/", "", "pebble-challtestsrv", dns,
                  work / "challtestsrv.log")  # fmt: skip
        _wait_for(f"https://127.0.0.1:{acme_port}/dir", tls_ca, "pebble", server, work / "pebble.log")
        root = requests.get(f"https://127.0.0.1:{management_port}/roots/0", verify=tls_ca, timeout=10)
        root.raise_for_status()
        (work / "root.pem").write_text(root.text)
        yield Pebble(f"https://localhost:{acme_port}/dir", work / "tls-ca.pem", work / "root.pem")
    finally:
        for proc in (server, dns):
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        for log in logs:
            log.close()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for name in ("pebble.log", "challtestsrv.log"):
            shutil.copy(work / name, ARTIFACTS / f"acme-{name}")


def _certs(stack: Deployment, pebble: Pebble, *args: str) -> subprocess.CompletedProcess[str]:
    return hostkit("certs", *args, "--deploy-dir", str(stack.directory),
                   env={"REQUESTS_CA_BUNDLE": str(pebble.tls_ca)})  # fmt: skip


def _served(stack: Deployment) -> x509.Certificate:
    pem = ssl.get_server_certificate(("127.0.0.1", stack.port))
    return x509.load_pem_x509_certificate(pem.encode())


def _container(stack: Deployment, service: str) -> dict[str, Any]:
    out = subprocess.run(
        ["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={stack.prefix}",
         "--filter", f"label=com.docker.compose.service={service}"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert len(out) == 1, out
    return dict(docker_json("inspect", out[0])[0])


def _nginx_run(stack: Deployment) -> tuple[str, str]:
    """The nginx container and when it last started: a reload changes neither."""
    state = _container(stack, "nginx")
    return state["Id"], state["State"]["StartedAt"]


def test_acme_issues_a_certificate_through_the_stacks_nginx(stack: Deployment, pebble: Pebble) -> None:
    before = _nginx_run(stack)
    proc = _certs(stack, pebble, "--acme", "--email", "admin@hostkit.test", "--hostname", NAME,
                  "--acme-directory", pebble.directory)  # fmt: skip
    assert "reloaded nginx" in proc.stderr, proc.stderr
    served = _served(stack)
    assert "Pebble Intermediate" in served.issuer.rfc4514_string()
    san = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [NAME]
    assert _nginx_run(stack) == before  # reloaded, not restarted or recreated
    env = stack.env()
    assert (env["HOSTKIT_CERT_MODE"], env["HOSTKIT_ACME_DIRECTORY"]) == ("acme", pebble.directory)
    account_key = stack.directory / "acme" / "account.key"
    assert account_key.stat().st_mode & 0o777 == 0o600
    assert (stack.directory / "acme").stat().st_mode & 0o777 == 0o700
    services = ("nginx", "jupyterhub", "docker-api")
    sources = [m["Source"] for svc in services for m in _container(stack, svc)["Mounts"]]
    acme_dir = str(stack.directory / "acme")
    assert not [s for s in sources if s == acme_dir or s.startswith(acme_dir + "/")]  # the key stays out
    assert list((stack.directory / "acme-challenge").iterdir()) == []  # tokens cleaned up
    # plain HTTP: everything but the challenge goes to HTTPS on the public port
    r = requests.get(f"http://127.0.0.1:{stack.settings['HOSTKIT_HTTP_PORT']}/hub/login",
                     headers={"Host": NAME}, allow_redirects=False, timeout=10)  # fmt: skip
    assert (r.status_code, r.headers["Location"]) == (301, f"https://{NAME}:{stack.port}/hub/login")


def _doctor_served(stack: Deployment, tmp_path: Path, trust: str) -> dict[str, Any]:
    settings = tmp_path / "hostkit.toml"
    settings.write_text(
        f'deploy_dir = "{stack.directory}"\npublic_port = {stack.port}\nbind_address = "127.0.0.1"\n'
        f'server_name = "{NAME}"\ntls_trust_file = "{trust}"\n'
    )
    proc = hostkit("doctor", "--only", "tls.served", "--format", "json", "--settings", str(settings),
                   check=False)  # fmt: skip
    (check,) = json.loads(proc.stdout)["checks"]
    return dict(check)


def test_doctor_accepts_the_pebble_chain_with_pebbles_root_only(
    stack: Deployment, pebble: Pebble, tmp_path: Path
) -> None:
    check = _doctor_served(stack, tmp_path, str(pebble.root))
    assert check["status"] == "pass", check
    assert f"chained to {pebble.root}" in check["summary"]
    # the same chain against a root that did not issue it (the CA of pebble's HTTPS endpoint)
    check = _doctor_served(stack, tmp_path, str(pebble.tls_ca))
    assert check["status"] == "fail", check
    assert "the served chain does not verify against" in check["summary"]


def test_renew_gets_a_new_acme_certificate_and_nginx_serves_it_without_a_restart(
    stack: Deployment, pebble: Pebble
) -> None:
    first = _served(stack)
    account_key = (stack.directory / "acme" / "account.key").read_text()
    nginx = _nginx_run(stack)
    proc = _certs(stack, pebble, "--renew")  # names, account and CA come from the first issuance
    assert "reloaded nginx" in proc.stderr, proc.stderr
    assert "registered an ACME account" not in proc.stderr  # the kept account key, the same account
    renewed = _served(stack)
    assert renewed.serial_number != first.serial_number
    assert "Pebble Intermediate" in renewed.issuer.rfc4514_string()
    assert _nginx_run(stack) == nginx
    assert (stack.directory / "acme" / "account.key").read_text() == account_key
    previous = stack.directory / "certs" / "hostkit.crt.previous"
    assert x509.load_pem_x509_certificate(previous.read_bytes()).serial_number == first.serial_number
    assert (stack.directory / "certs" / "hostkit.key.previous").stat().st_mode & 0o777 == 0o600
    # the daily renewal leaves a certificate with 90 days left alone
    proc = _certs(stack, pebble, "--renew-if-due")
    assert proc.stdout.startswith("not due: "), proc.stdout
    assert _served(stack).serial_number == renewed.serial_number


def test_pebble_certificate_passes_sslyze_mozilla_intermediate(stack: Deployment, pebble: Pebble) -> None:
    sslyze_mozilla_intermediate(f"{NAME}:{stack.port}{{127.0.0.1}}", pebble.root, "sslyze-acme")
