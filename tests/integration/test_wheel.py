"""The built wheel carries stack/ and checks/: install it into a fresh venv and use it."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_wheel_installs_with_its_assets_and_lists_the_catalogue(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(REPO)],
                   check=True, capture_output=True)
    (wheel,) = dist.glob("hostkit-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", str(wheel)], check=True, capture_output=True)

    listing = subprocess.run([str(env_dir / "bin" / "hostkit"), "doctor", "--list"],
                             capture_output=True, text=True, check=True, cwd=tmp_path)
    ids = [line.split()[0] for line in listing.stdout.splitlines()]
    assert "docker.daemon" in ids
    assert "firewall.docker0-zone" in ids

    where = subprocess.run(
        [str(py), "-c", "from hostkit.assets import stack_dir, checks_dir; print(stack_dir()); "
                        "print(checks_dir())"],
        capture_output=True, text=True, check=True, cwd=tmp_path).stdout.split()
    site = str(env_dir)
    assert all(p.startswith(site) for p in where), where  # from the wheel, not this checkout
    assert (Path(where[0]) / "docker-compose.yml").is_file()
    assert (Path(where[1]) / "default.toml").is_file()
