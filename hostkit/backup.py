"""Backups of the deployed hub: one directory per backup, plain tar archives, a manifest.

A backup is the directory `DEST/hostkit-YYYYmmddTHHMMSSZ/` holding
  hub/jupyterhub.sqlite            the hub database, taken with SQLite's online backup
  hub/jupyterhub_cookie_secret
  config/deploy/...                .env, docker-compose.yml, jupyterhub_config.py,
                                   nginx.conf, certs/ of the deploy directory
  config/etc/hostkit.toml          the site settings (when present)
  config/versions.env              the image pins of the hostkit that made it
  volumes/VOLUME.tar               each user's volume (GNU tar, POSIX format: hard links,
                                   owners, modes, sub-second times, any file name)
  volumes/NODE/VOLUME.tar          on a cluster's manager: each user's volume on the worker
                                   NODE, archived there by the same tar and streamed back
                                   over the manager's ssh login (the item names its node)
  manifest.json                    every item with its size and sha256, written last
It is written as `DEST/.partial-NAME/` and renamed when complete, so a backup that was
interrupted is never listed. Everything is 0600/0700, owned by root.

A volume whose files did not change since the previous backup (same fingerprint: names,
types, sizes, modes, owners, times) is hard-linked from it instead of archived again.
"""

from __future__ import annotations

import calendar
import json
import os
import re
import socket
import stat
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from hostkit import __version__
from hostkit.errors import HostkitError, UsageError
from hostkit.host import LocalHost
from hostkit.images import parse_versions, stack_assets_dir
from hostkit.stack import ENV_DEFAULTS, STACK_FILES, Stack
from hostkit.volumes import (
    HERE,
    At,
    archive_fingerprint,
    fingerprint_at,
    user_volumes,
    volume_mountpoint,
)

DEFAULT_DEST = "/var/backups/hostkit"
FORMAT = "hostkit-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PARTIAL = ".partial-"
NAME_RE = re.compile(r"^hostkit-\d{8}T\d{6}Z$")
HUB_DB = "jupyterhub.sqlite"
KEPT_DIRECTORIES = ("certs", "jupyterhub_config.d", "acme")  # of the deploy directory, one level
COOKIE_SECRET = "jupyterhub_cookie_secret"  # noqa: S105 - a file name
SETTINGS_PATH = "/etc/hostkit/hostkit.toml"
TAR_FLAGS = ("--numeric-owner", "--xattrs", "--format=posix")

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


# ---- the backup directory ----------------------------------------------------------------
@dataclass(frozen=True)
class BackupInfo:
    """A complete backup: its directory and manifest."""

    name: str
    path: str
    manifest: dict[str, Any]

    @property
    def full(self) -> bool:
        return bool(self.manifest.get("scope") == "full")

    @property
    def created(self) -> float:
        return float(self.manifest.get("created_epoch", 0))


def list_backups(host: LocalHost, dest: str) -> list[BackupInfo]:
    """Complete backups in dest, oldest first (partial ones are never listed)."""
    out = []
    for name in host.listdir(dest):
        path = f"{dest}/{name}"
        if NAME_RE.match(name) and host.exists(f"{path}/{MANIFEST}"):
            try:
                manifest = json.loads(host.read_text(f"{path}/{MANIFEST}"))
            except ValueError:
                continue
            out.append(BackupInfo(name, path, manifest))
    return out


def find_backup(host: LocalHost, spec: str, dest: str) -> BackupInfo:
    """A backup named by path, by name in dest, or `latest`."""
    if spec == "latest":
        full = [b for b in list_backups(host, dest) if b.full]
        if not full:
            raise UsageError(f"no complete backup in {dest}", "give the backup's path")
        return full[-1]
    path = spec if spec.startswith("/") else f"{dest}/{spec}"
    path = path.rstrip("/")
    if not host.exists(f"{path}/{MANIFEST}"):
        raise UsageError(f"{path} is not a complete hostkit backup (no {MANIFEST})",
                         f"`hostkit backup --list --dest {dest}` lists them")
    try:
        manifest = json.loads(host.read_text(f"{path}/{MANIFEST}"))
    except ValueError as exc:
        raise HostkitError(f"{path}/{MANIFEST} is not JSON: {exc}") from exc
    if manifest.get("format") != FORMAT:
        raise HostkitError(f"{path}/{MANIFEST} is not a hostkit backup manifest")
    return BackupInfo(os.path.basename(path), path, manifest)


