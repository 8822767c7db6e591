"""Registry-less image builds: the full default single-user image, with the seed's set.

`hostkit stack build --base local` makes the Debian base with debootstrap, the local
datascience-notebook stand-in, the hub, nginx and the full single-user image. The
end-to-end module may have built them already in this run; then this module proves that
a second build finds them up to date.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from stack_support import hostkit

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FULL = ["--base", "local", "--package-set", "full"]
LABEL = "org.hostkit.input-hash"


def _labels(image: str) -> dict[str, str]:
    out = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", image],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out) or {}


@pytest.fixture(scope="module")
def full_images() -> dict[str, str]:
    started = time.monotonic()
    proc = hostkit("stack", "build", *FULL)
    print(f"\nfull registry-less build: {time.monotonic() - started:.0f}s\n{proc.stdout}{proc.stderr}")
    images = {}
    for line in proc.stdout.splitlines():
        role, image, *_ = line.split()
        images[role] = image
    return images


def test_every_image_is_built_here_and_labelled_with_its_input_hash(full_images: dict[str, str]) -> None:
    assert set(full_images) == {"debian", "notebook-base", "hub", "nginx", "singleuser"}
    assert full_images["singleuser"] == "hostkit/singleuser:full"
    for image in full_images.values():
        assert len(_labels(image)[LABEL]) == 64, image


def test_a_second_build_finds_everything_up_to_date(full_images: dict[str, str]) -> None:
    started = time.monotonic()
    proc = hostkit("stack", "build", *FULL)
    assert time.monotonic() - started < 120
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 5
    assert all(line.endswith("up to date") for line in lines), proc.stdout


def _in_image(image: str, *cmd: str) -> str:
    proc = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "", image, *cmd],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, f"{cmd}: {proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def test_full_user_image_has_the_seed_extensions_enabled(full_images: dict[str, str]) -> None:
    image = full_images["singleuser"]
    labext = _in_image(image, "jupyter", "labextension", "list")
    for name in (
        "@jupyter-server/resource-usage",
        "jupyter-matplotlib",
        "@jupyter-lsp/jupyterlab-lsp",
        "@bokeh/jupyter_bokeh",
        "jupyterlab-execute-time",
    ):
        line = next((row for row in labext.splitlines() if name in row), "")
        assert "enabled" in line, f"{name} missing or disabled:\n{labext}"
    server = _in_image(image, "jupyter", "server", "extension", "list")
    for name in ("jupyter_resource_usage", "jupyter_lsp"):
        line = next((row for row in server.splitlines() if name in row), "")
        assert "enabled" in line, f"{name} missing or disabled:\n{server}"
    kernels = _in_image(image, "jupyter", "kernelspec", "list")
    for kernel in ("python3", "octave", "ir"):
        assert kernel in kernels.split(), kernels
    overrides = _in_image(
        image,
        "python",
        "-c",
        "import sys, pathlib; "
        "print(pathlib.Path(sys.prefix, 'share/jupyter/lab/settings/overrides.json').read_text())",
    )
    assert json.loads(overrides)["@jupyterlab/notebook-extension:tracker"]["recordTiming"] is True
    ident = _in_image(image, "id")
    assert "uid=1000(jovyan)" in ident
    assert "gid=100(" in ident


# Run inside the image: a server starts, offers the Python language server found when the
# image was built (without searching again), and that server answers an LSP `initialize`.
LANGUAGE_SERVER_PROBE = """
import json, subprocess, sys, time, urllib.request
from tornado import ioloop, websocket
base = "http://127.0.0.1:8899"
log = open("/tmp/server.log", "w")
server = subprocess.Popen(["jupyter", "server", "--port=8899", "--IdentityProvider.token=t"],
                          stdout=log, stderr=subprocess.STDOUT)
for _ in range(300):
    try:
        status = json.load(urllib.request.urlopen(base + "/lsp/status?token=t"))
        break
    except Exception:
        time.sleep(0.1)
print("specs", sorted(status["specs"]))
async def initialize():
    ws = await websocket.websocket_connect("ws://127.0.0.1:8899/lsp/ws/pylsp?token=t")
    ws.write_message(json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"processId": None, "rootUri": None, "capabilities": {}}}))
    while True:
        reply = json.loads(await ws.read_message())
        if reply.get("id") == 0:
            return reply
reply = ioloop.IOLoop.current().run_sync(initialize, timeout=120)
print("initialize", "completionProvider" in reply["result"]["capabilities"])
server.terminate()
server.wait(30)
log.close()
print("searched", "Skipped non-installed" in open("/tmp/server.log").read())
"""


def test_the_python_language_server_is_pinned_at_build_time_and_answers(full_images: dict[str, str]) -> None:
    out = _in_image(full_images["singleuser"], "python", "-c", LANGUAGE_SERVER_PROBE)
    assert "specs ['pylsp']" in out, out
    assert "initialize True" in out, out
    assert "searched False" in out, out  # no language-server search at each start


def test_full_user_image_runs_spark_pandas_api_and_the_seed_libraries(full_images: dict[str, str]) -> None:
    code = (
        "import psycopg2, bokeh, plotly, pandas\n"
        "import pyspark.pandas as ps\n"
        "from pyspark.sql import SparkSession\n"
        "spark = SparkSession.builder.master('local[1]').getOrCreate()\n"
        "print('sum', ps.DataFrame({'x': [1, 2, 3]})['x'].sum())\n"
        "spark.stop()\n"
    )
    out = _in_image(full_images["singleuser"], "python", "-c", code)
    assert "sum 6" in out
    octave = _in_image(full_images["singleuser"], "octave-cli", "--eval", "disp(1+1)")
    assert octave.strip().endswith("2")
