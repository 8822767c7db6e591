"""Data-root relocation on a simulated server: preflight refusals, the move, rollback."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from bootstrap_sim import SimHost

from hostkit.daemon_config import DaemonOptions
from hostkit.errors import HostkitError, UsageError
from hostkit.facts import Facts
from hostkit.steps import CHANGED, OK, Plan
from hostkit.subsystems.daemon_json import DaemonJsonStep
from hostkit.subsystems.data_root import STATE_FILE, RelocateStep, rewrite_volume_sources
from hostkit.subsystems.data_root_state import MARKER, marker_for


@pytest.fixture
def sim(tmp_path: Path) -> SimHost:
    return SimHost(tmp_path)


def _step(target: str, **opts: object) -> RelocateStep:
    return RelocateStep(target, DaemonOptions(**opts))  # type: ignore[arg-type]


@pytest.mark.parametrize(("target", "expect"), [
    ("srv/docker", "not an absolute path"),
    ("/nonexistent/docker", "parent directory /nonexistent does not exist"),
    ("/var/lib/docker/inner", "inside the current Docker root"),
    ("/var/lib", "contains the current Docker root"),
])
def test_bad_targets_are_refused_with_a_hint(sim: SimHost, target: str, expect: str) -> None:
    with pytest.raises(UsageError) as err:
        _step(target).check(sim, Facts(sim))
    assert expect in err.value.message
    assert err.value.hint


def test_a_non_empty_directory_is_refused(sim: SimHost) -> None:
    sim.files({"/srv/data/volumes/backup.tar": "precious"})
    with pytest.raises(UsageError, match="not empty"):
        _step("/srv/data").check(sim, Facts(sim))


def test_a_directory_holding_another_docker_root_is_refused_with_the_adopt_hint(
        sim: SimHost) -> None:
    sim.files({"/srv/docker/overlay2/x/diff/f": "from before the reinstall"})
    with pytest.raises(UsageError, match="holds another Docker root") as err:
        _step("/srv/docker").check(sim, Facts(sim))
    assert "--adopt" in err.value.hint


def test_hostkits_own_unfinished_copy_is_resumed_and_the_marker_removed(sim: SimHost) -> None:
    sim.files({"/srv/docker/overlay2/x/diff/f": "half",
               f"/srv/docker/{MARKER}": json.dumps(marker_for(sim, "/var/lib/docker"))})
    changes = _step("/srv/docker").check(sim, Facts(sim))
    assert changes[0].disruptive
    assert "resuming" in changes[0].diff
    _planned, result = Plan([_step("/srv/docker")]).run(sim, Facts(sim))
    assert [s.status for s in result.steps] == [CHANGED], result
    assert not sim.path(f"/srv/docker/{MARKER}").exists()
    assert not sim.path("/srv/docker/overlay2/x").exists()  # the copy mirrors the source


def test_an_unfinished_copy_of_another_root_is_refused(sim: SimHost) -> None:
    sim.files({"/srv/docker/overlay2/x": "half",
               f"/srv/docker/{MARKER}": json.dumps({"source": "/elsewhere", "dev": 1, "ino": 2})})
    with pytest.raises(UsageError, match="unfinished copy of another root"):
        _step("/srv/docker").check(sim, Facts(sim))


def test_a_symlink_to_the_current_root_is_converged(sim: SimHost) -> None:
    sim.path("/srv/link").symlink_to(sim.path("/var/lib/docker"))
    assert _step("/srv/link").check(sim, Facts(sim)) == []


def test_adopt_points_docker_at_an_existing_root_without_copying(sim: SimHost) -> None:
    sim.files({"/srv/old/image/overlay2/imagedb/content/sha256/" + "b" * 64: "{}",
               "/srv/old/containers/" + "d" * 64 + "/config.v2.json": "{}",
               "/srv/old/volumes/kept/_data/f": "mine"})
    step = RelocateStep("/srv/old", DaemonOptions(), adopt=True)
    changes = step.check(sim, Facts(sim))
    assert "1 images, 1 containers, 1 volumes" in changes[0].summary
    assert "NOT recorded for `hostkit cleanup`" in changes[0].diff
    _planned, result = Plan([step]).run(sim, Facts(sim))
    assert [s.status for s in result.steps] == [CHANGED], result
    assert sim.root_dir == "/srv/old"
    assert not any(c[0] == "rsync" for c in sim.calls)
    assert sim.path("/var/lib/docker/volumes/hkdata/_data/file").read_text() == "data\n"
    assert not sim.path(STATE_FILE).exists()
    assert any("not recorded" in n for n in step.notes)


def test_adopt_refuses_a_directory_without_a_docker_root(sim: SimHost) -> None:
    sim.files({"/srv/empty/readme": "x"})
    with pytest.raises(UsageError, match="holds no Docker root"):
        RelocateStep("/srv/empty", DaemonOptions(), adopt=True).check(sim, Facts(sim))


def test_not_enough_space_is_refused(sim: SimHost) -> None:
    sim.avail = 3
    with pytest.raises(UsageError, match="free on"):
        _step("/srv/docker").check(sim, Facts(sim))


def test_xfs_without_ftype_is_refused(sim: SimHost) -> None:
    sim.fstype = "xfs"
    sim.binaries.add("xfs_info")
    sim._xfs_info = lambda args: (0, "naming =version 2 bsize=4096 ascii-ci=0, ftype=0\n", "")  # type: ignore[attr-defined]
    with pytest.raises(UsageError, match="ftype=0"):
        _step("/srv/docker").check(sim, Facts(sim))


def test_an_overlay_target_is_refused(sim: SimHost) -> None:
    sim.fstype = "overlay"
    with pytest.raises(UsageError, match="overlay2 cannot run"):
        _step("/srv/docker").check(sim, Facts(sim))


def test_a_sub_mount_under_the_old_root_is_refused_but_runtime_mounts_are_not(
        sim: SimHost) -> None:
    sim.extra_mounts = [("/var/lib/docker/overlay2/abc/merged", "overlay"),
                        ("/var/lib/docker/containers/abc/mounts/shm", "tmpfs")]
    assert _step("/srv/docker").check(sim, Facts(sim))
    # decided by filesystem, not by name: a disk mounted at overlay2 holds the layers
    sim.extra_mounts.append(("/var/lib/docker/overlay2", "xfs"))
    with pytest.raises(UsageError, match="separate filesystem"):
        _step("/srv/docker").check(sim, Facts(sim))


def test_selinux_without_semanage_plans_its_install(tmp_path: Path) -> None:
    sim = SimHost(tmp_path, distro="rocky-9")
    sim.files({"/sys/fs/selinux/enforce": "1"})
    changes = _step("/srv/docker").check(sim, Facts(sim))
    assert "dnf install -y policycoreutils policycoreutils-python-utils" in changes[0].diff


def test_relocation_moves_data_keeps_old_root_and_converges(sim: SimHost) -> None:
    options = DaemonOptions(dns=("10.0.0.53",))
    steps = [RelocateStep("/srv/docker", options), DaemonJsonStep(options)]
    _planned, result = Plan(steps).run(sim, Facts(sim))
    assert [s.status for s in result.steps] == [CHANGED, OK], result
    assert sim.root_dir == "/srv/docker"
    assert sim.path("/srv/docker/volumes/hkdata/_data/file").read_text() == "data\n"
    aside = [p for p in sim.path("/var/lib").iterdir() if p.name.startswith("docker.hostkit-old-")]
    assert len(aside) == 1
    assert (aside[0] / "volumes/hkdata/_data/file").read_text() == "data\n"
    assert not sim.path("/var/lib/docker").exists()
    cfg = sim.daemon_config()
    assert cfg["data-root"] == "/srv/docker"
    assert cfg["dns"] == ["10.0.0.53"]
    # docker.socket is stopped with the service, so no client can wake dockerd mid-copy
    assert ("systemctl", "stop", "docker.socket", "docker.service") in sim.calls
    rsyncs = [c for c in sim.calls if c[0] == "rsync" and "--version" not in c]
    assert len(rsyncs) == 3  # live pass, delta pass with --delete, dry-run verification
    assert all("--modify-window=-1" in c for c in rsyncs)  # mtimes to the nanosecond
    assert "--delete" not in rsyncs[0]
    assert "--delete" in rsyncs[1]
    assert "-n" in rsyncs[2]
    assert all({"-aHAXS", "--numeric-ids", "-x"} <= set(c) for c in rsyncs)
    assert sim.restarts == 1  # one restart covers both the move and daemon.json
    state = json.loads(sim.path(STATE_FILE).read_text())
    assert state[0]["path"] == f"/var/lib/{aside[0].name}"

    # a second run finds nothing to do and never touches Docker
    calls = len(sim.calls)
    _planned, again = Plan([RelocateStep("/srv/docker", options), DaemonJsonStep(options)]).run(
        sim, Facts(sim))
    assert [s.status for s in again.steps] == [OK, OK]
    assert not any(c[:2] in {("systemctl", "stop"), ("systemctl", "restart")}
                   for c in sim.calls[calls:])


def test_container_volume_paths_are_pointed_at_the_new_root(sim: SimHost) -> None:
    Plan([_step("/srv/docker")]).run(sim, Facts(sim))
    cfg = json.loads(sim.path(f"/srv/docker/containers/{'c' * 64}/config.v2.json").read_text())
    assert cfg["MountPoints"]["/data"]["Source"] == "/srv/docker/volumes/hkdata/_data"
    aside = next(p for p in sim.path("/var/lib").iterdir() if p.name.startswith("docker.hostkit"))
    old = json.loads((aside / "containers" / ("c" * 64) / "config.v2.json").read_text())
    assert old["MountPoints"]["/data"]["Source"] == "/var/lib/docker/volumes/hkdata/_data"


def test_rewrite_leaves_bind_mounts_alone(sim: SimHost) -> None:
    sim.files({"/srv/d/containers/x/config.v2.json": json.dumps({"MountPoints": {
        "/b": {"Source": "/var/lib/docker-bind", "Type": "bind"},
        "/v": {"Source": "/var/lib/docker/volumes/v/_data", "Type": "volume"}}})})
    assert rewrite_volume_sources(sim, "/var/lib/docker", "/srv/d") == 1


def test_dockerd_refusing_the_new_config_rolls_back_to_the_old_root(sim: SimHost) -> None:
    sim.files({"/etc/docker/daemon.json": '{"debug": true}\n'})
    options = DaemonOptions(dns=("999.1.1.1",))
    _planned, result = Plan([RelocateStep("/srv/docker", options)]).run(sim, Facts(sim))
    assert result.failed
    assert "rolled back: Docker runs on /var/lib/docker again" in result.steps[0].message
    assert sim.running
    assert sim.root_dir == "/var/lib/docker"
    assert sim.path("/etc/docker/daemon.json").read_text() == '{"debug": true}\n'
    assert sim.path("/var/lib/docker/volumes/hkdata/_data/file").read_text() == "data\n"
    assert not [p for p in sim.path("/var/lib").iterdir() if "hostkit-old" in p.name]
    assert json.loads(sim.path(STATE_FILE).read_text()) == []  # the pending entry is gone


def test_a_failed_verification_pass_rolls_back(sim: SimHost, monkeypatch: pytest.MonkeyPatch
                                               ) -> None:
    real = sim._rsync

    def lying_rsync(args: list[str]) -> tuple[int, str, str]:
        rc, out, err = real(args)
        return (0, ">f.st...... volumes/hkdata/_data/file\n", "") if "-n" in args else (rc, out,
                                                                                            err)

    monkeypatch.setattr(sim, "_rsync", lying_rsync)
    step = _step("/srv/docker")
    step.check(sim, Facts(sim))
    with pytest.raises(HostkitError, match="verification found 1 differences"):
        step.apply(sim, Facts(sim), [])
    assert sim.running
    assert sim.root_dir == "/var/lib/docker"
    assert not sim.path("/etc/docker/daemon.json").exists()


def test_the_plan_warns_that_containerd_image_store_layers_do_not_move(sim: SimHost) -> None:
    assert "containerd" not in _step("/srv/docker").check(sim, Facts(sim))[0].diff
    sim.driver_status = [["driver-type", "io.containerd.snapshotter.v1"]]
    assert "moby#50517" in _step("/srv/docker").check(sim, Facts(sim))[0].diff


def test_without_systemd_docker_is_stopped_and_started_with_its_init_script(sim: SimHost) -> None:
    sim.files({"/proc/1/comm": "bash\n", "/etc/init.d/docker": "#!/bin/sh\n"})
    _planned, result = Plan([_step("/srv/docker")]).run(sim, Facts(sim))
    assert [s.status for s in result.steps] == [CHANGED]
    assert ("service", "docker", "stop") in sim.calls
    assert ("service", "docker", "start") in sim.calls
    assert not any(c[0] == "systemctl" for c in sim.calls)
    assert sim.root_dir == "/srv/docker"


def test_missing_rsync_is_planned_as_an_install_before_the_confirmation(sim: SimHost) -> None:
    sim.binaries.discard("rsync")
    changes = _step("/srv/docker").check(sim, Facts(sim))
    install = [c for c in changes if "rsync" in c.summary and "install" in c.summary]
    assert install, [c.summary for c in changes]
    assert "apt-get install -y --no-install-recommends rsync" in install[0].diff
    assert not install[0].disruptive
    _planned, result = Plan([_step("/srv/docker")]).run(sim, Facts(sim))
    assert [s.status for s in result.steps] == [CHANGED], result
    installed = sim.calls.index(("apt-get", "install", "-y", "--no-install-recommends", "rsync"))
    assert installed < sim.calls.index(("systemctl", "stop", "docker.socket", "docker.service"))
    assert sim.root_dir == "/srv/docker"


def test_a_missing_tool_no_package_manager_brings_is_refused_before_the_prompt(
        sim: SimHost) -> None:
    sim.binaries.discard("findmnt")
    with pytest.raises(UsageError, match="findmnt"):
        _step("/srv/docker").check(sim, Facts(sim))


def test_sigterm_during_the_delta_pass_rolls_back_and_keeps_the_copy_resumable(
        sim: SimHost, monkeypatch: pytest.MonkeyPatch) -> None:
    real = sim._rsync

    def killed_rsync(args: list[str]) -> tuple[int, str, str]:
        if "--delete" in args and "-n" not in args:
            os.kill(os.getpid(), signal.SIGTERM)  # what an SSH drop or `kill` delivers
        return real(args)

    monkeypatch.setattr(sim, "_rsync", killed_rsync)
    step = _step("/srv/docker")
    step.check(sim, Facts(sim))
    with pytest.raises(HostkitError, match="interrupted by SIGTERM; rolled back") as err:
        step.apply(sim, Facts(sim), [])
    assert "resumes it" in err.value.message
    assert sim.running
    assert sim.root_dir == "/var/lib/docker"
    assert sim.path(f"/srv/docker/{MARKER}").exists()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers put back
    monkeypatch.setattr(sim, "_rsync", real)
    _planned, result = Plan([_step("/srv/docker")]).run(sim, Facts(sim))
    assert [s.status for s in result.steps] == [CHANGED], result
    assert sim.root_dir == "/srv/docker"


def test_a_failed_rollback_step_does_not_stop_the_others_and_says_how_to_recover(
        sim: SimHost, monkeypatch: pytest.MonkeyPatch) -> None:
    sim.refuse_start = lambda cfg: "refused" if cfg.get("data-root") else None
    real_rename = sim.rename

    def no_way_back(src: str, dst: str) -> None:
        if "hostkit-old" in src:
            raise HostkitError(f"{src}: device or resource busy")
        real_rename(src, dst)

    monkeypatch.setattr(sim, "rename", no_way_back)
    step = _step("/srv/docker")
    step.check(sim, Facts(sim))
    with pytest.raises(HostkitError) as err:
        step.apply(sim, Facts(sim), [])
    assert "rollback incomplete" in err.value.message
    assert "Docker is STOPPED" in err.value.message
    assert sim.path("/etc/docker/daemon.json").exists() is False  # that step still ran
    aside = next(p.name for p in sim.path("/var/lib").iterdir() if "hostkit-old" in p.name)
    assert err.value.hint == (f"to recover: mv /var/lib/{aside} /var/lib/docker && "
                              "systemctl start docker")
    state = json.loads(sim.path(STATE_FILE).read_text())
    assert state == [{**state[0], "path": f"/var/lib/{aside}", "status": "pending"}]


def test_a_file_rewritten_in_the_same_second_after_the_live_pass_is_copied_again(
        sim: SimHost, monkeypatch: pytest.MonkeyPatch) -> None:
    # a database page rewritten in place: same size, and (on a busy hub) the same second
    # as the write the live pass copied
    db = sim.path("/var/lib/docker/volumes/hkdata/_data/jupyterhub.sqlite")
    db.write_text("page-v1\n")
    os.utime(db, ns=(1_700_000_000_100_000_000, 1_700_000_000_100_000_000))
    real = sim._rsync

    def busy_hub(args: list[str]) -> tuple[int, str, str]:
        res = real(args)
        if "--delete" not in args and "-n" not in args and "--version" not in args:
            db.write_text("page-v2\n")
            os.utime(db, ns=(1_700_000_000_900_000_000, 1_700_000_000_900_000_000))
        return res

    monkeypatch.setattr(sim, "_rsync", busy_hub)
    _planned, result = Plan([_step("/srv/docker")]).run(sim, Facts(sim))
    assert [s.status for s in result.steps] == [CHANGED], result
    assert sim.path("/srv/docker/volumes/hkdata/_data/jupyterhub.sqlite").read_text() == \
        "page-v2\n"


def test_an_rsync_without_nanosecond_mtimes_compares_content_in_the_delta_pass(
        sim: SimHost, monkeypatch: pytest.MonkeyPatch) -> None:
    real = sim._rsync
    monkeypatch.setattr(sim, "_rsync", lambda args: (0, "rsync  version 3.1.2  protocol "
                        "version 31\n", "") if args == ["--version"] else real(args))
    Plan([_step("/srv/docker")]).run(sim, Facts(sim))
    delta = next(c for c in sim.calls if c[0] == "rsync" and "--delete" in c and "-n" not in c)
    assert "--checksum" in delta
    assert not any("--modify-window=-1" in c for c in sim.calls)


def test_a_signal_ignored_before_the_move_stays_ignored(sim: SimHost) -> None:
    from hostkit.subsystems.data_root_move import signals_raise

    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    try:
        with signals_raise():
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGHUP, previous)
