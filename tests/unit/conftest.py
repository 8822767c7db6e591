from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fakes import FakeHost

from hostkit.catalogue import load_catalogue
from hostkit.doctor import ProbeContext, evaluate
from hostkit.facts import Facts
from hostkit.results import CheckResult
from hostkit.settings import Settings


@pytest.fixture
def fake_host(tmp_path: Path) -> FakeHost:
    return FakeHost(tmp_path)


@pytest.fixture
def run_check() -> Callable[..., CheckResult]:
    """Evaluate one bundled check by id against a host, as `hostkit doctor --only ID` would."""
    catalogue = {s.id: s for s in load_catalogue()}

    def run(check_id: str, host: FakeHost, **settings: Any) -> CheckResult:
        ctx = ProbeContext(host, Facts(host), Settings(**settings))
        return evaluate(catalogue[check_id], ctx)

    return run
