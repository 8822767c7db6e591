"""`hostkit cluster`: reading the swarm, the firewall rules for the cluster's addresses, joining,
and taking a node out, against a host that answers like Docker and firewalld do."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeHost

from hostkit.errors import HostkitError, UsageError
from hostkit.facts import Facts
from hostkit.host import CommandResult
from hostkit.steps import CHANGED, OK, Plan
from hostkit.subsystems import swarm

MANAGER_INFO = json.dumps({
    "NodeID": "mgr1", "NodeAddr": "172.20.0.2", "LocalNodeState": "active", "ControlAvailable": True,
    "Error": "", "RemoteManagers": [{"NodeID": "mgr1", "Addr": "172.20.0.2:2377"}],
    "Cluster": {"ID": "c1"},
})
INACTIVE_INFO = json.dumps({"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive",
                            "ControlAvailable": False, "RemoteManagers": None})


def _node(node_id: str, hostname: str, role: str, state: str = "ready", availability: str = "active",
          addr: str = "172.20.0.3", memory: int = 8 * 2**30) -> dict[str, Any]:
    item: dict[str, Any] = {
        "ID": node_id,
        "Spec": {"Role": role, "Availability": availability, "Labels": {}},
        "Description": {"Hostname": hostname,
                        "Resources": {"NanoCPUs": 2_000_000_000, "MemoryBytes": memory}},
        "Status": {"State": state, "Addr": addr},
    }
    if role == "manager":
        item["Status"]["Addr"] = "0.0.0.0"  # noqa: S104 - what a manager reports for itself
        item["ManagerStatus"] = {"Leader": True, "Addr": "172.20.0.2:2377"}
    return item


NODES = [_node("mgr1", "manager", "manager"), _node("w1abc", "worker1", "worker", addr="172.20.0.3"),
         _node("w2def", "worker2", "worker", addr="172.20.0.4", memory=16 * 2**30)]


def _task(service_id: str, node: str, stack: str = "hk", desired: str = "running",
          memory: int = 4 * 2**30) -> dict[str, Any]:
    return {"ID": f"t-{service_id}", "ServiceID": service_id, "NodeID": node, "DesiredState": desired,
            "Status": {"State": "running"},
            "Spec": {"ContainerSpec": {"Labels": {swarm.STACK_LABEL: stack}},
                     "Resources": {"Limits": {"MemoryBytes": memory}}}}


def test_the_swarm_state_of_a_manager_and_of_a_lone_host() -> None:
    mgr = swarm.parse_swarm_info(MANAGER_INFO)
    assert (mgr.active, mgr.is_manager, mgr.node_addr, mgr.managers) == (True, True, "172.20.0.2",
                                                                          ("172.20.0.2:2377",))
    lone = swarm.parse_swarm_info(INACTIVE_INFO)
    assert (lone.active, lone.state, lone.managers) == (False, "inactive", ())


def test_status_lists_nodes_with_their_users_servers_and_uncommitted_memory() -> None:
    nodes = swarm.parse_nodes(json.dumps(NODES))
    assert [(n.hostname, n.role, n.addr) for n in nodes] == [
        ("manager", "manager", "172.20.0.2"), ("worker1", "worker", "172.20.0.3"),
        ("worker2", "worker", "172.20.0.4")]
    tasks = swarm.parse_user_tasks(json.dumps([
        _task("svcalice000000", "w1abc"), _task("svcbob00000000", "w1abc"),
        _task("svccarol000000", "w2def"),
        _task("svcold00000000", "w2def", desired="shutdown"),  # stopped: not counted
        _task("svcother000000", "w2def", stack="someone-else"),  # another stack's
    ]), "hk", {"svcalice": "jupyter-alice", "svcbob": "jupyter-bob", "svccarol": "jupyter-carol"})
    rows = {r.node.hostname: r for r in swarm.cluster_status(nodes, tasks)}
    assert rows["worker1"].servers == ("jupyter-alice", "jupyter-bob")
    assert rows["worker1"].uncommitted_bytes == 0
    assert rows["worker2"].servers == ("jupyter-carol",)
    assert rows["worker2"].uncommitted_bytes == 12 * 2**30
    assert rows["manager"].servers == ()


def test_a_node_is_found_by_hostname_or_id_prefix_and_a_wrong_name_lists_the_nodes() -> None:
    nodes = swarm.parse_nodes(json.dumps(NODES))
    assert swarm.find_node(nodes, "worker2").id == "w2def"
    assert swarm.find_node(nodes, "w1").hostname == "worker1"
    with pytest.raises(UsageError, match="no node 'worker9'") as err:
        swarm.find_node(nodes, "worker9")
    assert "worker1 (w1abc)" in err.value.hint


@pytest.mark.parametrize(("target", "expected"), [
    ("SWMTKN-1-abc-def@10.0.0.5", ("SWMTKN-1-abc-def", "10.0.0.5:2377")),
    ("SWMTKN-1-abc-def@10.0.0.5:2400", ("SWMTKN-1-abc-def", "10.0.0.5:2400")),
    ("SWMTKN-1-abc-def@hub.example.org", ("SWMTKN-1-abc-def", "hub.example.org:2377")),
])
def test_join_target_is_token_at_host(target: str, expected: tuple[str, str]) -> None:
    assert swarm.parse_join_target(target) == expected


@pytest.mark.parametrize("target", ["10.0.0.5", "abc@10.0.0.5", "SWMTKN-1-abc@", "SWMTKN-1-secret"])
def test_a_bad_join_target_is_refused_without_echoing_the_token(target: str) -> None:
    with pytest.raises(UsageError) as err:
        swarm.parse_join_target(target)
    assert "secret" not in err.value.message


def test_peers_are_addresses_or_networks() -> None:
    assert swarm.normalise_peers(["10.0.0.9", "10.0.0.0/24", "10.0.0.9/32", " 10.0.0.3 "]) == (
        "10.0.0.0/24", "10.0.0.3", "10.0.0.9")
    with pytest.raises(UsageError, match="not an address"):
        swarm.normalise_peers(["worker1"])


class FirewalldHost(FakeHost):
    """firewall-cmd with rich rules kept per layer (permanent, runtime), as firewalld does."""

    def __init__(self, root: Path, rules: Sequence[str] = ()) -> None:
        super().__init__(root, binaries=("docker", "dockerd", "firewall-cmd"))
        self.rules: dict[str, list[str]] = {"permanent": list(rules), "runtime": list(rules)}

    def run(self, argv: Sequence[str], **kwargs: Any) -> CommandResult:
        key = tuple(str(a) for a in argv)
        if key[0] != "firewall-cmd":
            return super().run(argv, **kwargs)
        self.calls.append(key)
        layer = "permanent" if "--permanent" in key else "runtime"
        last = key[-1]
        out = ""
        if last == "--state":
            out = "running"
        elif last == "--get-default-zone":
            out = "public"
        elif last == "--list-rich-rules":
            out = "\n".join(self.rules[layer])
        elif last.startswith("--add-rich-rule="):
            self.rules[layer].append(last.split("=", 1)[1])
        elif last.startswith("--remove-rich-rule="):
            self.rules[layer].remove(last.split("=", 1)[1])
        else:
            return CommandResult(key, 1, "", f"unexpected {key}")
        return CommandResult(key, 0, out + "\n", "")


def test_swarm_ports_open_to_the_cluster_only_and_a_former_peers_rules_go(tmp_path: Path) -> None:
    gone = swarm.rich_rule("10.0.0.99", "7946/tcp")
    admins_own = 'rule family="ipv4" source address="10.0.0.99" service name="ssh" accept'
    host = FirewalldHost(tmp_path, rules=[gone, admins_own])
    step = swarm.SwarmPortsStep(["10.0.0.5", "10.0.0.6"])
    _planned, result = Plan([step]).run(host, Facts(host))
    assert result.steps[0].status == CHANGED, result
    for layer in ("permanent", "runtime"):
        rules = set(host.rules[layer])
        for peer in ("10.0.0.5", "10.0.0.6"):
            assert {swarm.rich_rule(peer, p) for p in (*swarm.SWARM_PORTS, "esp")} <= rules
        assert gone not in rules
        assert admins_own in rules  # not a swarm rule: left alone
        assert len(rules) == 11
    assert 'rule family="ipv4" source address="10.0.0.5" port port="4789" protocol="udp" accept' in rules
    assert not any("--reload" in call for call in host.calls)
    _planned, again = Plan([step]).run(host, Facts(host))
    assert again.steps[0].status == OK


class SwarmHost(FakeHost):
    """Docker's swarm commands, answered from a small model of the swarm."""

    def __init__(self, root: Path, info: str, tasks_left: Sequence[int] = (0,)) -> None:
        super().__init__(root)
        self.info = info
        self.tasks_left = list(tasks_left)

    def run(self, argv: Sequence[str], **kwargs: Any) -> CommandResult:
        key = tuple(str(a) for a in argv)
        answers = {
            ("docker", "info", "--format", "{{json .Swarm}}"): self.info,
            ("docker", "service", "ls", "--filter", f"label={swarm.STACK_LABEL}=hk",
             "--format", "{{.ID}} {{.Name}}"): "svcalice jupyter-alice\nsvccarol jupyter-carol\n",
            ("docker", "service", "ps", "-q", "--no-trunc", "--filter", "desired-state=running",
             "jupyter-alice", "jupyter-carol"): "t1\nt2\n",
            ("docker", "inspect", "--type", "task", "t1", "t2"): json.dumps(
                [_task("svcalice000", "w1abc"), _task("svccarol000", "w2def")]),
        }
        if key[:4] == ("docker", "node", "ps", "w1abc"):
            self.calls.append(key)
            left = self.tasks_left.pop(0) if len(self.tasks_left) > 1 else self.tasks_left[0]
            return CommandResult(key, 0, "Running 2 minutes ago\n" * left, "")
        if key in answers:
            self.calls.append(key)
            return CommandResult(key, 0, answers[key], "")
        self.commands.setdefault(key, "")
        return super().run(argv, **kwargs)


