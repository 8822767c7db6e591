"""`hostkit bootstrap` on a systemd box with a real dockerd 20.10, firewalld and rsync.

The tests share one box and run in file order: bad input first (host unchanged), then the
seed's firewalld mistake plus the real relocation, the idempotent second run, a rollback,
and a kill -9 in the middle of a copy.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "box"))

from boxlib import Box, build_image

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def box() -> Iterator[Box]:
    if os.geteuid() != 0:
        pytest.skip("needs root and a local dockerd")
    TIMINGS["box_image_build_s"] = build_image()
    b = Box(f"hostkit-it-{os.getpid()}")
    start = time.monotonic()
    b.start()
    TIMINGS["box_boot_s"] = time.monotonic() - start
    try:
        b.install_hostkit()
        b.seed_docker_content()
        yield b
    finally:
        print("\nTIMINGS", json.dumps(TIMINGS))
        if not os.environ.get("HOSTKIT_KEEP_BOX"):
            b.remove()


def _state(box: Box) -> str:
    """What bad input must leave untouched: daemon.json, Docker's root, firewalld."""
    return box.sh("cat /etc/docker/daemon.json 2>/dev/null; echo; "
                  "docker info --format '{{.DockerRootDir}}'; "
                  "firewall-cmd --list-all-zones --permanent | md5sum; ls /srv").stdout


def _bootstrap(box: Box, args: str, *, user: str | None = None,
               check: bool = False) -> tuple[int, str, str]:
    # The stack's images are too big to load into the box on every run: the host steps are
    # tested with --no-stack, and the hand-off to `hostkit stack up` on its own below.
    if "--stack" not in args:
        args += " --no-stack"
    res = box.sh(f"hostkit bootstrap {args}", check=check, timeout=900, user=user)
    # rich wraps at 80 columns without a terminal; compare text, not line breaks
    return res.returncode, res.stdout, " ".join(res.stderr.split())


@pytest.mark.parametrize(("args", "expect"), [
    ("--data-root srv/docker", "not an absolute path"),
    ("--data-root /nonexistent/docker", "does not exist"),
    ("--data-root /var/lib/docker/inner", "inside the current Docker root"),
    ("--data-root /srv/notdocker", "not empty"),
    ("--data-root /opt/docker", "overlay"),
    ("--data-root /mnt/tiny/docker", "free on"),
])
def test_bad_data_root_is_refused_before_any_change(box: Box, args: str, expect: str) -> None:
    box.sh("mkdir -p /srv/notdocker && echo mine > /srv/notdocker/file; mkdir -p /mnt/tiny; "
           "mountpoint -q /mnt/tiny || mount -t tmpfs -o size=1m tmpfs /mnt/tiny")
    before = _state(box)
    rc, _out, err = _bootstrap(box, f"{args} --yes")
    assert rc != 0
    assert expect in err
    assert "hint:" in err
    assert "Traceback" not in err
    assert _state(box) == before


def test_not_root_is_refused(box: Box) -> None:
    rc, _out, err = _bootstrap(box, "--data-root /srv/docker --yes", user="nobody")
    assert rc != 0
    assert "must run as root" in err


def test_unsupported_distro_is_refused_unless_forced(box: Box) -> None:
    box.sh("printf 'ID=arch\\nNAME=\"Arch Linux\"\\n' > /tmp/os-release && "
           "mount --bind /tmp/os-release /etc/os-release")
    try:
        before = _state(box)
        rc, _out, err = _bootstrap(box, "--data-root /srv/docker --yes")
        assert rc != 0
        assert "unsupported" in err
        assert "--force" in err
        assert _state(box) == before
        rc, out, _err = _bootstrap(box, "--force --dry-run")
        assert rc == 0, out
        assert "--force" in out
    finally:
        box.sh("umount /etc/os-release")


def test_malformed_daemon_json_stops_with_position_and_is_left_untouched(box: Box) -> None:
    box.sh("printf '{\\n  \"debug\": true,,\\n}\\n' > /etc/docker/daemon.json")
    try:
        rc, out, err = _bootstrap(box, "--data-root /srv/docker --yes")
        assert rc != 0
        assert "/etc/docker/daemon.json:2:" in out + err
        assert box.sh("cat /etc/docker/daemon.json").stdout == '{\n  "debug": true,,\n}\n'
        assert box.docker_root() == "/var/lib/docker"
    finally:
        box.sh("rm -f /etc/docker/daemon.json")


def test_dry_run_changes_nothing(box: Box) -> None:
    before = _state(box)
    rc, out, _err = _bootstrap(box, "--data-root /srv/docker --dry-run")
    assert rc == 0, out
    assert "would change" in out
    assert _state(box) == before


