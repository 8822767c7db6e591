"""The docker-api proxy's policy: what a compromised hub may and may not ask Docker for."""

from __future__ import annotations

import importlib.util
import sys
import urllib.parse
from pathlib import Path
from typing import Any, ClassVar

import pytest

PATH = Path(__file__).resolve().parents[2] / "stack" / "hostkit_dockerproxy.py"
_spec = importlib.util.spec_from_file_location("hostkit_dockerproxy", PATH)
assert _spec is not None
assert _spec.loader is not None
proxy = importlib.util.module_from_spec(_spec)
sys.modules["hostkit_dockerproxy"] = proxy
_spec.loader.exec_module(proxy)

POLICY = proxy.Policy(
    stack="hk1",
    network="hk1-net",
    prefix="hk1",
    volume_pattern="hk1-user-{username}",
    images=frozenset({"hostkit/singleuser:full"}),
)


def _spawner_body(**host: Any) -> dict[str, Any]:
    """What DockerSpawner 14 sends to POST /containers/create (the fields that matter)."""
    host_config = {
        "NetworkMode": "hk1-net",
        "Binds": ["hk1-user-alice:/home/jovyan/work:rw"],
        "Memory": 2 * 1024**3,
        "NanoCpus": 1_000_000_000,
        "PidsLimit": 1024,
        "ExtraHosts": ["hostkit-host:10.0.0.7"],
        **host,
    }
    return {"Image": "hostkit/singleuser:full", "Labels": {"x": "1"}, "HostConfig": host_config}


def test_what_dockerspawner_sends_is_forwarded_with_the_stack_label() -> None:
    body = proxy.check_create({"name": "hk1-alice"}, _spawner_body(), POLICY)
    assert body["Labels"] == {"x": "1", proxy.LABEL: "hk1"}
    assert body["HostConfig"]["Binds"] == ["hk1-user-alice:/home/jovyan/work:rw"]


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ({"Privileged": True}, "Privileged"),
        ({"Binds": ["/:/host:rw"]}, "bind mount '/'"),
        ({"Binds": ["/var/run/docker.sock:/var/run/docker.sock"]}, "bind mount"),
        ({"Binds": ["hk1-hub-data:/data"]}, "bind mount 'hk1-hub-data'"),
        ({"Mounts": [{"Type": "bind", "Source": "/etc", "Target": "/x"}]}, "bind mount '/etc'"),
        ({"NetworkMode": "host"}, "NetworkMode"),
        ({"NetworkMode": "container:abc"}, "NetworkMode"),
        ({"PidMode": "host"}, "PidMode"),
        ({"IpcMode": "host"}, "IpcMode"),
        ({"UsernsMode": "host"}, "UsernsMode"),
        ({"CapAdd": ["SYS_ADMIN"]}, "CapAdd"),
        ({"Devices": [{"PathOnHost": "/dev/sda"}]}, "Devices"),
        ({"SecurityOpt": ["apparmor=unconfined"]}, "SecurityOpt"),
        ({"Sysctls": {"net.ipv4.ip_forward": "1"}}, "Sysctls"),
        ({"PortBindings": {"8888/tcp": [{"HostPort": "8888"}]}}, "PortBindings"),
        ({"PidsLimit": 0}, "PidsLimit"),
        ({"PidsLimit": -1}, "PidsLimit"),
        ({"Memory": 0}, "Memory"),
        ({"Runtime": "runsc-debug"}, "runtime"),
        ({"CgroupParent": "/"}, "CgroupParent"),
        # a user volume the local driver creates as a bind mount of the host's / (dockerd
        # creates a missing volume from the mount's driver options)
        ({"Mounts": [{"Type": "volume", "Source": "hk1-user-alice", "Target": "/x", "VolumeOptions": {
            "DriverConfig": {"Name": "local", "Options": {"type": "none", "o": "bind", "device": "/"}}}}]},
         "volume driver options"),
        ({"Mounts": [{"Type": "volume", "Source": "hk1-user-alice", "Target": "/x", "VolumeOptions": {
            "DriverConfig": {"Name": "sshfs", "Options": {}}}}]}, "volume driver 'sshfs'"),
    ],
)
def test_create_requests_that_reach_the_host_are_refused(host: dict[str, Any], reason: str) -> None:
    body = _spawner_body(**host)
    with pytest.raises(proxy.Refused, match=reason):
        proxy.check_create({"name": "hk1-alice"}, body, POLICY)


