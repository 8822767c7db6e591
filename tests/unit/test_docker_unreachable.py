"""A daemon that cannot be reached is described in words: where hostkit looked, and why it failed."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from hostkit.errors import HostkitError
from hostkit.host import LocalHost


def docker_error(monkeypatch: pytest.MonkeyPatch, docker_host: str) -> HostkitError:
    monkeypatch.setenv("DOCKER_HOST", docker_host)
    with pytest.raises(HostkitError) as caught:
        LocalHost().docker(timeout=1)
    return caught.value


def test_missing_socket_is_named_without_an_exception_repr(monkeypatch, tmp_path: Path) -> None:
    sock = tmp_path / "docker.sock"
    err = docker_error(monkeypatch, f"unix://{sock}")
    assert err.message == f"the Docker daemon does not answer on {sock} (no such file)"
    assert "systemctl start docker" in err.hint


def test_socket_nobody_listens_on_is_connection_refused(monkeypatch, tmp_path: Path) -> None:
    path = tmp_path / "docker.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))  # bound, never listening: what a dead dockerd leaves behind
    try:
        err = docker_error(monkeypatch, f"unix://{path}")
    finally:
        s.close()
    assert err.message == f"the Docker daemon does not answer on {path} (connection refused)"


def test_socket_that_accepts_and_never_answers_is_a_timeout(monkeypatch, tmp_path: Path) -> None:
    path = tmp_path / "docker.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.listen(8)
    try:
        err = docker_error(monkeypatch, f"unix://{path}")
    finally:
        s.close()
    assert err.message == f"the Docker daemon does not answer on {path} (no reply within 1s)"
