"""The hub's only way to Docker: a filtering Docker API proxy, and the users' network guard.

The hub (internet-facing) never holds /var/run/docker.sock: whoever can call the Docker API
there is root on the host. This process does, and serves the hub a unix socket (in a volume
shared with the hub only) that answers exactly what DockerSpawner needs:

- GET /_ping, /version; GET /images/NAME/json for the allowed images;
- POST /containers/create, checked field by field: the allowed image, a name with the
  stack's prefix, the users' network, named volumes matching the user-volume pattern, a
  PID limit; never Privileged, host namespaces, capabilities, devices, host binds, published
  ports, security-option or sysctl changes. The stack's label is added to what it creates;
- GET /containers/ID/json, POST /containers/ID/start|stop, DELETE /containers/ID, only for
  containers carrying that label.
- On a Docker Swarm (HOSTKIT_CLUSTER=swarm), what SwarmSpawner needs instead: POST
  /services/create with the same checks (and the users' servers kept off managers), GET and
  DELETE /services/ID for the stack's services, GET /tasks (answered with the stack's tasks
  only) and GET /nodes (to place servers by free memory). Each user's server gets an overlay
  network of its own (NETWORK-user-NAME): the proxy lets the hub create such a network
  (attachable overlay, at most the `encrypted` option), connect and disconnect its own
  container (the compose service `jupyterhub` of this stack) there, inspect it and remove
  it, and nothing more of /networks.

Everything else is 403 with the reason. Standard library only, so it runs from the hub
image (python3) as its own service.

The same process keeps the users' network guard: an nftables table (its own, so it never
touches Docker's or firewalld's rules) that lets user containers talk to the hub, to nginx's
TLS port and to the internet, and drops user-to-user traffic, the host's ports other than
HOSTKIT_HOST_PORTS, other published ports of the host, and link-local addresses (cloud
metadata). It is re-applied every few seconds (the hub's address changes when it restarts)
and a container is only created while it is in place.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import socket
import socketserver
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Optional

LABEL = "org.hostkit.stack"
log = logging.getLogger("hostkit-docker-api")


# ---- policy (pure) --------------------------------------------------------------------
@dataclass(frozen=True)
class Policy:
    """What the hub may ask for."""

    stack: str  # the compose project: the label value on user containers
    network: str
    prefix: str  # user containers are named PREFIX-...
    volume_pattern: str  # e.g. jupyterhub-user-{username}
    images: frozenset[str]
    max_pids: int = 4096
    gpu: bool = False  # the `gpu` environment is offered: NVIDIA GPU requests are allowed
    volume_size: str = ""  # HOSTKIT_USER_DISK_QUOTA: the one driver option a user volume may have
    swarm: bool = False  # users' servers are Swarm services (HOSTKIT_CLUSTER=swarm)
    isolate: bool = True  # HOSTKIT_ISOLATE_USERS: on a swarm, each server on a network of its own
    hub_service: str = "jupyterhub"  # the compose service whose container may join users' networks

    @classmethod
    def from_env(cls, env: dict[str, str]) -> Policy:
        images = {env.get("HOSTKIT_NOTEBOOK_IMAGE", "hostkit/singleuser:full")}
        images |= {i.strip() for i in env.get("HOSTKIT_ALLOWED_IMAGES", "").split(",") if i.strip()}
        offered = _offered_environments(env)
        images |= {image for image, _gpu in offered}
        return cls(
            stack=env.get("COMPOSE_PROJECT_NAME", "hostkit"),
            network=env.get("HOSTKIT_NETWORK", "hostkit-jupyterhub"),
            prefix=env.get("HOSTKIT_CONTAINER_PREFIX", "jupyter"),
            volume_pattern=env.get("HOSTKIT_USER_VOLUME", "jupyterhub-user-{username}"),
            images=frozenset(images),
            max_pids=int(env.get("HOSTKIT_MAX_PIDS_LIMIT", "4096") or 4096),
            gpu=any(gpu for _image, gpu in offered),
            volume_size=env.get("HOSTKIT_USER_DISK_QUOTA", "").strip(),
            swarm=env.get("HOSTKIT_CLUSTER", "") == "swarm",
            isolate=env.get("HOSTKIT_ISOLATE_USERS", "1") != "0",
        )

    def user_network_ok(self, name: str) -> bool:
        """A user's own overlay network on a swarm: NETWORK-user-NAME (hostkit_swarm.py)."""
        return re.fullmatch(re.escape(self.network) + r"-user-[A-Za-z0-9_.-]+", name) is not None

    def volume_ok(self, name: str) -> bool:
        before, _, after = self.volume_pattern.partition("{username}")
        pattern = re.escape(before) + r"[A-Za-z0-9_.-]+" + re.escape(after)
        return re.fullmatch(pattern, name) is not None