def test_only_allowed_images_and_names_with_the_prefix() -> None:
    with pytest.raises(proxy.Refused, match="image 'alpine' is not allowed"):
        proxy.check_create({"name": "hk1-alice"}, {**_spawner_body(), "Image": "alpine"}, POLICY)
    with pytest.raises(proxy.Refused, match="does not start with hk1-"):
        proxy.check_create({"name": "nginx"}, _spawner_body(), POLICY)
    with pytest.raises(proxy.Refused, match="networks other than"):
        proxy.check_create(
            {"name": "hk1-a"},
            {**_spawner_body(), "NetworkingConfig": {"EndpointsConfig": {"bridge": {}}}},
            POLICY,
        )
    assert proxy.check_create({"name": "hk1-a"}, _spawner_body(SecurityOpt=["no-new-privileges"]), POLICY)


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/v1.41/version", ("pass", "")),
        ("GET", "/_ping", ("pass", "")),
        ("GET", "/v1.41/images/hostkit/singleuser:full/json", ("image", "hostkit/singleuser:full")),
        ("POST", "/v1.41/containers/create?name=hk1-alice", ("create", "")),
        ("GET", "/v1.41/containers/hk1-alice/json", ("container", "hk1-alice")),
        ("POST", "/v1.41/containers/abc/start", ("container", "abc")),
        ("POST", "/v1.41/containers/abc/stop?t=10", ("container", "abc")),
        ("DELETE", "/v1.41/containers/abc?v=True", ("container", "abc")),
    ],
)
def test_the_endpoints_dockerspawner_needs_are_routed(
    method: str, path: str, expected: tuple[str, str]
) -> None:
    assert proxy.route(method, path) == expected


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1.41/containers/abc/exec"),
        ("POST", "/v1.41/exec/abc/start"),
        ("PUT", "/v1.41/containers/abc/archive"),
        ("POST", "/v1.41/images/create?fromImage=alpine"),
        ("POST", "/v1.41/build"),
        ("GET", "/v1.41/containers/json"),
        ("POST", "/v1.41/volumes/create"),
        ("POST", "/v1.41/networks/hk1-net/connect"),
        ("GET", "/v1.41/events"),
        ("POST", "/v1.41/swarm/init"),
        ("POST", "/v1.41/plugins/pull"),
    ],
)
def test_every_other_endpoint_is_refused(method: str, path: str) -> None:
    with pytest.raises(proxy.Refused, match="endpoint not allowed"):
        proxy.route(method, path)


def test_volume_pattern_matches_user_volumes_only() -> None:
    assert POLICY.volume_ok("hk1-user-alice")
    assert POLICY.volume_ok("hk1-user-a-2eb")  # DockerSpawner's escaped names
    assert not POLICY.volume_ok("hk1-user-")
    assert not POLICY.volume_ok("hk1-hub-data")
    assert not POLICY.volume_ok("/etc")


