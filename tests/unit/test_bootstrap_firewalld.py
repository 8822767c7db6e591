"""firewalld: docker0's zone by Docker version, and the public port."""

from __future__ import annotations

from pathlib import Path

from bootstrap_sim import SimHost

from hostkit.facts import Facts
from hostkit.steps import CHANGED, OK, Plan
from hostkit.subsystems.firewall import FirewalldStep


def test_seeds_trusted_zone_on_modern_docker_is_repaired_without_reload(tmp_path: Path) -> None:
    sim = SimHost(tmp_path)
    # the seed's advice: docker0 into trusted, runtime and permanent, plus masquerade
    sim.runtime["docker"].interfaces.clear()
    sim.runtime["trusted"].interfaces.add("docker0")
    sim.permanent["trusted"].interfaces.add("docker0")
    sim.permanent["trusted"].masquerade = True
    step = FirewalldStep(9090)
    changes = [c.summary for c in step.check(sim, Facts(sim))]
    assert "remove docker0 from the trusted zone (permanent)" in changes
    assert "move docker0 from trusted to the docker zone (runtime)" in changes
    _planned, result = Plan([FirewalldStep(9090)]).run(sim, Facts(sim))
    assert result.steps[0].status == CHANGED
    assert "docker0" not in sim.permanent["trusted"].interfaces
    assert "docker0" in sim.runtime["docker"].interfaces
    assert "9090/tcp" in sim.permanent["public"].ports
    assert "9090/tcp" in sim.runtime["public"].ports
    assert not any("--reload" in c for c in sim.calls)
    # Docker can start again: no ZONE_CONFLICT
    assert sim._start_docker() is None


def test_old_docker_gets_the_seeds_trusted_zone_and_masquerade(tmp_path: Path) -> None:
    sim = SimHost(tmp_path, docker_version="19.03.15")
    sim.runtime["docker"].interfaces.clear()
    _planned, result = Plan([FirewalldStep(9090)]).run(sim, Facts(sim))
    assert result.steps[0].status == CHANGED
    assert "docker0" in sim.permanent["trusted"].interfaces
    assert "docker0" in sim.runtime["trusted"].interfaces
    assert sim.permanent["trusted"].masquerade
    assert sim.runtime["trusted"].masquerade


def test_a_converged_firewall_is_left_alone(tmp_path: Path) -> None:
    sim = SimHost(tmp_path)
    sim.permanent["public"].ports.add("9090/tcp")
    sim.runtime["public"].ports.add("9090/tcp")
    _planned, result = Plan([FirewalldStep(9090)]).run(sim, Facts(sim))
    assert result.steps[0].status == OK
    assert not any(c[0] == "firewall-cmd" and any(a.startswith("--add") for a in c)
                   for c in sim.calls)


def test_no_firewalld_means_nothing_to_do(tmp_path: Path) -> None:
    sim = SimHost(tmp_path, firewalld=False)
    assert FirewalldStep(9090).check(sim, Facts(sim)) == []
