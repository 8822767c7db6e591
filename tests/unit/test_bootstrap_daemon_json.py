"""daemon.json step: merge, validation, unit-flag drop-in, restart and rollback."""

from __future__ import annotations

from pathlib import Path

import pytest
from bootstrap_sim import SimHost

from hostkit.daemon_config import DaemonJsonError, DaemonOptions
from hostkit.errors import UsageError
from hostkit.facts import Facts
from hostkit.steps import CHANGED, FAILED, OK, Plan
from hostkit.subsystems.daemon_json import (
    DROP_IN,
    DROP_IN_DIR,
    LEGACY_DROP_IN,
    DaemonJsonStep,
    plan_config,
    restore_dns,
    strip_flags,
)

DAEMON = "/etc/docker/daemon.json"


def test_malformed_daemon_json_stops_with_line_and_column_and_is_untouched(
        tmp_path: Path) -> None:
    sim = SimHost(tmp_path).files({DAEMON: '{\n  "debug": true,,\n}\n'})
    with pytest.raises(DaemonJsonError) as err:
        DaemonJsonStep(DaemonOptions()).check(sim, Facts(sim))
    assert err.value.message.startswith(f"{DAEMON}:2:")
    planned, result = Plan([DaemonJsonStep(DaemonOptions())]).run(sim, Facts(sim))
    assert planned.steps[0].status == FAILED
    assert result.aborted
    assert sim.path(DAEMON).read_text() == '{\n  "debug": true,,\n}\n'


def test_merge_writes_atomically_with_a_backup_and_restarts_once(tmp_path: Path) -> None:
    sim = SimHost(tmp_path).files({DAEMON: '{"debug": true, "log-opts": {"max-file": 3}}'})
    _planned, result = Plan([DaemonJsonStep(DaemonOptions())]).run(sim, Facts(sim))
    assert result.steps[0].status == CHANGED
    cfg = sim.daemon_config()
    assert cfg["debug"] is True
    assert cfg["log-opts"] == {"max-file": "3", "max-size": "10m"}  # the admin's count stays
    backups = list(sim.path("/etc/docker").glob("daemon.json.hostkit-*.bak"))
    assert len(backups) == 1
    assert "debug" in backups[0].read_text()
    assert sim.count("systemctl", "restart") == 1
    _planned, again = Plan([DaemonJsonStep(DaemonOptions())]).run(sim, Facts(sim))
    assert again.steps[0].status == OK
    assert sim.count("systemctl", "restart") == 1


def test_a_config_dockerd_refuses_is_rolled_back_and_docker_runs(tmp_path: Path) -> None:
    original = '{"debug": true}\n'
    sim = SimHost(tmp_path).files({DAEMON: original})
    _planned, result = Plan([DaemonJsonStep(DaemonOptions(dns=("999.1.1.1",)))]).run(
        sim, Facts(sim))
    assert result.steps[0].status == FAILED
    assert "rolled back" in result.steps[0].message
    assert sim.path(DAEMON).read_text() == original
    assert sim.running


def test_validate_rejection_leaves_the_file_unchanged(tmp_path: Path) -> None:
    sim = SimHost(tmp_path, docker_version="27.3.1").files({DAEMON: "{}\n"})
    sim.validate_supported = True
    sim.validate_error = "unable to configure the Docker daemon with file: invalid log opt"
    _planned, result = Plan([DaemonJsonStep(DaemonOptions())]).run(sim, Facts(sim))
    assert result.steps[0].status == FAILED
    assert "dockerd --validate rejects" in result.steps[0].message
    assert sim.path(DAEMON).read_text() == "{}\n"
    assert sim.count("systemctl", "restart") == 0


