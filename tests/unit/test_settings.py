from __future__ import annotations

from pathlib import Path

import pytest
from fakes import FakeHost

from hostkit.errors import UsageError
from hostkit.facts import Facts
from hostkit.settings import SETTINGS_FILE, Settings, load_settings, render_settings_toml
from hostkit.subsystems.site_settings import SiteSettingsStep

UPDATES = {"public_port": 9443, "dns": ["10.0.0.2", "10.0.0.3"], "data_root": "/srv/docker",
           "deploy_dir": "/srv/hub"}


def test_rendered_settings_load_back_as_the_same_values(tmp_path: Path) -> None:
    host = FakeHost(tmp_path).files({SETTINGS_FILE: render_settings_toml("", UPDATES)})
    s = load_settings(host)
    assert (s.public_port, s.dns, s.data_root) == (9443, ("10.0.0.2", "10.0.0.3"), "/srv/docker")
    assert s.cert_file == "/srv/hub/certs/hostkit.crt"  # follows deploy_dir


def test_keys_set_by_hand_are_kept_and_rendering_is_stable() -> None:
    first = render_settings_toml('users = 40\nserver_name = "hub.example.edu"\npublic_port = 1\n', UPDATES)
    assert "users = 40" in first
    assert 'server_name = "hub.example.edu"' in first
    assert "public_port = 9443" in first
    assert render_settings_toml(first, UPDATES) == first


def test_malformed_settings_file_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match=SETTINGS_FILE):
        render_settings_toml("users = \n", UPDATES)


def test_settings_step_writes_once_with_a_backup_then_is_ok(tmp_path: Path) -> None:
    host = FakeHost(tmp_path).files({SETTINGS_FILE: "users = 40\n"})
    step = SiteSettingsStep(UPDATES)
    changes = step.check(host, Facts(host))
    assert len(changes) == 1
    assert "+public_port = 9443" in changes[0].diff
    step.apply(host, Facts(host), changes)
    assert step.check(host, Facts(host)) == []
    backups = list(host.path("/etc/hostkit").glob("hostkit.toml.hostkit-*.bak"))
    assert [b.read_text() for b in backups] == ["users = 40\n"]


def test_explicit_certificate_paths_survive_a_new_deploy_dir() -> None:
    s = Settings(cert_file="/etc/pki/hub.crt").with_overrides(deploy_dir="/srv/hub")
    assert (s.cert_file, s.key_file) == ("/etc/pki/hub.crt", "/srv/hub/certs/hostkit.key")


def test_the_command_line_defaults_are_the_settings_defaults() -> None:
    """One source of every default: bootstrap's options and the stack's read Settings."""
    from hostkit.bootstrap import BootstrapOptions
    from hostkit.cli_bootstrap import StackOptions
    from hostkit.daemon_config import DEFAULT_DNS, DEFAULT_LOG_MAX_FILE, DEFAULT_LOG_MAX_SIZE
    from hostkit.settings import DEFAULTS
    from hostkit.stack import DEFAULT_DIR, DEFAULT_PORT

    assert BootstrapOptions().port == DEFAULTS.public_port
    # bootstrap keeps what daemon.json says; where it says nothing, these are written
    written = (DEFAULT_DNS, DEFAULT_LOG_MAX_SIZE, DEFAULT_LOG_MAX_FILE)
    assert written == (DEFAULTS.dns, DEFAULTS.log_max_size, DEFAULTS.log_max_file)
    assert StackOptions().directory == DEFAULT_DIR == DEFAULTS.deploy_dir
    assert DEFAULTS.public_port == DEFAULT_PORT


def test_admission_boots_two_servers_per_core_and_admits_as_many_as_memory_holds() -> None:
    from hostkit.settings import admission_settings

    gib = 2**30
    small = admission_settings(2, 24 * gib)  # the 2-core, 24 GiB machine of bench/spawn.py
    assert small["HOSTKIT_SPAWN_SLOTS"] == "4"
    assert small["HOSTKIT_ACTIVE_SERVER_LIMIT"] == "44"  # (24 - 2 reserved) / 0.5 GiB
    assert small["HOSTKIT_SPAWN_QUEUE_LIMIT"] == small["HOSTKIT_ACTIVE_SERVER_LIMIT"]
    # the last of 44 in a queue served four at a time still starts before the timeout
    assert int(small["HOSTKIT_START_TIMEOUT"]) >= 11 * 30
    tiny = admission_settings(1, 2 * gib)  # no memory to spare: still the boot slots
    assert tiny["HOSTKIT_ACTIVE_SERVER_LIMIT"] == "2"  # one per slot at least
    assert tiny["HOSTKIT_START_TIMEOUT"] == "600"  # never below the old fixed value
