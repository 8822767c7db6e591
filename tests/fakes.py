"""Fakes for fast unit tests: a Host on a temp root that answers commands from a table,
and a Docker client that answers from recorded JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable, Optional, Union

from hostkit.errors import HostkitError
from hostkit.host import CommandResult, LocalHost

FIXTURES = Path(__file__).parent / "fixtures"


def recorded_docker_info(name: str = "info-20.10-debian12.json") -> dict[str, Any]:
    return json.loads((FIXTURES / "docker" / name).read_text())


class FakeDockerCollection:
    def __init__(self, items: Optional[list[Any]] = None):
        self.items = items or []

    def list(self, *args: Any, **kwargs: Any) -> list[Any]:
        return list(self.items)


class FakeDocker:
    """Just enough of docker.DockerClient for the probes that read, never run."""

    def __init__(self, info: Optional[dict[str, Any]] = None):
        self._info = info if info is not None else recorded_docker_info()
        self.images = FakeDockerCollection()
        self.containers = FakeDockerCollection()
        self.networks = FakeDockerCollection()

    def info(self) -> dict[str, Any]:
        return self._info


Answer = Union[CommandResult, Exception, str]


class ReplayedStreaming(LocalHost):
    """A host whose commands are simulated: streaming hands over their output at the end."""

    def run_streaming(self, argv: Sequence[str], on_line: Callable[[str], None], *,
                      timeout: float = 24 * 3600, hint: str = "") -> CommandResult:
        res = self.run(argv, timeout=timeout)
        for line in (res.stdout + res.stderr).splitlines():
            on_line(line)
        return res


class FakeHost(ReplayedStreaming):
    """LocalHost on a temp root whose commands come from `commands` (argv tuple -> answer)."""

    def __init__(
        self,
        root: Path,
        commands: Optional[dict[tuple[str, ...], Answer]] = None,
        binaries: Sequence[str] = ("docker", "dockerd"),
        root_user: bool = True,
        docker: Optional[FakeDocker] = None,
        docker_error: Optional[HostkitError] = None,
    ):
        super().__init__(root)
        self.commands = dict(commands or {})
        self.binaries = set(binaries)
        self.root_user = root_user
        self.fake_docker = docker if docker is not None else FakeDocker()
        self.docker_error = docker_error
        self.calls: list[tuple[str, ...]] = []

    def files(self, mapping: dict[str, str]) -> FakeHost:
        for path, text in mapping.items():
            real = self.path(path)
            real.parent.mkdir(parents=True, exist_ok=True)
            real.write_text(text)
        return self

    def which(self, name: str) -> Optional[str]:
        return f"/usr/bin/{name}" if name in self.binaries else None

    def run(self, argv: Sequence[str], **kwargs: Any) -> CommandResult:
        key = tuple(str(a) for a in argv)
        self.calls.append(key)
        if key[0] not in self.binaries:
            raise HostkitError(f"{key[0]}: command not found")
        answer = self.commands.get(key)
        if answer is None:
            return CommandResult(key, 127, "", f"unexpected command {key}")
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, str):
            return CommandResult(key, 0, answer, "")
        return answer

    def is_root(self) -> bool:
        return self.root_user

    def ask_dns(self, server: str, name: str, timeout: float = 3.0) -> str:
        """Every resolver answers, unless `commands` has ("dns", server) -> an exception."""
        answer = self.commands.get(("dns", server))
        self.calls.append(("dns", server, name))
        if isinstance(answer, Exception):
            raise answer
        return "192.0.2.10"

    def docker(self, timeout: float = 10) -> Any:
        if self.docker_error:
            raise self.docker_error
        return self.fake_docker


class FakeContainer:
    def __init__(self, name: str, attrs: dict[str, Any]):
        self.name = name
        self.attrs = attrs
