"""The hub's spawner on a Docker Swarm (HOSTKIT_CLUSTER=swarm): users' servers on the workers.

DockerSpawner's SwarmSpawner runs each server as a one-task service. hostkit's subclass:

- places a user's first server on the ready worker with the most memory not yet committed
  to users' servers (node memory minus the limits of the stack's running tasks there), and
  pins every later server to that node: the user's files are a local volume there. Swarm's
  own placement only spreads tasks by count; it knows nothing of the volumes.
- when the pinned node is down (or drained), the spawn fails with a message that says so,
  instead of starting the user on an empty volume elsewhere; a running server whose node
  went down counts as stopped (Swarm would keep it "pending" for ever). A node taken out of the swarm
  (`hostkit cluster remove`) no longer pins anyone: the next server goes to another worker,
  the one labelled `org.hostkit.files.USER` when `hostkit restore` put the user's files there.
- mounts the user's volume as a named volume (SwarmSpawner's own mounts are host binds);
- puts each user's server on an overlay network of its own, NETWORK-user-NAME (attachable,
  encrypted when the stack's overlay is), which the hub's container joins under its service
  name: the hub (and configurable-http-proxy in it) reaches every server and every server
  its hub, but no server has a path to another's, on the same worker or another. The hub
  joins again after its container is made anew (on its first poll of a running server) and
  the network goes when the server stops. HOSTKIT_ISOLATE_USERS=0 keeps every server on
  the stack's overlay instead.
- keeps the single-host limits: memory, CPU, and a PID limit (the Resources type of
  docker-py has no field for it, so it is added to the request on its way out).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable
from typing import Any

from docker.errors import APIError
from docker.types import Mount
from dockerspawner import SwarmSpawner
from traitlets import Bool, Integer, Unicode

FILES_LABEL = "org.hostkit.files."  # + user name: the node holding the user's restored files


class NodeUnavailable(RuntimeError):
    """The node holding the user's files cannot run their server now."""


# Servers placed but not started yet, by user: (node id, memory limit). Their tasks may not
# be listed yet when the next user is placed, and a class logging in at once would all read
# the same free memory and crowd one worker. The hub is one process: a dict is enough.
PLACING: dict[str, tuple[str, int]] = {}


def pick_node(nodes: list[dict[str, Any]], tasks: list[dict[str, Any]],
              placing: Iterable[tuple[str, int]] = ()) -> dict[str, Any]:
    """The ready, active worker with the most memory left by the limits of running tasks
    and of the servers being placed there now."""
    committed: dict[str, int] = {}
    for node_id, memory in placing:
        committed[node_id] = committed.get(node_id, 0) + memory
    for task in tasks:
        if task.get("DesiredState") != "running":
            continue
        limits = ((task.get("Spec") or {}).get("Resources") or {}).get("Limits") or {}
        node = str(task.get("NodeID") or "")
        committed[node] = committed.get(node, 0) + int(limits.get("MemoryBytes") or 0)
    ready = [
        n for n in nodes
        if (n.get("Spec") or {}).get("Role") == "worker"
        and (n.get("Spec") or {}).get("Availability") == "active"
        and (n.get("Status") or {}).get("State") == "ready"
    ]
    if not ready:
        raise NodeUnavailable("no worker is ready to run a server; ask your administrator")

    def free(node: dict[str, Any]) -> tuple[int, str]:
        total = int(((node.get("Description") or {}).get("Resources") or {}).get("MemoryBytes") or 0)
        return total - committed.get(str(node["ID"]), 0), str(node["ID"])

    return max(ready, key=free)


def hub_is_on(network: dict[str, Any], hub_container: str) -> bool:
    """Whether the hub's container (its id as its hostname, 12 characters) is on a network
    (GET /networks/ID lists the containers of this node by full id)."""
    return any(cid.startswith(hub_container) for cid in network.get("Containers") or {})


def node_name(node: dict[str, Any]) -> str:
    return str((node.get("Description") or {}).get("Hostname") or node.get("ID", "?"))


