"""`hostkit doctor --fix` plans bootstrap's own steps for what failed, and nothing else."""

from __future__ import annotations

from hostkit.fix import options_from_settings, plan_repair
from hostkit.results import CheckResult, Status
from hostkit.settings import Settings


def _result(check_id: str, status: Status, fix_step: str = "", hint: str = "") -> CheckResult:
    return CheckResult(id=check_id, title=check_id, group=check_id.split(".", maxsplit=1)[0], status=status,
                       summary="", expected="", actual="", hint=hint, fix_step=fix_step,
                       duration_s=0.0, tags=())


def test_failing_checks_choose_their_steps_in_bootstrap_order_once_each() -> None:
    results = [
        _result("daemon.logging", Status.FAIL, "daemon-json"),
        _result("firewall.docker0-zone", Status.FAIL, "firewalld"),
        _result("daemon.dns", Status.WARN, "daemon-json"),
        _result("firewall.public-port", Status.WARN, "firewalld"),
        _result("tls.expiry", Status.PASS, "certs"),
    ]
    repair = plan_repair(results, Settings())
    assert [step.name for step in repair.steps] == ["firewalld", "daemon-json"]
    assert repair.checks_by_step == {"daemon-json": ("daemon.logging", "daemon.dns"),
                                     "firewalld": ("firewall.docker0-zone",
                                                   "firewall.public-port")}
    assert repair.by_hand == ()


def test_checks_without_a_bootstrap_step_are_left_to_the_admin() -> None:
    results = [_result("tls.expiry", Status.FAIL, "certs", hint="hostkit certs --renew"),
               _result("storage.container-logs", Status.WARN),
               _result("host.distro", Status.FAIL, "bootstrap --force"),
               _result("docker.daemon", Status.ERROR, "docker-install")]
    repair = plan_repair(results, Settings())
    assert repair.steps == ()
    # an ERROR means the check could not be made: nothing is repaired on a guess
    assert [r.id for r in repair.by_hand] == ["tls.expiry", "storage.container-logs",
                                              "host.distro"]


def test_the_repair_uses_what_the_site_recorded_not_the_defaults() -> None:
    settings = Settings(public_port=8443, dns=("10.0.0.53",), log_max_size="50m",
                        log_max_file="3", data_root="/srv/docker")
    options = options_from_settings(settings, ["daemon.dns", "daemon.logging"])
    assert (options.port, options.dns, options.log_max_size, options.log_max_file,
            options.data_root) == (8443, ("10.0.0.53",), "50m", "3", "/srv/docker")
    # what no failing check asks for stays as daemon.json has it, as on a bootstrap re-run
    kept = options_from_settings(settings, ["firewall.public-port"])
    assert (kept.dns, kept.log_max_size, kept.log_max_file) == (None, None, None)
    repair = plan_repair([_result("firewall.public-port", Status.WARN, "firewalld")], settings)
    assert repair.steps[0].port == 8443  # type: ignore[attr-defined]