def _offered_environments(env: dict[str, str]) -> list[tuple[str, bool]]:
    """(image, wants a GPU) of each environment the hub offers, from the same file and settings
    the hub reads (hostkit_profiles.py, mounted beside this one): the hub may start exactly
    those images, and ask for GPUs only when the `gpu` environment is offered."""
    try:
        import hostkit_profiles
    except ImportError:
        return []
    try:
        return [(p.image, p.gpu) for p in hostkit_profiles.load_profiles(env)]
    except ValueError as exc:  # a misconfigured profile: the hub refuses it too
        log.warning("profiles: %s", exc)
        return []


GPU_DRIVERS = ("", "nvidia")
GPU_CAPABILITIES = frozenset({"gpu", "utility", "compute"})


def _gpu_requests_ok(requests: list[dict[str, Any]], policy: Policy) -> bool:
    """NVIDIA GPU requests as the gpu environment makes them, and nothing else."""
    if not policy.gpu:
        return False
    for request in requests:
        if str(request.get("Driver") or "") not in GPU_DRIVERS:
            return False
        caps = request.get("Capabilities") or []
        if not caps or any(not set(group) <= GPU_CAPABILITIES for group in caps):
            return False
        if request.get("Options"):
            return False
    return True


class Refused(Exception):
    """A request the policy does not allow; the message is the reason."""


API_VERSION = re.compile(r"^/v[0-9]+(\.[0-9]+)?(?=/)")
CONTAINER_OPS = {
    ("GET", "json"),
    ("POST", "start"),
    ("POST", "stop"),
}


def route(method: str, path: str, swarm: bool = False) -> tuple[str, str]:
    """(kind, object) for an allowed endpoint; Refused otherwise.

    kind: "pass" (forward as is), "image" (inspect, allowed images only), "create",
    "container" (an operation on an existing container, which must be the stack's); on a
    swarm: "service-create", "service" (inspect or remove one of the stack's services),
    "tasks" (the answer is filtered to the stack's tasks).
    """
    bare = API_VERSION.sub("", urllib.parse.urlsplit(path).path)
    if "%" in bare and not bare.startswith("/images/"):
        raise Refused("encoded characters in the path are not accepted")
    parts = [urllib.parse.unquote(p) for p in bare.strip("/").split("/")]
    if method in ("GET", "HEAD") and bare in ("/_ping", "/version"):
        return "pass", ""
    if method == "GET" and len(parts) >= 3 and parts[0] == "images" and parts[-1] == "json":
        return "image", "/".join(parts[1:-1])
    if method == "POST" and parts == ["containers", "create"]:
        return "create", ""
    if len(parts) == 3 and parts[0] == "containers" and (method, parts[2]) in CONTAINER_OPS:
        return "container", _object_id(parts[1])
    if method == "DELETE" and len(parts) == 2 and parts[0] == "containers":
        return "container", _object_id(parts[1])
    found = _swarm_route(method, parts) if swarm else None
    if found:
        return found
    raise Refused(f"endpoint not allowed: {method} {bare}")


def _swarm_route(method: str, parts: list[str]) -> Optional[tuple[str, str]]:
    if method == "POST" and parts == ["services", "create"]:
        return "service-create", ""
    if method in ("GET", "DELETE") and len(parts) == 2 and parts[0] == "services":
        return "service", _object_id(parts[1])
    if method == "GET" and parts == ["tasks"]:
        return "tasks", ""
    if method == "GET" and (parts == ["nodes"] or (len(parts) == 2 and parts[0] == "nodes")):
        return "pass", ""
    return _network_route(method, parts) if parts[:1] == ["networks"] else None


def _network_route(method: str, parts: list[str]) -> Optional[tuple[str, str]]:
    """A user's own network (swarm): create; inspect, remove; the hub joins or leaves it."""
    if method == "POST" and parts == ["networks", "create"]:
        return "network-create", ""
    if method in ("GET", "DELETE") and len(parts) == 2:
        return "network", _object_id(parts[1])
    if method == "POST" and len(parts) == 3 and parts[2] in ("connect", "disconnect"):
        return "network-connect", _object_id(parts[1])
    return None


