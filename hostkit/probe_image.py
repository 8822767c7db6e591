"""A tiny image for throwaway test containers, made from this host's own files, no registry.

The doctor's container checks (DNS and TCP from inside a container) need an image with a
shell, a resolver client and a way to open TCP. A fresh host has no image at all and may
have no registry, so hostkit makes one in about a second: a static busybox when the host
has one (Debian's busybox-static), else the host's own `sh`, `getent` and `bash` (its
/dev/tcp opens TCP) with the shared libraries `ldd` names and glibc's DNS modules. The tar
is deterministic, so its hash names the image (`hostkit/probe:<hash>`) and a second call
finds it instead of importing again.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
import tarfile
from dataclasses import dataclass
from typing import Any, Optional

from hostkit.errors import HostkitError
from hostkit.host import LocalHost

PROBE_REPOSITORY = "hostkit/probe"
PROBE_LABEL = "org.hostkit.probe"
FORMAT = b"hostkit-probe-image 1\n"  # bump when the layout changes: a new hash, a new image

BUSYBOX_PATHS = ("/bin/busybox", "/usr/bin/busybox", "/usr/sbin/busybox", "/sbin/busybox")
BUSYBOX_APPLETS = ("sh", "nslookup", "nc", "true", "cat", "sleep", "wget")
# glibc loads these by name at run time (ldd does not list them); before glibc 2.34 the
# `files` and `dns` sources were separate modules
GLIBC_DNS_MODULES = ("libnss_files.so.2", "libnss_dns.so.2", "libresolv.so.2")
NSSWITCH = b"passwd: files\ngroup: files\nhosts: files dns\n"


@dataclass(frozen=True)
class Entry:
    """One file or symlink in the image."""

    path: str
    data: bytes = b""
    mode: int = 0o644
    link: str = ""  # a symlink to this target when set


def busybox_entries(host: LocalHost) -> Optional[list[Entry]]:
    """busybox and its applet links (and its libraries, should it not be static)."""
    found = next((p for p in BUSYBOX_PATHS if host.exists(p)), None)
    if not found:
        return None
    entries = [Entry("/bin/busybox", host.read_bytes(found), 0o755)]
    entries += [Entry(f"/bin/{applet}", link="busybox") for applet in BUSYBOX_APPLETS]
    return entries + library_entries(host, found)


def host_tool_entries(host: LocalHost) -> list[Entry]:
    """The host's sh, getent and bash, with everything they load."""
    entries: list[Entry] = []
    libs: dict[str, Entry] = {}
    for name, required in (("sh", True), ("getent", True), ("bash", False)):
        found = host.which(name)
        if not found:
            if required:
                raise HostkitError(f"cannot make a probe image: no {name} on this host",
                                   "install busybox-static, or set probe_image in the settings")
            continue
        entries.append(Entry(f"/bin/{name}", host.read_bytes(found), 0o755))  # the file a link names
        for lib in library_entries(host, found):
            libs[lib.path] = lib
    libc = next((p for p in libs if posixpath.basename(p) == "libc.so.6"), None)
    if libc:
        for module in GLIBC_DNS_MODULES:
            path = posixpath.join(posixpath.dirname(libc), module)
            if path not in libs and host.exists(path):
                libs[path] = Entry(path, host.read_bytes(path), 0o755)
    entries.append(Entry("/etc/nsswitch.conf", NSSWITCH))
    return entries + sorted(libs.values(), key=lambda e: e.path)


def library_entries(host: LocalHost, binary: str) -> list[Entry]:
    """The shared libraries and loader `ldd` lists for a binary; none for a static one."""
    res = host.run(["ldd", binary], timeout=15)
    if not res.ok:  # "not a dynamic executable"
        return []
    entries = []
    for path in parse_ldd(res.stdout):
        entries.append(Entry(path, host.read_bytes(path), 0o755))
    return entries


def parse_ldd(text: str) -> list[str]:
    """Absolute library paths from `ldd` output (the vDSO has no file)."""
    paths = []
    for line in text.splitlines():
        words = line.replace("=>", " ").split()
        path = next((w for w in words if w.startswith("/")), None)
        if path:
            paths.append(path)
    return paths


def probe_image_tar(entries: list[Entry]) -> bytes:
    """A deterministic tar of the entries (fixed owner and times), with their directories."""
    dirs = set()
    for entry in entries:
        parent = posixpath.dirname(entry.path)
        while parent not in ("/", ""):
            dirs.add(parent)
            parent = posixpath.dirname(parent)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for d in sorted(dirs):
            info = tarfile.TarInfo(d.lstrip("/"))
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for entry in sorted(entries, key=lambda e: e.path):
            info = tarfile.TarInfo(entry.path.lstrip("/"))
            if entry.link:
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, entry.link, 0o777
                tar.addfile(info)
            else:
                info.size, info.mode = len(entry.data), entry.mode
                tar.addfile(info, io.BytesIO(entry.data))
    return buf.getvalue()


def probe_image_tag(tar: bytes) -> str:
    return f"{PROBE_REPOSITORY}:{hashlib.sha256(FORMAT + tar).hexdigest()[:12]}"


def ensure_probe_image(host: LocalHost, client: Any = None) -> str:
    """The tag of hostkit's probe image on this host's daemon, imported first if missing."""
    import docker.errors

    client = client or host.docker()
    entries = busybox_entries(host) or host_tool_entries(host)
    tar = probe_image_tar(entries)
    tag = probe_image_tag(tar)
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    except Exception as exc:
        raise HostkitError(f"cannot look up {tag}: {exc}") from exc
    repository, _, version = tag.partition(":")
    try:
        client.api.import_image_from_data(tar, repository=repository, tag=version,
                                          changes=[f"LABEL {PROBE_LABEL}=1"])
    except Exception as exc:
        raise HostkitError(f"cannot import the probe image {tag}: {exc}") from exc
    return tag