def verify(host: LocalHost, backup: BackupInfo, items: Optional[list[dict[str, Any]]] = None,
           log: Log = _quiet) -> list[str]:
    """Problems found re-reading the items (size and sha256); empty when it verifies."""
    problems = []
    for item in items if items is not None else backup.manifest.get("items", []):
        path = f"{backup.path}/{item['path']}"
        if not host.exists(path):
            problems.append(f"{item['path']}: missing")
            continue
        size, digest = host.file_digest(path)
        if size != item["size"] or digest != item["sha256"]:
            problems.append(f"{item['path']}: sha256 {digest[:12]}… differs from the manifest's "
                            f"{item['sha256'][:12]}…")
        else:
            log(f"verified {item['path']}")
    return problems


def prune(host: LocalHost, dest: str, keep: int) -> list[str]:
    """Delete the oldest full backups beyond `keep`; one-user backups are never pruned."""
    if keep < 1:
        raise UsageError("--keep must be at least 1")
    full = [b for b in list_backups(host, dest) if b.full]
    doomed = full[: max(0, len(full) - keep)]
    for b in doomed:
        tomb = f"{dest}/{PARTIAL}deleting-{b.name}"
        host.rename(b.path, tomb)  # unlisted at once, then removed
        host.rmtree(tomb)
    return [b.name for b in doomed]


def clean_partials(host: LocalHost, dest: str) -> list[str]:
    """Remove what interrupted backups left (their writer is gone)."""
    removed = []
    for name in host.listdir(dest):
        if not name.startswith(PARTIAL):
            continue
        pid_file = f"{dest}/{name}/.pid"
        pid = host.read_text(pid_file).strip() if host.exists(pid_file) else ""
        if pid.isdigit() and host.pid_alive(int(pid)):
            continue
        host.rmtree(f"{dest}/{name}")
        removed.append(name)
    return removed


def _owner(host: LocalHost, path: str) -> dict[str, int]:
    st = host.stat(path)
    return {"uid": st.st_uid, "gid": st.st_gid, "mode": stat.S_IMODE(st.st_mode)}


# ---- making one --------------------------------------------------------------------------
@dataclass
class BackupRequest:
    dest: str = DEFAULT_DEST
    users: list[str] = field(default_factory=list)  # empty: every user volume
    volumes: bool = True
    dry_run: bool = False


@dataclass
class BackupResult:
    name: str
    path: str
    items: list[dict[str, Any]]
    users: list[dict[str, Any]]
    seconds: float
    linked: list[str] = field(default_factory=list)  # volumes unchanged since the previous backup
    planned: list[str] = field(default_factory=list)  # --dry-run: what would be written


