"""daemon.json probes: syntax, value types, logging, DNS, data-root, unit-flag conflicts."""

from __future__ import annotations

import contextlib
from typing import Any, Optional, Union

from hostkit.daemon_config import (
    DAEMON_JSON,
    DaemonJsonError,
    command_conflicts,
    find_type_problems,
    parse_daemon_json,
)
from hostkit.doctor import ProbeContext
from hostkit.errors import HostkitError
from hostkit.facts import docker_unit_command
from hostkit.probes import probe
from hostkit.results import Outcome


def read_daemon_json(ctx: ProbeContext) -> Optional[dict[str, Any]]:
    """The parsed file, None when it does not exist; DaemonJsonError when it does not parse."""
    if not ctx.host.exists(DAEMON_JSON):
        return None
    return parse_daemon_json(ctx.host.read_text(DAEMON_JSON), DAEMON_JSON,
                             ctx.facts.dockerd_version())


def _config_or_skip(ctx: ProbeContext) -> Union[dict[str, Any], Outcome]:
    """The config to judge; a file that does not parse is daemon.syntax's failure, not ours."""
    try:
        config = read_daemon_json(ctx)
    except DaemonJsonError:
        return Outcome.skip("daemon.json does not parse (see daemon.syntax)")
    # a missing file is Docker's defaults: judge those (no rotation, no dns) like any config
    return config or {}


@probe("daemon_json_parses")
def daemon_json_parses(ctx: ProbeContext) -> Outcome:
    try:
        config = read_daemon_json(ctx)
    except DaemonJsonError as exc:
        return Outcome.fail(exc.message, hint=exc.hint)
    if config is None:
        return Outcome.warn(
            f"{DAEMON_JSON} does not exist: no log rotation, default DNS", hint="hostkit bootstrap writes it"
        )
    return Outcome.ok(f"{DAEMON_JSON} parses ({len(config)} keys)")


@probe("daemon_json_types")
def daemon_json_types(ctx: ProbeContext) -> Outcome:
    config = _config_or_skip(ctx)
    if isinstance(config, Outcome):
        return config
    problems = find_type_problems(config)
    if not problems:
        return Outcome.ok("every value has the type dockerd expects")
    return Outcome.fail(
        "; ".join(f"{p.key} {p.problem}" for p in problems),
        hint="dockerd refuses to start with these; write " + ", ".join(p.fix for p in problems),
    )


# Drivers that hand each line elsewhere: rotation, if any, is the receiver's business.
_ROTATED_ELSEWHERE = {
    "journald": "the journal rotates them (SystemMaxUse= in journald.conf)",
    "syslog": "syslog and logrotate keep them",
    "gelf": "they leave the host (GELF)",
    "fluentd": "they leave the host (fluentd)",
    "awslogs": "they leave the host (CloudWatch)",
    "splunk": "they leave the host (Splunk)",
    "gcplogs": "they leave the host (Cloud Logging)",
    "logentries": "they leave the host (Logentries)",
    "none": "containers' output is discarded",
}


@probe("daemon_json_logging")
def daemon_json_logging(ctx: ProbeContext) -> Outcome:
    config = _config_or_skip(ctx)
    if isinstance(config, Outcome):
        return config
    driver = config.get("log-driver", "json-file")
    opts = config.get("log-opts") or {}
    if driver == "local":
        return Outcome.ok(f"log-driver local rotates at {opts.get('max-size', '20m')} x "
                          f"{opts.get('max-file', '5')}")
    if driver in _ROTATED_ELSEWHERE:
        return Outcome.ok(f"log-driver {driver}: Docker keeps no log files; "
                          f"{_ROTATED_ELSEWHERE[driver]}")
    if driver != "json-file":
        return Outcome.warn(f"log-driver {driver}: hostkit cannot tell whether its logs rotate",
                            hint="make sure the plugin bounds what it keeps on this host")
    missing = [k for k in ("max-size", "max-file") if k not in opts]
    if missing:
        return Outcome.fail(
            f"json-file logs are not rotated: no {' / '.join(missing)} in log-opts",
            expected='"log-opts": {"max-size": "10m", "max-file": "5"}',
            actual=str(opts or "none"),
            hint="hostkit bootstrap sets them; only containers created afterwards rotate",
        )
    return Outcome.ok(f"json-file rotated at {opts['max-size']} x {opts['max-file']}")


@probe("daemon_json_dns")
def daemon_json_dns(ctx: ProbeContext) -> Outcome:
    config = _config_or_skip(ctx)
    if isinstance(config, Outcome):
        return config
    dns = config.get("dns")
    want = list(ctx.settings.dns)
    if not dns:
        return Outcome.fail(
            "no dns in daemon.json: containers inherit the host's resolv.conf",
            expected=str(want),
            actual="unset",
            hint="hostkit bootstrap --dns IP (your site's resolvers)",
        )
    if want and list(dns) != want:
        return Outcome.warn(
            f"dns is {dns}, settings say {want}",
            expected=str(want),
            actual=str(dns),
            hint="hostkit bootstrap --dns ... to make them agree",
        )
    return Outcome.ok(f"containers use {', '.join(dns)}")


@probe("daemon_json_data_root")
def daemon_json_data_root(ctx: ProbeContext) -> Outcome:
    want = ctx.settings.data_root
    actual = configured = ""
    with contextlib.suppress(HostkitError):  # a daemon that is down still has a config to judge
        actual = str(ctx.facts.docker_info().get("DockerRootDir", ""))
    with contextlib.suppress(DaemonJsonError):
        configured = str((read_daemon_json(ctx) or {}).get("data-root", ""))
    if not want:
        return Outcome.ok(f"data-root {actual or configured or '/var/lib/docker'} (no expectation set)")
    if actual and actual != want:
        return Outcome.fail(
            f"Docker runs on {actual}, expected {want}",
            expected=want,
            actual=actual,
            hint=f"hostkit bootstrap --data-root {want}",
        )
    if configured != want:
        return Outcome.fail(
            f"daemon.json data-root is {configured or 'unset'}, expected {want}",
            expected=want,
            actual=configured or "unset",
            hint=f"hostkit bootstrap --data-root {want}",
        )
    return Outcome.ok(f"data-root {want}")


@probe("daemon_unit_conflicts")
def daemon_unit_conflicts(ctx: ProbeContext) -> Outcome:
    command = docker_unit_command(ctx.host, ctx.facts)
    if command is None or not command.argv:
        return Outcome.skip("no docker.service in use (systemd is not the init, or no such unit)")
    try:
        config = read_daemon_json(ctx) or {}
    except DaemonJsonError:
        return Outcome.skip("daemon.json does not parse")
    clashes = command_conflicts(command, config)
    if clashes:
        names = ", ".join(f"{flag} from {where} (daemon.json {key})" for flag, key, where in clashes)
        in_env = sorted({w.split(" ")[0] for _, _, w in clashes if w != command.source})
        hint = ("dockerd refuses to start; hostkit bootstrap moves the flag out with a drop-in "
                "(docker.service.d/zz-hostkit.conf)")
        if in_env:
            hint = f"dockerd refuses to start; remove the flag from {', '.join(in_env)}"
        return Outcome.fail(f"set both on dockerd's command line and in daemon.json: {names}",
                            hint=hint)
    return Outcome.ok("no option is given both as a dockerd flag and in daemon.json")
