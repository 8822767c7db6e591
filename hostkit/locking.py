"""One day-two operation at a time per deployment: backup, restore, upgrade, users delete.

Two of them at once read and write the same hub database, volumes and backup directory
(two backups started in one second even share their temporary directory). Each holds an
exclusive flock(2) on /run/hostkit/deploy-<deploy dir>.lock for its whole run: the kernel
releases it when the process ends, however it ends (kill -9 too), so a lock is never stale.
The file names its holder, so the one refused can say who runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator

from hostkit.errors import HostkitError
from hostkit.host import LocalHost

LOCK_DIR = "/run/hostkit"


def lock_path(directory: str) -> str:
    name = os.path.normpath(directory).strip("/").replace("/", "_") or "root"
    return f"{LOCK_DIR}/deploy-{name}.lock"


@contextlib.contextmanager
def deployment_lock(host: LocalHost, directory: str, what: str) -> Iterator[None]:
    """Hold the deployment's lock while `what` (e.g. "backup") runs; refuse when it is held."""
    path = lock_path(directory)
    host.makedirs(LOCK_DIR, mode=0o755)
    fd = os.open(str(host.path(path)), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 300).decode("utf-8", "replace").strip() or "operation"
            raise HostkitError(f"another hostkit {holder} is running on {directory}",
                               f"wait for it to finish (lock: {path})") from None
        os.ftruncate(fd, 0)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        os.pwrite(fd, f"{what} (pid {os.getpid()}, since {stamp})\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the flock
