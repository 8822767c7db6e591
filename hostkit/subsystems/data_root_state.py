"""What a data-root move leaves on disk for later runs: the marker of an unfinished copy,
the state file of moved-aside roots, and the inventory read from a stopped root's files."""

from __future__ import annotations

import json
import time
from pathlib import PurePosixPath
from typing import Any, Optional

from hostkit.errors import HostkitError
from hostkit.host import LocalHost
from hostkit.subsystems.docker_service import Inventory

STATE_FILE = "/var/lib/hostkit/old-data-roots.json"
MARKER = ".hostkit-copy-in-progress"


# ---- the marker: a partial copy that hostkit itself started -------------------------------

def marker_for(host: LocalHost, old: str) -> dict[str, Any]:
    st = host.stat(old)
    return {"source": old, "dev": st.st_dev, "ino": st.st_ino,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def read_marker(host: LocalHost, new: str) -> Optional[dict[str, Any]]:
    path = f"{new}/{MARKER}"
    if not host.exists(path):
        return None
    try:
        data = json.loads(host.read_text(path))
    except (json.JSONDecodeError, HostkitError):
        return {}
    return data if isinstance(data, dict) else {}


def marker_matches(host: LocalHost, marker: dict[str, Any], old: str) -> bool:
    """The marker was written for a copy of this very root (path and dev/inode)."""
    ident = host.identity(old)
    return (marker.get("source") == old and ident is not None
            and (marker.get("dev"), marker.get("ino")) == ident)


# ---- state file: the moved-aside roots `hostkit cleanup` may delete -----------------------

def load_state(host: LocalHost) -> list[dict[str, str]]:
    if not host.exists(STATE_FILE):
        return []
    try:
        data = json.loads(host.read_text(STATE_FILE))
    except json.JSONDecodeError as exc:
        raise HostkitError(f"{STATE_FILE}: not valid JSON ({exc.msg})",
                           "remove the old data roots by hand") from exc
    return [d for d in data if isinstance(d, dict) and "path" in d] if isinstance(data, list) \
        else []


def save_state(host: LocalHost, entries: list[dict[str, str]]) -> None:
    host.makedirs(str(PurePosixPath(STATE_FILE).parent))
    host.write_text(STATE_FILE, json.dumps(entries, indent=2) + "\n", mode=0o600, backup=False)


def set_state(host: LocalHost, path: str, entry: Optional[dict[str, str]]) -> None:
    try:
        entries = load_state(host)
    except HostkitError:
        entries = []
    entries = [e for e in entries if e.get("path") != path]
    if entry is not None:
        entries.append(entry)
    save_state(host, entries)


# ---- inventories --------------------------------------------------------------------------

def root_inventory(host: LocalHost, root: str) -> Inventory:
    """What a stopped Docker's root holds, read from its files.

    Containers created with --rm (AutoRemove) are left out: dockerd removes them when it
    starts, so their absence afterwards is no loss.
    """
    containers = set()
    for cfg in host.glob(f"{root}/containers", "*/config.v2.json"):
        cid = PurePosixPath(cfg).parent.name
        try:
            hostcfg = json.loads(host.read_text(f"{root}/containers/{cid}/hostconfig.json"))
        except (json.JSONDecodeError, HostkitError):
            hostcfg = {}
        if not (isinstance(hostcfg, dict) and hostcfg.get("AutoRemove")):
            containers.add(cid)
    images = {"sha256:" + PurePosixPath(p).name
              for p in host.glob(f"{root}/image", "*/imagedb/content/sha256/*")}
    volumes = {v for v in host.listdir(f"{root}/volumes")
               if host.path(f"{root}/volumes/{v}").is_dir()}
    return Inventory(frozenset(images), frozenset(containers), frozenset(volumes), frozenset())


def compare_inventory(before: Inventory, after: Inventory) -> None:
    lost = {"images": before.images - after.images,
            "containers": before.containers - after.containers,
            "volumes": before.volumes - after.volumes}
    if any(lost.values()):
        raise HostkitError("Docker on the new root is missing " + ", ".join(
            f"{len(v)} {k} ({', '.join(sorted(x[:19] for x in v)[:3])})"
            for k, v in lost.items() if v))