def test_remove_stops_the_nodes_users_servers_drains_waits_and_removes(tmp_path: Path) -> None:
    host = SwarmHost(tmp_path, MANAGER_INFO, tasks_left=[2, 1, 0])
    worker1 = swarm.parse_nodes(json.dumps(NODES))[1]
    said: list[str] = []
    todo = swarm.remove_node(host, worker1, "hk", poll=0, log=said.append)
    docker_calls = [c for c in host.calls if c[:2] != ("docker", "info")]
    assert ("docker", "service", "rm", "jupyter-alice") in docker_calls  # carol is on worker2
    assert not any("jupyter-carol" in c for c in docker_calls if c[:3] == ("docker", "service", "rm"))
    drain = docker_calls.index(("docker", "node", "update", "--availability", "drain", "w1abc"))
    assert docker_calls.index(("docker", "service", "rm", "jupyter-alice")) < drain
    assert docker_calls[-1] == ("docker", "node", "rm", "--force", "w1abc")
    assert sum(1 for c in docker_calls if c[:3] == ("docker", "node", "ps")) == 3
    assert "docker swarm leave" in todo
    assert any("waiting for 2 task(s)" in line for line in said)


def test_remove_refuses_the_manager(tmp_path: Path) -> None:
    host = SwarmHost(tmp_path, MANAGER_INFO)
    manager = swarm.parse_nodes(json.dumps(NODES))[0]
    with pytest.raises(UsageError, match="is a manager"):
        swarm.remove_node(host, manager, "hk", poll=0)
    assert not any(c[:3] == ("docker", "node", "update") for c in host.calls)


