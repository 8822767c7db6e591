"""A cluster worker's guard: the nftables table and its boot unit, rendered and converged."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeHost

from hostkit.errors import HostkitError
from hostkit.facts import Facts
from hostkit.host import CommandResult
from hostkit.steps import CHANGED, OK, Plan
from hostkit.subsystems import node_guard
from hostkit.subsystems.node_guard import RULES_FILE, TABLE, UNIT, UNIT_FILE, NodeGuardStep


def test_the_table_filters_only_what_comes_in_from_docker_gwbridge() -> None:
    script = node_guard.render_node_guard()
    # replaced in one transaction: created if missing, deleted, made again
    assert script.index(f"table inet {TABLE} {{}}") < script.index(f"delete table inet {TABLE}")
    for chain in ("forward", "input"):
        body = script.split(f"  chain {chain} {{\n")[1].split("\n  }\n")[0]
        rules = [line.strip() for line in body.splitlines()]
        assert rules[0].startswith(f"type filter hook {chain} priority -10; policy accept")
        assert rules[1] == 'iifname != "docker_gwbridge" accept'  # nothing else is touched
        assert rules[2] == "ct state established,related accept"  # answers still come back
        assert "drop" in rules[-1]
    assert "ip daddr 169.254.0.0/16 counter drop" in script
    assert "tcp dport { 2377, 7946 } counter drop" in script
    assert "udp dport { 4789, 7946 } counter drop" in script
    assert "ct status dnat counter drop" in script
    assert "th dport 53 accept" in script  # name lookups to a resolver on the node itself


def test_the_unit_loads_the_table_at_boot_and_after_firewalld_starts() -> None:
    unit = node_guard.render_guard_unit("/usr/sbin/nft")
    assert f"ExecStart=/usr/sbin/nft -f {RULES_FILE}" in unit
    assert "PartOf=firewalld.service" in unit
    assert "WantedBy=multi-user.target firewalld.service" in unit
    assert "Type=oneshot" in unit
    assert "RemainAfterExit=yes" in unit


class GuardHost(FakeHost):
    """nft and systemctl as a worker answers them; `loaded` is the kernel's table."""

    def __init__(self, root: Path, *, systemd: bool = True) -> None:
        super().__init__(root, binaries=("nft", "systemctl", "docker"))
        self.loaded = False
        self.enabled = False
        self.systemd = systemd
        self.files({"/proc/1/comm": "systemd\n" if systemd else "init\n"})

    def run(self, argv: Sequence[str], **kwargs: Any) -> CommandResult:
        key = tuple(str(a) for a in argv)
        self.calls.append(key)
        if key[:4] == ("nft", "list", "table", "inet"):
            text = node_guard.render_node_guard() if self.loaded else ""
            return CommandResult(key, 0 if self.loaded else 1, text, "" if self.loaded else "No such file")
        if key[0].endswith("nft") and key[1] == "-f":
            self.loaded = self.path(key[2]).exists()
            return CommandResult(key, 0, "", "")
        if key[:3] == ("systemctl", "is-enabled", "--quiet"):
            return CommandResult(key, 0 if self.enabled else 1, "", "")
        if key[:2] == ("systemctl", "enable"):
            self.enabled = True
        return CommandResult(key, 0, "", "")


def test_the_step_writes_enables_and_loads_then_has_nothing_to_do(tmp_path: Path) -> None:
    host = GuardHost(tmp_path)
    _planned, result = Plan([NodeGuardStep()]).run(host, Facts(host))
    assert result.steps[0].status == CHANGED, result
    assert host.read_text(RULES_FILE) == node_guard.render_node_guard()
    assert "ExecStart=/usr/bin/nft -f" in host.read_text(UNIT_FILE)
    assert host.enabled
    assert host.loaded
    assert ("systemctl", "enable", UNIT) in host.calls
    _planned, again = Plan([NodeGuardStep()]).run(host, Facts(host))
    assert again.steps[0].status == OK
    # the table gone (a flush by hand, a reboot without the unit): loaded again, files kept
    host.loaded = False
    changes = [c.summary for c in NodeGuardStep().check(host, Facts(host))]
    assert changes == [f"load the nftables table {TABLE}"]


def test_without_nft_the_step_says_what_to_install(tmp_path: Path) -> None:
    host = FakeHost(tmp_path, binaries=("docker",))
    with pytest.raises(HostkitError, match="nft is not installed") as err:
        NodeGuardStep().check(host, Facts(host))
    assert "nftables" in err.value.hint


def _probe(host: FakeHost) -> Any:
    from hostkit.doctor import ProbeContext
    from hostkit.probes import PROBES
    from hostkit.settings import Settings

    return PROBES["node_guard"](ProbeContext(host, Facts(host), Settings()))


def test_the_doctor_checks_the_table_on_a_worker_only(tmp_path: Path) -> None:
    from hostkit.results import Status

    worker = json.dumps({"LocalNodeState": "active", "ControlAvailable": False})
    host = GuardHost(tmp_path)
    host.commands[("docker", "info", "--format", "{{json .Swarm}}")] = worker
    original = host.run

    def run(argv: Sequence[str], **kwargs: Any) -> CommandResult:
        key = tuple(str(a) for a in argv)
        if key in host.commands:
            return CommandResult(key, 0, str(host.commands[key]), "")
        return original(argv, **kwargs)

    host.run = run  # type: ignore[method-assign]
    missing = _probe(host)
    assert missing.status is Status.FAIL
    assert UNIT in missing.hint
    host.loaded = True
    assert _probe(host).status is Status.PASS
    host.commands[("docker", "info", "--format", "{{json .Swarm}}")] = json.dumps(
        {"LocalNodeState": "active", "ControlAvailable": True})
    assert _probe(host).status is Status.SKIP  # the manager: no users' tasks
    host.commands[("docker", "info", "--format", "{{json .Swarm}}")] = json.dumps(
        {"LocalNodeState": "inactive"})
    assert _probe(host).status is Status.SKIP  # a single host: its own guard is the stack's
