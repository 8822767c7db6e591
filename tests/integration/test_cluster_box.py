"""Several servers as one Docker Swarm, for real: three systemd boxes (a manager, two
workers), each with its own dockerd and firewalld, on one user-defined bridge network.

Everything goes through hostkit: `cluster init` / `join` (firewalld rich rules, the swarm,
the overlay network), `cluster sync-images` (the single-user image streamed from the
manager over ssh), `stack up --set HOSTKIT_CLUSTER=swarm` on the manager (the hub with this
tree's docker-api proxy), then users whose servers land on workers and run a kernel through
nginx on the manager, `cluster status`, the doctor, and `cluster remove`.

The tests share the cluster and run in file order. The overlay is not encrypted here: this
machine's kernel has no ESP (CONFIG_INET_ESP), so IPsec between the boxes cannot work.
Images: the hub and nginx as `hostkit stack build` made them, the single-user image is
HOSTKIT_CLUSTER_TEST_IMAGE (default the 1.9 GB notebook base: it runs the same
jupyterhub-singleuser, and the 3.6 GB full image only makes the copies slower).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "box"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from boxlib import Box
from cluster_support import (
    ADMIN_PASSWORD,
    NOTEBOOK_IMAGE,
    PORT,
    Cluster,
    join_command,
    running_cluster,
    stack_up,
)
from stack_support import Deployment, HubUser

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if os.geteuid() != 0:
        pytest.skip("needs root and a local dockerd")
    try:
        with running_cluster(NOTEBOOK_IMAGE, TIMINGS) as formed:
            yield formed
    finally:
        print("\nTIMINGS", json.dumps(TIMINGS, indent=1))


def test_init_and_join_through_hostkit_open_the_swarm_ports_to_the_cluster_only(cluster: Cluster) -> None:
    addrs = [b.address() for b in cluster.boxes]
    peers = " ".join(f"--peer {a}" for a in addrs)
    # before: firewalld rejects the swarm port, as on a fresh server
    refused = cluster.workers[0].sh(f"docker swarm join --token SWMTKN-1-x {addrs[0]}:2377", check=False)
    assert refused.returncode != 0
    init = cluster.hostkit(f"cluster init --advertise-addr {addrs[0]} {peers} --no-encrypt --yes")
    assert "daemon.json" in init.stdout  # bootstrap's host steps came first
    join = join_command(init.stdout) + " --data-root /srv/docker"
    assert "--peer" in join
    # the worker's plan, changing nothing: bootstrap's host steps, then the swarm's
    dry = cluster.workers[0].sh(f"{join} --dry-run", check=False)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    for step in ("Docker Engine", "/srv/docker", "daemon.json", "join the swarm"):
        assert step in dry.stdout, dry.stdout
    assert cluster.workers[0].docker_root() == "/var/lib/docker"
    for w in cluster.workers:
        res = w.sh(f"{join} --yes", check=False)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "network ok" in res.stdout  # a container resolved and reached out afterwards
        assert w.docker_root() == "/srv/docker"
        daemon = json.loads(w.sh("cat /etc/docker/daemon.json").stdout)
        assert daemon["log-opts"]["max-size"], daemon  # log rotation, as bootstrap writes it
        assert not w.sh("firewall-cmd --zone=public --list-ports").stdout.strip()  # no public port
    rules = cluster.workers[1].sh("firewall-cmd --list-rich-rules").stdout
    assert f'source address="{addrs[0]}" port port="2377" protocol="tcp" accept' in rules
    assert f'source address="{addrs[2]}" port port="4789" protocol="udp" accept' in rules
    # only the cluster's addresses: no port opened to everyone
    assert "7946" not in cluster.workers[1].sh("firewall-cmd --list-ports").stdout
    again = cluster.hostkit(f"cluster init --advertise-addr {addrs[0]} {peers} --no-encrypt --yes")
    assert "changed=0" in again.stdout
    nodes = cluster.status()
    assert {h: (n["role"], n["state"]) for h, n in nodes.items()} == {
        "manager": ("manager", "ready"), "worker1": ("worker", "ready"), "worker2": ("worker", "ready")}


def test_sync_images_streams_the_single_user_image_to_every_worker(cluster: Cluster) -> None:
    start = time.monotonic()
    res = cluster.hostkit(f"cluster sync-images --image {NOTEBOOK_IMAGE}")
    TIMINGS["sync_images_two_workers_s"] = time.monotonic() - start
    assert "changed=2" in res.stdout, res.stdout
    assert " GB" in res.stdout  # progress
    want = cluster.manager.sh(f"docker image inspect -f '{{{{.Id}}}}' {NOTEBOOK_IMAGE}").stdout
    for w in cluster.workers:
        assert w.sh(f"docker image inspect -f '{{{{.Id}}}}' {NOTEBOOK_IMAGE}").stdout == want
    assert "changed=0" in cluster.hostkit(f"cluster sync-images --image {NOTEBOOK_IMAGE}").stdout


def _stack_up(cluster: Cluster) -> None:
    stack_up(cluster.manager, cluster.images, {
        "HOSTKIT_CLUSTER": "swarm", "HOSTKIT_MEM_LIMIT": "1G", "HOSTKIT_CPU_LIMIT": "1",
        "HOSTKIT_CERT_RENEWAL": "off"})


def test_the_stack_on_the_swarm_puts_users_on_workers_and_runs_a_kernel_through_nginx(
    cluster: Cluster,
) -> None:
    start = time.monotonic()
    _stack_up(cluster)
    TIMINGS["stack_up_s"] = time.monotonic() - start
    # nginx and the hub on the manager, on the overlay
    ps = cluster.manager.sh("docker ps --format '{{.Names}} {{.Networks}}'").stdout
    assert "hostkit-jupyterhub" in ps
    dep = Deployment(Path("/nonexistent"), PORT, "jupyter", ADMIN_PASSWORD,
                     base_url=f"https://{cluster.manager.address()}:{PORT}")
    for name in ("alice", "bob"):
        password = f"{name}-Secret-{os.getpid()}"
        cluster.hostkit(f"users create {name} --password {password}")
        user = HubUser(dep, name, password)
        assert user.login()
        start = time.monotonic()
        user.start_server(timeout=600)
        TIMINGS[f"spawn_{name}_s"] = time.monotonic() - start
        cluster.users[name] = user
    placed = {h: n["servers"] for h, n in cluster.status().items()}
    assert placed["manager"] == []
    # the second user goes to the other worker: it has the most uncommitted memory
    assert sorted(placed["worker1"] + placed["worker2"]) == ["jupyter-alice", "jupyter-bob"]
    assert placed["worker1"]
    assert placed["worker2"]
    for name, user in cluster.users.items():
        assert user.run_code("1+1", user.token()) == "2", name
    # the user's server is a service task on a worker, with the single-host limits
    spec = json.loads(cluster.manager.sh("docker service inspect jupyter-alice").stdout)[0]["Spec"]
    limits = spec["TaskTemplate"]["Resources"]["Limits"]
    assert limits["MemoryBytes"] == 2**30
    assert limits["Pids"] == 1024
    assert spec["TaskTemplate"]["ContainerSpec"]["Mounts"][0]["Type"] == "volume"


def test_the_proxy_refuses_a_service_on_the_manager_or_with_host_mounts(cluster: Cluster) -> None:
    """What a compromised hub could ask, asked through the hub's own socket."""
    hub = cluster.manager.sh(
        "docker ps -q --filter label=com.docker.compose.service=jupyterhub").stdout.strip()
    script = (
        "import json,http.client,socket\n"
        "class C(http.client.HTTPConnection):\n"
        "    def connect(self):\n"
        "        self.sock=socket.socket(socket.AF_UNIX)\n"
        "        self.sock.connect('/run/hostkit-docker/docker.sock')\n"
        "def ask(body):\n"
        "    c=C('x'); c.request('POST','/v1.41/services/create',json.dumps(body),"
        "{'Content-Type':'application/json'}); r=c.getresponse()\n"
        "    return r.status, json.loads(r.read())['message']\n"
        "spec={'Image':'" + NOTEBOOK_IMAGE + "'}\n"
        "base={'Name':'jupyter-evil','TaskTemplate':{'ContainerSpec':spec,'Networks':[{'Target':"
        "'hostkit-jupyterhub'}],'Resources':{'Limits':{'MemoryBytes':1000000000,'Pids':100}},"
        "'Placement':{'Constraints':['node.role==manager']}}}\n"
        "print(*ask(base))\n"
        "base['TaskTemplate']['Placement']['Constraints']=['node.role==worker']\n"
        "spec['Mounts']=[{'Type':'bind','Source':'/','Target':'/host'}]\n"
        "print(*ask(base))\n"
        "c=C('x'); c.request('GET','/v1.41/swarm'); print(c.getresponse().status)\n"
    )
    out = cluster.manager.sh(f"docker exec -i {hub} python3 - <<'EOF'\n{script}EOF").stdout.splitlines()
    assert out[0].startswith("403 ")
    assert "node.role==worker" in out[0]
    assert out[1].startswith("403 ")
    assert "bind mount '/'" in out[1]
    assert out[2] == "403"
    assert "jupyter-evil" not in cluster.manager.sh("docker service ls").stdout


