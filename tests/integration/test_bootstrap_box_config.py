"""What bootstrap writes into daemon.json and docker.service, on a systemd box with dockerd 20.10.

One box for the module; the tests run in file order and each leaves Docker running. 8.8.8.8
answers from this network, so an unreachable public resolver is simulated with iptables.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "box"))

from boxlib import Box

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DROP_IN_DIR = "/etc/systemd/system/docker.service.d"
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def box() -> Iterator[Box]:
    if os.geteuid() != 0:
        pytest.skip("needs root and a local dockerd")
    b = Box(f"hostkit-cfg-{os.getpid()}")
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


def _bootstrap(box: Box, args: str) -> tuple[int, str]:
    res = box.sh(f"hostkit bootstrap --no-stack {args}", check=False, timeout=900)
    # rich wraps at 80 columns without a terminal; compare words, not line breaks
    return res.returncode, " ".join((res.stdout + " " + res.stderr).split())


def _daemon_json(box: Box) -> dict[str, object]:
    return json.loads(box.sh("cat /etc/docker/daemon.json").stdout)  # type: ignore[no-any-return]


def _restart_docker(box: Box) -> None:
    box.sh("systemctl daemon-reload && systemctl reset-failed docker.service docker.socket; "
           "systemctl restart docker && docker info >/dev/null")


def _block(box: Box, ip: str, *, from_host: bool = True) -> None:
    """Drop traffic to ip from containers (FORWARD, DOCKER-USER) and, optionally, the box."""
    chains = ["FORWARD", "DOCKER-USER"] + (["OUTPUT"] if from_host else [])
    box.sh("; ".join(f"iptables -I {c} -d {ip} -j DROP" for c in chains))


def _unblock(box: Box, ip: str) -> None:
    for chain in ("OUTPUT", "FORWARD", "DOCKER-USER"):
        box.sh(f"while iptables -D {chain} -d {ip} -j DROP 2>/dev/null; do :; done")


def _container_resolves(box: Box) -> bool:
    res = box.sh("docker run --rm hostkit-tiny:1 nslookup deb.debian.org", check=False,
                 timeout=60)
    return res.returncode == 0


def _state(box: Box) -> str:
    return box.sh("cat /etc/docker/daemon.json 2>/dev/null; echo; ls -l "
                  f"{DROP_IN_DIR} 2>/dev/null; systemctl show -p MainPID docker").stdout


def _doctor(box: Box, check: str) -> dict[str, object]:
    res = box.sh(f"hostkit doctor --only {check} --format json", check=False)
    return json.loads(res.stdout)["checks"][0]  # type: ignore[no-any-return]


# ---- 10: a DNS server goes into daemon.json only once it has answered -----------------

def test_a_dns_server_that_does_not_answer_is_refused_before_any_change(box: Box) -> None:
    _block(box, "8.8.8.8")
    try:
        before = _state(box)
        rc, text = _bootstrap(box, "--yes --dns 8.8.8.8 --probe-image hostkit-tiny:1")
        assert rc == 2, text
        assert "--dns 8.8.8.8" in text
        assert box.resolver() in text  # the hint names the host's resolver that answers
        assert "Traceback" not in text
        assert _state(box) == before
    finally:
        _unblock(box, "8.8.8.8")


def test_without_dns_the_default_is_written_only_where_it_answers(box: Box) -> None:
    _block(box, "8.8.8.8")
    try:
        rc, text = _bootstrap(box, "--yes --probe-image hostkit-tiny:1")
        assert rc == 0, text
        assert _daemon_json(box)["dns"] == [box.resolver()]
        assert f"8.8.8.8 does not answer here; using this host's resolvers {box.resolver()}" \
            in text
        assert _container_resolves(box)
        settings = box.sh("cat /etc/hostkit/hostkit.toml").stdout
        assert f'dns = ["{box.resolver()}"]' in settings
    finally:
        _unblock(box, "8.8.8.8")


def test_a_failed_network_probe_after_the_restart_rolls_daemon_json_back(box: Box) -> None:
    # 8.8.8.8 answers the host, but containers cannot reach it
    _block(box, "8.8.8.8", from_host=False)
    try:
        config = box.sh("cat /etc/docker/daemon.json").stdout
        start = time.monotonic()
        rc, text = _bootstrap(box, "--yes --dns 8.8.8.8 --probe-image hostkit-tiny:1")
        TIMINGS["probe_failure_rollback_s"] = time.monotonic() - start
        assert rc == 1, text
        assert "rolled back" in text
        assert box.sh("cat /etc/docker/daemon.json").stdout == config
        assert _container_resolves(box)
    finally:
        _unblock(box, "8.8.8.8")


# ---- 11: a re-run keeps what the admin chose -------------------------------------------

def test_a_rerun_keeps_the_admins_dns_and_log_driver(box: Box) -> None:
    admin = {"dns": [box.resolver()], "log-driver": "journald",
             "log-opts": {"tag": "{{.Name}}"}}
    box.sh(f"echo '{json.dumps(admin)}' > /etc/docker/daemon.json")
    _restart_docker(box)
    rc, text = _bootstrap(box, "--yes --probe-image hostkit-tiny:1")
    assert rc == 0, text
    assert _daemon_json(box) == admin
    settings = box.sh("cat /etc/hostkit/hostkit.toml").stdout
    assert f'dns = ["{box.resolver()}"]' in settings
    assert _doctor(box, "daemon.logging")["status"] != "fail"


def test_given_log_flags_change_rotation_and_keep_the_dns(box: Box) -> None:
    box.sh(f"echo '{json.dumps({'dns': [box.resolver()]})}' > /etc/docker/daemon.json")
    _restart_docker(box)
    rc, text = _bootstrap(box, "--yes --log-max-size 20m --probe-image hostkit-tiny:1")
    assert rc == 0, text
    assert _daemon_json(box) == {"dns": [box.resolver()], "log-driver": "json-file",
                                 "log-opts": {"max-size": "20m", "max-file": "5"}}
    assert 'log_max_size = "20m"' in box.sh("cat /etc/hostkit/hostkit.toml").stdout


# ---- 12: a UTF-8 BOM, which dockerd 20.10 refuses ---------------------------------------

def test_a_bom_in_daemon_json_is_named_with_its_fix_where_dockerd_refuses_it(box: Box) -> None:
    config = box.sh("cat /etc/docker/daemon.json").stdout
    box.sh("printf '\\357\\273\\277' > /tmp/bom && cat /tmp/bom /etc/docker/daemon.json "
           "> /tmp/d.json && cp /tmp/d.json /etc/docker/daemon.json")
    try:
        rc, text = _bootstrap(box, "--yes")
        assert rc != 0
        assert "byte order mark" in text
        assert "sed -i '1s/^\\xEF\\xBB\\xBF//' /etc/docker/daemon.json" in text
        doctor = _doctor(box, "daemon.syntax")
        assert doctor["status"] == "fail"
        assert "byte order mark" in str(doctor["summary"])
    finally:
        box.sh(f"printf '%s' '{config}' > /etc/docker/daemon.json")


# ---- 6: a relocated root must be mounted before dockerd starts --------------------------

def test_a_relocated_data_root_is_required_mounted_before_docker_starts(box: Box) -> None:
    start = time.monotonic()
    rc, text = _bootstrap(box, f"--yes --data-root /srv/docker --dns {box.resolver()} "
                               "--probe-image hostkit-tiny:1")
    TIMINGS["relocation_s"] = time.monotonic() - start
    assert rc == 0, text
    assert box.docker_root() == "/srv/docker"
    shown = box.sh("systemctl show -p RequiresMountsFor docker.service").stdout
    assert "/srv/docker" in shown.split("=", 1)[1].split()
    rc, text = _bootstrap(box, "--yes --probe-image hostkit-tiny:1")
    assert rc == 0, text
    assert "changed=0" in text


# ---- 7: unit settings that a hostkit.conf drop-in does not win against ------------------

def test_a_conflicting_flag_in_override_conf_is_beaten_by_a_drop_in_that_sorts_last(
        box: Box) -> None:
    # what `systemctl edit docker` writes: override.conf sorts after hostkit.conf
    box.sh(f"mkdir -p {DROP_IN_DIR} && printf '%s\\n' '[Service]' 'ExecStart=' "
           "'ExecStart=/usr/sbin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock"
           f" --dns 1.1.1.1 $DOCKER_OPTS' > {DROP_IN_DIR}/override.conf")
    cfg = _daemon_json(box)
    cfg.pop("dns")
    box.sh(f"echo '{json.dumps(cfg)}' > /etc/docker/daemon.json")
    _restart_docker(box)
    try:
        rc, text = _bootstrap(box, f"--yes --dns {box.resolver()} --probe-image hostkit-tiny:1")
        assert rc == 0, text
        assert _daemon_json(box)["dns"] == [box.resolver()]
        exec_start = box.sh("systemctl show -p ExecStart docker.service").stdout
        assert "--dns" not in exec_start
        assert "/srv/docker" in box.sh("systemctl show -p RequiresMountsFor docker").stdout
        assert box.sh(f"ls {DROP_IN_DIR}").stdout.split() == ["override.conf",
                                                              "zz-hostkit.conf"]
        assert _doctor(box, "daemon.unit-conflicts")["status"] == "pass"
    finally:
        box.sh(f"rm -f {DROP_IN_DIR}/override.conf")
        _restart_docker(box)


def test_dns_in_docker_opts_is_refused_naming_the_environment_file(box: Box) -> None:
    # docker-ce's unit has no EnvironmentFile; sites add one with a drop-in
    box.sh(f"printf '%s\\n' '[Service]' 'EnvironmentFile=-/etc/default/docker' "
           f"> {DROP_IN_DIR}/environment.conf && cp /etc/default/docker /tmp/default-docker && "
           "echo 'DOCKER_OPTS=\"--dns 1.1.1.1\"' >> /etc/default/docker && "
           "systemctl daemon-reload")
    try:
        doctor = _doctor(box, "daemon.unit-conflicts")
        assert doctor["status"] == "fail"
        assert "/etc/default/docker" in str(doctor["summary"]) + str(doctor["hint"])
        before = _state(box)
        rc, text = _bootstrap(box, f"--yes --dns {box.resolver()}")
        assert rc != 0
        assert "DOCKER_OPTS" in text
        assert "/etc/default/docker" in text
        assert _state(box) == before  # nothing written, Docker not restarted
    finally:
        box.sh(f"cp /tmp/default-docker /etc/default/docker && "
               f"rm -f {DROP_IN_DIR}/environment.conf && systemctl daemon-reload")
