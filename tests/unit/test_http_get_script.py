"""The container probe's HTTP GET works with whatever a probe image has: python3 (the hub
image), busybox wget (the box's tiny image), bash alone (hostkit's own image without busybox)."""

from __future__ import annotations

import http.server
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostkit.probes.containers import http_get_script


class _Hub(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"version": "5.5.4"}' if self.path == "/hub/api" else b"no"
        self.send_response(200 if self.path == "/hub/api" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def hub_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hub/api"
    server.shutdown()


def _only(tmp_path: Path, *tools: str) -> str:
    """A PATH with just these tools on it, as in a small image."""
    for tool in tools:
        # this interpreter itself, not what PATH calls python3 (a pyenv shim is a bash script)
        found = sys.executable if tool == "python3" else shutil.which(tool)
        assert found, tool
        (tmp_path / tool).symlink_to(found)
    return str(tmp_path)


@pytest.mark.parametrize("tools", [("python3",), ("bash", "cat")])
def test_the_hub_answers_with_what_the_image_has(tmp_path: Path, hub_url: str,
                                                 tools: tuple[str, ...]) -> None:
    res = subprocess.run(["/bin/sh", "-c", http_get_script(hub_url)], capture_output=True,
                         text=True, env={"PATH": _only(tmp_path, *tools)}, timeout=30, check=False)
    assert res.returncode == 0, res.stderr
    assert '"version"' in res.stdout


def test_an_image_with_nothing_to_speak_http_with_says_so(tmp_path: Path, hub_url: str) -> None:
    res = subprocess.run(["/bin/sh", "-c", http_get_script(hub_url)], capture_output=True,
                         text=True, env={"PATH": str(tmp_path)}, timeout=30, check=False)
    assert res.returncode == 127
    assert "no python3, curl, wget or bash" in res.stderr