OBJECT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def _object_id(text: str) -> str:
    """A container name or id as Docker spells them: the proxy checks what Docker acts on."""
    if not OBJECT_ID.fullmatch(text) or ".." in text:
        raise Refused(f"not a container name or id: {text!r}")
    return text


NAMESPACE_MODES = ("PidMode", "IpcMode", "UTSMode", "UsernsMode", "CgroupnsMode")
MUST_BE_EMPTY = (
    "CapAdd",
    "Devices",
    "DeviceRequests",
    "DeviceCgroupRules",
    "Sysctls",
    "VolumesFrom",
    "Links",
    "PortBindings",
    "CgroupParent",
    "SecurityOpt",
    "MaskedPaths",
    "ReadonlyPaths",
    "VolumeDriver",
)


def check_create(query: dict[str, str], body: dict[str, Any], policy: Policy) -> dict[str, Any]:
    """The create request to forward (the stack's label added); Refused with the reason."""
    name = query.get("name", "")
    if not name.startswith(f"{policy.prefix}-"):
        raise Refused(f"container name {name!r} does not start with {policy.prefix}-")
    if body.get("Image") not in policy.images:
        raise Refused(f"image {body.get('Image')!r} is not allowed (allowed: {sorted(policy.images)})")
    host = body.get("HostConfig") or {}
    if host.get("Privileged"):
        raise Refused("Privileged containers are not allowed")
    for key in MUST_BE_EMPTY:
        if not host.get(key):
            continue
        if key == "SecurityOpt" and _only_no_new_privileges(host[key]):
            continue
        if key == "DeviceRequests" and _gpu_requests_ok(host[key], policy):
            continue
        raise Refused(f"HostConfig.{key} is not allowed")
    for key in NAMESPACE_MODES:
        value = str(host.get(key) or "")
        if value not in ("", "private", "shareable", "none"):
            raise Refused(f"HostConfig.{key}={value!r} is not allowed")
    if host.get("NetworkMode") != policy.network:
        raise Refused(f"HostConfig.NetworkMode must be {policy.network!r}, not {host.get('NetworkMode')!r}")
    endpoints = (body.get("NetworkingConfig") or {}).get("EndpointsConfig") or {}
    if set(endpoints) - {policy.network}:
        raise Refused(f"networks other than {policy.network!r} are not allowed")
    if host.get("PublishAllPorts"):
        raise Refused("published ports are not allowed")
    if str(host.get("Runtime") or "runc") != "runc":
        raise Refused(f"runtime {host.get('Runtime')!r} is not allowed")
    if host.get("OomKillDisable"):
        raise Refused("OomKillDisable is not allowed")
    for bind in host.get("Binds") or []:
        source = str(bind).split(":", 1)[0]
        if source.startswith("/") or not policy.volume_ok(source):
            raise Refused(f"bind mount {source!r} is not allowed: only user volumes {policy.volume_pattern}")
    for mount in host.get("Mounts") or []:
        kind, source = mount.get("Type"), str(mount.get("Source") or "")
        if kind == "tmpfs":
            continue
        if kind != "volume" or not policy.volume_ok(source):
            raise Refused(f"{kind} mount {source!r} is not allowed: only user volumes")
        _check_volume_options(mount.get("VolumeOptions") or {}, policy)
    pids = int(host.get("PidsLimit") or 0)
    if not 0 < pids <= policy.max_pids:
        raise Refused(f"HostConfig.PidsLimit must be between 1 and {policy.max_pids}, not {pids}")
    if not int(host.get("Memory") or 0) > 0:
        raise Refused("HostConfig.Memory (a memory limit) is required")
    labels = dict(body.get("Labels") or {})
    labels[LABEL] = policy.stack
    return {**body, "Labels": labels}


def _check_volume_options(options: dict[str, Any], policy: Policy) -> None:
    """dockerd creates a missing volume from a mount's driver options, and the local driver's
    type/o/device make it a mount of any host path: only the local driver, with at most the
    size limit HOSTKIT_USER_DISK_QUOTA asks for, passes."""
    driver = options.get("DriverConfig") or {}
    name = str(driver.get("Name") or "local")
    if name != "local":
        raise Refused(f"volume driver {name!r} is not allowed: only local")
    wanted = {"size": policy.volume_size} if policy.volume_size else {}
    given = dict(driver.get("Options") or {})
    if given and given != wanted:
        allowed = f" (only size={policy.volume_size})" if policy.volume_size else ""
        raise Refused(f"volume driver options {sorted(given)} are not allowed{allowed}")


