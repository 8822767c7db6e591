"""`hostkit bootstrap --data-root` must never lose data: reproduced against a real dockerd
20.10 and rsync in a systemd box.

One box for the module; the tests run in file order and each one takes Docker's current
root as it finds it. Data is compared by content: sha256 of every file in the volumes and
of the image's layer files (and `docker save`), never by IDs alone.

An rsync wrapper in the box's /usr/local/bin can slow one pass down (the live pass when
/tmp/slow-live exists, the delta pass when /tmp/slow-delta exists) so that a test can act
while that pass runs; the real /usr/bin/rsync does the copy.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "box"))

from boxlib import Box, running_box

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RSYNC_WRAPPER = r"""#!/bin/sh
# test hook: hold one rsync pass for a while so a test can act during it
case " $* " in
  *" -n "*|*" --version "*) ;;
  *" --delete "*) [ -e /tmp/slow-delta ] && sleep "$(cat /tmp/slow-delta)" ;;
  *) [ -e /tmp/slow-live ] && sleep "$(cat /tmp/slow-live)" ;;
esac
exec /usr/bin/rsync "$@"
"""


@pytest.fixture(scope="module")
def box() -> Iterator[Box]:
    with running_box("hostkit-safety", seed=True) as b:
        b.sh(f"cat > /usr/local/bin/rsync <<'EOF'\n{RSYNC_WRAPPER}EOF\n"
             "chmod 0755 /usr/local/bin/rsync")
        yield b


def _args(box: Box, target: str, extra: str = "") -> str:
    return f"--data-root {target} --yes --no-stack --dns {box.resolver()} {extra}".strip()


def _bootstrap(box: Box, args: str) -> tuple[int, str, str]:
    res = box.sh(f"hostkit bootstrap {args}", check=False, timeout=900)
    # rich wraps at 80 columns without a terminal; compare text, not line breaks
    return res.returncode, " ".join(res.stdout.split()), " ".join(res.stderr.split())


def _start_bg(box: Box, args: str) -> None:
    """hostkit bootstrap in the background: its pid in /tmp/bg.pid, exit code in /tmp/bg.rc."""
    box.sh("rm -f /tmp/bg.pid /tmp/bg.rc /tmp/bg.log; nohup sh -c '"
           f"hostkit bootstrap {args} >/tmp/bg.log 2>&1 & echo $! >/tmp/bg.pid; "
           "wait $!; echo $? >/tmp/bg.rc' >/dev/null 2>&1 &")


def _wait_bg(box: Box, timeout: float = 300) -> tuple[int, str]:
    deadline = time.monotonic() + timeout
    while box.sh("test -s /tmp/bg.rc", check=False).returncode != 0:
        assert time.monotonic() < deadline, box.sh("cat /tmp/bg.log", check=False).stdout
        time.sleep(0.5)
    rc = int(box.sh("cat /tmp/bg.rc").stdout.strip())
    return rc, " ".join(box.sh("cat /tmp/bg.log").stdout.split())


def _wait_for(box: Box, script: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while box.sh(script, check=False).returncode != 0:
        assert time.monotonic() < deadline, box.sh("cat /tmp/bg.log", check=False).stdout
        time.sleep(0.1)


def _files_checksum(box: Box, directory: str, pattern: str = "*") -> str:
    """sha256 of every file (and the list of every path) under directory."""
    return box.sh(f"cd {directory} && find . -path './{pattern}' -type f | sort | "
                  "xargs -r sha256sum | sha256sum; find . | sort | sha256sum").stdout


def _volume_files(box: Box, root: str) -> str:
    """Every volume's files, read from the root on disk (no container needed)."""
    return _files_checksum(box, f"{root}/volumes", "*/_data/*")


def _image_checksum(box: Box) -> str:
    """`docker save` of the test image and the sha256 of every file in its layer dirs."""
    dirs = box.sh("docker image inspect -f "
                  "'{{.GraphDriver.Data.UpperDir}}:{{.GraphDriver.Data.LowerDir}}' "
                  "hostkit-tiny:1").stdout.strip()
    layers = [d for d in dirs.split(":") if d and d != "<no value>"]
    root = box.docker_root()
    rel = " ".join(d[len(root) + 1:] for d in layers)
    files = box.sh(f"cd {root} && find {rel} -type f | sort | xargs -r sha256sum").stdout
    saved = box.sh("docker save hostkit-tiny:1 | sha256sum").stdout
    return saved + files.replace(root, "ROOT")


