"""The doctor process ends on time whatever a probe does, and prints nothing on stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# A probe stuck in a system call, like getaddrinfo on a dead resolver or statvfs on a hung
# NFS mount: a read on a pipe whose write end stays open never returns.
BLOCKING_CLI = """
import os, sys
from hostkit.probes import PROBES
from hostkit.results import Outcome

def blocks_forever(ctx):
    r, w = os.pipe()
    os.read(r, 1)
    return Outcome.ok("unreachable")

PROBES["t_blocks_forever"] = blocks_forever
from hostkit.cli import main
sys.argv = ["hostkit", *sys.argv[1:]]
main()
"""


def run_cli(
    args: list[str], timeout: float, code: str = BLOCKING_CLI
) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-W", "default", "-c", code, *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=REPO, check=False)
    return proc, time.monotonic() - start


def test_a_probe_that_never_returns_does_not_keep_the_process_alive(tmp_path: Path) -> None:
    catalogue = tmp_path / "hang.toml"
    catalogue.write_text(
        '[[check]]\nid = "t.hangs"\ntitle = "blocks forever"\nprobe = "t_blocks_forever"\ntimeout = 1\n\n'
        '[[check]]\nid = "t.fine"\ntitle = "answers"\nprobe = "root"\ntimeout = 1\n'
    )
    # started alone, the interpreter and imports take about a second here; the run itself
    # may take the largest check timeout (1 s) plus one second
    proc, elapsed = run_cli(["doctor", "--checks", str(catalogue), "--only", "t",
                             "--settings", str(tmp_path / "none.toml"), "--format", "json"], timeout=15)
    by_id = {c["id"]: c for c in json.loads(proc.stdout)["checks"]}
    assert by_id["t.hangs"]["status"] == "error"
    assert by_id["t.hangs"]["summary"] == "no answer within 1s (probe t_blocks_forever)"
    assert by_id["t.fine"]["status"] in ("pass", "warn")
    assert proc.returncode == 1
    assert proc.stderr == ""
    assert elapsed < 6, f"the process took {elapsed:.1f}s to end"


def test_tls_checks_with_dh_parameters_print_no_warning_on_stderr(tmp_path: Path) -> None:
    """cryptography deprecates finite-field DH; judging nginx's dhparam file is no reason to say so."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from hostkit.ffdhe import FFDHE_PEM

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hub.example.edu")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=90))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("hub.example.edu")]), critical=False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "hub.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "hub.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (tmp_path / "hub.key").chmod(0o600)
    (tmp_path / "dhparam.pem").write_text(FFDHE_PEM[2048])
    settings = tmp_path / "hostkit.toml"
    settings.write_text(f'cert_file = "{tmp_path}/hub.crt"\nkey_file = "{tmp_path}/hub.key"\n'
                        f'dhparam_file = "{tmp_path}/dhparam.pem"\nserver_name = "hub.example.edu"\n')
    code = "import sys; from hostkit.cli import main; sys.argv = ['hostkit', *sys.argv[1:]]; main()"
    proc, _ = run_cli(["doctor", "--settings", str(settings), "--only", "tls", "--skip", "tls.served",
                       "--format", "json"], timeout=60, code=code)
    by_id = {c["id"]: c for c in json.loads(proc.stdout)["checks"]}
    assert by_id["tls.dhparam"]["summary"] == "ffdhe2048 (RFC 7919 named group)"
    assert proc.stderr == ""