def test_bootstrap_relocates_and_repairs_the_seeds_firewall(box: Box) -> None:
    # The seed's CentOS 8 advice, applied by hand before hostkit ever ran
    box.sh("firewall-cmd --zone=trusted --change-interface=docker0 && "
           "firewall-cmd --permanent --zone=trusted --change-interface=docker0 && "
           "firewall-cmd --permanent --zone=trusted --add-masquerade")
    checksum = box.volume_checksum()
    images = box.sh("docker image ls -aq --no-trunc | sort").stdout
    start = time.monotonic()
    rc, out, err = _bootstrap(
        box, f"--data-root /srv/docker --yes --dns {box.resolver()} --probe-image hostkit-tiny:1")
    TIMINGS["bootstrap_first_run_s"] = time.monotonic() - start
    assert rc == 0, out + err
    for line in out.splitlines():
        if "Docker was down" in line:
            TIMINGS["docker_downtime_s"] = float(line.split("down ")[1].split("s")[0])

    assert box.docker_root() == "/srv/docker"
    assert box.volume_checksum() == checksum
    assert box.sh("docker image ls -aq --no-trunc | sort").stdout == images
    assert box.sh("docker volume ls -q").stdout.split() == ["hkdata"]
    # the restart=always container came back by itself, on the new root's volume path
    deadline = time.monotonic() + 30
    while box.sh("docker inspect -f '{{.State.Running}}' keeper").stdout.strip() != "true":
        assert time.monotonic() < deadline, box.sh("docker ps -a").stdout
        time.sleep(1)
    src = box.sh("docker inspect -f '{{range .Mounts}}{{.Source}}{{end}}' keeper").stdout
    assert src.strip() == "/srv/docker/volumes/hkdata/_data"
    # the old root is moved aside, not deleted
    aside = box.sh("ls -d /var/lib/docker.hostkit-old-*").stdout.split()
    assert len(aside) == 1
    assert box.sh(f"test -d {aside[0]}/volumes/hkdata/_data && echo yes").stdout.strip() == "yes"

    daemon = json.loads(box.sh("cat /etc/docker/daemon.json").stdout)
    assert daemon == {"log-driver": "json-file",
                      "log-opts": {"max-size": "10m", "max-file": "5"},
                      "dns": [box.resolver()], "data-root": "/srv/docker"}
    assert box.sh("docker info --format '{{.LoggingDriver}}'").stdout.strip() == "json-file"

    # firewalld: docker0 back in Docker's own zone, nowhere in trusted; port open both ways
    assert box.sh("firewall-cmd --get-zone-of-interface=docker0").stdout.strip() == "docker"
    assert box.sh("firewall-cmd --permanent --zone=trusted --query-interface=docker0",
                  check=False).returncode != 0
    assert box.sh("firewall-cmd --zone=public --query-port=9090/tcp").stdout.strip() == "yes"
    assert box.sh("firewall-cmd --permanent --zone=public --query-port=9090/tcp"
                  ).stdout.strip() == "yes"
    # a container resolves and reaches out (busybox wget without -T: -T segfaults)
    probe = box.sh("docker run --rm hostkit-tiny:1 sh -c 'nslookup deb.debian.org >/dev/null "
                   "&& wget -q -O /dev/null http://deb.debian.org/debian/ && echo OK'",
                   check=False)
    assert "OK" in probe.stdout, probe.stdout + probe.stderr
    logs = box.sh("ls /var/log/hostkit/").stdout
    assert "bootstrap-" in logs


def _docker_started_at(box: Box) -> str:
    return box.sh("systemctl show -p ExecMainStartTimestamp -p MainPID docker.service").stdout


def test_second_run_changes_nothing_and_does_not_restart_docker(box: Box) -> None:
    before = _docker_started_at(box)
    start = time.monotonic()
    rc, out, err = _bootstrap(
        box, f"--data-root /srv/docker --yes --dns {box.resolver()} --probe-image hostkit-tiny:1")
    TIMINGS["bootstrap_second_run_s"] = time.monotonic() - start
    assert rc == 0, out + err
    assert "changed=0" in out
    assert "would change" not in out
    assert _docker_started_at(box) == before


REFUSE_DROP_IN = "/etc/systemd/system/docker.service.d/zz-test-refuse.conf"


@pytest.fixture
def dockerd_refuses(box: Box) -> Iterator[Callable[[str], None]]:
    """Make docker.service fail to start whenever daemon.json contains `marker`.

    hostkit now refuses the values dockerd itself would reject (--dns, --log-max-size)
    before changing anything, and dockerd 20.10 has no --validate: so the refusal at
    start is injected here, at the same place a real one happens (systemctl start fails).
    """

    def arm(marker: str) -> None:
        box.sh(f"mkdir -p /etc/systemd/system/docker.service.d && printf '%s\\n' "
               f"'[Service]' 'ExecStartPre=/bin/sh -c \"! grep -q {marker} "
               f"/etc/docker/daemon.json\"' > {REFUSE_DROP_IN} && systemctl daemon-reload")

    yield arm
    box.sh(f"rm -f {REFUSE_DROP_IN} && systemctl daemon-reload")


