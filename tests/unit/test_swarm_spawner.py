"""The hub's Swarm placement (stack/hostkit_swarm.py): the freest ready worker, never a manager."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import pytest

PATH = Path(__file__).resolve().parents[2] / "stack" / "hostkit_swarm.py"


def _load() -> Any:
    # DockerSpawner lives in the hub image only; the placement is plain Python over the
    # Docker API's JSON, so a stand-in base class is enough to import it here.
    fake = types.ModuleType("dockerspawner")
    fake.SwarmSpawner = type("SwarmSpawner", (), {})  # type: ignore[attr-defined]
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