def _latest_log(box: Box) -> str:
    return box.sh("cat $(ls -t /var/log/hostkit/bootstrap-*.log | head -1)").stdout


def _docker_started_at(box: Box) -> str:
    return box.sh("systemctl show -p ExecMainStartTimestamp -p MainPID docker.service").stdout


def _restart_docker(box: Box) -> None:
    box.sh("systemctl reset-failed docker.service docker.socket; "
           "systemctl restart docker.socket docker.service && "
           "until docker info >/dev/null 2>&1; do sleep 0.3; done", timeout=120)


def _set_daemon_key(box: Box, key: str, value: object) -> None:
    """Add (or with None remove) one daemon.json key, then restart Docker."""
    box.sh("python3 - <<'EOF'\n"
           "import json, os\n"
           "p = '/etc/docker/daemon.json'\n"
           "d = json.load(open(p)) if os.path.exists(p) else {}\n"
           f"v = json.loads({json.dumps(json.dumps(value))})\n"
           f"d.pop({key!r}, None) if v is None else d.__setitem__({key!r}, v)\n"
           "open(p, 'w').write(json.dumps(d, indent=2) + '\\n')\n"
           "EOF")
    _restart_docker(box)


# ---- 1. a target that already holds data --------------------------------------------------

@pytest.mark.parametrize(("name", "layout", "expect"), [
    # a Docker root left behind by an OS reinstall
    ("reinstalled", "mkdir -p {t}/overlay2/l1/diff {t}/image/overlay2 {t}/containers "
                    "{t}/volumes/thesis/_data && echo layer > {t}/overlay2/l1/diff/f && "
                    "head -c 3000000 /dev/urandom > {t}/volumes/thesis/_data/thesis.tar",
     "holds another Docker root"),
    # an admin's backup that happens to sit in a directory named like Docker's
    ("backup-only", "mkdir -p {t}/volumes && head -c 3000000 /dev/urandom > {t}/volumes/backup.tar",
     "not empty"),
])
def test_a_target_that_already_holds_data_is_refused_and_left_untouched(
        box: Box, name: str, layout: str, expect: str) -> None:
    target = f"/srv/{name}"
    box.sh(layout.format(t=target))
    before = _files_checksum(box, target)
    root = box.docker_root()
    rc, out, err = _bootstrap(box, _args(box, target))
    assert _files_checksum(box, target) == before, "the target's files were changed"
    assert rc != 0, out
    assert expect in err
    assert "hint:" in err
    assert "Traceback" not in err
    assert box.docker_root() == root


def test_adopt_runs_docker_on_an_existing_root_as_it_is(box: Box) -> None:
    root = box.docker_root()
    target = "/srv/adoptable"
    # a root from before a reinstall: today's, plus a volume only it has
    box.sh("docker volume create only-there >/dev/null && docker run --rm -v only-there:/d "
           "hostkit-tiny:1 sh -c 'echo kept > /d/f'")
    box.sh(f"systemctl stop docker.socket docker.service && rsync -aHAX {root}/ {target}/ && "
           "systemctl start docker.socket docker.service && "
           "until docker info >/dev/null 2>&1; do sleep 0.3; done && "
           "docker volume rm only-there >/dev/null")
    old_files = _volume_files(box, root)
    rc, out, err = _bootstrap(box, _args(box, target, "--adopt"))
    assert rc == 0, out + err
    assert re.search(r"\d+ images, \d+ containers, \d+ volumes", out), out
    assert "NOT recorded for `hostkit cleanup`" in out
    assert box.docker_root() == target
    assert box.sh("docker run --rm -v only-there:/d hostkit-tiny:1 cat /d/f").stdout.strip() == "kept"
    assert _volume_files(box, root) == old_files, "the old root was touched"
    assert "rsync -aHAXS" not in _latest_log(box)
    state = box.sh("cat /var/lib/hostkit/old-data-roots.json 2>/dev/null || echo []").stdout
    assert root not in [e["path"] for e in json.loads(state)]


