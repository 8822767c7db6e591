"""Test-wide setup: shared helper modules (fakes, simulators, stack support) import by name.

pytest runs in importlib mode (so unit and integration tests may share file names), which
does not put test directories on sys.path; this does, once, for the helper modules.
"""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parent
for _directory in (_TESTS, _TESTS / "unit", _TESTS / "integration", _TESTS / "integration" / "box"):
    if str(_directory) not in sys.path:
        sys.path.insert(0, str(_directory))


def pytest_sessionfinish(session: object, exitstatus: int) -> None:
    """Under CI, a skipped test fails the run: CI installs and starts everything the tests need,
    so a skip there means a capability went unproven, not that it passed."""
    import os

    import pytest

    if not os.environ.get("CI") or exitstatus != 0:
        return
    config = session.config  # type: ignore[attr-defined]
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped:
        for report in skipped:
            reporter.write_line(f"SKIPPED under CI: {report.nodeid}: {report.longrepr[-1]}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED  # type: ignore[attr-defined]