def test_guard_drops_user_to_user_host_ports_and_link_local_but_not_the_hub() -> None:
    guard = proxy.Guard("br-0123456789ab", ("172.30.0.2",), ("172.30.0.3",), (5432,))
    script = proxy.render_guard(guard)
    table = "table inet hostkit_br_0123456789ab"
    assert script.startswith(f"{table} {{}}\ndelete {table}\n")  # one transaction replaces it
    lines = [line.strip() for line in script.splitlines()]
    # order matters: the hub's and nginx's exceptions come before the user-to-user drop
    br = 'oifname "br-0123456789ab"'
    from_hub = lines.index(f"{br} ip saddr {{ 172.30.0.2 }} accept")
    hub_api = lines.index(f"{br} ip daddr {{ 172.30.0.2 }} tcp dport 8081 accept")
    via_nginx = lines.index(f"{br} ip saddr {{ 172.30.0.3 }} ip daddr {{ 172.30.0.2 }} tcp dport 8000 accept")
    nginx = lines.index(f"{br} ip daddr {{ 172.30.0.3 }} tcp dport 8443 accept")
    drop = lines.index(f'{br} counter drop comment "user to user"')
    assert max(from_hub, hub_api, via_nginx, nginx) < drop
    assert 'ip daddr 169.254.0.0/16 counter drop comment "link-local: cloud metadata"' in lines
    assert "tcp dport { 5432 } accept" in lines
    last = lines.index('counter drop comment "the host\'s other ports"')
    assert lines.index("tcp dport { 5432 } accept") < last
    assert "ct status dnat ct original proto-dst { 5432 } accept" in lines


def test_host_ports_setting() -> None:
    assert proxy.parse_ports("5432, 6379,5432") == (5432, 6379)
    assert proxy.parse_ports("") == ()
    with pytest.raises(ValueError, match="not a port"):
        proxy.parse_ports("70000")


def test_stale_guard_tables_are_those_whose_bridge_is_gone() -> None:
    listing = "table inet firewalld\ntable inet hostkit_br_0123456789ab\ntable inet hostkit_br_aaaaaaaaaaaa\n"
    assert proxy.stale_tables(listing, lambda b: b == "br-0123456789ab") == ["hostkit_br_aaaaaaaaaaaa"]


@pytest.mark.parametrize(
    "path",
    [
        "/v1.41/containers/../start",
        "/v1.41/containers/a%2F..%2Fb/start",
        "/v1.41/containers/-rf/stop",
    ],
)
def test_odd_container_ids_are_refused(path: str) -> None:
    with pytest.raises(proxy.Refused):
        proxy.route("POST", path)


def _policy_from_env(**env: str) -> Any:
    """The policy as the docker-api service builds it, with hostkit_profiles.py beside it."""
    stack = str(PATH.parent)
    if stack not in sys.path:
        sys.path.insert(0, stack)
    return proxy.Policy.from_env({"COMPOSE_PROJECT_NAME": "hk1", "HOSTKIT_NETWORK": "hk1-net",
                                  "HOSTKIT_CONTAINER_PREFIX": "hk1",
                                  "HOSTKIT_USER_VOLUME": "hk1-user-{username}", **env})


GPU_REQUEST = {"Driver": "nvidia", "Count": 1, "DeviceIDs": None,
               "Capabilities": [["gpu", "utility", "compute"]], "Options": {}}


def test_the_images_the_hub_may_start_are_the_environments_it_offers() -> None:
    only = _policy_from_env()
    assert only.images == frozenset({"hostkit/singleuser:full"})
    both = _policy_from_env(HOSTKIT_PROFILES="datascience,sage", HOSTKIT_SAGE_IMAGE="hostkit/sage:10.8.13")
    assert both.images == frozenset({"hostkit/singleuser:full", "hostkit/sage:10.8.13"})
    body = {**_spawner_body(), "Image": "hostkit/sage:10.8.13"}
    assert proxy.check_create({"name": "hk1-alice"}, body, both)["Image"] == "hostkit/sage:10.8.13"
    with pytest.raises(proxy.Refused, match=r"image 'hostkit/sage:10\.8\.13' is not allowed"):
        proxy.check_create({"name": "hk1-alice"}, body, only)


