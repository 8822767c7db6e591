"""`hostkit doctor --fix` in a systemd box with a real dockerd and firewalld: the seed's
docker0-in-trusted zone, no log rotation and a closed public port are found, repaired by
bootstrap's own steps after confirmation, and pass when checked again."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from boxlib import Box, running_box

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPAIRED = ("firewall.docker0-zone", "daemon.logging", "firewall.public-port")


@pytest.fixture(scope="module")
def box() -> Iterator[Box]:
    with running_box("hostkit-fix") as b:
        yield b


def _statuses(box: Box) -> dict[str, str]:
    res = box.sh("hostkit doctor --format json", check=False, timeout=300)
    return {c["id"]: c["status"] for c in json.loads(res.stdout)["checks"]}


def _host_state(box: Box) -> str:
    return box.sh("cat /etc/docker/daemon.json 2>/dev/null; echo; "
                  "firewall-cmd --list-all-zones --permanent | md5sum; "
                  "firewall-cmd --list-all-zones | md5sum; "
                  "systemctl show -p ExecMainStartTimestamp docker.service").stdout


def test_doctor_fix_repairs_what_bootstrap_would_and_the_checks_then_pass(box: Box) -> None:
    # what bootstrap would have recorded for this site, and the seed's firewall advice
    box.sh(f"mkdir -p /etc/hostkit && printf 'public_port = 9090\\ndns = [\"{box.resolver()}\"]\\n'"
           " > /etc/hostkit/hostkit.toml")
    box.sh(f"printf '{{\"dns\": [\"{box.resolver()}\"]}}\\n' > /etc/docker/daemon.json && "
           "systemctl restart docker && "
           "firewall-cmd --zone=trusted --change-interface=docker0 && "
           "firewall-cmd --permanent --zone=trusted --change-interface=docker0")
    before = _statuses(box)
    assert (before["firewall.docker0-zone"], before["daemon.logging"],
            before["firewall.public-port"]) == ("fail", "fail", "warn"), before

    # without --yes and without a terminal: the plan is shown, nothing changes
    state = _host_state(box)
    shown = box.sh("hostkit doctor --fix", check=False, timeout=300)
    assert "Repair plan" in shown.stdout, shown.stdout + shown.stderr
    assert "nothing was changed" in shown.stdout
    assert _host_state(box) == state

    fixed = box.sh("hostkit doctor --fix --yes", check=False, timeout=600)
    out = fixed.stdout + fixed.stderr
    assert "Checked again" in out, out
    assert "Traceback" not in out
    after = _statuses(box)
    assert {cid: after[cid] for cid in REPAIRED} == dict.fromkeys(REPAIRED, "pass"), out
    daemon = json.loads(box.sh("cat /etc/docker/daemon.json").stdout)
    assert daemon["log-opts"] == {"max-size": "10m", "max-file": "5"}
    assert daemon["dns"] == [box.resolver()]  # the site's resolver, kept
    assert box.sh("firewall-cmd --get-zone-of-interface=docker0").stdout.strip() == "docker"
    assert box.sh("firewall-cmd --permanent --zone=public --query-port=9090/tcp"
                  ).stdout.strip() == "yes"
