"""storage.user-quota: whether users' volumes can have, and have, a size limit."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import pytest
from fakes import FakeDocker, FakeHost

from hostkit.results import CheckResult, Status

RunCheck = Callable[..., CheckResult]


def _host(tmp_path: Path, mount: str, quota: Optional[str]) -> FakeHost:
    volumes = tmp_path / "srv/docker/volumes"
    volumes.mkdir(parents=True)
    findmnt = ("findmnt", "-n", "-o", "FSTYPE,OPTIONS", "-T", str(volumes))
    host = FakeHost(tmp_path, commands={findmnt: mount + "\n"}, binaries=("docker", "findmnt"),
                    docker=FakeDocker({"DockerRootDir": "/srv/docker"}))  # fmt: skip
    if quota is not None:
        host.files({"/opt/hostkit/.env": f"HOSTKIT_PORT=9090\nHOSTKIT_USER_DISK_QUOTA={quota}\n"})
    return host


@pytest.mark.parametrize(
    ("mount", "quota", "status", "summary"),
    [
        ("xfs rw,relatime,attr2,inode64,prjquota", "10G", Status.PASS, "limited to 10G each"),
        ("xfs rw,relatime,attr2,inode64,prjquota", "", Status.WARN, "HOSTKIT_USER_DISK_QUOTA is off"),
        ("xfs rw,relatime,attr2,inode64,noquota", None, Status.WARN, "xfs without project quotas"),
        ("ext4 rw,relatime", "", Status.WARN, "ext4 under"),
        ("overlay rw,lowerdir=/a,upperdir=/b", "", Status.WARN, "overlay under"),
        ("ext4 rw,relatime", "10G", Status.FAIL, "quota size requested but no quota support"),
    ],
)
def test_user_quota_says_whether_it_is_enforced(
    tmp_path: Path, run_check: RunCheck, mount: str, quota: Optional[str], status: Status, summary: str
) -> None:
    r = run_check("storage.user-quota", _host(tmp_path, mount, quota), deploy_dir="/opt/hostkit")
    assert r.status is status, r.summary
    assert summary in r.summary
    if status is not Status.PASS:
        assert "prjquota" in r.hint or "HOSTKIT_USER_DISK_QUOTA=10G" in r.hint
