"""Docker downtime while moving the data root: the seed's recipe against hostkit's.

    python3 bench/relocate.py [--gb 2]

Runs in a fresh systemd box (tests/integration/box): fills a named volume with GB of
random data, then, in one run,
  1. the seed's procedure: stop docker.socket + docker.service, one full rsync, set
     data-root, start;
  2. hostkit bootstrap --data-root (first copy while Docker runs, then a delta pass);
and reports how long the Docker API did not answer in each, where hostkit's seconds between
"stop" and "API answers" go (its per-phase timings: stop, delta pass, verify pass, start,
inventories), plus the raw copy throughput of `rsync -aHAXS --numeric-ids -x` against
`cp -a` on the same data. Needs root and dockerd.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration" / "box"))

from boxlib import Box, build_image  # the box helpers live with the tests

# systemd refuses a unit started too often in a row ("start of the service was attempted
# too often"); the bench restarts Docker several times within a minute.
RESET = "systemctl reset-failed docker.service docker.socket; "


class ApiWatch:
    """Polls `docker info` in the box and records the longest time it did not answer."""

    def __init__(self, box: Box) -> None:
        self.box = box
        self.down_since: float | None = None
        self.longest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            ok = self.box.sh("timeout 2 docker version -f '{{.Server.Version}}' >/dev/null 2>&1",
                             check=False).returncode == 0
            now = time.monotonic()
            if not ok and self.down_since is None:
                self.down_since = now
            elif ok and self.down_since is not None:
                self.longest = max(self.longest, now - self.down_since)
                self.down_since = None
            time.sleep(0.2)

    def __enter__(self) -> ApiWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(1)
        self._stop.set()
        self._thread.join()


def timed(box: Box, script: str) -> float:
    start = time.monotonic()
    box.sh(script, timeout=3600)
    return time.monotonic() - start


def phases(output: str) -> dict[str, float]:
    """The `data-root phases: NAME 1.2s, ...` note bootstrap prints, as a dict."""
    text = " ".join(output.split())  # rich wraps long notes
    m = re.search(r"data-root phases: (.*?)(?: note:| ok=\d|$)", text)
    if not m:
        return {}
    return {name.strip(): float(secs) for name, secs in re.findall(r"([^,]+?) (\d+\.\d+)s", m.group(1))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=2.0, help="GB of data in Docker's root")
    args = parser.parse_args()
    build_image()
    box = Box("hostkit-bench")
    box.start()
    results: dict[str, float] = {"data_gb": args.gb}
    try:
        box.install_hostkit()
        box.seed_docker_content()
        mb = int(args.gb * 1000)
        # many files as well as big ones: real roots are mostly small layer files
        box.sh("docker run --rm -v hkdata:/data hostkit-tiny:1 sh -c '"
               f"dd if=/dev/urandom of=/data/big bs=1M count={mb // 2} 2>/dev/null; "
               "mkdir -p /data/small; i=0; while [ $i -lt 20000 ]; do "
               "echo $i > /data/small/$i; i=$((i+1)); done; "
               f"dd if=/dev/urandom of=/data/big2 bs=1M count={mb // 2} 2>/dev/null'",
               timeout=3600)

        # raw copy throughput with Docker stopped, same source, fresh targets
        box.sh("systemctl stop docker.socket docker.service")
        results["rsync_s"] = timed(box, "rsync -aHAXS --numeric-ids -x /var/lib/docker/ "
                                        "/srv/bench-rsync/")
        results["cp_a_s"] = timed(box, "cp -a /var/lib/docker/. /srv/bench-cp/")
        box.sh("rm -rf /srv/bench-rsync /srv/bench-cp; " + RESET + "systemctl start docker")

        # 1. the seed's recipe, Docker stopped for the whole copy
        with ApiWatch(box) as watch:
            results["seed_total_s"] = timed(
                box, "systemctl stop docker.socket docker.service && "
                     "rsync -aqxP /var/lib/docker/ /srv/seed-docker && "
                     "printf '{\"data-root\": \"/srv/seed-docker\"}\\n' > /etc/docker/daemon.json"
                     " && " + RESET + "systemctl start docker && docker info >/dev/null")
        results["seed_downtime_s"] = watch.longest
        # back to the default root for a fair second run
        box.sh("systemctl stop docker.socket docker.service && rm -f /etc/docker/daemon.json && "
               "rm -rf /srv/seed-docker && " + RESET + "systemctl start docker")

        # 2. hostkit's two-pass relocation
        dns = box.resolver()
        with ApiWatch(box) as watch:
            start = time.monotonic()
            run = box.sh(f"hostkit bootstrap --data-root /srv/docker --yes --no-stack --dns {dns}",
                         timeout=3600)
            results["hostkit_total_s"] = time.monotonic() - start
        results["hostkit_downtime_s"] = watch.longest
        for name, secs in phases(run.stdout).items():
            results[f"hostkit phase: {name}"] = secs
    finally:
        box.remove()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
