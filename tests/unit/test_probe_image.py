"""hostkit's own probe image: made from the host's busybox, else its sh/getent/bash and libraries."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import docker.errors
import pytest
from fakes import FakeHost

from hostkit.errors import HostkitError
from hostkit.host import CommandResult
from hostkit.probe_image import (
    PROBE_LABEL,
    busybox_entries,
    ensure_probe_image,
    host_tool_entries,
    parse_ldd,
    probe_image_tag,
    probe_image_tar,
)

LIBDIR = "/lib/x86_64-linux-gnu"
LDD_DASH = (
    "\tlinux-vdso.so.1 (0x00007fa28a5c7000)\n"
    f"\tlibc.so.6 => {LIBDIR}/libc.so.6 (0x00007fa28a3b1000)\n"
    "\t/lib64/ld-linux-x86-64.so.2 (0x00007fa28a5c9000)\n"
)


def not_dynamic(binary: str) -> CommandResult:
    return CommandResult(("ldd", binary), 1, "", "\tnot a dynamic executable\n")


def names(tar: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        return {m.name: m for m in t.getmembers()}


def glibc_host(tmp_path: Path) -> FakeHost:
    host = FakeHost(tmp_path, binaries=("ldd", "sh", "getent"), commands={
        ("ldd", "/usr/bin/sh"): LDD_DASH, ("ldd", "/usr/bin/getent"): LDD_DASH})
    return host.files({"/usr/bin/sh": "dash", "/usr/bin/getent": "getent",
                       f"{LIBDIR}/libc.so.6": "libc", "/lib64/ld-linux-x86-64.so.2": "ld",
                       f"{LIBDIR}/libnss_dns.so.2": "nss-dns", f"{LIBDIR}/libnss_files.so.2": "nss-files"})


def test_ldd_output_gives_library_files_not_the_vdso() -> None:
    assert parse_ldd(LDD_DASH) == [f"{LIBDIR}/libc.so.6", "/lib64/ld-linux-x86-64.so.2"]


def test_a_static_busybox_is_the_whole_image(tmp_path: Path) -> None:
    commands = {("ldd", "/bin/busybox"): not_dynamic("/bin/busybox")}
    host = FakeHost(tmp_path, binaries=("ldd",), commands=commands)
    host.files({"/bin/busybox": "BB"})
    members = names(probe_image_tar(busybox_entries(host) or []))
    assert members["bin/busybox"].mode == 0o755
    assert members["bin/sh"].linkname == "busybox"
    assert {"bin/nslookup", "bin/nc"} <= set(members)
    assert not any(n.startswith("lib") for n in members)


def test_without_busybox_the_hosts_tools_come_with_their_libraries_and_dns_modules(tmp_path: Path) -> None:
    host = glibc_host(tmp_path)
    assert busybox_entries(host) is None
    members = names(probe_image_tar(host_tool_entries(host)))
    assert {"bin/sh", "bin/getent", "lib64/ld-linux-x86-64.so.2", "lib/x86_64-linux-gnu/libc.so.6",
            "lib/x86_64-linux-gnu/libnss_dns.so.2", "lib/x86_64-linux-gnu/libnss_files.so.2",
            "etc/nsswitch.conf"} <= set(members)
    assert "bin/bash" not in members  # optional: this host has none
    assert members["lib64"].isdir()


def test_a_host_without_sh_or_getent_cannot_make_one(tmp_path: Path) -> None:
    host = glibc_host(tmp_path)
    host.binaries.discard("getent")
    with pytest.raises(HostkitError, match="no getent on this host"):
        host_tool_entries(host)


def test_the_tag_is_the_hash_of_a_deterministic_tar(tmp_path: Path) -> None:
    one = probe_image_tar(host_tool_entries(glibc_host(tmp_path / "a")))
    two = probe_image_tar(host_tool_entries(glibc_host(tmp_path / "b")))
    assert one == two
    assert probe_image_tag(one).startswith("hostkit/probe:")
    changed = glibc_host(tmp_path / "c").files({f"{LIBDIR}/libc.so.6": "libc, patched"})
    assert probe_image_tag(probe_image_tar(host_tool_entries(changed))) != probe_image_tag(one)


class FakeImages:
    def __init__(self) -> None:
        self.present: set[str] = set()
        self.imports: list[dict[str, Any]] = []

    def get(self, tag: str) -> str:
        if tag not in self.present:
            raise docker.errors.ImageNotFound(tag)
        return tag

    def import_image_from_data(self, data: bytes, repository: str, tag: str, changes: list[str]) -> None:
        self.imports.append({"data": data, "repository": repository, "tag": tag, "changes": changes})
        self.present.add(f"{repository}:{tag}")


class FakeClient:
    def __init__(self) -> None:
        self.images = FakeImages()
        self.api = self.images


def test_the_image_is_imported_once_labelled_then_reused(tmp_path: Path) -> None:
    host, client = glibc_host(tmp_path), FakeClient()
    tag = ensure_probe_image(host, client)
    assert ensure_probe_image(host, client) == tag
    (imported,) = client.images.imports
    assert f"{imported['repository']}:{imported['tag']}" == tag
    assert imported["changes"] == [f"LABEL {PROBE_LABEL}=1"]
    assert "bin/getent" in names(imported["data"])


class _Img:
    def __init__(self, tag: str, image_id: str = "sha256:abc") -> None:
        self.tags = [tag]
        self.id = image_id


def _ctx(tmp_path: Path, probe_image: str, tags: list[str]) -> Any:
    from fakes import FakeDocker, FakeHost

    from hostkit.doctor import ProbeContext
    from hostkit.facts import Facts
    from hostkit.settings import Settings

    docker_client = FakeDocker()
    docker_client.images.items = [_Img(t) for t in tags]
    host = FakeHost(tmp_path, docker=docker_client)
    return ProbeContext(host, Facts(host), Settings(probe_image=probe_image))


def test_a_recorded_probe_image_is_used_while_it_is_there(tmp_path: Path) -> None:
    from hostkit.probes.containers import pick_probe_image

    ctx = _ctx(tmp_path, "hostkit/probe:0123456789ab", ["hostkit/probe:0123456789ab",
                                                        "hostkit/jupyterhub:5.5.4"])
    assert pick_probe_image(ctx) == "hostkit/probe:0123456789ab"


def test_a_recorded_image_of_hostkits_that_is_gone_is_replaced_not_reported(
        tmp_path: Path) -> None:
    from hostkit.probes.containers import pick_probe_image

    ctx = _ctx(tmp_path, "hostkit/jupyterhub:5.5.3", ["hostkit/jupyterhub:5.5.4"])
    assert pick_probe_image(ctx) == "hostkit/jupyterhub:5.5.4"


def test_an_image_the_admin_chose_that_is_gone_is_said_plainly(tmp_path: Path) -> None:
    import pytest

    from hostkit.probes.containers import NoProbeImage, pick_probe_image

    ctx = _ctx(tmp_path, "registry.example.edu/tools:1", ["hostkit/jupyterhub:5.5.4"])
    with pytest.raises(NoProbeImage, match=r"probe_image registry\.example\.edu/tools:1 is not on"):
        pick_probe_image(ctx)
