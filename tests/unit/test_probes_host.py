"""Probes against a fake host: recorded docker info, daemon.json and unit files on a temp root."""

from __future__ import annotations

from typing import Callable

from fakes import FakeDocker, FakeHost, recorded_docker_info

from hostkit.errors import HostkitError
from hostkit.host import CommandResult
from hostkit.results import CheckResult, Status

RunCheck = Callable[..., CheckResult]


def test_malformed_daemon_json_fails_with_line_and_column(fake_host: FakeHost, run_check: RunCheck) -> None:
    fake_host.files({"/etc/docker/daemon.json": '{\n  "dns": ["8.8.8.8"\n}\n'})
    r = run_check("daemon.syntax", fake_host)
    assert r.status is Status.FAIL
    assert r.summary.startswith("/etc/docker/daemon.json:3:1: ")
    # the checks that need the parsed file step aside instead of repeating the failure
    assert run_check("daemon.types", fake_host).status is Status.SKIP


def test_numeric_log_opts_fail_the_types_check(fake_host: FakeHost, run_check: RunCheck) -> None:
    fake_host.files(
        {
            "/etc/docker/daemon.json": '{"log-driver": "json-file", '
            '"log-opts": {"max-size": "10m", "max-file": 5}}'
        }
    )
    r = run_check("daemon.types", fake_host)
    assert r.status is Status.FAIL
    assert "log-opts.max-file must be a string" in r.summary
    assert '"max-file": "5"' in r.hint


def test_seed_daemon_json_passes_logging_and_dns(fake_host: FakeHost, run_check: RunCheck) -> None:
    fake_host.files(
        {
            "/etc/docker/daemon.json": '{"log-driver": "json-file", "log-opts": '
            '{"max-size": "10m", "max-file": "5"}, "dns": ["8.8.8.8"]}'
        }
    )
    assert run_check("daemon.logging", fake_host).status is Status.PASS
    assert run_check("daemon.dns", fake_host).status is Status.PASS


def test_missing_daemon_json_means_unrotated_logs(fake_host: FakeHost, run_check: RunCheck) -> None:
    r = run_check("daemon.logging", fake_host)
    assert r.status is Status.FAIL
    assert r.fix_step == "daemon-json"
    assert run_check("daemon.syntax", fake_host).status is Status.WARN


def test_dns_differing_from_settings_warns(fake_host: FakeHost, run_check: RunCheck) -> None:
    fake_host.files({"/etc/docker/daemon.json": '{"dns": ["1.1.1.1"]}'})
    r = run_check("daemon.dns", fake_host, dns=("10.0.0.2",))
    assert r.status is Status.WARN
    assert r.expected == "['10.0.0.2']"


def test_unit_flag_also_in_daemon_json_fails(fake_host: FakeHost, run_check: RunCheck) -> None:
    fake_host.files(
        {
            "/proc/1/comm": "systemd\n",
            "/lib/systemd/system/docker.service": (
                "[Service]\nExecStart=/usr/bin/dockerd -H fd:// --containerd=/run/c.sock\n"
            ),
            "/etc/docker/daemon.json": '{"hosts": ["unix:///var/run/docker.sock"]}',
        }
    )
    r = run_check("daemon.unit-conflicts", fake_host)
    assert r.status is Status.FAIL
    assert "-H from /lib/systemd/system/docker.service (daemon.json hosts)" in r.summary


def test_drop_in_that_resets_execstart_clears_the_conflict(fake_host: FakeHost, run_check: RunCheck) -> None:
    fake_host.files(
        {
            "/proc/1/comm": "systemd\n",
            "/lib/systemd/system/docker.service": "[Service]\nExecStart=/usr/bin/dockerd -H fd://\n",
            "/etc/systemd/system/docker.service.d/hostkit.conf": (
                "[Service]\nExecStart=\nExecStart=/usr/bin/dockerd\n"
            ),
            "/etc/docker/daemon.json": '{"hosts": ["unix:///var/run/docker.sock"]}',
        }
    )
    assert run_check("daemon.unit-conflicts", fake_host).status is Status.PASS


def test_data_root_mismatch_names_the_bootstrap_fix(fake_host: FakeHost, run_check: RunCheck) -> None:
    r = run_check("daemon.data-root", fake_host, data_root="/srv/docker")
    assert r.status is Status.FAIL
    assert r.actual == "/var/lib/docker"
    assert r.hint == "hostkit bootstrap --data-root /srv/docker"