def test_init_on_a_worker_of_another_swarm_is_refused(tmp_path: Path) -> None:
    worker_info = json.dumps({"LocalNodeState": "active", "ControlAvailable": False,
                              "RemoteManagers": [{"Addr": "10.9.9.9:2377"}]})
    host = SwarmHost(tmp_path, worker_info)
    with pytest.raises(HostkitError, match="worker of another swarm"):
        swarm.SwarmInitStep("10.0.0.5").check(host, Facts(host))
    with pytest.raises(HostkitError, match=r"already in a swarm managed by 10\.9\.9\.9:2377"):
        swarm.SwarmJoinStep("SWMTKN-1-x", "10.0.0.5:2377").check(host, Facts(host))


def test_init_and_join_change_only_a_lone_host(tmp_path: Path) -> None:
    lone = SwarmHost(tmp_path, INACTIVE_INFO)
    assert [c.summary for c in swarm.SwarmInitStep("10.0.0.5").check(lone, Facts(lone))] == [
        "create a swarm advertised on 10.0.0.5"]
    mgr = SwarmHost(tmp_path, MANAGER_INFO)
    assert swarm.SwarmInitStep("10.0.0.5").check(mgr, Facts(mgr)) == []


def test_a_docker_with_live_restore_is_refused_before_init_or_join(tmp_path: Path) -> None:
    lone = SwarmHost(tmp_path, INACTIVE_INFO)
    lone.commands[("docker", "info", "--format", "{{.LiveRestoreEnabled}}")] = "true\n"
    for step in (swarm.SwarmInitStep("10.0.0.5"), swarm.SwarmJoinStep("SWMTKN-1-x", "10.0.0.5:2377")):
        with pytest.raises(HostkitError, match="live-restore") as err:
            step.check(lone, Facts(lone))
        assert "daemon.json" in err.value.hint