# ---- 5. containers come and go while the live pass runs -----------------------------------

def test_containers_removed_during_the_live_copy_are_not_losses(box: Box) -> None:
    target = "/srv/busy"
    box.sh("docker run -d --name doomed hostkit-tiny:1 sleep 100000 >/dev/null && "
           "docker run -d --rm --name short hostkit-tiny:1 sleep 100000 >/dev/null")
    volumes = box.volume_checksum()
    images = _image_checksum(box)
    box.sh("echo 8 > /tmp/slow-live")
    try:
        _start_bg(box, _args(box, target))
        _wait_for(box, "pgrep -f '[r]sync -aHAXS' >/dev/null")
        # DockerSpawner's remove=True and the idle culler do this on a live hub
        box.sh("docker rm -f doomed >/dev/null && docker stop -t 1 short >/dev/null")
        rc, log = _wait_bg(box)
    finally:
        box.sh("rm -f /tmp/slow-live")
    assert rc == 0, log
    assert "rolled back" not in log
    assert box.docker_root() == target
    assert box.volume_checksum() == volumes
    assert _image_checksum(box) == images


# ---- 8. an SSH drop (SIGTERM/SIGHUP) while Docker is stopped ------------------------------

def test_sigterm_while_docker_is_stopped_rolls_back_and_a_rerun_converges(box: Box) -> None:
    root = box.docker_root()
    target = "/srv/sigterm"
    volumes = box.volume_checksum()
    box.sh("echo 40 > /tmp/slow-delta")
    try:
        _start_bg(box, _args(box, target))
        _wait_for(box, "pgrep -f '[r]sync.* --delete' >/dev/null", timeout=180)
        stopped = box.sh("docker info >/dev/null 2>&1", check=False).returncode != 0
        box.sh("kill -TERM $(cat /tmp/bg.pid)")
        rc, log = _wait_bg(box, timeout=180)
    finally:
        box.sh("rm -f /tmp/slow-delta")
        running = box.sh("docker info >/dev/null 2>&1", check=False).returncode == 0
        if not running:
            box.sh("systemctl reset-failed docker.service docker.socket; "
                   "systemctl start docker.socket docker.service", check=False)
    assert stopped, "the signal was meant to arrive while Docker is stopped"
    assert running, f"hostkit left Docker stopped: {log}"
    assert rc != 0
    assert "SIGTERM" in log
    assert "rolled back" in log
    assert box.docker_root() == root
    assert box.sh("pgrep -f '[r]sync.* --delete'", check=False).returncode != 0
    assert box.volume_checksum() == volumes
    # the interrupted copy is hostkit's own: a re-run resumes it and converges
    rc, out, err = _bootstrap(box, _args(box, target))
    assert rc == 0, out + err
    assert box.docker_root() == target
    assert box.volume_checksum() == volumes


# ---- 3. live-restore keeps containers running while dockerd is down -----------------------

def _log_lines(box: Box) -> int:
    res = box.sh("docker run --rm -v lrdata:/data hostkit-tiny:1 cat /data/log | wc -l")
    return int(res.stdout.strip())


def test_with_live_restore_running_containers_write_to_the_new_root(box: Box) -> None:
    _set_daemon_key(box, "live-restore", True)
    target = "/srv/live"
    try:
        box.sh("docker run -d --name writer --restart=always -v lrdata:/data hostkit-tiny:1 "
               "sh -c 'trap \"exit 0\" TERM; i=0; while true; do i=$((i+1)); "
               "echo $i >> /data/log; sleep 0.2; done' >/dev/null")
        time.sleep(2)
        volumes = box.volume_checksum()
        rc, out, err = _bootstrap(box, _args(box, target))
        assert rc == 0, out + err
        assert box.docker_root() == target
        assert box.volume_checksum() == volumes
        time.sleep(2)
        first = _log_lines(box)
        time.sleep(3)
        assert _log_lines(box) > first, "the writer no longer writes into the new root"
        assert box.sh("docker inspect -f '{{.State.Running}}' writer").stdout.strip() == "true"
    finally:
        box.sh("docker rm -f writer >/dev/null 2>&1; true")
        _set_daemon_key(box, "live-restore", None)


# ---- 2. the same directory under two names ------------------------------------------------

