"""`hostkit upgrade`: the deployed stack onto this hostkit's pins, with a way back.

The order matters, and each step leaves a way back:
  1. compare: the pins and image input hashes this hostkit builds against the images the
     deploy directory's .env names, and `jupyterhub --version` in the running hub;
  2. a backup (hostkit/backup.py: database, config, secrets, and volumes unless told not to);
  3. the running images' ids under rollback tags (REPOSITORY:rollback-PROJECT): tags such
     as hostkit/singleuser:full carry no version, so a rebuild moves them off the old image;
  4. the new images, built beside the old ones;
  5. the hub stops; a copy of its database is migrated (`jupyterhub upgrade-db`) in a
     throwaway container of the new hub image; the old file stays in the hub's volume as
     jupyterhub.sqlite.pre-upgrade-STAMP;
  6. the migrated copy takes the database's place and the stack starts on the new images;
  7. the health gate: the doctor's stack checks, then a canary user's server runs code.
A failed gate puts the old database and images back by itself and says why. Users' servers
keep running on the image they started with; stopped containers from the old single-user
image are removed (DockerSpawner would restart a stopped container as it is). Every run is
recorded in DEPLOY_DIR/upgrades.json, which `hostkit upgrade --rollback` reads.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from hostkit.backup import HUB_DB, BackupMaker, BackupRequest
from hostkit.errors import HostkitError, UsageError
from hostkit.health import Canary, failed_checks, stack_checks
from hostkit.images import HASH_LABEL, ImageBuilder
from hostkit.stack import ENV_DEFAULTS, HUB_SERVICE, Stack
from hostkit.volumes import volume_mountpoint

RECORD = "upgrades.json"
IMAGE_KEYS = {"hub": "HOSTKIT_HUB_IMAGE", "nginx": "HOSTKIT_NGINX_IMAGE",
              "singleuser": "HOSTKIT_NOTEBOOK_IMAGE"}
PRE_UPGRADE = "pre-upgrade"
ROLLED_BACK = "rolled back (--rollback)"

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


class GateFailed(HostkitError):
    """The new stack did not pass the health gate; the old one was put back."""


# ---- what runs and what this hostkit would run -----------------------------------------
def image_facts(stack: Stack, ref: str) -> tuple[str, str]:
    """(image id, input-hash label) of a local image; ("", "") when absent."""
    result = stack.host.run(
        ["docker", "image", "inspect", "--format", "{{.Id}} {{index .Config.Labels \"" + HASH_LABEL + "\"}}",
         ref])
    if not result.ok:
        return "", ""
    image_id, _, label = result.stdout.strip().partition(" ")
    return image_id, "" if label == "<no value>" else label


def rollback_tag(ref: str, project: str) -> str:
    """REPOSITORY:rollback-PROJECT for an image reference (a registry's port is not a tag)."""
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    repository = ref[:colon] if colon > slash else ref
    return f"{repository}:rollback-{project}"


def running_hub_version(stack: Stack) -> str:
    cid = stack.container_id(HUB_SERVICE)
    if not cid:
        return ""
    result = stack.host.run(["docker", "exec", cid, "jupyterhub", "--version"], timeout=60)
    return result.stdout.strip() if result.ok else ""


def _short(image_id: str) -> str:
    return image_id.split(":", 1)[-1][:12] if image_id else "absent"


@dataclass(frozen=True)
class ImageChange:
    role: str
    key: str
    running: str  # the reference in .env
    running_id: str
    running_hash: str
    wanted: str  # what this hostkit runs: its build's tag, or a --set value
    wanted_id: str  # the tag's image now ("" when it is still to be built)
    wanted_hash: str  # its inputs' hash ("" for a --set image hostkit does not build)
    wanted_label: str  # the input hash the wanted tag's image carries now

    @property
    def builds(self) -> bool:
        """The wanted tag is missing or was built from other inputs."""
        return bool(self.wanted_hash) and (not self.wanted_id or self.wanted_label != self.wanted_hash)

    @property
    def changes(self) -> bool:
        """Another image runs afterwards (a tag that names the same image is no change)."""
        return self.builds or self.running_id != self.wanted_id

    def line(self) -> str:
        now = f"{self.running} ({_short(self.running_id)}"
        now += f", inputs {self.running_hash[:12]})" if self.running_hash else ")"
        if not self.changes:
            same = "" if self.running == self.wanted else f" (the same image as {self.wanted})"
            return f"{self.role:11} {now}: unchanged{same}"
        if self.builds:
            to = f"{self.wanted} (to be built, inputs {self.wanted_hash[:12]})"
        else:
            to = f"{self.wanted} ({_short(self.wanted_id)})"
        return f"{self.role:11} {now} -> {to}"


@dataclass
class UpgradeCheck:
    images: list[ImageChange]
    hub_running: str  # `jupyterhub --version` in the running hub ("" when it is not running)
    hub_pinned: str  # this hostkit's JUPYTERHUB_VERSION
    pins_changed: list[tuple[str, str, str]]  # (pin, deployed by the last upgrade, this hostkit's)
    pins_known: bool  # an earlier upgrade recorded the deployed pins

    @property
    def needed(self) -> bool:
        return any(i.changes for i in self.images) or (bool(self.hub_running) and
                                                        self.hub_running != self.hub_pinned)

    def lines(self) -> list[str]:
        out = [f"JupyterHub  {self.hub_running or 'not running'} -> {self.hub_pinned}"
               + ("" if self.hub_running != self.hub_pinned else " (unchanged)")]
        out += [i.line() for i in self.images]
        if self.pins_known:
            out += [f"pin         {k}: {old or '-'} -> {new or '-'}" for k, old, new in self.pins_changed]
        else:
            out.append("pins        not recorded for this deployment (it predates `hostkit upgrade`): "
                       "compared by image inputs")
        out.append("upgrade needed" if self.needed
                   else "nothing to upgrade: the deployment runs this hostkit's pins")
        return out


def check(stack: Stack, builder: ImageBuilder, overrides: dict[str, str]) -> UpgradeCheck:
    env = stack.env()
    specs = builder.planned_specs()
    images = []
    for role, key in IMAGE_KEYS.items():
        running = env.get(key, ENV_DEFAULTS[key])
        running_id, running_hash = image_facts(stack, running)
        wanted = overrides.get(key) or specs[role].name
        wanted_id, wanted_label = image_facts(stack, wanted)
        wanted_hash = "" if key in overrides else (builder.wanted_hash(specs[role]) or "")
        images.append(ImageChange(role, key, running, running_id, running_hash, wanted, wanted_id,
                                  wanted_hash, wanted_label))
    pins = builder.versions
    record = read_record(stack)
    deployed = next((r.get("pins", {}) for r in reversed(record) if r.get("outcome") == "upgraded"), None)
    changed = []
    if deployed is not None:
        changed = [(k, deployed.get(k, ""), pins.get(k, "")) for k in sorted(set(deployed) | set(pins))
                   if deployed.get(k) != pins.get(k)]
    return UpgradeCheck(images, running_hub_version(stack), pins.get("JUPYTERHUB_VERSION", ""), changed,
                        deployed is not None)


# ---- the record in the deploy directory -------------------------------------------------
def read_record(stack: Stack) -> list[dict[str, Any]]:
    path = f"{stack.directory}/{RECORD}"
    if not stack.host.exists(path):
        return []
    try:
        data = json.loads(stack.host.read_text(path))
    except ValueError as exc:
        raise HostkitError(f"{path} is not JSON: {exc}") from exc
    return list(data.get("upgrades", []))


def write_record(stack: Stack, entry: dict[str, Any]) -> None:
    entries = [e for e in read_record(stack) if e.get("started") != entry.get("started")]
    text = json.dumps({"version": 1, "upgrades": [*entries, entry]}, indent=2) + "\n"
    stack.host.write_text(f"{stack.directory}/{RECORD}", text, mode=0o600, backup=False)


# ---- the upgrade ------------------------------------------------------------------------
@dataclass
class UpgradeRequest:
    dest: str
    overrides: dict[str, str] = field(default_factory=dict)  # --set: wins over the built images
    volume_backup: bool = True
    timeout: float = 300
    canary: bool = True


@dataclass
class UpgradeReport:
    lines: list[str] = field(default_factory=list)
    backup: str = ""
    outcome: str = ""


class Upgrader:
    PHASES = 7

    def __init__(self, stack: Stack, builder: ImageBuilder, request: UpgradeRequest, log: Log = _quiet,
                 profiles: tuple[str, ...] = ()) -> None:
        self.stack = stack
        self.host = stack.host
        self.builder = builder
        self.request = request
        self.log = log
        self.profiles = profiles
        self.stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self.entry: dict[str, Any] = {}
        self.healthy_at = 0.0  # when the new stack was healthy (the hub's downtime ends)

    def phase(self, number: int, text: str) -> None:
        self.log(f"[{number}/{self.PHASES}] {text}")

    # ---- the steps ---------------------------------------------------------------
    def run(self) -> UpgradeReport:
        report = UpgradeReport()
        env = self.stack.env()
        if not self.stack.container_id(HUB_SERVICE):
            raise UsageError("the hub is not running: an upgrade starts from a working stack",
                             f"hostkit stack up --deploy-dir {self.stack.directory}")
        plan, before = self._compare(env)
        report.backup = self._backup(report)
        self._keep_rollback_tags(plan, env)
        wanted, extra = self._build()
        after_ids = {key: image_facts(self.stack, ref)[0] for key, ref in wanted.items()}
        self.entry["after"] = {"images": {k: {"name": wanted[k], "id": after_ids[k]} for k in wanted}}

        self.phase(5, "migrating a copy of the hub database with the new hub image")
        hub_dir, owner = self._hub_dir(env)
        self.log("  stopping the hub (nginx answers 502 meanwhile; users' servers keep running)")
        down_since = time.monotonic()
        self.stack.compose("stop", HUB_SERVICE, timeout=120)
        migrated = self._migrate_or_restart(hub_dir, owner, wanted["HOSTKIT_HUB_IMAGE"], report.backup)

        self.phase(6, "starting the stack on the new images with the migrated database")
        aside = f"{hub_dir}/{HUB_DB}.{PRE_UPGRADE}-{self.stamp}"
        try:
            self.host.rename(f"{hub_dir}/{HUB_DB}", aside)
            self.host.rename(migrated, f"{hub_dir}/{HUB_DB}")
            self.host.rmtree(migrated.rsplit("/", 1)[0])
            self.stack.write_env({**self.request.overrides, **wanted, **extra})
            self.phase(7, "health gate: the doctor's stack checks, then a canary user runs code")
            reason = self._gate()
        except HostkitError as exc:  # the hub is down: whatever broke, the old stack comes back
            reason = f"switching to the new stack: {exc.message}"
        downtime = max(0.0, self.healthy_at - down_since)
        if reason:
            self.log(f"  health gate failed: {reason}")
            self.log("  rolling back to the old images and the old database")
            self.restore_previous(before, hub_dir, aside)
            self._finish("rolled back", reason)
            raise GateFailed(f"upgrade rolled back: {reason}",
                             f"the old stack runs again; backup: {report.backup}")
        report.lines += [f"upgraded: {i.line()}" for i in plan.images if i.changes]
        report.lines.append(f"the hub was down for about {downtime:.0f}s (stopped, database migrated, "
                            "started healthy on the new images)")
        report.lines += self._users_servers(before["images"]["HOSTKIT_NOTEBOOK_IMAGE"]["id"],
                                            after_ids["HOSTKIT_NOTEBOOK_IMAGE"])
        self.entry["downtime_s"] = round(downtime, 1)
        self._finish("upgraded", "")
        report.outcome = "upgraded"
        return report

    def _compare(self, env: dict[str, str]) -> tuple[UpgradeCheck, dict[str, Any]]:
        project = env.get("COMPOSE_PROJECT_NAME", ENV_DEFAULTS["COMPOSE_PROJECT_NAME"])
        self.phase(1, "comparing this hostkit's pins and image inputs with what runs")
        plan = check(self.stack, self.builder, self.request.overrides)
        for line in plan.lines():
            self.log(f"  {line}")
        before = {
            "jupyterhub_version": plan.hub_running,
            "images": {i.key: {"name": i.running, "id": i.running_id,
                               "rollback_tag": rollback_tag(i.running, project)} for i in plan.images},
        }
        self.entry = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "stamp": self.stamp,
                      "before": before, "pins": self.builder.versions, "outcome": "started"}
        write_record(self.stack, self.entry)
        return plan, before

    def _backup(self, report: UpgradeReport) -> str:
        what = "database, config, secrets" + (", users' volumes" if self.request.volume_backup else "")
        self.phase(2, f"backup ({what}) into {self.request.dest}")
        started = time.monotonic()
        request = BackupRequest(dest=self.request.dest, volumes=self.request.volume_backup)
        backup = BackupMaker(self.stack, request, log=lambda m: self.log(f"  {m}")).run()
        size = sum(i["size"] for i in backup.items)
        self.entry["backup"] = backup.path
        report.lines.append(f"backup {backup.path}: {size / 2**20:.1f} MiB in "
                            f"{time.monotonic() - started:.0f}s"
                            + ("" if self.request.volume_backup else " (users' volumes not included)"))
        self.log(f"  {report.lines[-1]}")
        return backup.path

    def _keep_rollback_tags(self, plan: UpgradeCheck, env: dict[str, str]) -> None:
        project = env.get("COMPOSE_PROJECT_NAME", ENV_DEFAULTS["COMPOSE_PROJECT_NAME"])
        self.phase(3, "keeping the running images under rollback tags")
        for i in plan.images:
            if i.running_id:
                tag = rollback_tag(i.running, project)
                self.host.run(["docker", "tag", i.running_id, tag], check=True)
                self.log(f"  {tag} = {_short(i.running_id)} (was {i.running})")

    def _build(self) -> tuple[dict[str, str], dict[str, str]]:
        """(.env image settings of the stack's three images, those of the other environments)."""
        from hostkit.environments import environment_images

        self.phase(4, "building the new images beside the old ones")
        built = self.builder.build_all(self.profiles)
        overrides = self.request.overrides
        wanted = {key: overrides.get(key) or built.images[role] for role, key in IMAGE_KEYS.items()}
        extra = {k: v for k, v in environment_images(built.images).items() if k not in overrides}
        return wanted, extra

    def _migrate_or_restart(self, hub_dir: str, owner: tuple[int, int], hub_image: str, backup: str) -> str:
        """The migrated copy's path; when the migration fails, the old hub starts again."""
        work = f"{hub_dir}/upgrade-{self.stamp}"
        self.host.makedirs(work, mode=0o700)
        self.host.chown(work, *owner)
        try:
            old_rev, new_rev = self._migrate(hub_dir, work, owner, hub_image)
        except HostkitError as exc:
            self.log("  migration failed: starting the old hub again on the untouched database")
            self.host.rmtree(work)
            self.stack.up(timeout=self.request.timeout)
            self._finish("failed", f"database migration: {exc.message}")
            raise HostkitError(f"the database migration failed, nothing was changed: {exc.message}",
                               f"backup: {backup}") from exc
        self.log(f"  database schema {old_rev or '-'} -> {new_rev or '-'}")
        self.entry["database"] = {"before": old_rev, "after": new_rev,
                                  "kept": f"{HUB_DB}.{PRE_UPGRADE}-{self.stamp}"}
        return f"{work}/{HUB_DB}"

    def _hub_dir(self, env: dict[str, str]) -> tuple[str, tuple[int, int]]:
        volume = env.get("HOSTKIT_HUB_VOLUME", ENV_DEFAULTS["HOSTKIT_HUB_VOLUME"])
        hub_dir = volume_mountpoint(self.host, volume)
        if hub_dir is None or not self.host.exists(f"{hub_dir}/{HUB_DB}"):
            raise HostkitError(f"no hub database in volume {volume}")
        st = self.host.stat(f"{hub_dir}/{HUB_DB}")
        return hub_dir, (st.st_uid, st.st_gid)

    def _revision(self, db: str) -> str:
        try:
            rows = self.host.sqlite_query(db, "SELECT version_num FROM alembic_version")
        except HostkitError:
            return ""
        return str(rows[0][0]) if rows else ""

    def _migrate(self, hub_dir: str, work: str, owner: tuple[int, int], hub_image: str) -> tuple[str, str]:
        """`jupyterhub upgrade-db` on a copy, in a throwaway container without a network."""
        copy = f"{work}/{HUB_DB}"
        self.host.sqlite_backup(f"{hub_dir}/{HUB_DB}", copy)
        self.host.chown(copy, *owner)
        self.host.chmod(copy, 0o600)
        old_rev = self._revision(copy)
        result = self.host.run(
            ["docker", "run", "--rm", "--network", "none", "--user", f"{owner[0]}:{owner[1]}",
             "-v", f"{self.host.path(work)}:/upgrade", "-w", "/upgrade", "--entrypoint", "jupyterhub",
             hub_image, "upgrade-db", f"--db=sqlite:////upgrade/{HUB_DB}"],
            timeout=600)
        if not result.ok:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            raise HostkitError(f"jupyterhub upgrade-db in {hub_image}: {tail[0][:300]}")
        return old_rev, self._revision(copy)

    def _gate(self) -> str:
        """Why the new stack is not fit to keep; empty when it is."""
        try:
            self.stack.up(timeout=self.request.timeout)
        except HostkitError as exc:
            return f"the stack did not start: {self._why_down() or exc.message}"
        self.healthy_at = time.monotonic()
        failed = failed_checks(stack_checks(self.stack))
        if failed:
            return "doctor: " + "; ".join(failed)
        self.log("  doctor: the stack checks pass")
        if not self.request.canary:
            return ""
        canary = Canary(self.stack, log=lambda m: self.log(f"  {m}")).run()
        if not canary.ok:
            return canary.detail
        self.log(f"  {canary.detail}")
        return ""

    def _why_down(self) -> str:
        """Each service that is not running and healthy, with its container's last log line."""
        out = []
        for service, state in self.stack.service_states().items():
            if state["state"] == "running" and state["health"] in ("healthy", ""):
                continue
            what = f"{service} {state['state']}" + (f"/{state['health']}" if state["health"] else "")
            if state["container"]:
                logs = self.host.run(["docker", "logs", "--tail", "5", state["container"]], timeout=60)
                lines = [line for line in (logs.stdout + logs.stderr).splitlines() if line.strip()]
                if lines:
                    what += f" ({lines[-1].strip()[:200]})"
            out.append(what)
        return "; ".join(out)

    def restore_previous(self, before: dict[str, Any], hub_dir: str, aside: str,
                         replaced: str = "failed-upgrade") -> None:
        """The old database and the old images (by id, through the rollback tags), started;
        the database it replaces stays beside it as jupyterhub.sqlite.REPLACED-STAMP."""
        self.stack.compose("stop", timeout=180, check=False)
        live = f"{hub_dir}/{HUB_DB}"
        if self.host.exists(aside):  # else the old database never left its place
            if self.host.exists(live):
                self.host.rename(live, f"{live}.{replaced}-{self.stamp}")
            self.host.rename(aside, live)
        images = {}
        for key, old in before["images"].items():
            now_id = image_facts(self.stack, old["name"])[0]
            # a tag without a version (singleuser:full) may name the new build by now
            images[key] = old["name"] if now_id == old["id"] or not old["id"] else old["rollback_tag"]
        self.stack.write_env(images)
        self.stack.up(timeout=self.request.timeout)
        for key, ref in images.items():
            self.log(f"  {key}={ref}")

    def _users_servers(self, old_id: str, new_id: str) -> list[str]:
        if not old_id or old_id == new_id:
            return ["users' servers: the single-user image did not change"]
        lines = []
        for row in self.stack.user_containers():
            image = self.host.run(["docker", "inspect", "--format", "{{.Image}}", row["name"]])
            if not image.ok or image.stdout.strip() != old_id:
                continue
            if row["status"].startswith("Up"):
                lines.append(f"{row['name']} keeps running on the old single-user image until it stops; "
                             "its next start uses the new one")
            else:
                # DockerSpawner starts a stopped container as it is (dockerspawner#389)
                self.host.run(["docker", "rm", row["name"]], check=True)
                lines.append(f"removed the stopped container {row['name']} (old image), so it cannot "
                             "restart stale")
        return lines or ["users' servers: none runs on the old single-user image"]

    def _finish(self, outcome: str, reason: str) -> None:
        self.entry.update(outcome=outcome, reason=reason,
                          finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        write_record(self.stack, self.entry)


def rollback_last(stack: Stack, builder: ImageBuilder, timeout: float = 300, log: Log = _quiet) -> list[str]:
    """Put back the images and database from before the last upgrade not rolled back yet.
    Changes made on the hub since that upgrade (accounts, approvals) are lost."""
    record = read_record(stack)
    undone = {e.get("of") for e in record if e.get("outcome") == ROLLED_BACK}
    entries = [e for e in record if e.get("outcome") == "upgraded" and e.get("started") not in undone]
    if not entries:
        raise UsageError(f"no upgrade to roll back in {stack.directory}/{RECORD}",
                         "hostkit upgrade --check shows what runs")
    last = entries[-1]
    upgrader = Upgrader(stack, builder, UpgradeRequest(dest="", timeout=timeout), log=log)
    upgrader.entry = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "of": last["started"],
                      "stamp": upgrader.stamp, "before": last.get("after", {}), "outcome": "started"}
    hub_dir, _ = upgrader._hub_dir(stack.env())
    aside = f"{hub_dir}/{HUB_DB}.{PRE_UPGRADE}-{last['stamp']}"
    if not stack.host.exists(aside):
        raise HostkitError(f"the database from before the upgrade ({aside}) is gone",
                           f"restore it from the backup: hostkit restore {last.get('backup', 'BACKUP')}")
    log(f"rolling back the upgrade of {last['started']}; the hub database goes back to that moment "
        f"(the current one stays beside it as {HUB_DB}.rolled-back-{upgrader.stamp})")
    upgrader.restore_previous(last["before"], hub_dir, aside, replaced="rolled-back")
    failed = failed_checks(stack_checks(stack))
    upgrader._finish(ROLLED_BACK, "; ".join(failed))
    if failed:
        raise HostkitError("rolled back, but the stack checks fail: " + "; ".join(failed),
                           "hostkit doctor --only stack")
    return [f"rolled back: {key}={old['name']}" for key, old in last["before"]["images"].items()]
