"""The hub's Swarm placement (stack/hostkit_swarm.py): the freest ready worker, never a manager."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import sys
import types
from pathlib import Path
from typing import Any

import pytest

PATH = Path(__file__).resolve().parents[2] / "stack" / "hostkit_swarm.py"


def _load() -> Any:
    # DockerSpawner lives in the hub image only; the placement is plain Python over the
    # Docker API's JSON, so a stand-in base class is enough to import it here.
    from traitlets import HasTraits

    class SwarmSpawner(HasTraits):  # what the subclass calls of it: poll, create, stop, the state
        escaped_name = "alice"
        network_name = "hostkit-jupyterhub"
        mem_limit = 2 * 1024**3  # DockerSpawner's ByteSpecification: bytes

        async def poll(self) -> Any:
            return None

        async def start(self) -> Any:
            await self.create_object()
            return ("10.0.0.9", 8888)

        async def create_object(self) -> Any:
            return {"ID": "svc1", "Networks": [self.network_name]}

        async def stop(self, now: bool = False) -> None:
            pass

        def get_state(self) -> dict[str, Any]:
            return {"object_id": "svc1"}

        def load_state(self, state: dict[str, Any]) -> None:
            pass

    fake = types.ModuleType("dockerspawner")
    fake.SwarmSpawner = SwarmSpawner  # type: ignore[attr-defined]
    sys.modules.setdefault("dockerspawner", fake)
    spec = importlib.util.spec_from_file_location("hostkit_swarm", PATH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


swarm_spawner = _load()
GIB = 2**30


def _node(node_id: str, role: str = "worker", memory: int = 8 * GIB, state: str = "ready",
          availability: str = "active") -> dict[str, Any]:
    return {"ID": node_id, "Spec": {"Role": role, "Availability": availability},
            "Status": {"State": state},
            "Description": {"Hostname": f"host-{node_id}", "Resources": {"MemoryBytes": memory}}}


def _task(node_id: str, memory: int, desired: str = "running") -> dict[str, Any]:
    return {"NodeID": node_id, "DesiredState": desired,
            "Spec": {"Resources": {"Limits": {"MemoryBytes": memory}}}}


def test_the_worker_with_the_most_uncommitted_memory_gets_the_server() -> None:
    nodes = [_node("m", role="manager", memory=64 * GIB), _node("a", memory=8 * GIB),
             _node("b", memory=16 * GIB)]
    assert swarm_spawner.pick_node(nodes, [])["ID"] == "b"
    busy_b = [_task("b", 4 * GIB), _task("b", 4 * GIB), _task("b", 2 * GIB)]
    assert swarm_spawner.pick_node(nodes, busy_b)["ID"] == "a"
    # a stopped server commits nothing
    assert swarm_spawner.pick_node(nodes, [_task("b", 12 * GIB, desired="shutdown")])["ID"] == "b"


def test_down_drained_and_manager_nodes_get_no_server() -> None:
    nodes = [_node("m", role="manager"), _node("a", state="down", memory=32 * GIB),
             _node("b", availability="drain", memory=32 * GIB), _node("c", memory=4 * GIB)]
    assert swarm_spawner.pick_node(nodes, [])["ID"] == "c"
    with pytest.raises(swarm_spawner.NodeUnavailable, match="no worker is ready"):
        swarm_spawner.pick_node(nodes[:3], [])


class Spawner:
    """A HostkitSwarmSpawner whose Docker API answers from the nodes given."""

    def __init__(self, nodes: list[dict[str, Any]], pinned: str = "", user: str = "alice") -> None:
        self.spawner = swarm_spawner.HostkitSwarmSpawner()
        self.spawner.node_id = pinned
        self.spawner.log = logging.getLogger("test")
        self.spawner.user = types.SimpleNamespace(name=user)
        self.spawner.docker = self.docker
        self.nodes = {n["ID"]: n for n in nodes}
        self.asked: list[str] = []

    async def docker(self, method: str, *args: Any, **kwargs: Any) -> Any:
        self.asked.append(method)
        if method == "inspect_node":
            if args[0] not in self.nodes:
                raise _api_error(404, "node not found")
            return self.nodes[args[0]]
        if method == "inspect_network":  # a server from before users had networks of their own
            raise _api_error(404, "network not found")
        if method == "nodes":
            return list(self.nodes.values())
        if method == "tasks":
            return []
        raise AssertionError(method)

    def choose(self) -> str:
        return str(asyncio.run(self.spawner.choose_node()))


def test_a_user_with_files_on_a_node_goes_back_there_even_when_another_is_freer() -> None:
    nodes = [_node("a", memory=64 * GIB), _node("b", memory=4 * GIB)]
    spawner = Spawner(nodes, pinned="b")
    assert spawner.choose() == "b"
    assert "nodes" not in spawner.asked
    fresh = Spawner(nodes)
    assert fresh.choose() == "a"
    assert fresh.spawner.get_state() == {"object_id": "svc1", "node_id": "a"}  # in the hub's database
    later = Spawner(nodes)
    later.spawner.load_state(fresh.spawner.get_state())  # after a hub restart
    assert later.spawner.node_id == "a"


@pytest.fixture(autouse=True)
def _nobody_being_placed() -> Any:
    # a choice without its start (as these tests make) stays reserved
    getattr(swarm_spawner, "PLACING", {}).clear()
    yield
    getattr(swarm_spawner, "PLACING", {}).clear()


def test_a_class_placed_at_once_is_spread_over_the_workers_before_any_task_is_listed() -> None:
    """Twenty first logins at once: no task is listed yet when the next user is placed;
    the servers being placed count, so the workers share the class (they crowded one)."""
    nodes = [_node("a", memory=64 * GIB), _node("b", memory=64 * GIB)]
    spawners = [Spawner(nodes, user=f"student{i}") for i in range(20)]
    placed = [s.choose() for s in spawners]  # the Docker API lists no task for any of them
    assert sorted(placed.count(n) for n in ("a", "b")) == [10, 10]
    assert set(swarm_spawner.PLACING) == {f"student{i}" for i in range(20)}
    # a server that is running (or failed) is no longer reserved: its task is listed now
    spawners[0].spawner.isolate_users = False  # its network: other tests' business
    assert asyncio.run(spawners[0].spawner.start()) == ("10.0.0.9", 8888)
    assert "student0" not in swarm_spawner.PLACING


def test_a_user_whose_node_is_down_is_told_where_their_files_are() -> None:
    spawner = Spawner([_node("a"), _node("b", state="down")], pinned="b")
    with pytest.raises(swarm_spawner.NodeUnavailable, match="Your files are on server host-b, which is down"):
        spawner.choose()
    drained = Spawner([_node("a"), _node("b", availability="drain")], pinned="b")
    with pytest.raises(swarm_spawner.NodeUnavailable, match="which is drain"):
        drained.choose()
    lost = Spawner([_node("b", state="down")], pinned="b")
    assert asyncio.run(lost.spawner.poll()) == "node host-b is down"  # the hub marks it stopped
    assert asyncio.run(Spawner([_node("b")], pinned="b").spawner.poll()) is None


def test_a_user_whose_node_left_the_swarm_is_placed_anew() -> None:
    spawner = Spawner([_node("a")], pinned="gone")
    assert spawner.choose() == "a"


def test_a_user_whose_files_were_restored_elsewhere_goes_to_the_labelled_node() -> None:
    holder = _node("b", memory=2 * GIB)
    holder["Spec"]["Labels"] = {"org.hostkit.files.alice": "jupyterhub-user-alice",
                                "org.hostkit.files.bob": "jupyterhub-user-bob"}
    spawner = Spawner([_node("a", memory=64 * GIB), holder], pinned="gone")
    assert spawner.choose() == "b"  # not the freer "a": the files are on "b"
    assert spawner.spawner.get_state()["node_id"] == "b"
    holder["Status"]["State"] = "down"
    with pytest.raises(swarm_spawner.NodeUnavailable, match="Your files are on server host-b, which is down"):
        Spawner([_node("a", memory=64 * GIB), holder]).choose()
    other = _node("c")
    other["Spec"]["Labels"] = {"org.hostkit.files.alicia": "x"}  # another user's label
    assert Spawner([_node("a", memory=64 * GIB), other]).choose() == "a"


def _api_error(status: int, text: str = "") -> Exception:
    import requests
    from docker.errors import APIError

    response = requests.Response()
    response.status_code = status
    return APIError(text, response=response)


class NetworkDocker:
    """The networks part of the Docker API, as the proxy lets the hub see it."""

    def __init__(self, encrypted: bool = False, busy_removals: int = 0) -> None:
        self.networks: dict[str, dict[str, Any]] = {
            "hostkit-jupyterhub": {"Options": {"encrypted": ""} if encrypted else {}, "Containers": {}}}
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.busy_removals = busy_removals  # the stopped server's task still on the network

    async def __call__(self, method: str, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((method, args, kwargs))
        if method in ("nodes", "tasks"):
            return [_node("a")] if method == "nodes" else []
        name = args[1] if "container" in method else args[0]
        if method != "create_network" and name not in self.networks:
            raise _api_error(404, "network not found")
        if method == "inspect_network":
            return self.networks[name]
        if method == "create_network":
            self.networks[name] = {"Options": kwargs["options"] or {}, "Containers": {}}
        elif method == "connect_container_to_network":
            self.networks[name]["Containers"][args[0] + "f" * 52] = {}
        elif method == "disconnect_container_from_network":
            self.networks[name]["Containers"].clear()
        elif method == "remove_network":
            if self.busy_removals:
                self.busy_removals -= 1
                raise _api_error(403, "network has active endpoints")
            del self.networks[name]
        return None

    def asked(self, method: str) -> list[tuple[Any, ...]]:
        return [args for m, args, _ in self.calls if m == method]


USER_NETWORK = "hostkit-jupyterhub-user-alice"


def _isolating_spawner(docker: NetworkDocker) -> Any:
    spawner = swarm_spawner.HostkitSwarmSpawner(network_removal_timeout=30)
    spawner.log = logging.getLogger("test")
    spawner.user = types.SimpleNamespace(name="alice")
    spawner.docker = docker
    return spawner


def test_a_server_gets_a_network_of_its_own_which_the_hub_joins_under_its_service_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(swarm_spawner.socket, "gethostname", lambda: "4f1e2d3c4b5a")
    docker = NetworkDocker(encrypted=True)
    spawner = _isolating_spawner(docker)
    created = asyncio.run(spawner.create_object())
    assert created["Networks"] == ["hostkit-jupyterhub-user-alice"]  # the service is on it only
    (create,) = [kw for m, _, kw in docker.calls if m == "create_network"]
    assert create == {"driver": "overlay", "attachable": True, "check_duplicate": True,
                      "options": {"encrypted": ""}}  # encrypted like the stack's overlay
    assert docker.asked("connect_container_to_network") == [("4f1e2d3c4b5a", USER_NETWORK)]
    # started again: the network is there, the hub on it: nothing is created or joined twice
    asyncio.run(_isolating_spawner(docker).create_object())
    assert len(docker.asked("create_network")) == 1
    assert len(docker.asked("connect_container_to_network")) == 1
    unencrypted = NetworkDocker(encrypted=False)
    asyncio.run(_isolating_spawner(unencrypted).create_object())
    assert [kw["options"] for m, _, kw in unencrypted.calls if m == "create_network"] == [None]


def test_a_new_hub_container_joins_the_networks_of_running_servers_on_its_first_poll(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    docker = NetworkDocker()
    monkeypatch.setattr(swarm_spawner.socket, "gethostname", lambda: "4f1e2d3c4b5a")
    asyncio.run(_isolating_spawner(docker).create_object())
    monkeypatch.setattr(swarm_spawner.socket, "gethostname", lambda: "99aa88bb77cc")  # `stack up`
    after_restart = _isolating_spawner(docker)
    assert asyncio.run(after_restart.poll()) is None
    assert asyncio.run(after_restart.poll()) is None
    assert docker.asked("connect_container_to_network")[1:] == [("99aa88bb77cc", USER_NETWORK)]
    assert not docker.asked("create_network")[1:]  # a poll never makes a network


def test_a_stopped_servers_network_goes_once_its_task_has_left_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(swarm_spawner.socket, "gethostname", lambda: "4f1e2d3c4b5a")
    monkeypatch.setattr(swarm_spawner.asyncio, "sleep", _no_wait)
    docker = NetworkDocker(busy_removals=2)
    spawner = _isolating_spawner(docker)
    asyncio.run(spawner.create_object())
    asyncio.run(spawner.stop())
    assert docker.asked("disconnect_container_from_network") == [("4f1e2d3c4b5a", USER_NETWORK)]
    assert len(docker.asked("remove_network")) == 3
    assert "hostkit-jupyterhub-user-alice" not in docker.networks
    asyncio.run(spawner.stop())  # stopped twice: nothing left to remove, no error


def test_isolation_off_keeps_the_server_on_the_stacks_network() -> None:
    docker = NetworkDocker()
    spawner = _isolating_spawner(docker)
    spawner.isolate_users = False
    assert asyncio.run(spawner.create_object())["Networks"] == ["hostkit-jupyterhub"]
    assert not docker.asked("create_network")


async def _no_wait(_seconds: float) -> None:
    return None