def test_dockerd_refusing_the_new_config_rolls_back_to_the_old_root_with_docker_running(
        box: Box, dockerd_refuses: Callable[[str], None]) -> None:
    dockerd_refuses("/srv/docker2")
    checksum = box.volume_checksum()
    config = box.sh("cat /etc/docker/daemon.json").stdout
    rc, out, err = _bootstrap(box, f"--data-root /srv/docker2 --yes --dns {box.resolver()}")
    assert rc != 0
    assert "rolled back" in out + err
    assert box.docker_root() == "/srv/docker"
    assert box.sh("cat /etc/docker/daemon.json").stdout == config
    assert box.sh("ls -d /srv/docker2").returncode == 0  # the partial copy is kept, not deleted
    assert box.volume_checksum() == checksum
    # no new moved-aside copy of /srv/docker was left behind
    assert box.sh("ls -d /srv/docker.hostkit-old-* 2>/dev/null || true").stdout.strip() == ""


def test_dockerd_refusing_a_daemon_option_restores_the_old_config(
        box: Box, dockerd_refuses: Callable[[str], None]) -> None:
    # not a resolver: bootstrap now refuses one that does not answer before writing it
    dockerd_refuses("11m")
    config = box.sh("cat /etc/docker/daemon.json").stdout
    rc, out, err = _bootstrap(box, "--yes --log-max-size 11m")
    assert rc != 0
    assert "rolled back" in out + err
    assert box.sh("cat /etc/docker/daemon.json").stdout == config
    assert box.docker_root() == "/srv/docker"
    assert box.sh("docker info --format '{{.ServerVersion}}'").returncode == 0


def test_values_dockerd_would_reject_are_refused_before_any_change(box: Box) -> None:
    before = _state(box)
    for args, expect in (("--dns 999.1.1.1", "--dns 999.1.1.1: not an IP address"),
                         ("--log-max-size bogus", "--log-max-size bogus: not a size")):
        rc, _out, err = _bootstrap(box, f"--data-root /srv/docker9 --yes {args}")
        assert rc != 0
        assert expect in err
    assert _state(box) == before


def test_kill_during_copy_then_rerun_completes(box: Box) -> None:
    # enough data that the first copy pass is still running when it is killed
    box.sh("docker run --rm -v hkdata:/data hostkit-tiny:1 sh -c "
           "'dd if=/dev/urandom of=/data/big bs=1M count=600 2>/dev/null'", timeout=300)
    checksum = box.volume_checksum()
    args = f"--data-root /srv/docker3 --yes --dns {box.resolver()} --probe-image hostkit-tiny:1"
    box.sh(f"nohup hostkit bootstrap {args} >/tmp/killed.log 2>&1 &")
    deadline = time.monotonic() + 60
    while box.sh("pgrep -f '[r]sync -aHAXS' >/dev/null", check=False).returncode != 0:
        assert time.monotonic() < deadline, box.sh("cat /tmp/killed.log").stdout
        time.sleep(0.1)
    box.sh("pkill -9 -f '[h]ostkit bootstrap'; pkill -9 -f '[r]sync -aHAXS'; true")
    assert box.docker_root() == "/srv/docker"  # killed before anything was stopped
    rc, out, err = _bootstrap(box, args)
    assert rc == 0, out + err
    assert box.docker_root() == "/srv/docker3"
    assert box.volume_checksum() == checksum


def test_cleanup_removes_the_moved_aside_roots_after_confirmation(box: Box) -> None:
    aside = box.sh("ls -d /var/lib/docker.hostkit-old-* /srv/docker.hostkit-old-* "
                   "2>/dev/null || true").stdout.split()
    assert aside
    res = box.sh("hostkit cleanup --dry-run")
    assert aside[0] in res.stdout
    assert box.sh(f"test -d {aside[0]} && echo yes").stdout.strip() == "yes"
    box.sh("hostkit cleanup --yes")
    for path in aside:
        assert box.sh(f"test -e {path} || echo gone").stdout.strip() == "gone"
    assert box.docker_root() == "/srv/docker3"


def test_the_stack_is_handed_to_hostkit_stack_up_and_its_failure_is_reported(box: Box) -> None:
    # no hub image in the box and --no-build: `stack up` must fail, and bootstrap must say so
    args = (f"--yes --dns {box.resolver()} --probe-image hostkit-tiny:1 "
            "--stack --deploy-dir /opt/hk --stack-arg=--no-build")
    rc, out, err = _bootstrap(box, args)
    assert rc != 0
    assert "certs, .env and the stack (hostkit stack up)" in out
    assert "no hub image yet" in out + err
    assert "URL" not in out  # nothing answers there: no URL is promised