def test_conflicting_unit_flags_move_into_a_drop_in(tmp_path: Path) -> None:
    sim = SimHost(tmp_path)
    # the seed's edit of docker.service: the data directory as a flag on ExecStart
    sim.unit = ("[Service]\nExecStart=/usr/bin/dockerd -H fd:// -g /ubicacion/docker "
                "--dns 8.8.4.4 --containerd=/run/containerd/containerd.sock\n")
    sim.files({DAEMON: '{"data-root": "/ubicacion/docker"}'})
    _planned, result = Plan([DaemonJsonStep(DaemonOptions())]).run(sim, Facts(sim))
    assert result.steps[0].status == CHANGED, result
    dropin = sim.path(DROP_IN).read_text()
    assert "ExecStart=\n" in dropin
    assert ("ExecStart=/usr/bin/dockerd -H fd:// "
            "--containerd=/run/containerd/containerd.sock") in dropin
    assert ("systemctl", "daemon-reload") in sim.calls


def test_strip_flags_handles_values_in_both_spellings() -> None:
    line = "/usr/bin/dockerd --data-root=/a -g /b --log-opt max-size=1m --live-restore -H fd://"
    assert strip_flags(line, {"data-root", "log-opts", "live-restore"}) == \
        "/usr/bin/dockerd -H fd://"


# ---- dns: written only once it has answered from this host ------------------------------

def test_a_given_dns_that_does_not_answer_is_refused_naming_the_hosts_working_ones(
        tmp_path: Path) -> None:
    sim = SimHost(tmp_path).files({"/etc/resolv.conf": "nameserver 10.0.0.53\n"})
    sim.dead_resolvers = {"8.8.8.8"}
    with pytest.raises(UsageError) as err:
        Plan([DaemonJsonStep(DaemonOptions(dns=("8.8.8.8",)))]).run(sim, Facts(sim))
    assert err.value.message.startswith("--dns 8.8.8.8: 8.8.8.8 did not answer")
    assert "10.0.0.53 (--dns 10.0.0.53)" in err.value.hint
    assert not sim.path(DAEMON).exists()
    assert sim.count("systemctl", "restart") == 0


def test_a_first_run_uses_the_hosts_resolvers_where_the_default_does_not_answer(
        tmp_path: Path) -> None:
    sim = SimHost(tmp_path).files({"/etc/resolv.conf": "nameserver 10.0.0.53\n"})
    sim.dead_resolvers = {"8.8.8.8"}
    recorded: dict[str, object] = {}
    planned, result = Plan([DaemonJsonStep(DaemonOptions(), recorded)]).run(sim, Facts(sim))
    assert "8.8.8.8 does not answer here; using this host's resolvers 10.0.0.53" in \
        planned.steps[0].changes[0].summary
    assert result.steps[0].status == CHANGED
    assert sim.daemon_config()["dns"] == ["10.0.0.53"]
    assert recorded == {"dns": ["10.0.0.53"], "log_max_size": "10m", "log_max_file": "5"}


def test_a_first_run_writes_the_default_where_it_answers(tmp_path: Path) -> None:
    sim = SimHost(tmp_path)
    Plan([DaemonJsonStep(DaemonOptions())]).run(sim, Facts(sim))
    assert sim.daemon_config()["dns"] == ["8.8.8.8"]
    assert ("dns", "8.8.8.8", "deb.debian.org") in sim.calls


def test_no_answering_resolver_at_all_is_refused(tmp_path: Path) -> None:
    sim = SimHost(tmp_path).files({"/etc/resolv.conf": "nameserver 10.0.0.53\n"})
    sim.dead_resolvers = {"8.8.8.8", "10.0.0.53"}
    with pytest.raises(UsageError, match=r"8\.8\.8\.8 did not answer") as err:
        Plan([DaemonJsonStep(DaemonOptions())]).run(sim, Facts(sim))
    assert "no resolver of this host answers" in err.value.hint


def test_a_rerun_keeps_the_admins_dns_without_asking_again(tmp_path: Path) -> None:
    sim = SimHost(tmp_path).files({DAEMON: '{"dns": ["10.1.1.1"], "log-driver": "journald"}'})
    recorded: dict[str, object] = {"dns": ["8.8.8.8"], "log_max_size": "10m"}
    _planned, result = Plan([DaemonJsonStep(DaemonOptions(), recorded)]).run(sim, Facts(sim))
    assert result.steps[0].status == OK
    assert recorded == {"dns": ["10.1.1.1"]}
    assert sim.count("dns") == 0