def test_a_worker_takes_bootstraps_host_steps_but_opens_no_public_port(tmp_path: Path) -> None:
    from bootstrap_sim import SimHost

    from hostkit.bootstrap import BootstrapOptions, bootstrap_steps

    sim = SimHost(tmp_path)
    worker, _ = bootstrap_steps(BootstrapOptions(port=443), {}, public_port=False)
    manager, _ = bootstrap_steps(BootstrapOptions(port=443), {})
    assert [s.name for s in worker] == [s.name for s in manager]  # Docker, data-root, daemon.json...

    def firewall_changes(steps: list[Any]) -> list[str]:
        step = next(s for s in steps if s.name == "firewalld")
        return [c.summary for c in step.check(sim, Facts(sim))]

    assert any("443/tcp" in c for c in firewall_changes(manager))
    assert not any("443" in c for c in firewall_changes(worker))


def test_a_single_host_bridge_network_is_not_silently_replaced(tmp_path: Path) -> None:
    host = FakeHost(tmp_path, {("docker", "network", "inspect", "hk-net"): json.dumps(
        [{"Driver": "bridge", "Options": {}, "Attachable": False}])})
    with pytest.raises(HostkitError, match="bridge network") as err:
        swarm.OverlayNetworkStep("hk-net").check(host, Facts(host))
    assert "hostkit stack down" in err.value.hint
    missing = FakeHost(tmp_path, {("docker", "network", "inspect", "hk-net"): CommandResult((), 1, "", "")})
    assert [c.summary for c in swarm.OverlayNetworkStep("hk-net").check(missing, Facts(missing))] == [
        "create the overlay network hk-net (encrypted, attachable)"]


def test_the_host_pipes_one_command_into_another_with_progress(tmp_path: Path) -> None:
    from hostkit.host import LocalHost

    seen: list[int] = []
    sink = tmp_path / "out"
    carried = LocalHost().pipe(["head", "-c", "3000000", "/dev/zero"], ["sh", "-c", f"cat > {sink}"],
                               on_bytes=seen.append, every=1_000_000)
    assert carried == 3_000_000 == sink.stat().st_size
    assert seen[-1] == 3_000_000
    assert len(seen) >= 3
    with pytest.raises(HostkitError, match="exit 3: no room"):
        LocalHost().pipe(["head", "-c", "10", "/dev/zero"],
                         ["sh", "-c", "cat >/dev/null; echo no room >&2; exit 3"])
    with pytest.raises(HostkitError, match="no-such-image"):
        LocalHost().pipe(["sh", "-c", "echo no-such-image >&2; exit 1"], ["cat"])


class ClusterHost(SwarmHost):
    """A manager whose nodes answer ssh and TCP as a table says."""

    def __init__(self, root: Path, closed: dict[tuple[str, int], str], remote_clock: float = 0.0,
                 images: dict[str, str] | None = None) -> None:
        super().__init__(root, MANAGER_INFO)
        self.binaries.add("ssh")
        self.closed, self.remote_clock = closed, remote_clock
        self.images = images or {}

    def tcp_connect(self, address: str, port: int, timeout: float = 3.0) -> str:
        return self.closed.get((address, port), "")

    def run(self, argv: Sequence[str], **kwargs: Any) -> CommandResult:
        key = tuple(str(a) for a in argv)
        if key[:3] == ("docker", "node", "ls"):
            return CommandResult(key, 0, "mgr1\nw1abc\nw2def\n", "")
        if key[:3] == ("docker", "node", "inspect"):
            return CommandResult(key, 0, json.dumps(NODES), "")
        if key[:4] == ("docker", "image", "inspect", "--format"):
            return CommandResult(key, 0, "sha256:good\n", "")
        if key[0] == "ssh":
            return self._on_node(key)
        return super().run(argv, **kwargs)

    def _on_node(self, key: tuple[str, ...]) -> CommandResult:
        addr, command = key[-2].split("@")[1], key[-1]
        if command.startswith("date"):
            return CommandResult(key, 0, f"{time.time() + self.remote_clock}\n", "")
        if command.startswith("docker image inspect"):
            image = self.images.get(addr, "sha256:good")
            return CommandResult(key, 0 if image else 1, image + "\n", "")
        port = int(command.split("/")[-1].rstrip("'"))
        why = self.closed.get((f"from {addr}", port), "")
        return CommandResult(key, 1 if why else 0, "", why)


