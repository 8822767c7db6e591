from __future__ import annotations

import pytest

from hostkit.daemon_config import (
    DaemonJsonError,
    UnitCommand,
    command_conflicts,
    conflicting_flags,
    dockerd_flags_in_unit,
    exec_start_argv,
    find_type_problems,
    parse_daemon_json,
    parse_environment_file,
    parse_systemctl_show,
    unit_settings,
)


def test_parse_error_names_file_line_and_column() -> None:
    text = '{\n  "log-driver": "json-file",\n  "dns": ["8.8.8.8",]\n}\n'
    with pytest.raises(DaemonJsonError) as err:
        parse_daemon_json(text, "/etc/docker/daemon.json")
    assert err.value.line == 3
    assert err.value.column == 21
    assert err.value.message.startswith("/etc/docker/daemon.json:3:21: ")


def test_empty_file_is_an_empty_config() -> None:
    assert parse_daemon_json("  \n") == {}


def test_top_level_must_be_an_object() -> None:
    with pytest.raises(DaemonJsonError, match="top level must be an object"):
        parse_daemon_json("[1, 2]")


def test_numeric_log_opts_are_reported_with_the_string_fix() -> None:
    problems = find_type_problems({"log-opts": {"max-size": "10m", "max-file": 5}})
    assert [(p.key, p.fix) for p in problems] == [("log-opts.max-file", '"max-file": "5"')]


def test_well_typed_seed_config_has_no_problems() -> None:
    seed = {
        "data-root": "/srv/docker",
        "log-driver": "json-file",
        "log-opts": {"max-size": "10m", "max-file": "5"},
        "dns": ["8.8.8.8"],
    }
    assert find_type_problems(seed) == []


def test_dns_must_be_a_list_and_bools_must_be_bools() -> None:
    keys = {p.key for p in find_type_problems({"dns": "8.8.8.8", "live-restore": "true"})}
    assert keys == {"dns", "live-restore"}


UNIT = """[Service]
Type=notify
ExecStart=/usr/bin/dockerd -H fd:// \\
    --containerd=/run/containerd/containerd.sock --data-root=/data/docker
"""


def test_flags_on_a_continued_execstart_line_are_found() -> None:
    assert dockerd_flags_in_unit(UNIT) == [("-H", "hosts"), ("--data-root", "data-root")]


def test_conflict_when_a_key_is_both_flag_and_in_daemon_json() -> None:
    assert conflicting_flags(UNIT, {"data-root": "/srv/docker"}) == [("--data-root", "data-root")]
    assert conflicting_flags(UNIT, {"dns": ["8.8.8.8"]}) == []


def test_empty_execstart_in_a_drop_in_resets_the_command() -> None:
    dropin = "[Service]\nExecStart=\nExecStart=/usr/bin/dockerd --containerd=/run/c.sock\n"
    assert (
        conflicting_flags(UNIT + dropin, {"hosts": ["unix:///var/run/docker.sock"], "data-root": "/x"}) == []
    )


def test_removed_graph_flag_maps_to_data_root() -> None:
    unit = "[Service]\nExecStart=/usr/bin/dockerd -g /big/docker\n"
    assert conflicting_flags(unit, {"data-root": "/srv"}) == [("-g", "data-root")]


BOM_TEXT = '\ufeff{"dns": ["10.0.0.53"]}\n'


def test_a_bom_is_accepted_where_dockerd_strips_it() -> None:
    # moby#44770 (23.0): dockerd ignores a leading UTF-8 BOM
    assert parse_daemon_json(BOM_TEXT, docker_version=(23, 0, 0)) == {"dns": ["10.0.0.53"]}
    assert parse_daemon_json(BOM_TEXT, docker_version=(27, 3, 1)) == {"dns": ["10.0.0.53"]}


def test_a_bom_on_docker_20_10_is_the_error_with_the_command_that_removes_it() -> None:
    with pytest.raises(DaemonJsonError) as err:
        parse_daemon_json(BOM_TEXT, "/etc/docker/daemon.json", docker_version=(20, 10, 24))
    assert "byte order mark" in err.value.message
    assert "Docker 20.10.24" in err.value.message
    assert err.value.hint == ("remove it: sed -i '1s/^\\xEF\\xBB\\xBF//' "
                              "/etc/docker/daemon.json")


SHOWN = ("ExecStart={ path=/usr/sbin/dockerd ; argv[]=/usr/sbin/dockerd -H fd:// $DOCKER_OPTS "
         "${EXTRA} ; ignore_errors=no ; start_time=[n/a] ; stop_time=[n/a] ; pid=0 ; "
         "code=(null) ; status=0/0 }")


def test_systemctl_show_execstart_gives_the_argv() -> None:
    props = parse_systemctl_show(SHOWN + "\nEnvironmentFiles=/etc/default/docker "
                                 "(ignore_errors=yes)\n")
    assert exec_start_argv(props["ExecStart"][0]) == [
        "/usr/sbin/dockerd", "-H", "fd://", "$DOCKER_OPTS", "${EXTRA}"]


def test_environment_variables_expand_as_systemd_does_and_say_where_they_come_from() -> None:
    env = parse_environment_file('# comment\nDOCKER_OPTS="--dns 1.1.1.1 --log-level warn"\n'
                                 "EXTRA='--bip=10.9.0.1/24'\n")
    command = UnitCommand(("/usr/sbin/dockerd", "-H", "fd://", "$DOCKER_OPTS", "${EXTRA}",
                           "$UNSET"), "/lib/systemd/system/docker.service",
                          tuple(env.items()), (("DOCKER_OPTS", "/etc/default/docker"),))
    assert [w for w, _ in command.words()] == [
        "/usr/sbin/dockerd", "-H", "fd://", "--dns", "1.1.1.1", "--log-level", "warn",
        "--bip=10.9.0.1/24"]
    assert command_conflicts(command, {"dns": ["10.0.0.53"], "bip": "x"}) == [
        ("--dns", "dns", "/etc/default/docker (DOCKER_OPTS)"),
        ("--bip", "bip", "Environment= (EXTRA)")]


def test_the_last_execstart_wins_and_names_its_file() -> None:
    argv, source, _env, files = unit_settings([
        ("/lib/systemd/system/docker.service",
         "[Service]\nEnvironmentFile=-/etc/default/docker\nExecStart=/usr/bin/dockerd -H fd://\n"),
        ("/etc/systemd/system/docker.service.d/override.conf",
         "[Service]\nExecStart=\nExecStart=/usr/bin/dockerd --dns 1.1.1.1\n")])
    assert argv == ["/usr/bin/dockerd", "--dns", "1.1.1.1"]
    assert source == "/etc/systemd/system/docker.service.d/override.conf"
    assert files == ["-/etc/default/docker"]