# Fields of a service's ContainerSpec that reach beyond the user's own server.
SERVICE_MUST_BE_EMPTY = ("Privileges", "CapabilityAdd", "Sysctls", "Secrets", "Configs", "Ulimits")
WORKERS_ONLY = "node.role==worker"


def check_service_create(body: dict[str, Any], policy: Policy) -> dict[str, Any]:
    """POST /services/create as SwarmSpawner sends it, held to the same rules as a container:
    the allowed image, the stack's name prefix and network, user volumes only, memory and
    PID limits, nothing privileged, no published ports, and only on workers (a server on a
    manager would sit beside the hub and this proxy). The stack's label goes on the service
    and its containers."""
    name = str(body.get("Name") or "")
    if not name.startswith(f"{policy.prefix}-"):
        raise Refused(f"service name {name!r} does not start with {policy.prefix}-")
    task = body.get("TaskTemplate") or {}
    spec = task.get("ContainerSpec") or {}
    if set(task) - {"ContainerSpec", "Resources", "Networks", "Placement", "RestartPolicy",
                    "LogDriver", "ForceUpdate"}:
        raise Refused(f"TaskTemplate fields not allowed: {sorted(set(task) - {'ContainerSpec'})}")
    if spec.get("Image") not in policy.images:
        raise Refused(f"image {spec.get('Image')!r} is not allowed (allowed: {sorted(policy.images)})")
    for key in SERVICE_MUST_BE_EMPTY:
        if spec.get(key):
            raise Refused(f"ContainerSpec.{key} is not allowed")
    _check_service_mounts(spec.get("Mounts") or [], policy)
    constraints = [str(c).replace(" ", "") for c in (task.get("Placement") or {}).get("Constraints") or []]
    if WORKERS_ONLY not in constraints:
        raise Refused(f"users' servers run on workers only: the constraint {WORKERS_ONLY} is required")
    networks = [str(n.get("Target") or "") for n in task.get("Networks") or []]
    if policy.isolate and (len(networks) != 1 or not policy.user_network_ok(networks[0])):
        raise Refused(f"the service must be on its user's own network {policy.network}-user-NAME "
                      f"only, not {networks}")
    if not policy.isolate and networks != [policy.network]:
        raise Refused(f"the service must be on {policy.network!r} only, not {networks}")
    limits = (task.get("Resources") or {}).get("Limits") or {}
    if not int(limits.get("MemoryBytes") or 0) > 0:
        raise Refused("Resources.Limits.MemoryBytes (a memory limit) is required")
    pids = int(limits.get("Pids") or 0)
    if not 0 < pids <= policy.max_pids:
        raise Refused(f"Resources.Limits.Pids must be between 1 and {policy.max_pids}, not {pids}")
    if (body.get("EndpointSpec") or {}).get("Ports"):
        raise Refused("published ports are not allowed")
    replicas = ((body.get("Mode") or {}).get("Replicated") or {}).get("Replicas", 1)
    if set(body.get("Mode") or {}) - {"Replicated"} or replicas not in (0, 1):
        raise Refused("one replicated task per server only")
    labels = {**dict(body.get("Labels") or {}), LABEL: policy.stack}
    spec_labels = {**dict(spec.get("Labels") or {}), LABEL: policy.stack}
    return {**body, "Labels": labels,
            "TaskTemplate": {**task, "ContainerSpec": {**spec, "Labels": spec_labels}}}


def _check_service_mounts(mounts: list[dict[str, Any]], policy: Policy) -> None:
    for mount in mounts:
        kind, source = mount.get("Type"), str(mount.get("Source") or "")
        if kind == "tmpfs":
            continue
        if kind != "volume" or not policy.volume_ok(source):
            raise Refused(f"{kind} mount {source!r} is not allowed: only local user volumes "
                          f"{policy.volume_pattern}")
        # a volume driver could mount anything (an NFS export, a host path): local volumes,
        # with at most the site's size limit
        _check_volume_options(mount.get("VolumeOptions") or {}, policy)