def _probe(name: str, host: FakeHost, **params: Any) -> Any:
    from hostkit.doctor import ProbeContext
    from hostkit.probes import PROBES
    from hostkit.settings import Settings

    return PROBES[name](ProbeContext(host, Facts(host), Settings()), **params)


def test_the_doctor_names_the_node_and_the_port_that_is_closed(tmp_path: Path) -> None:
    from hostkit.results import Status

    assert _probe("cluster_ports", ClusterHost(tmp_path, {})).status is Status.PASS
    out = _probe("cluster_ports", ClusterHost(tmp_path, {("172.20.0.4", 7946): "no route to host"}))
    assert out.status is Status.FAIL
    assert "worker2 (172.20.0.4): 7946/tcp closed from manager (no route to host)" in out.summary
    assert "worker1" not in out.summary
    back = _probe("cluster_ports", ClusterHost(tmp_path, {("from 172.20.0.3", 2377): "refused"}))
    assert "manager (172.20.0.2): 2377/tcp closed from worker1" in back.summary


def test_the_doctor_compares_the_nodes_clocks_and_images(tmp_path: Path) -> None:
    from hostkit.results import Status

    assert _probe("cluster_clocks", ClusterHost(tmp_path, {})).status is Status.PASS
    late = _probe("cluster_clocks", ClusterHost(tmp_path, {}, remote_clock=-5.0))
    assert late.status is Status.FAIL
    assert "worker1 is -5.0" in late.summary
    assert _probe("cluster_images", ClusterHost(tmp_path, {})).status is Status.PASS
    stale = _probe("cluster_images", ClusterHost(tmp_path, {}, images={"172.20.0.4": "sha256:old",
                                                                        "172.20.0.3": ""}))
    assert stale.status is Status.FAIL
    assert "worker1: missing" in stale.summary
    assert "worker2: a different build" in stale.summary


def test_a_clock_offset_takes_the_middle_of_the_round_trip() -> None:
    from hostkit.probes.cluster import clock_offset

    assert clock_offset(100.0, 100.5, 101.0) == 0.0
    assert clock_offset(100.0, 103.0, 102.0) == 2.0


def test_a_clock_is_judged_off_only_beyond_half_the_round_trip() -> None:
    from hostkit.probes.cluster import judge_clock

    assert judge_clock(100.0, 100.1, 100.2, 1.0) == "within"
    assert judge_clock(100.0, 103.0, 100.2, 1.0) == "off"  # 2.9 s off, known to 0.1 s
    # a login that took 3 s: a read 1.2 s from the middle may be 0 s or 2.7 s off
    assert judge_clock(100.0, 102.7, 103.0, 1.0) == "unsure"
    assert judge_clock(100.0, 106.0, 103.0, 1.0) == "off"  # 4.5 s off, give or take 1.5


def test_the_cluster_checks_skip_on_a_single_host(tmp_path: Path) -> None:
    from hostkit.results import Status

    lone = SwarmHost(tmp_path, INACTIVE_INFO)
    for name in ("cluster_ports", "cluster_clocks", "cluster_images"):
        assert _probe(name, lone).status is Status.SKIP


SWARM_RULES = {addr: "\n".join(f'RULE {swarm.rich_rule(peer, w)}' for peer in ("172.20.0.2", "172.20.0.3",
                                                                           "172.20.0.4")
                               for w in swarm.SWARM_PORTS)
               for addr in ("172.20.0.2", "172.20.0.3", "172.20.0.4")}


