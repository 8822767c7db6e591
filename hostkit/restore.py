"""Restore a backup made by hostkit.backup: the whole hub, or some users' volumes.

Order: verify the manifest's sha256 for everything about to be used; judge every target
(missing, same as the backup, or different); refuse before changing anything when a user
volume or the hub database differs and --force was not given; then apply. A replaced
volume's files move into the volume `NAME.replaced-TIME` and a replaced database stays in
the hub volume as `jupyterhub.sqlite.replaced-TIME`: nothing is lost. A volume is extracted
beside its `_data` and swapped in when complete, so an interrupted restore leaves either
the old or the new tree, and a second run converges (a restored volume is "same").

On a cluster's manager a volume backed up from a worker goes back to that worker (over the
manager's ssh login, the same tar fed there). When that node is gone from the swarm it goes
to a ready worker of the same name, else to the ready worker with the most uncommitted
memory, and that node is labelled as holding the user's files: the hub places the user
there (stack/hostkit_swarm.py). A node that is still in the swarm but down is refused.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from hostkit.accounts import restore_signup, stop_server
from hostkit.backup import HUB_DB, TAR_FLAGS, BackupInfo, verify
from hostkit.errors import HostkitError, UsageError
from hostkit.stack import Stack
from hostkit.volumes import HERE, At, ensure_volume, fingerprint_at, volume_mountpoint

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


@dataclass
class Decision:
    item: dict[str, Any]
    state: str  # "missing", "same", "differs"
    detail: str = ""
    node: str = ""  # the node a volume goes to; "" for this host


@dataclass
class RestoreReport:
    decisions: list[Decision]
    done: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # what was replaced, and where it is now


class Restorer:
    def __init__(self, stack: Stack, backup: BackupInfo, *, users: list[str], force: bool,
                 log: Log = _quiet) -> None:
        self.stack = stack
        self.host = stack.host
        self.backup = backup
        self.users = users
        self.force = force
        self.log = log
        self.stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        # nodes, tasks, ssh user, user -> the node the hub pins them to
        self._cluster: Optional[tuple[list[Any], list[Any], str, dict[str, str]]] = None

    # ---- what to restore -----------------------------------------------------------
    def items(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.backup.manifest.get("items", [])
        if not self.users:
            return [i for i in items if i["kind"] != "pins"]
        volumes = [i for i in items if i["kind"] == "volume"]
        have = {i["user"] for i in volumes}
        missing = [u for u in self.users if u not in have]
        if missing:
            raise UsageError(f"{self.backup.name} holds no volume of {', '.join(missing)}",
                             f"users in it: {', '.join(sorted(have)) or 'none'}")
        return [i for i in volumes if i["user"] in self.users]

    def place(self, item: dict[str, Any]) -> At:
        """Where a volume goes back to: this host, or (backed up from a worker) a node."""
        if not item.get("node"):
            return HERE
        from hostkit.settings import load_settings
        from hostkit.subsystems import swarm

        if self._cluster is None:
            swarm.require_manager(self.host)
            stack_name = swarm.stack_of(self.stack.read_env())
            self._cluster = (swarm.read_nodes(self.host), swarm.read_user_tasks(self.host, stack_name),
                             load_settings(self.host).cluster_ssh_user, self._pins())
        nodes, tasks, ssh_user, pins = self._cluster
        node = swarm.restore_node(nodes, tasks, str(item.get("node_id", "")), str(item["node"]),
                                  pins.get(item["user"], ""))
        return swarm.node_place(node, ssh_user)

    def _pins(self) -> dict[str, str]:
        """User -> the node the hub places them on (the spawner's state in the live database)."""
        hub_dir = volume_mountpoint(self.host, self.backup.manifest["hub_volume"])
        if hub_dir is None or not self.host.exists(f"{hub_dir}/{HUB_DB}"):
            return {}
        try:
            rows = self.host.sqlite_query(f"{hub_dir}/{HUB_DB}", "SELECT users.name, spawners.state FROM "
                                          "spawners JOIN users ON spawners.user_id = users.id")
        except HostkitError:
            return {}
        pins = {}
        for name, state in rows:
            try:
                node_id = json.loads(state or "{}").get("node_id")
            except ValueError:
                continue
            if node_id:
                pins[name] = str(node_id)
        return pins

    def judge(self, item: dict[str, Any]) -> Decision:
        if item["kind"] == "volume":
            return self._judge_volume(item)
        if item["kind"] in ("hub-db", "hub-file"):
            return self._judge_hub_file(item)
        target = item["target"]
        if not self.host.exists(target):
            return Decision(item, "missing")
        same = self.host.file_digest(target)[1] == item["sha256"]
        return Decision(item, "same" if same else "differs")

    def _judge_volume(self, item: dict[str, Any]) -> Decision:
        at = self.place(item)
        mountpoint = volume_mountpoint(self.host, item["volume"], at)
        live = fingerprint_at(self.host, mountpoint, at) if mountpoint else ("", 0, 0)
        if not live[1]:
            moved = f"backed up on {item['node']}" if at.node != item.get("node", "") else ""
            return Decision(item, "missing", moved, node=at.node)
        if live[0] == item["fingerprint"]:
            return Decision(item, "same", node=at.node)
        return Decision(item, "differs", f"{live[1]} entries, {live[2]} bytes now; "
                        f"{item['entries']} entries, {item['bytes']} bytes in the backup", node=at.node)

    def _judge_hub_file(self, item: dict[str, Any]) -> Decision:
        hub_dir = volume_mountpoint(self.host, self.backup.manifest["hub_volume"])
        path = f"{hub_dir}/{item['target']}"
        if hub_dir is None or not self.host.exists(path):
            return Decision(item, "missing")
        if self.host.file_digest(path)[1] == item["sha256"]:
            return Decision(item, "same")
        if item["kind"] == "hub-db" and self._fresh_hub(path):
            return Decision(item, "missing", "a new hub: no user but the admin")
        return Decision(item, "differs")

    def _fresh_hub(self, db: str) -> bool:
        admin = self.stack.read_env().get("HOSTKIT_ADMIN", "admin")
        try:
            names = {r[0] for r in self.host.sqlite_query(db, "SELECT username FROM users_info")}
        except HostkitError:
            names = set()
        return names <= {admin}

    def plan(self) -> RestoreReport:
        items = self.items()
        # a users' restore reads accounts from the database: it is checked too
        everything = self.backup.manifest.get("items", [])
        extra = [i for i in everything if i["kind"] == "hub-db"] if self.users else []
        problems = verify(self.host, self.backup, items + extra)
        if problems:
            raise HostkitError(f"{self.backup.path} does not verify: " + "; ".join(problems),
                               "use another backup; this one is damaged")
        return RestoreReport([self.judge(i) for i in items])

    def refusals(self, report: RestoreReport) -> list[str]:
        if self.force:
            return []
        return [_describe(d.item) + (f" ({d.detail})" if d.detail else "")
                for d in report.decisions if d.state == "differs" and d.item["kind"] in ("volume", "hub-db")]

    # ---- doing it ------------------------------------------------------------------
    def apply(self, report: RestoreReport) -> RestoreReport:
        refused = self.refusals(report)
        if refused:
            raise UsageError("these differ from the backup and would be overwritten: " + "; ".join(refused),
                             "--force replaces them and keeps what it replaces")
        todo = [d for d in report.decisions if d.state == "missing" or (d.state == "differs" and (
            self.force or d.item["kind"] in ("volume", "hub-db")))]
        for d in report.decisions:
            if d.state == "differs" and d not in todo:
                report.kept.append(f"kept the current {_describe(d.item)} (differs from the backup; "
                                   "--force replaces it)")
        if todo:
            self._quiesce(todo, report)
        for d in sorted(todo, key=lambda d: d.item["kind"] != "config"):
            kind = d.item["kind"]
            if kind == "volume":
                self._volume(d, report)
            elif kind in ("hub-db", "hub-file"):
                self._hub_file(d, report)
            else:
                self._config(d, report)
        if self.users:
            self._accounts(report)
        # a whole restore ends with the stack up, also when an interrupted run had done the rest
        deployed = self.host.exists(f"{self.stack.directory}/docker-compose.yml")
        if not self.users and deployed and (todo or not self.stack.container_id("jupyterhub")):
            self.log("starting the stack")
            self.stack.up()
            report.done.append("started the stack")
        return report

    def _quiesce(self, todo: list[Decision], report: RestoreReport) -> None:
        """Nothing may write what is restored: the whole stack, or the users' servers, stop."""
        deployed = self.host.exists(f"{self.stack.directory}/.env")
        if not deployed or not self.stack.container_id("jupyterhub"):
            return
        if not self.users:
            self.log("stopping the stack (users' servers too)")
            self.stack.down()
            report.done.append("stopped the stack")
            return
        for d in todo:
            if stop_server(self.stack, d.item["user"]):
                report.done.append(f"stopped {d.item['user']}'s server")

    def _wait_unused(self, at: At, volume: str, timeout: float = 120) -> None:
        """A stopped server's task on a node may linger a moment: nothing restores under it."""
        deadline = time.monotonic() + timeout
        argv = ["docker", "ps", "-q", "--filter", f"volume={volume}"]
        while at.run(self.host, argv, check=True).stdout.strip():
            if time.monotonic() > deadline:
                raise HostkitError(f"a container on {at.node} still uses {volume}",
                                   f"docker ps --filter volume={volume} (on {at.node})")
            self.log(f"{at.node}: waiting for the container using {volume} to go")
            time.sleep(2)

    def _accounts(self, report: RestoreReport) -> None:
        """Accounts deleted since the backup come back with their password and approval."""
        if not self.stack.container_id("jupyterhub"):
            return
        live = {u["name"] for u in self.stack.users()}
        db = f"{self.backup.path}/hub/{HUB_DB}"
        for name in self.users:
            if name in live:
                continue
            rows = self.host.sqlite_query(
                db, "SELECT password, is_authorized FROM users_info WHERE username = ?", (name,))
            if rows:
                restore_signup(self.stack, name, bytes(rows[0][0]), bool(rows[0][1]))
                report.done.append(f"restored the account {name} (password and approval as in the backup)")

    def _volume(self, d: Decision, report: RestoreReport) -> None:
        item = d.item
        volume = item["volume"]
        at = self.place(item)
        label = at.label(volume)  # progress names the node
        if at.remote:
            self._wait_unused(at, volume)
        mountpoint = ensure_volume(self.host, volume, at=at)
        incoming = f"{mountpoint}.hostkit-incoming"
        if at.remote:  # what an interrupted restore left goes
            at.run(self.host, ["sh", "-c", 'rm -rf "$1" && mkdir -m 700 "$1"', "-", incoming], check=True)
        else:
            self.host.rmtree(incoming)
            self.host.makedirs(incoming, mode=0o700)
        self.log(f"{label}: extracting {item['bytes'] / 2**20:.1f} MiB")
        last = [time.monotonic()]

        def progress(done: int) -> None:
            if time.monotonic() - last[0] >= 2:
                last[0] = time.monotonic()
                self.log(f"{label}: {done * 100 // max(item['size'], 1)} %")

        # the same tar here and on a node (there, the archive goes over ssh)
        target = incoming if at.remote else str(self.host.path(incoming))
        argv = at.argv(["tar", "-C", target, *TAR_FLAGS, "--same-owner", "-xpf", "-"])
        _, digest = self.host.stream_from_file(argv, f"{self.backup.path}/{item['path']}", on_bytes=progress)
        if digest != item["sha256"]:
            if at.remote:
                at.run(self.host, ["rm", "-rf", incoming])
            else:
                self.host.rmtree(incoming)
            raise HostkitError(f"{item['path']} changed while it was read: nothing restored into {volume}")
        aside = f"{volume}.replaced-{self.stamp}"
        if at.remote:
            aside_dir = ensure_volume(self.host, aside, at=at) if d.state == "differs" else ""
            swap = ('set -e; if [ -n "$3" ]; then rm -rf "$3"; mv "$1" "$3"; else rm -rf "$1"; fi; '
                    'mv "$2" "$1"')
            at.run(self.host, ["sh", "-c", swap, "-", mountpoint, incoming, aside_dir], check=True)
            self._label(at, item["user"], volume)
        else:
            if d.state == "differs":
                aside_dir = ensure_volume(self.host, aside)
                self.host.rmtree(aside_dir)
                self.host.rename(mountpoint, aside_dir)
            else:
                self.host.rmtree(mountpoint)
            self.host.rename(incoming, mountpoint)
        if d.state == "differs":
            report.kept.append(f"{volume}'s files before the restore are in volume {aside}{at.on}")
        report.done.append(f"restored volume {volume}{at.on} ({item['entries']} entries) "
                           f"for {item['user']}")

    def _label(self, at: At, user: str, volume: str) -> None:
        """The node holding the user's files is labelled so: the hub places the user there."""
        from hostkit.subsystems import swarm

        assert self._cluster is not None  # noqa: S101 - read by place()
        nodes = self._cluster[0]
        node = next(n for n in nodes if n.id == at.node_id)
        swarm.label_files_node(self.host, nodes, user, volume, node)

    def _hub_file(self, d: Decision, report: RestoreReport) -> None:
        item = d.item
        project = self.backup.manifest.get("compose_project", "hostkit")
        hub_volume = self.backup.manifest["hub_volume"]
        hub_dir = ensure_volume(self.host, hub_volume, {
            "com.docker.compose.project": project, "com.docker.compose.volume": "hub-data"})
        volume_owner = self.backup.manifest.get("hub_volume_owner")
        if volume_owner:  # a new volume is root's; the hub may run as its own user
            self.host.chown(hub_dir, volume_owner["uid"], volume_owner["gid"])
            self.host.chmod(hub_dir, volume_owner["mode"])
        target = f"{hub_dir}/{item['target']}"
        if self.host.exists(target):
            aside = f"{target}.replaced-{self.stamp}"
            self.host.rename(target, aside)
            report.kept.append(f"the previous {item['target']} is {aside} (volume {hub_volume})")
        incoming = target + ".hostkit-incoming"
        self.host.write_bytes(incoming, self.host.read_bytes(f"{self.backup.path}/{item['path']}"),
                              mode=int(item.get("mode", 0o600)))
        if "uid" in item:
            self.host.chown(incoming, item["uid"], item["gid"])
        self.host.rename(incoming, target)
        report.done.append(f"restored {item['target']} into volume {hub_volume}")

    def _config(self, d: Decision, report: RestoreReport) -> None:
        item = d.item
        data = self.host.read_bytes(f"{self.backup.path}/{item['path']}")
        target = item["target"]
        mode = int(item.get("mode", 0o600))
        if self.host.exists(target):
            aside = f"{target}.replaced-{self.stamp}"
            self.host.rename(target, aside)
            report.kept.append(f"the previous {target} is {aside}")
        self.host.write_bytes(target, data, mode=mode)
        report.done.append(f"restored {target}")


def _describe(item: dict[str, Any]) -> str:
    if item["kind"] == "volume":
        return f"volume {item['volume']} ({item['user']})"
    if item["kind"] == "hub-db":
        return "hub database"
    return str(item.get("target", item["path"]))
