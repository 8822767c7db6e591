"""firewalld asked over D-Bus (busctl, milliseconds) with firewall-cmd as the fallback, once per run."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from fakes import FakeHost

from hostkit.catalogue import load_catalogue, select
from hostkit.doctor import ProbeContext, run_checks
from hostkit.facts import Facts
from hostkit.host import CommandResult
from hostkit.results import Status
from hostkit.settings import Settings

FW = ("org.fedoraproject.FirewallD1", "/org/fedoraproject/FirewallD1")
STATE = ("busctl", "get-property", *FW, "org.fedoraproject.FirewallD1", "state")
DEFAULT_ZONE = ("busctl", "call", *FW, "org.fedoraproject.FirewallD1", "getDefaultZone")
ZONE = "org.fedoraproject.FirewallD1.zone"
DOCKER0_ZONE = ("busctl", "call", *FW, ZONE, "getZoneOfInterface", "s", "docker0")
PORTS = ("busctl", "call", *FW, ZONE, "getPorts", "s", "public")
NO_BUS = "Failed to connect to bus: No such file or directory\n"


def bus_host(tmp_path: Path) -> FakeHost:
    commands = {
        STATE: 's "RUNNING"\n',
        DEFAULT_ZONE: 's "public"\n',
        DOCKER0_ZONE: 's "docker"\n',
        PORTS: 'aas 2 2 "9090" "tcp" 2 "53" "udp"\n',
    }
    return FakeHost(tmp_path, binaries=("docker", "dockerd", "busctl", "firewall-cmd"), commands=commands)


def firewall_results(host: FakeHost, **settings: object) -> dict[str, object]:
    specs = select(load_catalogue(), ["firewall"], None)
    results = run_checks(specs, ProbeContext(host, Facts(host), Settings(**settings)))
    return {r.id: r for r in results}


def test_firewall_checks_ask_over_dbus_and_never_start_firewall_cmd(tmp_path: Path) -> None:
    host = bus_host(tmp_path)
    by_id = firewall_results(host, public_port=9090)
    assert by_id["firewall.running"].status is Status.PASS
    assert by_id["firewall.docker0-zone"].status is Status.PASS
    assert by_id["firewall.public-port"].status is Status.PASS, by_id["firewall.public-port"].summary
    assert [c for c in host.calls if c[0] == "firewall-cmd"] == []


def test_each_question_is_asked_once_per_run(tmp_path: Path) -> None:
    host = bus_host(tmp_path)
    firewall_results(host, public_port=9443)
    assert [c for c, n in Counter(host.calls).items() if n > 1] == []


def test_docker0_in_trusted_seen_over_dbus_fails(tmp_path: Path) -> None:
    host = FakeHost(tmp_path, binaries=("docker", "busctl", "firewall-cmd"), commands={
        STATE: 's "RUNNING"\n', DOCKER0_ZONE: 's "trusted"\n'})
    assert firewall_results(host)["firewall.docker0-zone"].status is Status.FAIL


def test_port_missing_from_the_default_zone_over_dbus_warns(tmp_path: Path) -> None:
    r = firewall_results(bus_host(tmp_path), public_port=9443)["firewall.public-port"]
    assert r.status is Status.WARN
    assert r.actual == "9090/tcp 53/udp"


def test_firewalld_not_on_the_bus_is_not_running(tmp_path: Path) -> None:
    gone = CommandResult(STATE, 1, "", "Failed to get property state on interface org.fedoraproject."
                         "FirewallD1: The name org.fedoraproject.FirewallD1 was not provided by any "
                         ".service files\n")
    host = bus_host(tmp_path)
    host.commands[STATE] = gone
    by_id = firewall_results(host)
    assert (by_id["firewall.running"].status, by_id["firewall.running"].summary) == (
        Status.SKIP, "firewalld not running")
    assert [c for c in host.calls if c[0] == "firewall-cmd"] == []


def test_without_a_system_bus_firewall_cmd_answers(tmp_path: Path) -> None:
    host = bus_host(tmp_path)
    host.commands[STATE] = CommandResult(STATE, 1, "", NO_BUS)
    host.commands[("firewall-cmd", "--state")] = "running\n"
    host.commands[("firewall-cmd", "--get-zone-of-interface=docker0")] = "docker\n"
    assert firewall_results(host)["firewall.docker0-zone"].status is Status.PASS
    assert ("firewall-cmd", "--get-zone-of-interface=docker0") in host.calls
