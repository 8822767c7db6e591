from __future__ import annotations

from pathlib import Path

import pytest

from hostkit.distros import detect_distro, python_for

OS_RELEASE = Path(__file__).resolve().parents[1] / "fixtures" / "os-release"


@pytest.mark.parametrize(
    ("fixture", "family", "package_manager"),
    [
        ("centos-stream-8", "rhel", "dnf"),
        ("centos-stream-9", "rhel", "dnf"),
        ("rhel-9", "rhel", "dnf"),
        ("rocky-9", "rhel", "dnf"),
        ("almalinux-9", "rhel", "dnf"),
        ("oracle-9", "rhel", "dnf"),
        ("fedora-40", "rhel", "dnf"),
        ("debian-11", "debian", "apt"),
        ("debian-12", "debian", "apt"),
        ("debian-13", "debian", "apt"),
        ("ubuntu-20.04", "debian", "apt"),
        ("ubuntu-22.04", "debian", "apt"),
        ("ubuntu-24.04", "debian", "apt"),
    ],
)
def test_supported_distros_get_family_and_package_manager(
    fixture: str, family: str, package_manager: str
) -> None:
    info = detect_distro(str(OS_RELEASE / fixture))
    assert info.supported, info.reason
    assert (info.family, info.package_manager) == (family, package_manager)
    assert info.reason == ""


@pytest.mark.parametrize(
    ("fixture", "seen"),
    [("arch", "ID=arch VERSION_ID=?"), ("opensuse-15", "ID=opensuse-leap VERSION_ID=15.5")],
)
def test_unknown_distro_is_unsupported_with_what_was_seen(fixture: str, seen: str) -> None:
    info = detect_distro(str(OS_RELEASE / fixture))
    assert not info.supported
    assert info.reason == f"unsupported: saw {seen}"


def test_centos_linux_8_is_end_of_life_but_stream_8_is_not() -> None:
    assert not detect_distro(str(OS_RELEASE / "centos-8")).supported
    assert detect_distro(str(OS_RELEASE / "centos-stream-8")).supported


def test_derivative_of_known_family_is_classified_but_unsupported(tmp_path: Path) -> None:
    f = tmp_path / "os-release"
    f.write_text('ID=linuxmint\nID_LIKE="ubuntu debian"\nVERSION_ID="21.3"\n')
    info = detect_distro(str(f))
    assert info.family == "debian"
    assert not info.supported
    assert "ID=linuxmint VERSION_ID=21.3" in info.reason


def test_missing_or_empty_os_release_does_not_crash(tmp_path: Path) -> None:
    f = tmp_path / "os-release"
    f.write_text("")
    info = detect_distro(str(f))
    assert not info.supported
    assert info.family == "unknown"


def test_centos_7_is_refused_it_cannot_run_hostkit() -> None:
    info = detect_distro(str(OS_RELEASE / "centos-7"))
    assert not info.supported
    assert "end of life" in info.reason
    assert "Python 3.9" in info.reason


@pytest.mark.parametrize(("fixture", "interpreter", "install"), [
    ("centos-stream-8", "python3.11", "dnf install -y python3.11"),
    ("ubuntu-20.04", "python3.9", "apt-get install -y python3.9 python3.9-venv"),
    ("rhel-9", "python3", ""),
    ("rocky-9", "python3", ""),
    ("debian-11", "python3", ""),
    ("ubuntu-22.04", "python3", ""),
    ("fedora-40", "python3", ""),
])
def test_each_distro_names_the_python_hostkit_runs_on(fixture: str, interpreter: str,
                                                       install: str) -> None:
    advice = python_for(detect_distro(str(OS_RELEASE / fixture)))
    assert (advice.interpreter, advice.install) == (interpreter, install)