def test_restore_dns_puts_the_previous_resolvers_back_and_restarts(tmp_path: Path) -> None:
    sim = SimHost(tmp_path).files({DAEMON: '{"dns": ["8.8.8.8"], "debug": true}'})
    assert restore_dns(sim, Facts(sim), ["10.0.0.53"])
    assert sim.daemon_config() == {"dns": ["10.0.0.53"], "debug": True}
    assert sim.count("systemctl", "restart") == 1
    assert not restore_dns(sim, Facts(sim), ["10.0.0.53"])
    assert restore_dns(sim, Facts(sim), None)
    assert sim.daemon_config() == {"debug": True}


# ---- the drop-in: data-root mount, flags that another drop-in or DOCKER_OPTS sets -----

def test_a_relocated_root_is_required_mounted_in_the_drop_in(tmp_path: Path) -> None:
    sim = SimHost(tmp_path)
    plan = plan_config(sim, Facts(sim), DaemonOptions(data_root="/srv/docker"))
    assert plan.dropin_text is not None
    assert "[Unit]\nRequiresMountsFor=/srv/docker\n" in plan.dropin_text
    assert "ExecStart" not in plan.dropin_text
    default = plan_config(sim, Facts(sim), DaemonOptions(data_root="/var/lib/docker"))
    assert default.dropin_text is None


def test_an_execstart_in_override_conf_is_beaten_by_zz_hostkit_conf(tmp_path: Path) -> None:
    sim = SimHost(tmp_path).files({
        f"{DROP_IN_DIR}/override.conf": "[Service]\nExecStart=\nExecStart=/usr/sbin/dockerd "
                                        "-H fd:// --dns 1.1.1.1 $DOCKER_OPTS\n",
        f"{DROP_IN_DIR}/hostkit.conf": "[Service]\nExecStart=\nExecStart=/usr/sbin/dockerd\n",
    })
    _planned, result = Plan([DaemonJsonStep(DaemonOptions(dns=("10.0.0.53",)))]).run(
        sim, Facts(sim))
    assert result.steps[0].status == CHANGED, result
    assert sim.running
    assert "ExecStart=/usr/sbin/dockerd -H fd:// $DOCKER_OPTS\n" in \
        sim.path(DROP_IN).read_text()
    assert not sim.path(LEGACY_DROP_IN).exists()  # migrated to the name that sorts last
    _planned, again = Plan([DaemonJsonStep(DaemonOptions(dns=("10.0.0.53",)))]).run(
        sim, Facts(sim))
    assert again.steps[0].status == OK


def test_a_drop_in_sorting_after_hostkits_is_refused_by_name(tmp_path: Path) -> None:
    sim = SimHost(tmp_path).files({
        f"{DROP_IN_DIR}/zzz-site.conf": "[Service]\nExecStart=\nExecStart=/usr/sbin/dockerd "
                                        "--dns 1.1.1.1\n"})
    planned, _result = Plan([DaemonJsonStep(DaemonOptions(dns=("10.0.0.53",)))]).run(
        sim, Facts(sim))
    assert planned.steps[0].status == FAILED
    assert f"{DROP_IN_DIR}/zzz-site.conf" in planned.steps[0].message


def test_dns_in_docker_opts_is_refused_naming_the_environment_file(tmp_path: Path) -> None:
    sim = SimHost(tmp_path).files({"/etc/default/docker": 'DOCKER_OPTS="--dns 1.1.1.1"\n'})
    sim.unit = ("[Service]\nEnvironmentFile=-/etc/default/docker\n"
                "ExecStart=/usr/sbin/dockerd -H fd:// $DOCKER_OPTS\n")
    planned, result = Plan([DaemonJsonStep(DaemonOptions(dns=("10.0.0.53",)))]).run(
        sim, Facts(sim))
    assert planned.steps[0].status == FAILED
    assert planned.steps[0].message.startswith(
        "/etc/default/docker (DOCKER_OPTS) sets --dns for dockerd")
    assert result.aborted
    assert not sim.path(DAEMON).exists()
