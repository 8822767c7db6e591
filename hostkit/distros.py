"""Which Linux this is, and whether hostkit supports it: pure parsing of /etc/os-release."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import distro

# distro's normalised ID -> (family, package manager, oldest supported major version)
_KNOWN: dict[str, tuple[str, str, int]] = {
    "centos": ("rhel", "dnf", 8),  # CentOS Stream 8+; CentOS 7 is refused below
    "rhel": ("rhel", "dnf", 8),
    "rocky": ("rhel", "dnf", 8),
    "almalinux": ("rhel", "dnf", 8),
    "oracle": ("rhel", "dnf", 8),
    "fedora": ("rhel", "dnf", 38),
    "debian": ("debian", "apt", 11),
    "ubuntu": ("debian", "apt", 20),
}


@dataclass(frozen=True)
class DistroInfo:
    """A distro as hostkit sees it."""

    id: str
    version_id: str
    name: str
    family: str  # "rhel", "debian" or "unknown"
    package_manager: Optional[str]  # "dnf", "yum", "apt" or None
    supported: bool
    reason: str  # why unsupported; empty when supported


def detect_distro(os_release_path: str) -> DistroInfo:
    """Classify the distro whose os-release file is at `os_release_path` (a real path).

    Unknown distros get a reason, never an exception.
    """
    parsed = distro.LinuxDistribution(
        include_lsb=False,
        include_uname=False,
        include_oslevel=False,
        os_release_file=os_release_path,
        distro_release_file="/dev/null",
    )
    dist_id = parsed.id()
    version_id = parsed.version(best=False)
    name = parsed.name(pretty=True) or dist_id or "unknown"
    like = set(parsed.like().split())
    seen = f"ID={parsed.os_release_attr('id') or '?'} VERSION_ID={version_id or '?'}"

    if dist_id not in _KNOWN:
        if dist_id in {"rhel", "centos", "fedora"} or like & {"rhel", "fedora", "centos"}:
            family = "rhel"
        elif like & {"debian", "ubuntu"}:
            family = "debian"
        else:
            family = "unknown"
        pm = {"rhel": "dnf", "debian": "apt"}.get(family)
        return DistroInfo(dist_id, version_id, name, family, pm, False, f"unsupported: saw {seen}")

    family, pm, oldest = _KNOWN[dist_id]
    major_text = version_id.split(".")[0]
    major = int(major_text) if major_text.isdigit() else 0
    if dist_id == "centos" and major == 7:
        pm = "yum"  # CentOS 7 predates dnf
    reason = ""
    if dist_id == "centos" and major == 7:
        reason = (f"unsupported: saw {seen} (CentOS 7 is end of life and has no Python 3.9+ "
                  "for hostkit; move to Rocky or AlmaLinux 9)")
    elif major and major < oldest:
        reason = f"unsupported: saw {seen} (oldest supported {dist_id} is {oldest})"
    elif dist_id == "centos" and major == 8 and "stream" not in name.lower():
        reason = f"unsupported: saw {seen} (CentOS Linux 8 is end of life; use Stream 8/9 or Rocky)"
    return DistroInfo(dist_id, version_id, name, family, pm, not reason, reason)


@dataclass(frozen=True)
class PythonAdvice:
    """The Python hostkit runs on for a distro, and how to get it when the system's is too old."""

    interpreter: str  # e.g. "python3" (the system's) or "python3.11"
    install: str  # the one command that provides it; empty when the system Python will do


def python_for(info: DistroInfo) -> PythonAdvice:
    """Which Python to install hostkit with on this distro (hostkit needs 3.9 or newer)."""
    major_text = info.version_id.split(".")[0]
    major = int(major_text) if major_text.isdigit() else 0
    if info.family == "rhel" and info.id != "fedora" and major == 8:
        # EL 8's platform Python is 3.6; AppStream carries 3.11
        return PythonAdvice("python3.11", "dnf install -y python3.11")
    if info.id == "ubuntu" and info.version_id == "20.04":
        # focal's python3 is 3.8; 3.9 is in universe
        return PythonAdvice("python3.9", "apt-get install -y python3.9 python3.9-venv")
    return PythonAdvice("python3", "")
