from __future__ import annotations

import io
import json
from xml.etree import ElementTree as ET

from rich.console import Console

from hostkit.render import render_human, render_json, render_junit, render_nagios, render_prometheus
from hostkit.results import CheckResult, Status


def result(check_id: str, status: Status, hint: str = "", fix_step: str = "") -> CheckResult:
    return CheckResult(
        id=check_id,
        title=check_id,
        group=check_id.split(".", maxsplit=1)[0],
        status=status,
        summary=f"{check_id} is {status.value}",
        expected="e",
        actual="a",
        hint=hint,
        fix_step=fix_step,
        duration_s=0.01,
    )


RESULTS = [
    result("docker.daemon", Status.PASS),
    result("tls.san", Status.FAIL, "hostkit certs", "certs"),
    result("dns.host", Status.WARN, "fix dns"),
    result("stack.https", Status.SKIP),
    result("net.port", Status.ERROR, "it hung"),
]


def test_json_is_versioned_and_complete() -> None:
    data = json.loads(render_json(RESULTS))
    assert data["schema_version"] == 1
    assert data["counts"] == {"pass": 1, "warn": 1, "fail": 1, "skip": 1, "error": 1}
    assert data["checks"][1]["fix_step"] == "certs"
    assert set(data["checks"][0]) == {
        "id",
        "title",
        "group",
        "status",
        "summary",
        "expected",
        "actual",
        "hint",
        "fix_step",
        "duration_s",
        "tags",
    }


def test_junit_marks_failures_errors_and_skips() -> None:
    suite = ET.fromstring(render_junit(RESULTS))
    assert suite.get("tests") == "5"
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert cases["tls.san"].find("failure") is not None
    assert "fix: hostkit certs" in cases["tls.san"].find("failure").text
    assert cases["net.port"].find("error") is not None
    assert cases["stack.https"].find("skipped") is not None


def test_prometheus_textfile_has_one_gauge_per_check() -> None:
    text = render_prometheus(RESULTS)
    assert 'hostkit_check_status{check="tls.san",group="tls"} 2' in text
    assert 'hostkit_check_status{check="stack.https",group="stack"} -1' in text
    assert text.endswith("\n")


def test_nagios_state_is_the_worst_result() -> None:
    assert render_nagios(RESULTS).startswith("HOSTKIT CRITICAL - 1 pass, 1 warn, 1 fail, 1 error")
    assert render_nagios(RESULTS[:1]).startswith("HOSTKIT OK")
    assert render_nagios([RESULTS[0], RESULTS[2]]).startswith("HOSTKIT WARNING")


def test_human_report_shows_the_fix_under_each_problem() -> None:
    text = render_human(RESULTS, Console(record=True, width=200, file=io.StringIO()))
    lines = text.splitlines()
    fail_at = next(i for i, line in enumerate(lines) if "tls.san" in line)
    assert "FAIL" in lines[fail_at]
    assert "fix: hostkit certs [bootstrap step: certs]" in lines[fail_at + 1]
    assert lines[-1] == "1 pass, 1 warn, 1 fail, 1 skip, 1 error"