class OverlayHost(ClusterHost):
    """Each node's firewalld, uplink MTU and test server, as tables say."""

    def __init__(self, root: Path, firewalls: dict[str, str], *, mtus: dict[str, int] | None = None,
                 overlay_options: str = "{}", unanswered: dict[str, str] | None = None) -> None:
        super().__init__(root, {})
        self.firewalls, self.mtus = firewalls, mtus or {}
        self.overlay_options = overlay_options
        self.unanswered = unanswered or {}  # test server address or name -> the hub's error
        self.services: dict[str, str] = {}  # name -> node id
        self.doctors: dict[str, tuple[int, str]] = {}  # node address -> the node's doctor (rc, JSON)

    def _node_shell(self, key: tuple[str, ...], addr: str, script: str) -> CommandResult:
        if script.startswith("hostkit doctor"):
            assert "--only daemon" in script
            assert "--skip net.public-port" in script
            rc, report = self.doctors.get(addr, (0, _doctor_report([("daemon.logging", "pass", "")])))
            return CommandResult(key, rc, report, "" if rc != 127 else "hostkit: command not found")
        if script.startswith("firewall-cmd"):
            view = self.firewalls.get(addr, "TARGET default\n" + SWARM_RULES[addr])
            return CommandResult(key, 0, view + "\n", "")
        if script.startswith("dev=$(ip"):
            return CommandResult(key, 0, f"eth0 {self.mtus.get(addr, 1500)}\n", "")
        raise AssertionError(script)

    def run(self, argv: Sequence[str], **kwargs: Any) -> CommandResult:  # noqa: PLR0911
        key = tuple(str(a) for a in argv)
        if key[:2] == ("sh", "-c"):
            return self._node_shell(key, "172.20.0.2", key[2])
        if key[0] == "ssh" and not key[-1].startswith(("date", "docker", "timeout")):
            return self._node_shell(key, key[-2].split("@")[1], key[-1])
        if key[:3] == ("docker", "network", "inspect"):
            return CommandResult(key, 0, self.overlay_options, "")
        if key[:2] == ("docker", "ps"):
            return CommandResult(key, 0, "hub123\n", "")
        if key[:3] == ("docker", "service", "create"):
            self.calls.append(key)
            self.services[key[key.index("--name") + 1]] = key[key.index("--constraint") + 1].split("==")[1]
            return CommandResult(key, 0, "", "")
        if key[:3] == ("docker", "service", "rm"):
            self.calls.append(key)
            for name in key[3:]:
                self.services.pop(name, None)
            return CommandResult(key, 0, "", "")
        if key[:3] == ("docker", "service", "ps"):
            return CommandResult(key, 0, f"task-{key[-1]}\n", "")
        if key[:4] == ("docker", "inspect", "--type", "task"):
            name = key[-1].removeprefix("task-")
            addr = "10.0.1." + str(2 + sorted(self.services).index(name))
            task = {"Status": {"State": "running"}, "NetworksAttachments": [
                {"Network": {"Spec": {"Name": "hostkit-jupyterhub"}}, "Addresses": [f"{addr}/24"]}]}
            return CommandResult(key, 0, json.dumps([task]), "")
        if key[:2] == ("docker", "exec"):
            target = key[-1].split("http://")[1].split(":")[0]
            why = self.unanswered.get(target, "")
            return CommandResult(key, 1 if why else 0, "", why)
        return super().run(argv, **kwargs)


def _doctor_report(checks: list[tuple[str, str, str]]) -> str:
    return json.dumps({"checks": [{"id": i, "status": st, "summary": f"{i} said so", "hint": hint}
                                  for i, st, hint in checks]})


def test_the_doctor_runs_every_nodes_own_host_checks_there_and_names_the_node(tmp_path: Path) -> None:
    from hostkit.results import Status

    host = OverlayHost(tmp_path, {})
    both = _probe("cluster_hosts", host)
    assert both.status is Status.PASS, both.summary
    assert both.summary == "2 host checks pass on worker1, worker2"
    host.doctors["172.20.0.4"] = (1, _doctor_report([
        ("daemon.logging", "fail", "hostkit cluster join"), ("host.resources", "warn", ""),
        ("firewall.running", "skip", "")]))
    bad = _probe("cluster_hosts", host)
    assert bad.status is Status.FAIL
    assert bad.summary.startswith("worker2: daemon.logging daemon.logging said so "
                                  "(fix there: hostkit cluster join); worker2: host.resources")
    assert "worker1" not in bad.summary
    host.doctors = {"172.20.0.3": (127, "")}
    missing = _probe("cluster_hosts", host)
    assert missing.status is Status.WARN
    assert missing.summary == "worker1: hostkit is not installed there, its host checks were not run"