# What docker-py's create_network may send; only the listed ones may carry a value.
NETWORK_FIELDS = frozenset({"Name", "Driver", "Options", "IPAM", "CheckDuplicate", "Internal", "Labels",
                            "EnableIPv6", "Attachable", "Scope", "Ingress", "ConfigOnly", "ConfigFrom"})


def check_network_create(body: dict[str, Any], policy: Policy) -> dict[str, Any]:
    """POST /networks/create for a user's own network: an attachable overlay named
    NETWORK-user-NAME, encrypted or not, and nothing else (no addresses of the hub's choosing,
    no other driver or driver options). The stack's label goes on it."""
    if not policy.isolate:
        raise Refused("users' own networks are off (HOSTKIT_ISOLATE_USERS=0)")
    name = str(body.get("Name") or "")
    if not policy.user_network_ok(name):
        raise Refused(f"network name {name!r} is not {policy.network}-user-NAME")
    if set(body) - NETWORK_FIELDS:
        raise Refused(f"network fields not allowed: {sorted(set(body) - NETWORK_FIELDS)}")
    set_fields = {k for k, v in body.items() if v not in (None, False, "", {}, [])}
    extra = set_fields - {"Name", "Driver", "Options", "CheckDuplicate", "Labels", "Attachable"}
    if extra:
        raise Refused(f"network fields not allowed: {sorted(extra)}")
    if body.get("Driver") != "overlay":
        raise Refused(f"network driver {body.get('Driver')!r} is not allowed: only overlay")
    if body.get("Attachable") is not True:
        raise Refused("a user's network must be attachable (the hub's container joins it)")
    options = dict(body.get("Options") or {})
    if set(options) - {"encrypted"} or str(options.get("encrypted", "")) not in ("", "true"):
        raise Refused(f"network options {sorted(options)} are not allowed (only encrypted)")
    labels = {**dict(body.get("Labels") or {}), LABEL: policy.stack}
    return {**body, "Labels": labels}


def check_network_connect(body: dict[str, Any], hub_container: str) -> dict[str, Any]:
    """POST /networks/ID/connect|disconnect: only the hub's own container (named by its id or
    an id prefix of 12 or more, as the hub knows it from its hostname), with at most its
    aliases, never forced. What is forwarded names the container by its full id, so Docker
    acts on the very container the proxy checked."""
    given = str(body.get("Container") or "")
    if not hub_container or len(given) < 12 or not hub_container.startswith(given):
        raise Refused("only the hub's own container may join or leave a user's network")
    if set(body) - {"Container", "EndpointConfig", "Force"} or body.get("Force"):
        raise Refused(f"connect fields not allowed: {sorted(set(body) - {'Container', 'EndpointConfig'})}")
    endpoint = dict(body.get("EndpointConfig") or {})
    if {k for k, v in endpoint.items() if v} - {"Aliases"}:
        raise Refused(f"endpoint settings not allowed: {sorted(endpoint)} (only Aliases)")
    for alias in endpoint.get("Aliases") or []:
        if not OBJECT_ID.fullmatch(str(alias)):
            raise Refused(f"not an alias: {alias!r}")
    return {**body, "Container": hub_container}


def stack_tasks(tasks: list[dict[str, Any]], policy: Policy) -> list[dict[str, Any]]:
    """Of GET /tasks, the stack's own: other services' specs (their environment) stay unseen."""
    return [t for t in tasks
            if (((t.get("Spec") or {}).get("ContainerSpec") or {}).get("Labels") or {}).get(LABEL)
            == policy.stack]


def _only_no_new_privileges(options: list[str]) -> bool:
    return all(str(o).replace("=", ":") in ("no-new-privileges", "no-new-privileges:true") for o in options)


# ---- network guard (pure rendering) ---------------------------------------------------
@dataclass(frozen=True)
class Guard:
    """The addresses the users' network guard is written for."""

    bridge: str
    hub_ips: tuple[str, ...]
    nginx_ips: tuple[str, ...]
    host_ports: tuple[int, ...]
    nginx_port: int = 8443  # nginx's TLS port (users may open the public URL)
    hub_api_port: int = 8081  # the hub's API, which users' servers report to
    hub_proxy_port: int = 8000  # configurable-http-proxy, for nginx only

    @property
    def table(self) -> str:
        return "hostkit_" + re.sub(r"[^A-Za-z0-9_]", "_", self.bridge)


def _set(items: tuple[object, ...]) -> str:
    return "{ " + ", ".join(str(i) for i in items) + " }"


