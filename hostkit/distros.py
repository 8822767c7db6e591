"""Which Linux this is, and whether hostkit supports it: pure parsing of /etc/os-release."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import distro

# distro's normalised ID -> (family, package manager, oldest supported major version)
_KNOWN: dict[str, tuple[str, str, int]] = {
    "centos": ("rhel", "dnf", 7),
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
    if major and major < oldest:
        reason = f"unsupported: saw {seen} (oldest supported {dist_id} is {oldest})"
    elif dist_id == "centos" and major == 8 and "stream" not in name.lower():
        reason = f"unsupported: saw {seen} (CentOS Linux 8 is end of life; use Stream 8/9 or Rocky)"
    return DistroInfo(dist_id, version_id, name, family, pm, not reason, reason)