def test_docker_info_warnings_are_mapped_to_fixes(tmp_path, run_check: RunCheck) -> None:
    info = recorded_docker_info()
    info["Warnings"] = [
        "WARNING: bridge-nf-call-iptables is disabled",
        "WARNING: API is accessible on http://0.0.0.0:2375 without encryption.",
    ]
    host = FakeHost(tmp_path, docker=FakeDocker(info))
    r = run_check("docker.info-warnings", host)
    assert r.status is Status.WARN  # catalogue severity is warn
    assert "modprobe br_netfilter" in r.hint
    assert "--tlsverify" in r.hint


def test_old_docker_fails_version_check(tmp_path, run_check: RunCheck) -> None:
    info = recorded_docker_info()
    info["ServerVersion"] = "19.03.15"
    r = run_check("docker.version", FakeHost(tmp_path, docker=FakeDocker(info)))
    assert r.status is Status.FAIL
    assert r.expected == ">= 20.10"


def test_docker_below_28_3_3_with_firewalld_running_warns_of_cve(tmp_path, run_check: RunCheck) -> None:
    host = FakeHost(
        tmp_path,
        binaries=("docker", "dockerd", "firewall-cmd"),
        commands={("firewall-cmd", "--state"): "running\n"},
    )
    r = run_check("docker.version", host)
    assert r.status is Status.WARN
    assert "CVE-2025-54388" in r.summary


def test_daemon_that_does_not_answer_is_a_failure_with_the_reason(tmp_path, run_check: RunCheck) -> None:
    host = FakeHost(
        tmp_path,
        docker_error=HostkitError("the Docker daemon does not answer: timed out", "systemctl start docker"),
    )
    r = run_check("docker.daemon", host)
    assert r.status is Status.FAIL
    assert "timed out" in r.summary
    # checks that need the daemon report the cause instead of crashing
    assert run_check("storage.driver", host).status is Status.ERROR


def test_missing_docker_binary_fails_install_check(tmp_path, run_check: RunCheck) -> None:
    r = run_check("docker.installed", FakeHost(tmp_path, binaries=()))
    assert r.status is Status.FAIL
    assert r.summary == "docker and dockerd not found on PATH"


def test_no_compose_at_all_fails(tmp_path, run_check: RunCheck) -> None:
    host = FakeHost(
        tmp_path,
        commands={
            ("docker", "compose", "version", "--short"): CommandResult(
                ("docker",), 1, "", "not a docker command"
            )
        },
    )
    assert run_check("docker.compose", host).status is Status.FAIL


def test_compose_v1_is_accepted(tmp_path, run_check: RunCheck) -> None:
    host = FakeHost(
        tmp_path,
        binaries=("docker", "docker-compose"),
        commands={
            ("docker", "compose", "version", "--short"): CommandResult(("docker",), 1, "", "no"),
            ("docker-compose", "version", "--short"): "1.29.2\n",
        },
    )
    r = run_check("docker.compose", host)
    assert r.status is Status.PASS
    assert r.summary == "docker-compose 1.29.2 (v1)"


def test_docker0_in_trusted_zone_fails_on_modern_docker(tmp_path, run_check: RunCheck) -> None:
    host = FakeHost(
        tmp_path,
        binaries=("docker", "firewall-cmd"),
        commands={
            ("firewall-cmd", "--state"): "running\n",
            ("firewall-cmd", "--get-zone-of-interface=docker0"): "trusted\n",
        },
    )
    r = run_check("firewall.docker0-zone", host)
    assert r.status is Status.FAIL
    assert "ZONE_CONFLICT" in r.summary
    assert "--remove-interface=docker0" in r.hint


def test_docker0_in_docker_zone_passes(tmp_path, run_check: RunCheck) -> None:
    host = FakeHost(
        tmp_path,
        binaries=("docker", "firewall-cmd"),
        commands={
            ("firewall-cmd", "--state"): "running\n",
            ("firewall-cmd", "--get-zone-of-interface=docker0"): "docker\n",
        },
    )
    assert run_check("firewall.docker0-zone", host).status is Status.PASS


def test_firewall_checks_skip_when_firewalld_is_not_running(tmp_path, run_check: RunCheck) -> None:
    host = FakeHost(
        tmp_path,
        binaries=("docker", "firewall-cmd"),
        commands={("firewall-cmd", "--state"): CommandResult(("firewall-cmd",), 252, "not running\n", "")},
    )
    r = run_check("firewall.docker0-zone", host)
    assert r.status is Status.SKIP
    assert r.summary == "firewalld not running: nothing to check"