def render_guard(guard: Guard) -> str:
    """An `nft -f` script that replaces the guard's table in one transaction."""
    br = json.dumps(guard.bridge)
    fwd = [
        f"iifname != {br} accept",
        "ct state established,related accept",
        "ip daddr 169.254.0.0/16 counter drop comment \"link-local: cloud metadata\"",
    ]
    if guard.hub_ips:
        hub = _set(guard.hub_ips)
        fwd += [
            f"oifname {br} ip saddr {hub} accept",
            f"oifname {br} ip daddr {hub} tcp dport {guard.hub_api_port} accept",
        ]
        if guard.nginx_ips:
            nginx, port = _set(guard.nginx_ips), guard.hub_proxy_port
            fwd.append(f"oifname {br} ip saddr {nginx} ip daddr {hub} tcp dport {port} accept")
    if guard.nginx_ips:
        fwd.append(f"oifname {br} ip daddr {_set(guard.nginx_ips)} tcp dport {guard.nginx_port} accept")
    fwd.append(f"oifname {br} counter drop comment \"user to user\"")
    if guard.host_ports:
        fwd.append(f"ct status dnat ct original proto-dst {_set(guard.host_ports)} accept")
    fwd.append("ct status dnat counter drop comment \"the host's other published ports\"")
    inp = [
        f"iifname != {br} accept",
        "ct state established,related accept",
        "meta l4proto { tcp, udp } th dport 53 accept",
    ]
    if guard.host_ports:
        inp.append(f"tcp dport {_set(guard.host_ports)} accept")
    inp.append("counter drop comment \"the host's other ports\"")
    lines = [
        f"table inet {guard.table} {{}}",
        f"delete table inet {guard.table}",
        f"table inet {guard.table} {{",
        "  chain forward {",
        "    type filter hook forward priority -10; policy accept;",
        *(f"    {rule}" for rule in fwd),
        "  }",
        "  chain input {",
        "    type filter hook input priority -10; policy accept;",
        *(f"    {rule}" for rule in inp),
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


STALE_TABLE = re.compile(r"^table inet (hostkit_br_([0-9a-f]{12}))$", re.MULTILINE)


def stale_tables(listing: str, bridge_exists: Any) -> list[str]:
    """Guard tables (from `nft list tables`) whose Docker bridge is gone."""
    return [m.group(1) for m in STALE_TABLE.finditer(listing) if not bridge_exists(f"br-{m.group(2)}")]


def parse_ports(text: str) -> tuple[int, ...]:
    ports = []
    for item in text.replace(" ", ",").split(","):
        if item.strip():
            port = int(item)
            if not 0 < port < 65536:
                raise ValueError(f"not a port: {item}")
            ports.append(port)
    return tuple(sorted(set(ports)))


# ---- upstream -------------------------------------------------------------------------
class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 120) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