def test_gpu_requests_pass_only_when_the_gpu_environment_is_offered() -> None:
    body = _spawner_body(DeviceRequests=[GPU_REQUEST])
    with pytest.raises(proxy.Refused, match="DeviceRequests"):
        proxy.check_create({"name": "hk1-alice"}, body, _policy_from_env())
    # offered only where the doctor's GPU checks passed (stack up writes HOSTKIT_GPU_READY)
    hidden = _policy_from_env(HOSTKIT_PROFILES="datascience,gpu")
    with pytest.raises(proxy.Refused, match="DeviceRequests"):
        proxy.check_create({"name": "hk1-alice"}, body, hidden)
    gpu = _policy_from_env(HOSTKIT_PROFILES="datascience,gpu", HOSTKIT_GPU_READY="1")
    assert proxy.check_create({"name": "hk1-alice"}, body, gpu)["HostConfig"]["DeviceRequests"]
    # and nothing but NVIDIA GPUs: another driver or capability is refused even then
    for odd in ({**GPU_REQUEST, "Driver": "other"}, {**GPU_REQUEST, "Capabilities": [["gpu", "fpga"]]}):
        with pytest.raises(proxy.Refused, match="DeviceRequests"):
            proxy.check_create({"name": "hk1-alice"}, _spawner_body(DeviceRequests=[odd]), gpu)


def test_a_user_volume_may_carry_only_the_size_limit_the_site_set() -> None:
    def mount(options: dict[str, str]) -> dict[str, Any]:
        return {"Type": "volume", "Source": "hk1-user-alice", "Target": "/home/jovyan/work",
                "VolumeOptions": {"DriverConfig": {"Name": "local", "Options": options}}}  # fmt: skip

    sized = proxy.Policy(**{**POLICY.__dict__, "volume_size": "10G"})
    body = _spawner_body(Binds=[], Mounts=[mount({"size": "10G"})])
    forwarded = proxy.check_create({"name": "hk1-alice"}, body, sized)
    assert forwarded["HostConfig"]["Mounts"] == [mount({"size": "10G"})]
    with pytest.raises(proxy.Refused, match="only size=10G"):
        proxy.check_create({"name": "hk1-alice"}, _spawner_body(Mounts=[mount({"size": "1T"})]), sized)
    with pytest.raises(proxy.Refused, match="not allowed"):  # no quota set: no options at all
        proxy.check_create({"name": "hk1-alice"}, _spawner_body(Mounts=[mount({"size": "10G"})]), POLICY)
    assert proxy.Policy.from_env({"HOSTKIT_USER_DISK_QUOTA": "10G"}).volume_size == "10G"


# ---- on a Docker Swarm (HOSTKIT_CLUSTER=swarm): SwarmSpawner's services -------------------------
SWARM = proxy.Policy(
    stack="hk1", network="hk1-net", prefix="hk1", volume_pattern="hk1-user-{username}",
    images=frozenset({"hostkit/singleuser:full"}), swarm=True,
)


def _service_body(**task: Any) -> dict[str, Any]:
    """What hostkit's SwarmSpawner (DockerSpawner 14, docker-py 7) sends to POST /services/create."""
    template = {
        "ContainerSpec": {
            "Image": "hostkit/singleuser:full",
            "Args": ["start-notebook.sh"],
            "Env": ["JUPYTERHUB_API_TOKEN=x"],
            "Mounts": [{"Target": "/home/jovyan/work", "Source": "hk1-user-alice", "Type": "volume",
                        "ReadOnly": False}],
        },
        "Resources": {"Limits": {"NanoCPUs": 2_000_000_000, "MemoryBytes": 4 * 1024**3, "Pids": 1024}},
        "Networks": [{"Target": "hk1-net-user-alice"}],
        "Placement": {"Constraints": ["node.role==worker", "node.id==abc123"]},
        **task,
    }
    return {"Name": "hk1-alice", "TaskTemplate": template, "EndpointSpec": {"Mode": "dnsrr"},
            "Labels": {"x": "1"}}