def test_a_symlink_to_the_current_root_is_already_converged(box: Box) -> None:
    root = box.docker_root()
    box.sh(f"ln -sfn {root} /srv/root-link")
    started = _docker_started_at(box)
    rc, out, err = _bootstrap(box, _args(box, "/srv/root-link"))
    assert rc == 0, out + err
    assert re.search(r"ok\s+Docker data root at", out), out
    assert _docker_started_at(box) == started
    assert box.docker_root() == root
    assert box.sh(f"ls -d {root}.hostkit-old-* 2>/dev/null || true").stdout.strip() == ""
    assert box.sh(f"test -d {root}/volumes && echo yes").stdout.strip() == "yes"


def test_a_root_bind_mounted_from_the_target_is_not_copied_onto_itself(box: Box) -> None:
    real = box.docker_root()
    view = "/srv/bound-view"
    volumes = _volume_files(box, real)
    box.sh(f"systemctl stop docker.socket docker.service && mkdir -p {view} && "
           f"mount --bind {real} {view}")
    try:
        _set_daemon_key(box, "data-root", view)
        assert box.docker_root() == view
        rc, out, err = _bootstrap(box, _args(box, real))
        assert rc == 0, out + err
        assert box.docker_root() == real
        assert "rsync -aHAXS" not in _latest_log(box), "the root was copied onto itself"
        assert "remove its contents" not in out
        assert box.sh(f"ls -d {view}.hostkit-old-* 2>/dev/null || true").stdout.strip() == ""
        assert _volume_files(box, real) == volumes
    finally:
        box.sh(f"umount {view}", check=False)


# ---- 4. a separate filesystem under the old root ------------------------------------------

def test_a_separate_filesystem_at_overlay2_is_refused(box: Box) -> None:
    root = box.docker_root()
    images = _image_checksum(box)
    box.sh(f"systemctl stop docker.socket docker.service && "
           f"mv {root}/overlay2 {root}/overlay2.disk && mkdir {root}/overlay2 && "
           f"mount -t tmpfs -o size=512m tmpfs {root}/overlay2 && "
           f"cp -a {root}/overlay2.disk/. {root}/overlay2/ && "
           "systemctl start docker.socket docker.service")
    try:
        assert _image_checksum(box) == images
        rc, out, err = _bootstrap(box, _args(box, "/srv/ovl"))
        assert rc != 0, out
        assert f"{root}/overlay2" in err, out + err
        assert "hint:" in err
        assert box.docker_root() == root
        assert _image_checksum(box) == images
    finally:
        now = box.sh("docker info --format '{{.DockerRootDir}}'", check=False).stdout.strip()
        box.sh(f"systemctl stop docker.socket docker.service; "
               f"rsync -aHAX --delete {now}/overlay2/ {now}/overlay2.disk/ && "
               f"umount -l {root}/overlay2; rmdir {now}/overlay2 && "
               f"mv {now}/overlay2.disk {now}/overlay2; "
               "systemctl start docker.socket docker.service", check=False)


# ---- 2. cleanup never deletes Docker's current root under another name --------------------

def test_cleanup_refuses_a_recorded_path_that_is_docker_current_root(box: Box) -> None:
    root = box.docker_root()
    alias = "/srv/alias-of-root"
    volumes = _volume_files(box, root)
    box.sh(f"mkdir -p {alias} && mount --bind {root} {alias}")
    # as if an earlier move had been recorded under a name that now leads to the live root
    box.sh("python3 - <<'EOF'\n"
           "import json, os\n"
           "p = '/var/lib/hostkit/old-data-roots.json'\n"
           f"d = [{{'path': '{alias}', 'from': '{alias}', 'to': '{root}', 'when': 'x'}}]\n"
           "os.makedirs(os.path.dirname(p), exist_ok=True)\n"
           "open(p, 'w').write(json.dumps(d))\n"
           "EOF")
    try:
        res = box.sh("hostkit cleanup --yes", check=False)
        assert _volume_files(box, root) == volumes, "cleanup deleted Docker's current root"
        assert res.returncode != 0
        assert alias in " ".join((res.stdout + res.stderr).split())
        assert box.docker_root() == root
    finally:
        box.sh(f"umount {alias}", check=False)
