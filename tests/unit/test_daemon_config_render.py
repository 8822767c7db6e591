"""render_daemon_json: the pure desired state of /etc/docker/daemon.json."""

from __future__ import annotations

import json

import pytest

from hostkit.daemon_config import (
    DEFAULT_DNS,
    DaemonOptions,
    daemon_json_text,
    find_type_problems,
    parse_daemon_json,
    render_daemon_json,
)
from hostkit.errors import UsageError

SEED = {"log-driver": "json-file", "log-opts": {"max-size": "10m", "max-file": "5"},
        "dns": ["8.8.8.8"]}


def test_empty_config_gets_the_seed_values() -> None:
    # the default dns comes from plan_config, once it has answered from this host
    assert render_daemon_json({}, DaemonOptions(dns=DEFAULT_DNS)) == SEED
    assert "dns" not in render_daemon_json({}, DaemonOptions())


def test_keys_hostkit_does_not_own_are_kept_in_their_order() -> None:
    existing = {"insecure-registries": ["r:5000"], "debug": True, "dns": ["1.1.1.1"]}
    out = render_daemon_json(existing, DaemonOptions())
    assert out["insecure-registries"] == ["r:5000"]
    assert out["debug"] is True
    assert list(out)[:3] == ["insecure-registries", "debug", "dns"]


def test_log_opts_become_strings_and_other_opts_survive() -> None:
    existing = {"log-driver": "json-file", "log-opts": {"max-file": 3, "compress": True}}
    out = render_daemon_json(existing, DaemonOptions(log_max_file="7"))
    assert out["log-opts"] == {"max-file": "7", "compress": "true", "max-size": "10m"}
    assert find_type_problems(out) == []


def test_options_of_a_previous_log_driver_that_json_file_rejects_are_dropped() -> None:
    existing = {"log-driver": "syslog", "log-opts": {"syslog-address": "udp://x:514", "tag": "t"}}
    out = render_daemon_json(existing, DaemonOptions(log_driver="json-file"))
    assert out["log-driver"] == "json-file"
    assert "syslog-address" not in out["log-opts"]
    assert out["log-opts"]["tag"] == "t"


def test_dns_is_configurable() -> None:
    out = render_daemon_json({"dns": ["8.8.8.8"]}, DaemonOptions(dns=("10.0.0.53", "10.0.1.53")))
    assert out["dns"] == ["10.0.0.53", "10.0.1.53"]


def test_data_root_is_set_only_when_asked_and_kept_otherwise() -> None:
    assert "data-root" not in render_daemon_json({}, DaemonOptions())
    kept = render_daemon_json({"data-root": "/data/docker"}, DaemonOptions())
    assert kept["data-root"] == "/data/docker"
    moved = render_daemon_json({"data-root": "/data/docker"}, DaemonOptions(data_root="/srv/d"))
    assert moved["data-root"] == "/srv/d"


def test_removed_graph_key_becomes_data_root() -> None:
    out = render_daemon_json({"graph": "/old"}, DaemonOptions())
    assert "graph" not in out
    assert out["data-root"] == "/old"


def test_input_is_not_modified() -> None:
    existing = {"log-opts": {"max-file": 3}}
    snapshot = json.dumps(existing)
    render_daemon_json(existing, DaemonOptions())
    assert json.dumps(existing) == snapshot


def test_rendering_twice_is_a_fixed_point() -> None:
    once = render_daemon_json({"log-opts": {"max-file": 2}, "x": 1}, DaemonOptions())
    assert render_daemon_json(once, DaemonOptions()) == once


def test_written_text_parses_back_to_the_same_config() -> None:
    out = render_daemon_json({"a": [1, 2]}, DaemonOptions(data_root="/srv/docker"))
    text = daemon_json_text(out)
    assert text.endswith("\n")
    assert parse_daemon_json(text) == out


def test_without_dns_the_files_own_stays() -> None:
    assert render_daemon_json({"dns": ["10.0.0.53"]}, DaemonOptions())["dns"] == ["10.0.0.53"]


def test_an_admins_log_driver_stays_with_its_options() -> None:
    existing = {"log-driver": "journald", "log-opts": {"tag": "{{.Name}}"}}
    assert render_daemon_json(existing, DaemonOptions()) == existing


def test_rotation_flags_on_a_driver_without_files_are_refused() -> None:
    with pytest.raises(UsageError, match="log-driver gelf"):
        render_daemon_json({"log-driver": "gelf"}, DaemonOptions(log_max_size="20m"))


def test_the_local_driver_gets_rotation_too_and_keeps_its_values() -> None:
    out = render_daemon_json({"log-driver": "local", "log-opts": {"max-file": "3"}},
                             DaemonOptions())
    assert out == {"log-driver": "local", "log-opts": {"max-file": "3", "max-size": "10m"}}
    given = render_daemon_json(out, DaemonOptions(log_max_file="9"))
    assert given["log-opts"]["max-file"] == "9"


def test_switching_to_local_drops_what_local_does_not_accept() -> None:
    existing = {"log-driver": "json-file", "log-opts": {"max-size": "5m", "labels": "a"}}
    out = render_daemon_json(existing, DaemonOptions(log_driver="local"))
    assert out == {"log-driver": "local", "log-opts": {"max-size": "5m", "max-file": "5"}}