def test_the_doctor_passes_on_the_cluster_and_names_node_and_port_when_one_is_closed(
    cluster: Cluster,
) -> None:
    def doctor() -> dict[str, dict[str, str]]:
        res = cluster.hostkit("doctor --format json --only cluster", check=False, timeout=300)
        return {c["id"]: c for c in json.loads(res.stdout)["checks"]}

    checks = doctor()
    hosts = checks.pop("cluster.hosts")
    # the clocks agree (one kernel); on a loaded machine a slow ssh login may leave it unsure
    clocks = checks.pop("cluster.clocks")
    assert clocks["status"] == "pass" or "cannot tell" in clocks["summary"], clocks["summary"]
    assert {k: v["status"] for k, v in checks.items()} == {
        "cluster.ports": "pass", "cluster.images": "pass",
        "cluster.udp": "pass", "cluster.mtu": "pass", "cluster.overlay": "pass"}, checks
    # each worker's own host checks, run there: warnings only (two CPUs, ext4 volumes)
    assert hosts["status"] in ("pass", "warn"), hosts["summary"]
    worker1, worker2 = cluster.workers
    worker1.sh("mv /etc/docker/daemon.json /etc/docker/daemon.json.away")
    worker2.sh("nft delete table inet hostkit_node_guard")
    try:
        broken = doctor()["cluster.hosts"]
    finally:
        worker1.sh("mv /etc/docker/daemon.json.away /etc/docker/daemon.json")
        worker2.sh("systemctl restart hostkit-node-guard")
    assert broken["status"] == "fail", broken
    assert "worker1: daemon.logging" in broken["summary"]
    assert "worker2: daemon" not in broken["summary"]
    assert "worker2: firewall.node-guard no nftables table" in broken["summary"]
    assert "worker1: firewall.node-guard" not in broken["summary"]
    assert "worker1, worker2" in checks["cluster.overlay"]["summary"]
    assert "1450 + 50 VXLAN" in checks["cluster.mtu"]["summary"]
    manager = cluster.manager.address()
    rules = [f'rule family="ipv4" source address="{manager}" port port="{port}" accept'
             for port in ('7946" protocol="tcp', '4789" protocol="udp')]
    for rule in rules:
        worker2.sh(f"firewall-cmd --remove-rich-rule='{rule}'")
    try:
        closed = doctor()
        assert closed["cluster.ports"]["status"] == "fail"
        assert f"worker2 ({worker2.address()}): 7946/tcp closed" in closed["cluster.ports"]["summary"]
        assert "worker1" not in closed["cluster.ports"]["summary"]
        assert closed["cluster.udp"]["status"] == "fail"
        assert closed["cluster.udp"]["summary"] == (
            f"worker2 ({worker2.address()}): 4789/udp not open to manager ({manager})")
        # and by traffic: the hub's packets to worker2's test server are dropped there
        assert closed["cluster.overlay"]["status"] == "fail", closed["cluster.overlay"]
        assert closed["cluster.overlay"]["summary"].startswith("worker2: ")
        assert "worker1" not in closed["cluster.overlay"]["summary"]
    finally:
        for rule in rules:
            worker2.sh(f"firewall-cmd --add-rich-rule='{rule}'")
    assert not cluster.manager.sh("docker service ls -q --filter label=org.hostkit.probe").stdout.strip()
    # on a worker the cluster checks have nothing to say
    res = cluster.workers[0].sh("hostkit doctor --format json --only cluster", check=False)
    assert {c["status"] for c in json.loads(res.stdout)["checks"]} == {"skip"}