def test_the_doctor_reads_every_nodes_firewalld_for_the_swarms_udp_ports(tmp_path: Path) -> None:
    from hostkit.results import Status

    assert _probe("cluster_udp", OverlayHost(tmp_path, {})).status is Status.PASS
    vxlan_from_manager = swarm.rich_rule("172.20.0.2", "4789/udp")
    assert vxlan_from_manager in SWARM_RULES["172.20.0.4"]
    without = SWARM_RULES["172.20.0.4"].replace(vxlan_from_manager, "")
    out = _probe("cluster_udp", OverlayHost(tmp_path, {"172.20.0.4": "TARGET default\n" + without}))
    assert out.status is Status.FAIL
    assert out.summary == "worker2 (172.20.0.4): 4789/udp not open to manager (172.20.0.2)"
    # a network rule covering the node, the port open to all, no firewalld: open
    cidr = "TARGET default\n" + "\n".join(f"RULE {swarm.rich_rule('172.20.0.0/24', w)}"
                                          for w in swarm.SWARM_PORTS)
    assert _probe("cluster_udp", OverlayHost(tmp_path, {"172.20.0.3": cidr})).status is Status.PASS
    ports = "TARGET default\nPORT 7946/udp\nPORT 4789/udp"
    assert _probe("cluster_udp", OverlayHost(tmp_path, {"172.20.0.2": ports})).status is Status.PASS
    plain = _probe("cluster_udp", OverlayHost(tmp_path, {"172.20.0.3": "NOFIREWALLD"}))
    assert plain.status is Status.PASS
    assert "no firewalld on worker1" in plain.summary
    # the manager's own rules count: 7946/udp shut to worker1 there
    shut = SWARM_RULES["172.20.0.2"].replace(swarm.rich_rule("172.20.0.3", "7946/udp"), "")
    mine = _probe("cluster_udp", OverlayHost(tmp_path, {"172.20.0.2": "TARGET default\n" + shut}))
    assert mine.summary == "manager (172.20.0.2): 7946/udp not open to worker1 (172.20.0.3)"


def test_the_doctor_compares_the_overlays_mtu_with_every_nodes_uplink(tmp_path: Path) -> None:
    from hostkit.results import Status

    fits = _probe("cluster_mtu", OverlayHost(tmp_path, {}))
    assert fits.status is Status.PASS
    assert "1450 + 50 VXLAN" in fits.summary
    small = _probe("cluster_mtu", OverlayHost(tmp_path, {}, mtus={"172.20.0.4": 1400}))
    assert small.status is Status.FAIL
    assert small.summary.startswith("worker2: eth0 MTU 1400 < 1500 (the overlay's 1450 + 50 VXLAN)")
    assert "com.docker.network.driver.mtu=N" in small.hint
    # an overlay made for 1400 fits a 1400 uplink
    made = OverlayHost(tmp_path, {}, mtus={"172.20.0.4": 1400},
                       overlay_options='{"com.docker.network.driver.mtu": "1400"}')
    assert _probe("cluster_mtu", made).status is Status.PASS


def test_the_doctor_has_the_hub_reach_a_test_server_on_every_worker(tmp_path: Path) -> None:
    from hostkit.results import Status

    host = OverlayHost(tmp_path, {})
    ok = _probe("cluster_overlay", host, wait_s=5)
    assert ok.status is Status.PASS, ok.summary
    assert "worker1, worker2" in ok.summary
    created = [c for c in host.calls if c[:3] == ("docker", "service", "create")]
    assert [c[c.index("--constraint") + 1] for c in created] == ["node.id==w1abc", "node.id==w2def"]
    assert host.services == {}  # removed after
    cut = _probe("cluster_overlay", OverlayHost(tmp_path, {}, unanswered={"10.0.1.3": "timed out"}), wait_s=5)
    assert cut.status is Status.FAIL
    assert cut.summary == ("worker2: its test server (10.0.1.3) does not answer the hub (timed out): "
                           "the overlay's VXLAN (4789/udp) does not pass")
    nameless = _probe("cluster_overlay", OverlayHost(
        tmp_path, {}, unanswered={"hostkit-probe-worker1": "Name or service not known"}), wait_s=5)
    assert "worker1: its test server answers on 10.0.1.2 but its name does not" in nameless.summary
    assert "worker2" not in nameless.summary