def test_public_port_missing_from_active_zone_warns(tmp_path, run_check: RunCheck) -> None:
    host = FakeHost(
        tmp_path,
        binaries=("docker", "firewall-cmd"),
        commands={
            ("firewall-cmd", "--state"): "running\n",
            ("firewall-cmd", "--get-default-zone"): "public\n",
            ("firewall-cmd", "--zone=public", "--list-ports"): "22/tcp\n",
        },
    )
    r = run_check("firewall.public-port", host, public_port=9443)
    assert r.status is Status.WARN
    assert "--add-port=9443/tcp" in r.hint


def test_ip_forward_off_fails(fake_host: FakeHost, run_check: RunCheck) -> None:
    fake_host.files({"/proc/sys/net/ipv4/ip_forward": "0\n"})
    assert run_check("net.ip-forward", fake_host).status is Status.FAIL


def test_systemd_resolved_stub_without_daemon_dns_fails(fake_host: FakeHost, run_check: RunCheck) -> None:
    fake_host.files({"/etc/resolv.conf": "nameserver 127.0.0.53\noptions edns0\n"})
    r = run_check("dns.upstreams", fake_host)
    assert r.status is Status.FAIL
    assert "127.0.0.53" in r.summary


def test_resources_short_for_users_warns(fake_host: FakeHost, run_check: RunCheck) -> None:
    r = run_check("host.resources", fake_host, users=10_000)
    assert r.status is Status.WARN
    assert "for 10000 users" in r.expected


def test_unknown_distro_fails_with_what_was_seen(fake_host: FakeHost, run_check: RunCheck) -> None:
    fake_host.files({"/etc/os-release": "ID=arch\nNAME=Arch\n"})
    r = run_check("host.distro", fake_host)
    assert r.status is Status.FAIL
    assert r.summary == "unsupported: saw ID=arch VERSION_ID=?"


def test_not_root_warns_and_root_only_checks_skip(tmp_path, run_check: RunCheck) -> None:
    host = FakeHost(tmp_path, root_user=False)
    assert run_check("host.root", host).status is Status.WARN
    assert run_check("storage.container-logs", host).status is Status.SKIP


def test_oversize_container_log_warns(fake_host: FakeHost, run_check: RunCheck) -> None:
    log = fake_host.path("/var/lib/docker/containers/abcdef0123456789/abcdef0123456789-json.log")
    log.parent.mkdir(parents=True)
    with log.open("wb") as fh:
        fh.truncate(2 * 1024 * 1024)  # sparse: 2 MiB apparent size, no disk used
    r = run_check("storage.container-logs", fake_host, max_container_log_mib=1)
    assert r.status is Status.WARN
    assert "abcdef012345 2 MiB" in r.summary


def test_storage_without_d_type_fails(tmp_path, run_check: RunCheck) -> None:
    info = recorded_docker_info()
    info["DriverStatus"] = [["Backing Filesystem", "xfs"], ["Supports d_type", "false"]]
    r = run_check("storage.driver", FakeHost(tmp_path, docker=FakeDocker(info)))
    assert r.status is Status.FAIL
    assert "ftype=1" in r.hint


def test_unreadable_daemon_json_is_an_error_result_naming_the_file(fake_host: FakeHost,
                                                                   run_check: RunCheck) -> None:
    fake_host.path("/etc/docker/daemon.json").mkdir(parents=True)  # a directory where a file should be
    r = run_check("daemon.syntax", fake_host)
    assert r.status is Status.ERROR
    assert r.summary == "/etc/docker/daemon.json: is a directory"


def test_facts_summary_reports_errors_per_fact_instead_of_failing(tmp_path) -> None:
    from hostkit.facts import Facts

    host = FakeHost(tmp_path, docker_error=HostkitError("the Docker daemon does not answer"))
    host.files({"/etc/os-release": "ID=rocky\nVERSION_ID=9.4\nPRETTY_NAME='Rocky Linux 9.4'\n",
                "/proc/1/comm": "systemd\n"})
    summary = Facts(host).summary()
    assert summary["distro"]["family"] == "rhel"
    assert summary["init_system"] == "systemd"
    assert summary["docker_version"] == {"error": "the Docker daemon does not answer"}


def test_resources_count_disk_for_user_volumes(fake_host: FakeHost, run_check: RunCheck) -> None:
    r = run_check("host.resources", fake_host, users=1, mem_per_user_gib=0, disk_per_user_gib=10**6)
    assert r.status is Status.WARN
    assert "GiB disk at /var/lib/docker" in r.actual