def test_a_swarm_spawners_service_is_forwarded_with_the_stack_label_on_it_and_its_tasks() -> None:
    body = proxy.check_service_create(_service_body(), SWARM)
    assert body["Labels"] == {"x": "1", proxy.LABEL: "hk1"}
    assert body["TaskTemplate"]["ContainerSpec"]["Labels"] == {proxy.LABEL: "hk1"}
    assert body["TaskTemplate"]["Placement"]["Constraints"][0] == "node.role==worker"


def _with_spec(**spec: Any) -> dict[str, Any]:
    body = _service_body()
    body["TaskTemplate"]["ContainerSpec"].update(spec)
    return body


@pytest.mark.parametrize(("body", "reason"), [
    (_with_spec(Privileges={"CredentialSpec": None, "SELinuxContext": {"Disable": True}}), "Privileges"),
    (_with_spec(CapabilityAdd=["SYS_ADMIN"]), "CapabilityAdd"),
    (_with_spec(Secrets=[{"SecretName": "hub"}]), "Secrets"),
    (_with_spec(Sysctls={"net.ipv4.ip_forward": "1"}), "Sysctls"),
    (_with_spec(Image="alpine"), "image 'alpine'"),
    (_with_spec(Mounts=[{"Target": "/host", "Source": "/", "Type": "bind"}]), "bind mount '/'"),
    (_with_spec(Mounts=[{"Target": "/d", "Source": "hk1-hub-data", "Type": "volume"}]), "hk1-hub-data"),
    (_with_spec(Mounts=[{"Target": "/d", "Source": "hk1-user-bob", "Type": "volume",
                         "VolumeOptions": {"DriverConfig": {"Name": "local", "Options": {
                             "type": "none", "o": "bind", "device": "/etc"}}}}]), "driver options"),
    (_service_body(Networks=[{"Target": "host"}]), "own network hk1-net-user-NAME only"),
    (_service_body(Networks=[{"Target": "hk1-net"}]), "own network hk1-net-user-NAME only"),
    (_service_body(Networks=[{"Target": "hk1-net-user-alice"}, {"Target": "hk1-net-user-bob"}]),
     "own network"),
    (_service_body(Networks=[{"Target": "hk1-net-user-alice"}, {"Target": "ingress"}]), "own network"),
    (_service_body(Placement={"Constraints": ["node.role==manager"]}), "node.role==worker"),
    (_service_body(Placement={}), "node.role==worker"),
    (_service_body(Resources={"Limits": {"Pids": 10}}), "MemoryBytes"),
    (_service_body(Resources={"Limits": {"MemoryBytes": 1024**3}}), "Pids"),
    (_service_body(Resources={"Limits": {"MemoryBytes": 1024**3, "Pids": 99999}}), "Pids"),
    (_service_body(Runtime="plugin"), "TaskTemplate fields"),
    (_service_body(PluginSpec={"Name": "evil"}), "TaskTemplate fields"),
    ({**_service_body(), "Name": "other-alice"}, "does not start with hk1-"),
    ({**_service_body(), "EndpointSpec": {"Ports": [{"TargetPort": 8888, "PublishedPort": 80}]}},
     "published ports"),
    ({**_service_body(), "Mode": {"Global": {}}}, "one replicated task"),
    ({**_service_body(), "Mode": {"Replicated": {"Replicas": 5}}}, "one replicated task"),
])
def test_services_that_reach_the_host_or_the_manager_are_refused(body: dict[str, Any], reason: str) -> None:
    with pytest.raises(proxy.Refused, match=reason):
        proxy.check_service_create(body, SWARM)