def _wait_node(cluster: Cluster, hostname: str, state: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while cluster.status()[hostname]["state"] != state:
        assert time.monotonic() < deadline, f"{hostname} did not become {state}"
        time.sleep(3)


def test_a_worker_killed_with_docker_kill_leaves_the_others_alone_and_its_users_are_told(
    cluster: Cluster,
) -> None:
    placed = {h: n["servers"] for h, n in cluster.status().items()}
    (server,) = placed["worker1"]
    name = server.removeprefix("jupyter-")
    other = next(n for n in cluster.users if n != name)
    user, bystander = cluster.users[name], cluster.users[other]
    assert user.run_code("import pathlib; pathlib.Path('/home/jovyan/work/kept.txt').write_text('mine')",
                         user.token()) == "4"
    bystanders_task = cluster.manager.sh(f"docker service ps -q jupyter-{other}").stdout.split()
    worker1 = cluster.workers[0]
    address = worker1.address()
    worker1.kill()  # the whole server: its dockerd, the user's container, firewalld, sshd
    try:
        _wait_node(cluster, "worker1", "down")
        user.wait_stopped(timeout=240)  # the hub's next poll finds its node down
        assert bystander.run_code("2+3", bystander.token()) == "5"
        refused = user.api("POST", f"/users/{name}/server")
        assert refused.status_code >= 400, refused.text
        # what the spawn page shows the user (its progress stream's last event)
        progress = user.api("GET", f"/users/{name}/server/progress")
        assert "Spawn failed: Your files are on server worker1, which is down" in progress.text
    finally:
        worker1.boot_again()
    assert worker1.address() == address  # the other nodes' firewall rules name this address
    _wait_node(cluster, "worker1", "ready")
    user.start_server(timeout=600)
    assert cluster.status()["worker1"]["servers"] == [server]
    assert user.run_code("open('/home/jovyan/work/kept.txt').read()", user.token()) == "'mine'"
    # the other user's server ran on through all of it: the same task, still answering
    assert cluster.manager.sh(f"docker service ps -q jupyter-{other}").stdout.split() == bystanders_task
    assert bystander.run_code("2+3", bystander.token()) == "5"


def test_remove_drains_a_worker_and_its_user_starts_again_on_the_other(cluster: Cluster) -> None:
    placed = {h: n["servers"] for h, n in cluster.status().items()}
    gone = "worker1"
    (server,) = placed[gone]
    name = server.removeprefix("jupyter-")
    other = next(n for n in cluster.users if n != name)
    res = cluster.hostkit(f"cluster remove {gone}")
    assert "removed from the swarm" in res.stdout
    assert gone not in cluster.status()
    moved, stayed = cluster.users[name], cluster.users[other]
    moved.wait_stopped(timeout=180)  # the hub notices its server is gone
    # the other user was not disturbed
    assert stayed.server_state()["servers"][""]["ready"]
    assert stayed.run_code("2+3", stayed.token()) == "5"
    moved.start_server(timeout=600)
    assert cluster.status()["worker2"]["servers"] == sorted([f"jupyter-{name}", f"jupyter-{other}"])
    assert moved.run_code("1+1", moved.token()) == "2"


BACKUPS = "/var/backups/hostkit-cluster-test"


def _server_node(cluster: Cluster, name: str) -> str:
    return next(h for h, n in cluster.status().items() if f"jupyter-{name}" in n["servers"])


def test_backup_and_restore_cover_users_volumes_on_the_workers(cluster: Cluster) -> None:
    """A user's files live on a worker: the backup fetches them from there, and a restore
    puts them back there after the volume is gone."""
    name = sorted(cluster.users)[0]
    user = cluster.users[name]
    node = _server_node(cluster, name)
    worker = next(w for w in cluster.workers if w.hostname == node)
    content = f"written on {node} by {name} {os.getpid()}"
    want = hashlib.sha256(content.encode()).hexdigest()
    assert user.run_code(f"open('/home/jovyan/work/backed.txt','w').write({content!r})",
                         user.token()) == str(len(content))
    start = time.monotonic()
    res = cluster.hostkit(f"backup --dest {BACKUPS}", check=False)
    TIMINGS["backup_with_worker_volumes_s"] = time.monotonic() - start
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"{node}: " in res.stderr  # progress names the node the volume is fetched from
    newest = cluster.manager.sh(f"ls -1d {BACKUPS}/hostkit-* | tail -1").stdout.strip()
    manifest = json.loads(cluster.manager.sh(f"cat {newest}/manifest.json").stdout)
    volume = f"jupyterhub-user-{name}"
    held = {(i.get("node"), i["volume"]) for i in manifest["items"] if i["kind"] == "volume"}
    assert (node, volume) in held, manifest["items"]

    user.stop_server()
    deadline = time.monotonic() + 120
    while worker.sh(f"docker volume rm {volume}", check=False).returncode != 0:  # its task may linger
        assert time.monotonic() < deadline, worker.sh("docker ps -a").stdout
        time.sleep(2)
    dry = cluster.hostkit(f"restore {newest} --users {name} --dry-run", check=False)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert f"missing  {volume} on {node}" in dry.stdout
    assert worker.sh(f"docker volume inspect {volume}", check=False).returncode != 0  # dry: nothing done
    start = time.monotonic()
    res = cluster.hostkit(f"restore {newest} --users {name}", check=False)
    TIMINGS["restore_one_worker_volume_s"] = time.monotonic() - start
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"restored volume {volume} on {node}" in res.stdout
    user.start_server(timeout=600)
    assert _server_node(cluster, name) == node
    code = ("import hashlib; hashlib.sha256(open('/home/jovyan/work/backed.txt','rb').read())"
            ".hexdigest()")
    assert user.run_code(code, user.token()) == repr(want)
    # a second restore finds the volume as in the backup and changes nothing
    again = cluster.hostkit(f"restore {newest} --users {name} --dry-run")
    assert f"same     {volume} on {node}" in again.stdout


def _task_networks(cluster: Cluster, server: str) -> dict[str, list[str]]:
    """The running task of a user's service: {overlay network name: its addresses there}."""
    ps = cluster.manager.sh(f"docker service ps -q --filter desired-state=running {server}")
    task = ps.stdout.split()[0]
    attached = json.loads(cluster.manager.sh(f"docker inspect {task}").stdout)[0]["NetworksAttachments"]
    return {a["Network"]["Spec"]["Name"]: [addr.split("/")[0] for addr in a["Addresses"]] for a in attached}


def _http_from(box: Box, server: str, url: str) -> str:
    """From inside a user's server (its container on its worker): GET url, and what answered:
    'jupyter' (a Jupyter server: its API's version), 'http STATUS' for anything else that
    answered (this test machine's network answers any outside address itself), or the error."""
    ps = box.sh(f"docker ps -q --filter label=com.docker.swarm.service.name={server}")
    container = ps.stdout.split()[0]
    script = ("import ssl, urllib.error, urllib.request\n"
              "try:\n"
              f"    reply = urllib.request.urlopen({url!r}, timeout=5, "
              "context=ssl._create_unverified_context())\n"
              "    status, body = reply.status, reply.read(300)\n"
              "except urllib.error.HTTPError as exc:\n"
              "    status, body = exc.code, b''\n"
              "except OSError as exc:\n"
              "    print(type(exc).__name__, exc)\n"
              "    raise SystemExit\n"
              "print('jupyter' if b'\"version\"' in body else f'http {status}')\n")
    return str(box.sh(f"docker exec -i {container} python3 - <<'EOF'\n{script}EOF").stdout.strip())


def test_users_servers_cannot_reach_each_other_on_the_same_or_another_worker(cluster: Cluster) -> None:
    """An attacker's kernel, on the same worker as a victim and on another one, tries the
    victim's server by its name and by each of its addresses; the hub still reaches every
    server (a kernel through nginx), also after the hub's container is made anew, and the
    attacker still gets out of the cluster (the manager's public port)."""
    if "worker1" not in cluster.status():  # `cluster remove` took it out: it joins again
        cluster.workers[0].sh("docker swarm leave --force", check=False)
        addrs = [b.address() for b in cluster.boxes]
        peers = " ".join(f"--peer {a}" for a in addrs)
        init = cluster.hostkit(f"cluster init --advertise-addr {addrs[0]} {peers} --no-encrypt")
        cluster.workers[0].sh(join_command(init.stdout))
        _wait_node(cluster, "worker1", "ready")
    dep = next(iter(cluster.users.values())).dep
    password = f"carol-Secret-{os.getpid()}"
    cluster.hostkit(f"users create carol --password {password}")
    carol = HubUser(dep, "carol", password)
    assert carol.login()
    carol.start_server(timeout=600)
    cluster.users["carol"] = carol
    for user in cluster.users.values():
        if not user.server_state().get("servers"):
            user.start_server(timeout=600)
    where = {str(s): host for host, n in cluster.status().items() for s in n["servers"]}
    boxes = {b.hostname: b for b in cluster.boxes}
    servers = sorted(where)
    pairs = [(a, b) for a in servers for b in servers if a != b]
    assert any(where[a] == where[b] for a, b in pairs), where  # two on one worker
    assert any(where[a] != where[b] for a, b in pairs), where  # and on different workers
    networks = {s: _task_networks(cluster, s) for s in servers}
    for attacker, victim in pairs:
        box, api = boxes[where[attacker]], f"/user/{victim.removeprefix('jupyter-')}/api"
        assert _http_from(box, attacker, f"http://127.0.0.1:8888/user/{attacker[8:]}/api") == "jupyter"
        for target in [victim, *(ip for ips in networks[victim].values() for ip in ips)]:
            got = _http_from(box, attacker, f"http://{target}:8888{api}")
            assert got != "jupyter", f"{attacker} on {where[attacker]} reached {victim} at {target}"
        # not on any common network: no path at all, not just a closed port
        assert not set(networks[attacker]) & set(networks[victim]), (attacker, victim, networks)
    # out of the cluster: the manager's public URL, from a server on a worker
    public = f"https://{cluster.manager.address()}:{PORT}/hub/health"
    assert _http_from(boxes[where[servers[0]]], servers[0], public) == "http 200"
    for name, user in cluster.users.items():
        assert user.run_code("1+1", user.token()) == "2", name
    # the hub's container made anew (as `stack up` does after a change): it finds them again
    hub = cluster.manager.sh("docker ps -q --filter label=com.docker.compose.service=jupyterhub")
    cluster.manager.sh(f"docker rm -f {hub.stdout.strip()}")
    _stack_up(cluster)
    for name, user in cluster.users.items():
        assert user.run_code("2+3", user.token()) == "5", name


# A cloud's metadata service, off the node as on a cloud VM: 169.254.169.254 in a namespace of
# its own behind a veth, answering with a marker (this machine's network answers any outside
# address by itself, so only the marker proves the service was reached).
METADATA_MARKER = "hostkit-fake-metadata"
METADATA_SETUP = (
    "ip netns add meta && ip link add meta0 type veth peer name meta1 && "
    "ip link set meta1 netns meta && ip addr add 169.254.169.1/24 dev meta0 && ip link set meta0 up && "
    "ip netns exec meta ip addr add 169.254.169.254/24 dev meta1 && "
    "ip netns exec meta ip link set meta1 up && ip netns exec meta ip link set lo up && "
    "ip netns exec meta ip route add default via 169.254.169.1 && "
    f"mkdir -p /tmp/meta && echo {METADATA_MARKER} > /tmp/meta/index.html && "
    "(cd /tmp/meta && ip netns exec meta setsid python3 -m http.server 80 "
    "--bind 169.254.169.254 >/dev/null 2>&1 &)"
)


def _tcp_from(box: Box, server: str, host: str, port: int) -> str:
    """From inside a user's server: connect to host:port and read a little. 'open: FIRST
    BYTES' when it connected, else the error ('timeout' when the packets were dropped)."""
    ps = box.sh(f"docker ps -q --filter label=com.docker.swarm.service.name={server}")
    script = ("import socket\n"
              f"s = socket.socket(); s.settimeout(4)\n"
              "try:\n"
              f"    s.connect(({host!r}, {port}))\n"
              "    try:\n"
              "        print('open:', s.recv(40))\n"
              "    except OSError:\n"
              "        print('open:')\n"
              "except socket.timeout:\n"
              "    print('timeout')\n"
              "except OSError as exc:\n"
              "    print(type(exc).__name__)\n")
    return str(box.sh(f"docker exec -i {ps.stdout.split()[0]} python3 - <<'EOF'\n{script}EOF").stdout.strip())


def _guard_counter(box: Box, comment: str) -> int:
    """Packets the node guard's rule with this comment has dropped."""
    listed = box.sh("nft list table inet hostkit_node_guard").stdout
    line = next(line for line in listed.splitlines() if comment in line)
    return int(line.split("counter packets ")[1].split()[0])


def test_users_servers_cannot_reach_their_worker_its_metadata_or_the_swarms_ports(cluster: Cluster) -> None:
    """From a user's server on a worker: the worker's sshd (its address and the bridge's
    gateway), a port an admin published there, a cloud metadata service next to it, and the
    manager's swarm ports (2377, 7946, VXLAN 4789/udp) are all dropped by the node's guard,
    while the user still reaches the internet, the manager's public port and their kernel.
    The guard is in place on both workers (one was killed and booted again above) and
    survives `firewall-cmd --reload` and a Docker restart."""
    where = {str(s): host for host, n in cluster.status().items() for s in n["servers"]}
    server, node = sorted((s, h) for s, h in where.items() if h.startswith("worker"))[0]
    box = {b.hostname: b for b in cluster.boxes}[node]
    manager = cluster.manager.address()
    box.sh(METADATA_SETUP)
    box.sh(f"docker run -d --name hk-published -p 8099:8888 {NOTEBOOK_IMAGE} python3 -m http.server 8888")
    gateway = box.sh("ip -4 -o addr show docker_gwbridge").stdout.split()[3].split("/")[0]
    # the same targets answer the node itself: what the user's server meets is the guard
    assert METADATA_MARKER in box.sh("python3 -c \"import urllib.request; print(urllib.request."
                                     "urlopen('http://169.254.169.254/', timeout=5).read())\"").stdout
    assert box.sh(f"timeout 5 bash -c 'exec 3<>/dev/tcp/{manager}/2377'", check=False).returncode == 0
    targets = {"the worker's sshd": (box.address(), 22), "sshd on the bridge's gateway": (gateway, 22),
               "a port published on the worker": (box.address(), 8099),
               "the manager's swarm management port": (manager, 2377),
               "the manager's gossip port": (manager, 7946)}
    for what, (host, port) in targets.items():
        got = _tcp_from(box, server, host, port)
        assert got == "timeout", f"{server} on {node} reached {what} ({host}:{port}): {got}"
    metadata = _http_from(box, server, "http://169.254.169.254/")
    assert metadata.startswith(("timeout", "TimeoutError", "URLError")), metadata
    assert _guard_counter(box, "cloud metadata") > 0
    # VXLAN: a datagram to the manager's 4789 (an injected frame), counted where it was dropped
    before = _guard_counter(box, "VXLAN")
    ps = box.sh(f"docker ps -q --filter label=com.docker.swarm.service.name={server}").stdout.split()[0]
    box.sh(f"docker exec {ps} python3 -c \"import socket; socket.socket(socket.AF_INET, "
           f"socket.SOCK_DGRAM).sendto(b'x' * 50, ('{manager}', 4789))\"")
    assert _guard_counter(box, "VXLAN") > before
    # the normal path: out to the internet and the public URL, and the user's own kernel
    assert _http_from(box, server, "http://deb.debian.org/").startswith("http "), "no egress"
    assert _http_from(box, server, f"https://{manager}:{PORT}/hub/health") == "http 200"
    user = cluster.users[server.removeprefix("jupyter-")]
    assert user.run_code("1+1", user.token()) == "2"
    # on every worker, also after a boot, a firewalld reload and a Docker restart
    for worker in cluster.workers:
        assert worker.sh("systemctl is-enabled hostkit-node-guard").stdout.strip() == "enabled"
        assert _guard_counter(worker, "this node's own ports") >= 0
    box.sh("firewall-cmd --reload")
    assert _tcp_from(box, server, box.address(), 22) == "timeout"
    box.sh("docker rm -f hk-published; systemctl restart docker")
    assert _guard_counter(box, "this node's own ports") >= 0  # the table is still there
    box.sh("ip netns del meta; ip link del meta0", check=False)
