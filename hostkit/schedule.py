"""`hostkit backup --schedule`: a systemd timer where systemd is the init, else a cron file."""

from __future__ import annotations

import shlex
import sys
from typing import Any

from hostkit.errors import UsageError
from hostkit.facts import Facts
from hostkit.host import LocalHost
from hostkit.settings import SETTINGS_FILE, render_settings_toml

UNIT_DIR = "/etc/systemd/system"
CRON_FILE = "/etc/cron.d/hostkit-backup"
SERVICE = "hostkit-backup.service"
TIMER = "hostkit-backup.timer"
CALENDAR = {"daily": "*-*-* 02:30:00", "weekly": "Sun *-*-* 02:30:00"}
CRON = {"daily": "30 2 * * *", "weekly": "30 2 * * 0"}
# the doctor's backup.age check: a missed run shows before the next one is due again
MAX_AGE_HOURS = {"daily": 36.0, "weekly": 192.0}


def backup_command(dest: str, keep: int, deploy_dir: str) -> list[str]:
    return [sys.executable, "-m", "hostkit", "backup", "--dest", dest, "--keep", str(keep),
            "--deploy-dir", deploy_dir]


def render_units(argv: list[str], when: str) -> dict[str, str]:
    service = (
        "[Unit]\nDescription=hostkit backup of the JupyterHub stack\n"
        "After=docker.service\nRequires=docker.service\n\n"
        f"[Service]\nType=oneshot\nExecStart={shlex.join(argv)}\nNice=10\nIOSchedulingClass=idle\n"
    )
    timer = (
        "[Unit]\nDescription=hostkit backup, " + when + "\n\n"
        f"[Timer]\nOnCalendar={CALENDAR[when]}\nPersistent=true\nRandomizedDelaySec=20min\n\n"
        "[Install]\nWantedBy=timers.target\n"
    )
    return {SERVICE: service, TIMER: timer}


def render_cron(argv: list[str], when: str) -> str:
    return (
        "# hostkit backup of the JupyterHub stack (hostkit backup --schedule)\n"
        "SHELL=/bin/sh\nPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
        f"{CRON[when]} root {shlex.join(argv)} >>/var/log/hostkit/backup.log 2>&1\n"
    )


def install_schedule(host: LocalHost, when: str, dest: str, keep: int, deploy_dir: str) -> list[str]:
    """Install (or with `off` remove) the scheduled backup; returns what was done."""
    if when not in (*CALENDAR, "off"):
        raise UsageError(f"--schedule {when}: expected daily, weekly or off")
    systemd = Facts(host).init_system() == "systemd"
    done = []
    if when == "off":
        if systemd and host.exists(f"{UNIT_DIR}/{TIMER}"):
            host.run(["systemctl", "disable", "--now", TIMER], check=True)
        for path in (f"{UNIT_DIR}/{TIMER}", f"{UNIT_DIR}/{SERVICE}", CRON_FILE):
            if host.exists(path):
                host.unlink(path)
                done.append(f"removed {path}")
        return done
    argv = backup_command(dest, keep, deploy_dir)
    if systemd:
        for name, text in render_units(argv, when).items():
            host.write_text(f"{UNIT_DIR}/{name}", text, mode=0o644, backup=False)
            done.append(f"wrote {UNIT_DIR}/{name}")
        host.run(["systemctl", "daemon-reload"], check=True)
        host.run(["systemctl", "enable", "--now", TIMER], check=True)
        done.append(f"enabled {TIMER} ({CALENDAR[when]})")
    else:
        host.makedirs("/var/log/hostkit", mode=0o700)
        host.write_text(CRON_FILE, render_cron(argv, when), mode=0o644, backup=False)
        done.append(f"wrote {CRON_FILE} ({CRON[when]}; systemd is not the init here)")
    existing = host.read_text(SETTINGS_FILE) if host.exists(SETTINGS_FILE) else ""
    updates: dict[str, Any] = {"backup_dir": dest, "backup_max_age_hours": MAX_AGE_HOURS[when]}
    host.write_text(SETTINGS_FILE, render_settings_toml(existing, updates), mode=0o644)
    done.append(f"recorded backup_dir and backup_max_age_hours in {SETTINGS_FILE} for the doctor")
    return done