@pytest.mark.parametrize(("method", "path", "expected"), [
    ("POST", "/v1.41/services/create", ("service-create", "")),
    ("GET", "/v1.41/services/hk1-alice?insertDefaults=false", ("service", "hk1-alice")),
    ("DELETE", "/v1.41/services/x1y2z3", ("service", "x1y2z3")),
    ("GET", "/v1.41/tasks?filters=%7B%22service%22%3A+%5B%22hk1-alice%22%5D%7D", ("tasks", "")),
    ("GET", "/v1.41/nodes?filters=%7B%22role%22%3A+%5B%22worker%22%5D%7D", ("pass", "")),
    ("GET", "/v1.41/nodes/abc123", ("pass", "")),
    ("POST", "/v1.41/networks/create", ("network-create", "")),
    ("GET", "/v1.41/networks/hk1-net-user-alice", ("network", "hk1-net-user-alice")),
    ("DELETE", "/v1.41/networks/hk1-net-user-alice", ("network", "hk1-net-user-alice")),
    ("POST", "/v1.41/networks/hk1-net-user-alice/connect", ("network-connect", "hk1-net-user-alice")),
    ("POST", "/v1.41/networks/hk1-net-user-alice/disconnect", ("network-connect", "hk1-net-user-alice")),
])
def test_the_endpoints_swarmspawner_needs_are_routed_on_a_swarm_only(
    method: str, path: str, expected: tuple[str, str]
) -> None:
    assert proxy.route(method, path, swarm=True) == expected
    with pytest.raises(proxy.Refused, match="endpoint not allowed"):
        proxy.route(method, path)


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/v1.41/services/hk1-alice/update"),
    ("GET", "/v1.41/services"),
    ("GET", "/v1.41/swarm"),  # the join tokens
    ("POST", "/v1.41/swarm/join"),
    ("POST", "/v1.41/nodes/abc/update"),
    ("DELETE", "/v1.41/nodes/abc"),
    ("GET", "/v1.41/secrets"),
    ("POST", "/v1.41/configs/create"),
    ("GET", "/v1.41/tasks/abc/logs"),
    ("GET", "/v1.41/networks"),  # every network, with its containers
    ("POST", "/v1.41/networks/prune"),
    ("PUT", "/v1.41/networks/hk1-net-user-alice"),
])
def test_other_swarm_endpoints_are_refused(method: str, path: str) -> None:
    with pytest.raises(proxy.Refused):
        proxy.route(method, path, swarm=True)


def test_the_hub_sees_only_the_stacks_tasks() -> None:
    ours = {"ID": "t1", "Spec": {"ContainerSpec": {"Labels": {proxy.LABEL: "hk1"}}}}
    theirs = {"ID": "t2", "Spec": {"ContainerSpec": {"Env": ["DB_PASSWORD=secret"]}}}
    other_stack = {"ID": "t3", "Spec": {"ContainerSpec": {"Labels": {proxy.LABEL: "hk2"}}}}
    assert proxy.stack_tasks([ours, theirs, other_stack], SWARM) == [ours]


def test_the_swarm_policy_comes_from_the_cluster_setting() -> None:
    assert proxy.Policy.from_env({"HOSTKIT_CLUSTER": "swarm"}).swarm
    assert not proxy.Policy.from_env({}).swarm


# ---- on a swarm, each user's server on an overlay network of its own --------------------------
def test_a_users_server_may_be_on_the_stacks_network_only_when_isolation_is_off() -> None:
    shared = _service_body(Networks=[{"Target": "hk1-net"}])
    open_stack = proxy.Policy(**{**SWARM.__dict__, "isolate": False})
    forwarded = proxy.check_service_create(shared, open_stack)
    assert forwarded["TaskTemplate"]["Networks"] == [{"Target": "hk1-net"}]
    with pytest.raises(proxy.Refused, match="'hk1-net' only"):
        proxy.check_service_create(_service_body(), open_stack)
    with pytest.raises(proxy.Refused, match="HOSTKIT_ISOLATE_USERS=0"):
        proxy.check_network_create(_network_body(), open_stack)
    assert not proxy.Policy.from_env({"HOSTKIT_ISOLATE_USERS": "0"}).isolate
    assert proxy.Policy.from_env({}).isolate