class BackupMaker:
    """Writes one backup of the stack in `stack.directory` into `request.dest`."""

    def __init__(self, stack: Stack, request: BackupRequest, log: Log = _quiet) -> None:
        self.stack = stack
        self.host = stack.host
        self.request = request
        self.log = log

    def places(self, env: dict[str, str]) -> tuple[list[At], list[str]]:
        """This host, and on a cluster's manager every ready worker (users' servers run
        there); "NODE is STATE" of the workers that are not."""
        from hostkit.settings import load_settings
        from hostkit.subsystems import swarm

        if not swarm.cluster_mode(env):
            return [HERE], []
        ssh_user = load_settings(self.host).cluster_ssh_user
        workers, down = swarm.worker_places(swarm.read_nodes(self.host), ssh_user)
        return [HERE, *workers], down

    def selected_volumes(self, env: dict[str, str]) -> list[tuple[At, str, str]]:
        """(where, user, volume) of the volumes to back up."""
        from hostkit.subsystems import swarm

        if not self.request.volumes:
            return []
        places, down = self.places(env)
        if down and not self.request.users:
            raise swarm.unreadable_workers(down)
        found = []
        for at in places:
            here = [(at, user, volume) for user, volume in user_volumes(self.host, env, at).items()]
            if at.remote:
                self.log(f"{at.node}: {len(here)} user volume(s)")
            found += here
        missing = [u for u in self.request.users if u not in {user for _, user, _ in found}]
        if missing:
            unread = f"; not read: {'; '.join(down)}" if down else ""
            raise UsageError(f"no volume for {', '.join(missing)}{unread}",
                             f"user volumes: {', '.join(sorted({u for _, u, _ in found})) or 'none'}")
        if down:
            self.log(f"not read: {'; '.join(down)} (the users asked for are elsewhere)")
        return [row for row in found if not self.request.users or row[1] in self.request.users]

    def config_files(self) -> list[tuple[str, str]]:
        """(host path, path in the backup) of the deploy directory's files and the settings."""
        d = self.stack.directory
        out = [(f"{d}/{n}", f"config/deploy/{n}") for n in (".env", *STACK_FILES)]
        # certificates and keys; the admin's own hub settings (hostkit never writes there);
        # the ACME account key, which the certificate authority knows the site by
        for sub in KEPT_DIRECTORIES:
            out += [(p, f"config/deploy/{sub}/{p.rsplit('/', 1)[1]}")
                    for p in self.host.glob(f"{d}/{sub}", "*") if not self.host.path(p).is_dir()]
        out.append((SETTINGS_PATH, "config/etc/hostkit.toml"))
        return [(src, rel) for src, rel in out if self.host.exists(src)]

    def run(self) -> BackupResult:
        started = time.monotonic()
        env = self.stack.env()
        hub_volume = env.get("HOSTKIT_HUB_VOLUME", ENV_DEFAULTS["HOSTKIT_HUB_VOLUME"])
        hub_dir = volume_mountpoint(self.host, hub_volume)
        if hub_dir is None or not self.host.exists(f"{hub_dir}/{HUB_DB}"):
            raise HostkitError(f"no hub database in volume {hub_volume}", "has the stack ever run?")
        volumes = self.selected_volumes(env)
        now = time.gmtime()
        name = time.strftime("hostkit-%Y%m%dT%H%M%SZ", now)
        dest = self.request.dest
        if self.request.dry_run:
            planned = [f"hub database from {hub_volume}"] + [src for src, _ in self.config_files()]
            planned += [f"volume {v}{at.on} ({self._size(at, v)} bytes)" for at, _, v in volumes]
            return BackupResult(name, f"{dest}/{name}", [], [], 0.0, planned=planned)
        self.host.makedirs(dest, mode=0o700)
        self.host.chmod(dest, 0o700)
        for old in clean_partials(self.host, dest):
            self.log(f"removed {old}, left by an interrupted backup")
        if self.host.exists(f"{dest}/{name}"):
            time.sleep(1.1)
            return self.run()
        work = f"{dest}/{PARTIAL}{name}"
        for sub in ("", "/hub", "/config", "/volumes"):
            self.host.makedirs(work + sub, mode=0o700)
        self.host.write_bytes(f"{work}/.pid", str(os.getpid()).encode())
        items: list[dict[str, Any]] = []

        self.log(f"hub database from volume {hub_volume} (SQLite online backup)")
        self.host.sqlite_backup(f"{hub_dir}/{HUB_DB}", f"{work}/hub/{HUB_DB}")
        self.host.chmod(f"{work}/hub/{HUB_DB}", 0o600)
        items.append(self._item(work, f"hub/{HUB_DB}", "hub-db", target=HUB_DB,
                                **_owner(self.host, f"{hub_dir}/{HUB_DB}")))
        if self.host.exists(f"{hub_dir}/{COOKIE_SECRET}"):
            self._write(f"{work}/hub/{COOKIE_SECRET}", self.host.read_bytes(f"{hub_dir}/{COOKIE_SECRET}"))
            items.append(self._item(work, f"hub/{COOKIE_SECRET}", "hub-file", target=COOKIE_SECRET,
                                    **_owner(self.host, f"{hub_dir}/{COOKIE_SECRET}")))
        for src, rel in self.config_files():
            self._write(f"{work}/{rel}", self.host.read_bytes(src))
            items.append(self._item(work, rel, "config", target=src,
                                    mode=stat.S_IMODE(self.host.stat(src).st_mode)))
        pins = stack_assets_dir() / "versions.env"
        self._write(f"{work}/config/versions.env", pins.read_bytes())
        items.append(self._item(work, "config/versions.env", "pins"))

        previous = self._previous_volume_items(dest)
        linked = []
        for at, user, volume in volumes:
            item, was_linked = self._volume(work, at, user, volume, previous.get((at.node, volume)))
            items.append(item)
            if was_linked:
                linked.append(volume + at.on)

        users = self._users(f"{work}/hub/{HUB_DB}")
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": name,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", now),
            "created_epoch": calendar.timegm(now),
            "scope": "full" if self.request.volumes and not self.request.users else "partial",
            "hostname": socket.gethostname(),
            "hostkit_version": __version__,
            "jupyterhub_version": parse_versions(pins.read_text()).get("JUPYTERHUB_VERSION", ""),
            "deploy_dir": self.stack.directory,
            "hub_volume": hub_volume,
            "hub_volume_owner": _owner(self.host, hub_dir),  # the hub may run as a user of its own
            "compose_project": env.get("COMPOSE_PROJECT_NAME", ENV_DEFAULTS["COMPOSE_PROJECT_NAME"]),
            "images": self._images(env),
            "users": users,
            "items": items,
        }
        self.host.unlink(f"{work}/.pid")
        self.host.write_text(f"{work}/{MANIFEST}", json.dumps(manifest, indent=2) + "\n",
                             mode=0o600, backup=False)
        self.host.rename(work, f"{dest}/{name}")
        return BackupResult(name, f"{dest}/{name}", items, users, time.monotonic() - started, linked)

    # ---- helpers ---------------------------------------------------------------------
    def _write(self, path: str, data: bytes) -> None:
        self.host.makedirs(path.rsplit("/", 1)[0], mode=0o700)  # never the umask's 0755
        self.host.write_bytes(path, data, mode=0o600)

    def _item(self, work: str, rel: str, kind: str, **extra: Any) -> dict[str, Any]:
        size, digest = self.host.file_digest(f"{work}/{rel}")
        return {"path": rel, "kind": kind, "size": size, "sha256": digest, **extra}

    def _size(self, at: At, volume: str) -> int:
        mountpoint = volume_mountpoint(self.host, volume, at)
        return fingerprint_at(self.host, mountpoint, at)[2] if mountpoint else 0

    def _previous_volume_items(self, dest: str) -> dict[tuple[str, str], tuple[str, dict[str, Any]]]:
        """(node, volume) -> the newest earlier backup's item of it (node "" for this host)."""
        out: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
        for backup in list_backups(self.host, dest):  # oldest first: the newest wins
            for item in backup.manifest.get("items", []):
                if item.get("kind") == "volume":
                    out[(item.get("node", ""), item["volume"])] = (backup.path, item)
        return out

    def _volume(self, work: str, at: At, user: str, volume: str,
                previous: Optional[tuple[str, dict[str, Any]]]) -> tuple[dict[str, Any], bool]:
        rel = f"volumes/{at.node}/{volume}.tar" if at.remote else f"volumes/{volume}.tar"
        where = {"node": at.node, "node_id": at.node_id} if at.remote else {}
        label = at.label(volume)  # progress names the node
        mountpoint = volume_mountpoint(self.host, volume, at)
        if mountpoint is None:
            raise HostkitError(f"volume {volume}{at.on} disappeared during the backup")
        self.host.makedirs(f"{work}/{rel}".rsplit("/", 1)[0], mode=0o700)
        live, entries, total = fingerprint_at(self.host, mountpoint, at)
        if previous and previous[1].get("fingerprint") == live and self.host.exists(
                f"{previous[0]}/{previous[1]['path']}"):
            os.link(self.host.path(f"{previous[0]}/{previous[1]['path']}"), self.host.path(f"{work}/{rel}"))
            self.log(f"{label}: unchanged since {os.path.basename(previous[0])}, linked")
            return {**previous[1], "user": user, **where}, True
        self.log(f"{label}: {entries} entries, {total / 2**20:.1f} MiB")
        last = [0.0]

        def progress(done: int) -> None:
            if time.monotonic() - last[0] >= 2:
                last[0] = time.monotonic()
                share = f" ({min(100, done * 100 // max(total, 1))} %)" if total else ""
                self.log(f"{label}: {done / 2**20:.0f} of {total / 2**20:.0f} MiB{share}")

        # the same tar here and on a node (there, its output comes back over ssh)
        source = mountpoint if at.remote else str(self.host.path(mountpoint))
        argv = at.argv(["tar", "-C", source, *TAR_FLAGS, "-cf", "-", "."])
        size, digest = self.host.stream_to_file(argv, f"{work}/{rel}", on_bytes=progress)
        fingerprint, entries, total = archive_fingerprint(self.host, f"{work}/{rel}")
        item = {"path": rel, "kind": "volume", "size": size, "sha256": digest, "volume": volume,
                "user": user, "fingerprint": fingerprint, "entries": entries, "bytes": total, **where}
        return item, False

    def _users(self, db: str) -> list[dict[str, Any]]:
        """Accounts in the backed-up database: approval and admin state."""
        try:
            signed = self.host.sqlite_query(db, "SELECT username, is_authorized FROM users_info")
        except HostkitError:
            signed = []
        admins = {r[0]: bool(r[1]) for r in self.host.sqlite_query(db, "SELECT name, admin FROM users")}
        names = sorted({r[0] for r in signed} | set(admins))
        approved = {r[0]: bool(r[1]) for r in signed}
        return [{"name": n, "approved": approved.get(n, False), "admin": admins.get(n, False),
                 "logged_in_once": n in admins} for n in names]

    def _images(self, env: dict[str, str]) -> dict[str, dict[str, str]]:
        out = {}
        for key in ("HOSTKIT_HUB_IMAGE", "HOSTKIT_NGINX_IMAGE", "HOSTKIT_NOTEBOOK_IMAGE"):
            image = env.get(key, ENV_DEFAULTS[key])
            result = self.host.run(["docker", "image", "inspect", "-f", "{{.Id}}", image])
            out[key] = {"name": image, "id": result.stdout.strip() if result.ok else ""}
        return out
