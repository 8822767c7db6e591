"""How long the hub's login page is unreachable: during `hostkit upgrade`, and during a plain
`hostkit stack down && hostkit stack up` of the same deployment.

    python3 bench/upgrade.py [--interval 0.25]

Deploys a stack on a free port whose hub is built at an older JupyterHub 5.x (as
tests/integration/test_upgrade.py does; the image is reused when present), then, in one run:
  1. `hostkit upgrade` to this hostkit's pins (backup, builds that are up to date, database
     migration on a copy, health gate with a canary user), and
  2. `hostkit stack down` then `hostkit stack up --no-build`,
while a poller GETs https://127.0.0.1:PORT/hub/login every INTERVAL seconds. Downtime is
the time from the first failed poll to the next answer of 200. Needs root and dockerd;
removes its stack, volumes and tags at the end.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

from stack_support import BUILD_FLAGS, Deployment
from test_upgrade import old_deployment


class Poller:
    """GETs the login page until stopped; outages are [start, end] of failed polls."""

    def __init__(self, url: str, interval: float) -> None:
        self.url = url
        self.interval = interval
        self.outages: list[list[float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _up(self) -> bool:
        try:
            return requests.get(self.url, verify=False, timeout=2).status_code == 200  # noqa: S501
        except requests.RequestException:
            return False

    def _run(self) -> None:
        down = False
        while not self._stop.is_set():
            now = time.monotonic()
            if not self._up():
                if not down:
                    self.outages.append([now, now])
                down = True
                self.outages[-1][1] = time.monotonic()
            else:
                if down:
                    self.outages[-1][1] = now
                down = False
            self._stop.wait(self.interval)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def total(self) -> float:
        return sum(end - start for start, end in self.outages)

    @property
    def longest(self) -> float:
        return max((end - start for start, end in self.outages), default=0.0)


def measured(dep: Deployment, interval: float, *steps: list[str]) -> tuple[Poller, float]:
    url = f"{dep.url}/hub/login"
    started = time.monotonic()
    with Poller(url, interval) as poller:
        time.sleep(1)
        for step in steps:
            if step == ["up"]:
                dep.up("--no-build")
            else:
                dep.cli(*step)
        time.sleep(1)
    return poller, time.monotonic() - started - 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=0.25, metavar="SECONDS")
    args = parser.parse_args()
    requests.packages.urllib3.disable_warnings()  # type: ignore[attr-defined]
    scratch = Path(tempfile.mkdtemp(prefix="hkbench-upgrade-"))
    try:
        with old_deployment(scratch) as dep:
            upgrade, upgrade_wall = measured(dep, args.interval,
                                             ["upgrade", "--dest", str(scratch / "backups"), *BUILD_FLAGS])
            # the same deployment, now on the new images: a plain restart of the stack
            for key in ("HOSTKIT_HUB_IMAGE", "HOSTKIT_NGINX_IMAGE", "HOSTKIT_NOTEBOOK_IMAGE"):
                dep.settings[key] = dep.env()[key]
            plain, plain_wall = measured(dep, args.interval, ["stack", "down"], ["up"])
            url = dep.url
    finally:
        subprocess.run(["rm", "-rf", str(scratch)], check=False)
    print(f"\nhub login page unreachable (polled every {args.interval}s, {url}/hub/login)\n")
    print(f"{'':28} {'hostkit upgrade':>16} {'stack down && up':>18}")
    print(f"{'downtime, total (s)':28} {upgrade.total:16.1f} {plain.total:18.1f}")
    print(f"{'longest outage (s)':28} {upgrade.longest:16.1f} {plain.longest:18.1f}")
    print(f"{'outages':28} {len(upgrade.outages):16d} {len(plain.outages):18d}")
    print(f"{'command wall time (s)':28} {upgrade_wall:16.1f} {plain_wall:18.1f}")


if __name__ == "__main__":
    main()
