"""Renderers for doctor results, chosen by name: human, json, junit, prometheus, nagios."""

from __future__ import annotations

import json
import socket
import time
from collections import Counter
from typing import Callable
from xml.etree import ElementTree as ET

from rich.console import Console
from rich.table import Table
from rich.text import Text

from hostkit import __version__
from hostkit.results import CheckResult, Status

JSON_SCHEMA_VERSION = 1

_STYLE = {
    Status.PASS: "green",
    Status.WARN: "yellow",
    Status.FAIL: "bold red",
    Status.SKIP: "dim",
    Status.ERROR: "bold magenta",
}


def counts(results: list[CheckResult]) -> dict[str, int]:
    c = Counter(r.status.value for r in results)
    return {s.value: c.get(s.value, 0) for s in Status}


def render_human(results: list[CheckResult], console: Console | None = None) -> str:
    """One table, grouped, every problem followed by its fix; returns the text when recording."""
    console = console or Console(record=True)
    table = Table(show_header=True, header_style="bold", box=None, padding=(0, 1), expand=False)
    table.add_column("", width=5, no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("result", overflow="fold")
    group = None
    for r in results:
        if r.group != group:
            group = r.group
            table.add_row("", Text(group, style="bold underline"), "")
        table.add_row(Text(r.status.value.upper(), style=_STYLE[r.status]), r.id, r.summary)
        if r.status in (Status.FAIL, Status.WARN, Status.ERROR) and (r.hint or r.fix_step):
            fix = r.hint + (f" [bootstrap step: {r.fix_step}]" if r.fix_step else "")
            table.add_row("", "", Text(f"fix: {fix.strip()}", style="cyan"))
    console.print(table)
    c = counts(results)
    console.print(", ".join(f"{v} {k}" for k, v in c.items() if v) or "no checks ran")
    return console.export_text() if console.record else ""


def render_json(results: list[CheckResult]) -> str:
    return json.dumps(
        {
            "schema_version": JSON_SCHEMA_VERSION,
            "hostkit_version": __version__,
            "host": socket.gethostname(),
            "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "counts": counts(results),
            "checks": [r.as_dict() for r in results],
        },
        indent=2,
    )


def render_junit(results: list[CheckResult]) -> str:
    c = counts(results)
    suite = ET.Element(
        "testsuite",
        name="hostkit doctor",
        tests=str(len(results)),
        failures=str(c["fail"] + c["warn"]),
        errors=str(c["error"]),
        skipped=str(c["skip"]),
        time=f"{sum(r.duration_s for r in results):.3f}",
    )
    for r in results:
        case = ET.SubElement(suite, "testcase", classname=r.group, name=r.id, time=f"{r.duration_s:.3f}")
        detail = "\n".join(
            x
            for x in (
                f"expected: {r.expected}" if r.expected else "",
                f"actual: {r.actual}" if r.actual else "",
                f"fix: {r.hint}" if r.hint else "",
            )
            if x
        )
        if r.status in (Status.FAIL, Status.WARN):
            el = ET.SubElement(case, "failure", message=r.summary, type=r.status.value)
            el.text = detail
        elif r.status is Status.ERROR:
            ET.SubElement(case, "error", message=r.summary).text = detail
        elif r.status is Status.SKIP:
            ET.SubElement(case, "skipped", message=r.summary)
        else:
            ET.SubElement(case, "system-out").text = r.summary
    return ET.tostring(suite, encoding="unicode", xml_declaration=True)


_PROM_VALUE = {Status.PASS: 0, Status.WARN: 1, Status.FAIL: 2, Status.ERROR: 3, Status.SKIP: -1}


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def render_prometheus(results: list[CheckResult]) -> str:
    """node_exporter textfile format: drop it in the collector's directory."""
    lines = [
        "# HELP hostkit_check_status Check status: 0 pass, 1 warn, 2 fail, 3 error, -1 skip.",
        "# TYPE hostkit_check_status gauge",
    ]
    lines += [
        f'hostkit_check_status{{check="{_label(r.id)}",group="{_label(r.group)}"}} {_PROM_VALUE[r.status]}'
        for r in results
    ]
    lines += [
        "# HELP hostkit_check_duration_seconds Time the check took.",
        "# TYPE hostkit_check_duration_seconds gauge",
    ]
    lines += [f'hostkit_check_duration_seconds{{check="{_label(r.id)}"}} {r.duration_s:.4f}' for r in results]
    lines += [
        "# HELP hostkit_last_run_timestamp_seconds When doctor last ran.",
        "# TYPE hostkit_last_run_timestamp_seconds gauge",
        f"hostkit_last_run_timestamp_seconds {time.time():.0f}",
    ]
    return "\n".join(lines) + "\n"


def render_nagios(results: list[CheckResult]) -> str:
    """One status line (OK/WARNING/CRITICAL/UNKNOWN) plus a line per problem."""
    c = counts(results)
    problems = [r for r in results if r.status in (Status.FAIL, Status.ERROR, Status.WARN)]
    if c["fail"]:
        state = "CRITICAL"
    elif c["error"]:
        state = "UNKNOWN"
    elif c["warn"]:
        state = "WARNING"
    else:
        state = "OK"
    perf = " ".join(f"{k}={v}" for k, v in c.items())
    head = (
        f"HOSTKIT {state} - {c['pass']} pass, {c['warn']} warn, {c['fail']} fail, {c['error']} error | {perf}"
    )
    return "\n".join([head] + [f"{r.status.value.upper()} {r.id}: {r.summary}" for r in problems]) + "\n"


NAGIOS_EXIT = {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}

RENDERERS: dict[str, Callable[[list[CheckResult]], str]] = {
    "json": render_json,
    "junit": render_junit,
    "prometheus": render_prometheus,
    "nagios": render_nagios,
}