def test_volume_left_on_the_old_root_fails(tmp_path, run_check: RunCheck) -> None:
    from fakes import FakeContainer

    docker = FakeDocker()
    docker.containers.items = [
        FakeContainer("db", {"Names": ["/db"], "Mounts": [{"Type": "volume", "Name": "pgdata",
                                         "Source": "/var/lib/docker/volumes/pgdata/_data"}]}),
        FakeContainer("web", {"Names": ["/web"], "Mounts": [{"Type": "bind", "Source": "/etc/nginx"}]}),
    ]
    info = recorded_docker_info()
    info["DockerRootDir"] = "/srv/docker"
    docker._info = info
    r = run_check("storage.volume-sources", FakeHost(tmp_path, docker=docker))
    assert r.status is Status.FAIL
    assert r.summary == ("1 volume mount(s) outside /srv/docker/: "
                         "db: pgdata at /var/lib/docker/volumes/pgdata/_data")


def test_volumes_under_the_root_pass(tmp_path, run_check: RunCheck) -> None:
    from fakes import FakeContainer

    docker = FakeDocker()
    docker.containers.items = [FakeContainer("db", {"Mounts": [
        {"Type": "volume", "Name": "v", "Source": "/var/lib/docker/volumes/v/_data"}]})]
    assert run_check("storage.volume-sources", FakeHost(tmp_path, docker=docker)).status is Status.PASS


def test_unit_file_not_in_use_without_systemd_is_skipped(fake_host: FakeHost, run_check: RunCheck) -> None:
    fake_host.files({
        "/proc/1/comm": "init\n",
        "/lib/systemd/system/docker.service": "[Service]\nExecStart=/usr/bin/dockerd -H fd://\n",
        "/etc/docker/daemon.json": '{"hosts": ["unix:///var/run/docker.sock"]}',
    })
    assert run_check("daemon.unit-conflicts", fake_host).status is Status.SKIP


def test_journald_logging_is_rotated_by_the_journal_not_failed(
        fake_host: FakeHost, run_check: RunCheck) -> None:
    fake_host.files({"/etc/docker/daemon.json": '{"log-driver": "journald"}'})
    r = run_check("daemon.logging", fake_host)
    assert r.status is Status.PASS
    assert "journal" in r.summary
    fake_host.files({"/etc/docker/daemon.json": '{"log-driver": "some/plugin:1"}'})
    assert run_check("daemon.logging", fake_host).status is Status.WARN


def test_a_flag_in_docker_opts_is_a_conflict_named_with_its_file(
        fake_host: FakeHost, run_check: RunCheck) -> None:
    fake_host.files({
        "/proc/1/comm": "systemd\n",
        "/lib/systemd/system/docker.service": (
            "[Service]\nEnvironmentFile=-/etc/default/docker\n"
            "ExecStart=/usr/sbin/dockerd -H fd:// $DOCKER_OPTS\n"),
        "/etc/default/docker": 'DOCKER_OPTS="--dns 1.1.1.1"\n',
        "/etc/docker/daemon.json": '{"dns": ["10.0.0.53"]}',
    })
    r = run_check("daemon.unit-conflicts", fake_host)
    assert r.status is Status.FAIL
    assert "--dns from /etc/default/docker (DOCKER_OPTS)" in r.summary
    assert r.hint == "dockerd refuses to start; remove the flag from /etc/default/docker"


def test_a_bom_fails_daemon_syntax_on_docker_20_10(fake_host: FakeHost, run_check: RunCheck) -> None:
    fake_host.files({"/etc/docker/daemon.json": '\ufeff{"dns": ["8.8.8.8"]}'})
    r = run_check("daemon.syntax", fake_host)
    assert r.status is Status.FAIL
    assert "byte order mark" in r.summary


def test_the_upstreams_behind_the_resolved_stub_are_asked(tmp_path) -> None:
    from hostkit.subsystems.dns import host_upstreams

    host = FakeHost(tmp_path, binaries=("resolvectl",), commands={
        ("resolvectl", "dns"): "Global: 1.1.1.1#cloudflare-dns.com\nLink 2 (eth0): 10.0.0.1\n"})
    host.files({"/etc/resolv.conf": "nameserver 127.0.0.53\nnameserver 10.0.0.1\n"})
    assert host_upstreams(host) == ["1.1.1.1", "10.0.0.1"]
