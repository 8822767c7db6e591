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