def _network_body(**fields: Any) -> dict[str, Any]:
    """What docker-py's create_network sends for hostkit_swarm.py's user network."""
    return {"Name": "hk1-net-user-alice", "Driver": "overlay", "Options": None, "IPAM": None,
            "CheckDuplicate": True, "Attachable": True, **fields}


def test_a_users_network_is_created_with_the_stack_label() -> None:
    assert proxy.check_network_create(_network_body(), SWARM)["Labels"] == {proxy.LABEL: "hk1"}
    encrypted = proxy.check_network_create(_network_body(Options={"encrypted": ""}), SWARM)
    assert encrypted["Options"] == {"encrypted": ""}


@pytest.mark.parametrize(("fields", "reason"), [
    ({"Name": "hk1-net"}, "is not hk1-net-user-NAME"),
    ({"Name": "other-user-alice"}, "is not hk1-net-user-NAME"),
    ({"Name": "hk1-net-user-../x"}, "is not hk1-net-user-NAME"),
    ({"Driver": "bridge"}, "only overlay"),
    ({"Driver": "macvlan"}, "only overlay"),
    ({"Attachable": False}, "attachable"),
    ({"Options": {"com.docker.network.driver.mtu": "9000"}}, "options"),
    ({"Options": {"parent": "eth0"}}, "options"),
    ({"IPAM": {"Config": [{"Subnet": "192.168.0.0/16"}]}}, "IPAM"),
    ({"Internal": True}, "Internal"),
    ({"Ingress": True}, "Ingress"),
    ({"ConfigFrom": {"Network": "hk1-net"}}, "ConfigFrom"),
    ({"EnableIPv6": True}, "EnableIPv6"),
    ({"Scope": "local"}, "Scope"),
    ({"Surprise": 1}, "Surprise"),
])
def test_other_networks_are_refused(fields: dict[str, Any], reason: str) -> None:
    with pytest.raises(proxy.Refused, match=reason):
        proxy.check_network_create(_network_body(**fields), SWARM)


HUB_ID = "4f1e2d3c4b5a" + "0" * 52


def test_only_the_hubs_own_container_joins_a_users_network_under_its_names() -> None:
    joined = proxy.check_network_connect(
        {"Container": HUB_ID[:12], "EndpointConfig": {"Aliases": ["jupyterhub"]}}, HUB_ID)
    assert joined == {"Container": HUB_ID, "EndpointConfig": {"Aliases": ["jupyterhub"]}}  # by full id
    assert proxy.check_network_connect({"Container": HUB_ID}, HUB_ID) == {"Container": HUB_ID}


@pytest.mark.parametrize(("body", "reason"), [
    ({"Container": "hk1-nginx-1"}, "only the hub's own container"),
    ({"Container": "4f1e2d"}, "only the hub's own container"),  # a prefix could name another
    ({"Container": "4f1e2d3c4b5b"}, "only the hub's own container"),
    ({"Container": ""}, "only the hub's own container"),
    ({"Container": HUB_ID, "Force": True}, "connect fields"),
    ({"Container": HUB_ID, "EndpointConfig": {"IPAMConfig": {"IPv4Address": "10.0.0.2"}}},
     "endpoint settings"),
    ({"Container": HUB_ID, "EndpointConfig": {"Links": ["jupyter-bob"]}}, "endpoint settings"),
    ({"Container": HUB_ID, "EndpointConfig": {"Aliases": ["a b"]}}, "not an alias"),
])
def test_other_containers_and_endpoint_settings_are_refused(body: dict[str, Any], reason: str) -> None:
    with pytest.raises(proxy.Refused, match=reason):
        proxy.check_network_connect(body, HUB_ID)
    with pytest.raises(proxy.Refused, match="only the hub's own container"):
        proxy.check_network_connect({"Container": HUB_ID[:12]}, "")  # no hub running


