"""Certificates that renew themselves.

`hostkit stack up` schedules `hostkit certs --renew-if-due` once a day: a systemd timer where
systemd is PID 1, a cron entry otherwise. The command renews a self-signed or site-CA
certificate when it has RENEW_BEFORE_DAYS or fewer left (before the doctor warns, at 30) and
reloads nginx; an ACME certificate (HOSTKIT_CERT_MODE=acme) is renewed from its CA with
ACME_RENEW_BEFORE_DAYS left. Certificates the admin brought are never replaced; the doctor
warns about them.
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from hostkit.certs import CertInfo
from hostkit.facts import Facts
from hostkit.host import LocalHost

RENEW_BEFORE_DAYS = 45
ACME_RENEW_BEFORE_DAYS = 30  # 90-day certificates, renewed with a third of their life left
SYSTEMD_DIR = "/etc/systemd/system"
CRON_DIR = "/etc/cron.d"


def renewal_due(
    info: CertInfo, ca_subject: Optional[str], *, mode: str = "local", before_days: int = RENEW_BEFORE_DAYS
) -> bool:
    """True when hostkit made this certificate (self-signed or by the site CA) and it expires
    soon, or when it came from ACME (HOSTKIT_CERT_MODE=acme) and has ACME_RENEW_BEFORE_DAYS left."""
    if mode == "acme":
        return info.days_left() <= ACME_RENEW_BEFORE_DAYS
    ours = info.self_signed or (ca_subject is not None and info.issuer == ca_subject)
    return ours and info.days_left() <= before_days


def unit_name(directory: str) -> str:
    """One schedule per deploy directory (a host can run several stacks)."""
    return "hostkit-certs-" + hashlib.sha256(directory.encode()).hexdigest()[:8]


@dataclass(frozen=True)
class Schedule:
    files: dict[str, str]  # path -> content
    commands: tuple[tuple[str, ...], ...]  # run after writing (systemd: reload, enable)


def render_schedule(init_system: str, directory: str, hostkit: Sequence[str]) -> Schedule:
    """The timer (or cron entry) that runs the renewal for `directory` daily."""
    name = unit_name(directory)
    command = shlex.join([*hostkit, "certs", "--renew-if-due", "--deploy-dir", directory])
    if init_system == "systemd":
        service = (
            "[Unit]\n"
            f"Description=hostkit: renew the stack's TLS certificate in {directory} when due\n\n"
            "[Service]\n"
            "Type=oneshot\n"
            f"ExecStart={command}\n"
        )
        timer = (
            "[Unit]\n"
            f"Description=hostkit: daily certificate renewal check for {directory}\n\n"
            "[Timer]\n"
            "OnCalendar=daily\n"
            "RandomizedDelaySec=1h\n"
            "Persistent=true\n\n"
            "[Install]\n"
            "WantedBy=timers.target\n"
        )
        return Schedule(
            {f"{SYSTEMD_DIR}/{name}.service": service, f"{SYSTEMD_DIR}/{name}.timer": timer},
            (("systemctl", "daemon-reload"), ("systemctl", "enable", "--now", f"{name}.timer")),
        )
    cron = (
        f"# hostkit: renew the stack's TLS certificate in {directory} when due (daily)\n"
        "SHELL=/bin/sh\nPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
        f"17 4 * * * root {command} >/dev/null 2>&1\n"
    )
    return Schedule({f"{CRON_DIR}/{name}": cron}, ())


def install_schedule(host: LocalHost, directory: str, hostkit: Sequence[str]) -> list[str]:
    """Write the schedule when it differs; the paths written."""
    schedule = render_schedule(Facts(host).init_system(), directory, hostkit)
    changed = []
    for path, text in schedule.files.items():
        if not host.exists(path) or host.read_text(path) != text:
            host.write_text(path, text, mode=0o644, backup=False)
            changed.append(path)
    if changed:
        for argv in schedule.commands:
            host.run(list(argv), timeout=60, check=True)
    return changed


def remove_schedule(host: LocalHost, directory: str) -> list[str]:
    """Remove the schedule of a deploy directory (both kinds); the paths removed."""
    name = unit_name(directory)
    removed = []
    for path in (f"{SYSTEMD_DIR}/{name}.service", f"{SYSTEMD_DIR}/{name}.timer", f"{CRON_DIR}/{name}"):
        if host.exists(path):
            host.unlink(path)
            removed.append(path)
    return removed