class HostkitSwarmSpawner(SwarmSpawner):  # type: ignore[misc]
    """SwarmSpawner with volume-pinned placement, named volumes and a PID limit."""

    node_id = Unicode("", help="The node holding this user's volume (kept in the hub's state).")
    pids_limit = Integer(1024, config=True, help="PID limit of a user's server.")
    isolate_users = Bool(True, config=True, help="Each server on an overlay network of its own.")
    stack_network = Unicode("hostkit-jupyterhub", config=True, help="The stack's overlay network.")
    hub_alias = Unicode("jupyterhub", config=True, help="The hub's name on a user's network.")
    network_removal_timeout = Integer(
        60, config=True, help="Seconds to wait for a stopped server's task to leave its network.")

    @property
    def hub_container(self) -> str:
        """The hub's own container: Docker makes its short id the hostname."""
        return socket.gethostname()

    @property
    def user_network(self) -> str:
        return f"{self.stack_network}-user-{self.escaped_name}"

    async def join_user_network(self, create: bool) -> None:
        """The user's network exists (when `create`) and the hub's container is on it."""
        hub = self.hub_container
        try:
            network = await self.docker("inspect_network", self.user_network)
        except APIError as exc:
            if exc.response is None or exc.response.status_code != 404 or not create:
                raise
            stack = await self.docker("inspect_network", self.stack_network)
            encrypted = "encrypted" in (stack.get("Options") or {})
            await self.docker("create_network", self.user_network, driver="overlay", attachable=True,
                              check_duplicate=True, options={"encrypted": ""} if encrypted else None)
            self.log.info("created the network %s", self.user_network)
            network = {}
        if not hub_is_on(network, hub):
            await self.docker("connect_container_to_network", hub, self.user_network,
                              aliases=[self.hub_alias])
            self.log.info("the hub joined %s", self.user_network)

    async def leave_user_network(self) -> None:
        """The hub leaves the user's network and the network goes, once the stopped server's
        task has left it (a network with a task on it cannot be removed). Left in place, with
        a warning, when that takes too long: the next start uses it again."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.network_removal_timeout
        try:
            network = await self.docker("inspect_network", self.user_network)
            if hub_is_on(network, self.hub_container):
                await self.docker("disconnect_container_from_network", self.hub_container, self.user_network)
        except APIError as exc:
            if exc.response is not None and exc.response.status_code == 404:
                return
            raise
        while True:
            try:
                await self.docker("remove_network", self.user_network)
                self.log.info("removed the network %s", self.user_network)
                return
            except APIError as exc:
                if exc.response is not None and exc.response.status_code == 404:
                    return
                if loop.time() > deadline:
                    self.log.warning("the network %s stays: %s", self.user_network, exc)
                    return
            await asyncio.sleep(2)

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.node_id = str(state.get("node_id") or "")

    def get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = super().get_state()
        if self.node_id:  # kept across stops (clear_state leaves it): the files stay there
            state["node_id"] = self.node_id
        return state

    @property
    def mounts(self) -> list[Mount]:
        return [
            Mount(target=vol["bind"], source=source, type="volume", read_only=vol["mode"] == "ro")
            for source, vol in self.volume_binds.items()
        ]

    async def choose_node(self) -> str:
        """The node for this server: the pinned one, else the freest worker (then pinned)."""
        if self.node_id:
            try:
                node = await self.docker("inspect_node", self.node_id)
            except APIError as exc:
                if exc.response is None or exc.response.status_code != 404:
                    raise
                self.log.warning("node %s of %s is gone from the swarm: placing anew",
                                 self.node_id, self.user.name)
                self.node_id = ""
            else:
                state = (node.get("Status") or {}).get("State")
                availability = (node.get("Spec") or {}).get("Availability")
                if state != "ready" or availability != "active":
                    raise NodeUnavailable(
                        f"Your files are on server {node_name(node)}, which is "
                        f"{state if state != 'ready' else availability}. Your server can start "
                        "again when it is back; ask your administrator.")
                return self.node_id
        nodes = await self.docker("nodes", filters={"role": "worker"})
        label = FILES_LABEL + self.user.name
        holder = [n for n in nodes if label in ((n.get("Spec") or {}).get("Labels") or {})]
        if holder:  # the user's files were restored there: pin there
            self.node_id = str(holder[0]["ID"])
            self.log.info("placing %s on %s, which holds their files", self.user.name, node_name(holder[0]))
            return await self.choose_node()
        tasks = await self.docker("tasks", filters={"desired-state": "running"})
        # no await between the choice and its reservation: the next spawn sees both
        node = pick_node(nodes, tasks, PLACING.values())
        self.node_id = str(node["ID"])
        PLACING[self.user.name] = (self.node_id, int(self.mem_limit or 0))
        self.log.info("placing %s on %s", self.user.name, node_name(node))
        return self.node_id

    async def poll(self) -> Any:
        """SwarmSpawner's poll, and: a server whose node is down counts as stopped.

        Swarm keeps a pinned task of a lost node "pending", which SwarmSpawner takes for
        running: the user would get proxy errors for ever. Stopped, their next start says
        where their files are."""
        status = await super().poll()
        if status is None and self.isolate_users and not self._hub_joined:
            # the hub's container may be new since the server started (`stack up`)
            try:
                await self.join_user_network(create=False)
                self._hub_joined = True
            except APIError as exc:  # e.g. a server started on the stack's network before
                self.log.warning("the hub cannot join %s: %s", self.user_network, exc)
        if status is not None or not self.node_id:
            return status
        try:
            node = await self.docker("inspect_node", self.node_id)
        except APIError as exc:
            return f"node {self.node_id} is gone: {exc}"
        state = (node.get("Status") or {}).get("State")
        if state != "ready":
            self.log.warning("%s's server is on %s, which is %s", self.user.name, node_name(node), state)
            return f"node {node_name(node)} is {state}"
        return None

    _hub_joined = False

    async def create_object(self) -> Any:
        node_id = await self.choose_node()
        self.extra_placement_spec = {"constraints": ["node.role==worker", f"node.id=={node_id}"]}
        if self.isolate_users:
            await self.join_user_network(create=True)
            self._hub_joined = True
            self.network_name = self.user_network
        return await super().create_object()

    async def start(self) -> Any:
        try:
            return await super().start()
        finally:  # running (its task is listed from now on) or failed: no longer reserved
            PLACING.pop(self.user.name, None)

    async def stop(self, now: bool = False) -> None:
        await super().stop(now=now)
        if self.isolate_users:
            self._hub_joined = False
            try:
                await self.leave_user_network()
            except APIError as exc:  # the server is stopped all the same; its network stays
                self.log.warning("the network %s stays: %s", self.user_network, exc)

    def _docker(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if method == "create_service":
            resources = kwargs["task_template"].setdefault("Resources", {})
            resources.setdefault("Limits", {})["Pids"] = int(self.pids_limit)
        return super()._docker(method, *args, **kwargs)


def configure(c: Any, env: Any) -> None:
    """The hub's settings on a swarm; `env(name, default)` reads the stack's settings."""
    c.JupyterHub.spawner_class = HostkitSwarmSpawner
    # Services answer on their task's address (DNS round robin), not a virtual IP: a VIP
    # needs IPVS in the kernel, and without it the name resolves but nothing answers.
    c.SwarmSpawner.extra_endpoint_spec = {"mode": "dnsrr"}
    c.HostkitSwarmSpawner.pids_limit = int(env("HOSTKIT_PIDS_LIMIT", "1024"))
    c.HostkitSwarmSpawner.isolate_users = env("HOSTKIT_ISOLATE_USERS", "1") != "0"
    c.HostkitSwarmSpawner.stack_network = env("HOSTKIT_NETWORK", "hostkit-jupyterhub")
    c.HostkitSwarmSpawner.hub_alias = env("HOSTKIT_HUB_SERVICE", "jupyterhub")
    # the single-user image is copied to the workers by `hostkit cluster sync-images`
    c.SwarmSpawner.pull_policy = "skip"