class FakeDocker:
    """The Docker API behind the proxy: networks and the stack's hub container; what reaches it."""

    NETWORKS: ClassVar[dict[str, dict[str, Any]]] = {
        "hk1-net": {"Name": "hk1-net", "Labels": {}},
        "hk1-net-user-alice": {"Name": "hk1-net-user-alice", "Labels": {proxy.LABEL: "hk1"}},
        # another stack's, named as this one's would be
        "hk1-net-user-bob": {"Name": "hk1-net-user-bob", "Labels": {proxy.LABEL: "hk2"}},
    }

    def __init__(self) -> None:
        self.forwarded: list[tuple[str, str, Any]] = []

    def request(self, method: str, url: str, body: Any = None,
                headers: Any = None) -> tuple[int, list[Any], bytes]:
        import json

        name = url.split("?", maxsplit=1)[0].rsplit("/", 1)[-1]
        if method == "GET" and url.startswith("/networks/"):
            found = self.NETWORKS.get(name)
            if not found:
                return 404, [], b'{"message": "no such network"}'
            return 200, [], json.dumps(found).encode()
        self.forwarded.append((method, url, json.loads(body) if body else None))
        return 200, [("Content-Type", "application/json")], b"{}"

    def get_json(self, url: str) -> Any:
        assert "jupyterhub" in urllib.parse.unquote(url)
        return [{"Id": HUB_ID}]


def _ask(socket_path: str, method: str, path: str, body: Any = None) -> int:
    import http.client
    import json
    import socket

    class Unix(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.connect(socket_path)

    conn = Unix("localhost")
    conn.request(method, path, json.dumps(body) if body is not None else None,
                 {"Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.status


def test_the_proxy_acts_only_on_the_stacks_user_networks_and_the_hubs_own_container(
    tmp_path: Path,
) -> None:
    import threading

    docker = FakeDocker()
    guard = proxy.GuardKeeper(docker, SWARM, (), enabled=False)  # type: ignore[arg-type]
    path = str(tmp_path / "docker.sock")
    server = proxy.ProxyServer(path, SWARM, docker, guard)  # type: ignore[arg-type]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        hub = {"Container": HUB_ID[:12], "EndpointConfig": {"Aliases": ["jupyterhub"]}}
        assert _ask(path, "POST", "/v1.41/networks/hk1-net-user-alice/connect", hub) == 200
        assert docker.forwarded[-1][2]["Container"] == HUB_ID
        assert _ask(path, "GET", "/v1.41/networks/hk1-net") == 200  # is the stack's encrypted
        assert _ask(path, "DELETE", "/v1.41/networks/hk1-net-user-alice") == 200
        assert _ask(path, "GET", "/v1.41/networks/hk1-net-user-carol") == 404
        assert len(docker.forwarded) == 3
        assert _ask(path, "DELETE", "/v1.41/networks/hk1-net") == 403  # the stack's own network
        assert _ask(path, "POST", "/v1.41/networks/hk1-net/connect", hub) == 403
        assert _ask(path, "POST", "/v1.41/networks/hk1-net-user-bob/connect", hub) == 403  # hk2's
        assert _ask(path, "DELETE", "/v1.41/networks/hk1-net-user-bob") == 403
        nginx = {"Container": "0123456789ab"}
        assert _ask(path, "POST", "/v1.41/networks/hk1-net-user-alice/connect", nginx) == 403
        assert _ask(path, "POST", "/v1.41/networks/create", _network_body(Driver="bridge")) == 403
        assert len(docker.forwarded) == 3
        assert _ask(path, "POST", "/v1.41/networks/create", _network_body()) == 200
        assert docker.forwarded[-1][2]["Labels"] == {proxy.LABEL: "hk1"}
    finally:
        server.shutdown()
        server.server_close()