@dataclass
class Upstream:
    path: str = "/var/run/docker.sock"

    def request(
        self, method: str, url: str, body: Optional[bytes] = None, headers: Optional[dict[str, str]] = None
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = UnixHTTPConnection(self.path)
        try:
            conn.request(method, url, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        finally:
            conn.close()

    def get_json(self, url: str) -> Any:
        status, _, data = self.request("GET", url)
        if status != 200:
            raise LookupError(f"GET {url}: {status}")
        return json.loads(data)


# ---- the guard's loop -------------------------------------------------------------------
@dataclass
class GuardKeeper:
    upstream: Upstream
    policy: Policy
    host_ports: tuple[int, ...]
    enabled: bool = True
    applied: Optional[str] = None
    ok: bool = False
    error: str = "not applied yet"
    lock: threading.Lock = field(default_factory=threading.Lock)

    def current(self) -> Guard:
        net = self.upstream.get_json(f"/networks/{urllib.parse.quote(self.policy.network)}")
        bridge = (net.get("Options") or {}).get("com.docker.network.bridge.name") or "br-" + net["Id"][:12]
        ips: dict[str, list[str]] = {"jupyterhub": [], "nginx": []}
        flt = json.dumps({"label": [f"com.docker.compose.project={self.policy.stack}"]})
        for row in self.upstream.get_json("/containers/json?filters=" + urllib.parse.quote(flt)):
            service = (row.get("Labels") or {}).get("com.docker.compose.service", "")
            endpoint = ((row.get("NetworkSettings") or {}).get("Networks") or {}).get(self.policy.network)
            if service in ips and endpoint and endpoint.get("IPAddress"):
                ips[service].append(endpoint["IPAddress"])
        return Guard(bridge, tuple(sorted(ips["jupyterhub"])), tuple(sorted(ips["nginx"])), self.host_ports)

    def refresh(self) -> bool:
        """Bring the nftables table up to date; True when it is in place."""
        if not self.enabled:
            return True
        with self.lock:
            try:
                guard = self.current()
                script = render_guard(guard)
                listed = subprocess.run(
                    ["nft", "list", "table", "inet", guard.table], capture_output=True, text=True, check=False
                )
                if script != self.applied or listed.returncode != 0:
                    proc = subprocess.run(
                        ["nft", "-f", "-"], input=script, capture_output=True, text=True, check=False
                    )
                    if proc.returncode != 0:
                        raise RuntimeError(proc.stderr.strip() or "nft failed")
                    log.info("network guard for %s: hub %s, nginx %s, host ports %s",
                             guard.bridge, guard.hub_ips, guard.nginx_ips, guard.host_ports)
                    self.applied = script
                self.ok, self.error = bool(guard.hub_ips), "" if guard.hub_ips else "the hub has no address"
            except (OSError, LookupError, RuntimeError, ValueError, KeyError) as exc:
                self.ok, self.error = False, str(exc)
                log.warning("network guard: %s", exc)
            return self.ok

    def remove_stale(self) -> None:
        """Drop the tables of stacks whose network no longer exists (no rules pile up)."""
        listed = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=False)
        for table in stale_tables(listed.stdout, lambda b: os.path.exists(f"/sys/class/net/{b}")):
            subprocess.run(["nft", "delete", "table", "inet", table], capture_output=True, check=False)
            log.info("removed the guard table %s (its network is gone)", table)

    def loop(self, every: float = 3.0) -> None:
        if self.enabled:
            self.remove_stale()
        while True:
            self.refresh()
            time.sleep(every)


# ---- HTTP server ------------------------------------------------------------------------
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "upgrade"}


class ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ProxyServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args)

    def _send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for key, value in headers:
            if key.lower() not in HOP_HEADERS:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _refuse(self, reason: str, status: int = 403) -> None:
        log.warning("refused %s %s: %s", self.command, self.path, reason)
        body = json.dumps({"message": f"hostkit docker-api: {reason}"}).encode()
        self._send(status, [("Content-Type", "application/json")], body)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True
            self._refuse("chunked request bodies are not accepted", 411)
            return
        try:
            policy, upstream = self.server.policy, self.server.upstream
            kind, obj = route(self.command, self.path, policy.swarm)
            if kind == "image" and obj not in policy.images:
                raise Refused(f"image {obj!r} is not allowed")
            if kind == "container":
                status, _, data = upstream.request("GET", f"/containers/{urllib.parse.quote(obj)}/json")
                if status == 404:
                    self._send(404, [("Content-Type", "application/json")], data)
                    return
                labels = (json.loads(data).get("Config") or {}).get("Labels") or {} if status == 200 else {}
                if labels.get(LABEL) != policy.stack:
                    raise Refused(f"{obj} is not a user container of this stack")
            if kind in ("service", "tasks", "service-create", "network", "network-create", "network-connect"):
                body, answered = self._swarm(kind, obj, body)
                if answered:
                    return
            if kind == "create":
                query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
                checked = check_create(query, json.loads(body or b"{}"), policy)
                if not self.server.guard.refresh():
                    raise Refused(f"the users' network guard is not in place: {self.server.guard.error}")
                body = json.dumps(checked).encode()
                log.info("creating %s", query.get("name"))
        except Refused as exc:
            self._refuse(str(exc))
            return
        except (ValueError, TypeError, AttributeError) as exc:
            self._refuse(f"malformed request: {exc}", 400)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS | {"host"}}
        if body is not None:
            headers["Content-Length"] = str(len(body))
        status, resp_headers, data = self.server.upstream.request(self.command, self.path, body, headers)
        self._send(status, resp_headers, data)

    def _swarm(self, kind: str, obj: str, body: Optional[bytes]) -> tuple[Optional[bytes], bool]:
        """The swarm endpoints' checks: (the body to forward, whether it was answered here)."""
        policy, upstream = self.server.policy, self.server.upstream
        if kind.startswith("network"):
            return self._network(kind, obj, body)
        if kind == "service":
            status, _, data = upstream.request("GET", f"/services/{urllib.parse.quote(obj)}")
            if status == 404:
                self._send(404, [("Content-Type", "application/json")], data)
                return body, True
            labels = ((json.loads(data).get("Spec") or {}).get("Labels") or {}) if status == 200 else {}
            if labels.get(LABEL) != policy.stack:
                raise Refused(f"{obj} is not a user service of this stack")
            return body, False
        if kind == "tasks":
            status, headers, data = upstream.request("GET", self.path)
            if status == 200:
                data = json.dumps(stack_tasks(json.loads(data), policy)).encode()
            self._send(status, headers, data)
            return body, True
        checked = check_service_create(json.loads(body or b"{}"), policy)
        log.info("creating the service %s", checked.get("Name"))
        return json.dumps(checked).encode(), False

    def _network(self, kind: str, obj: str, body: Optional[bytes]) -> tuple[Optional[bytes], bool]:
        """A user's own network: created as check_network_create allows; inspected, removed,
        joined or left (by the hub's container only) when it is one of the stack's. The stack's
        own network may be inspected (the hub reads whether it is encrypted)."""
        policy, upstream = self.server.policy, self.server.upstream
        if kind == "network-create":
            checked = check_network_create(json.loads(body or b"{}"), policy)
            log.info("creating the network %s", checked.get("Name"))
            return json.dumps(checked).encode(), False
        status, _, data = upstream.request("GET", f"/networks/{urllib.parse.quote(obj)}")
        if status == 404:
            self._send(404, [("Content-Type", "application/json")], data)
            return body, True
        net = json.loads(data) if status == 200 else {}
        name = str(net.get("Name") or "")
        ours = policy.user_network_ok(name) and (net.get("Labels") or {}).get(LABEL) == policy.stack
        if not ours and not (self.command == "GET" and name == policy.network):
            raise Refused(f"{obj} is not a user network of this stack")
        if kind == "network-connect":
            checked = check_network_connect(json.loads(body or b"{}"), self._hub_container())
            return json.dumps(checked).encode(), False
        return body, False

    def _hub_container(self) -> str:
        """The full id of this stack's hub container (compose's labels), "" when none runs."""
        policy = self.server.policy
        flt = json.dumps({"label": [f"com.docker.compose.project={policy.stack}",
                                    f"com.docker.compose.service={policy.hub_service}"]})
        rows = self.server.upstream.get_json("/containers/json?filters=" + urllib.parse.quote(flt))
        return str(rows[0]["Id"]) if len(rows) == 1 else ""

    do_GET = do_POST = do_DELETE = do_HEAD = do_PUT = _handle


class ProxyServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, policy: Policy, upstream: Upstream, guard: GuardKeeper) -> None:
        self.policy, self.upstream, self.guard = policy, upstream, guard
        if os.path.exists(path):
            os.unlink(path)
        super().__init__(path, ProxyHandler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, _ = self.socket.accept()
        return sock, ("unix", 0)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    env = dict(os.environ)
    policy = Policy.from_env(env)
    upstream = Upstream(env.get("HOSTKIT_DOCKER_SOCKET", "/var/run/docker.sock"))
    keeper = GuardKeeper(
        upstream,
        policy,
        parse_ports(env.get("HOSTKIT_HOST_PORTS", "")),
        # The guard filters a Docker bridge on this host; on a swarm users are kept apart by
        # networks of their own instead (hostkit_swarm.py; README, "Several servers").
        enabled=env.get("HOSTKIT_ISOLATE_USERS", "1") != "0" and not policy.swarm,
    )
    if policy.swarm and not policy.isolate:
        log.warning("swarm: HOSTKIT_ISOLATE_USERS=0, users' servers share the stack's overlay")
    keeper.refresh()
    threading.Thread(target=keeper.loop, daemon=True).start()
    path = env.get("HOSTKIT_PROXY_SOCKET", "/run/hostkit-docker/docker.sock")
    server = ProxyServer(path, policy, upstream, keeper)
    uid = int(env.get("HOSTKIT_HUB_UID", "1000"))
    os.chmod(path, 0o660)  # before chown: changing the mode of another's file needs CAP_FOWNER
    os.chown(path, uid, 0)  # the hub's user; group root for this service's health check
    log.info("serving %s for %s (images %s)", path, policy.stack, sorted(policy.images))
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
