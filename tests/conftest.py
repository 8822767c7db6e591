"""Test-wide setup: shared helper modules (fakes, simulators, stack support) import by name.

pytest runs in importlib mode (so unit and integration tests may share file names), which
does not put test directories on sys.path; this does, once, for the helper modules.
"""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parent
for _directory in (_TESTS, _TESTS / "unit", _TESTS / "integration"):
    if str(_directory) not in sys.path:
        sys.path.insert(0, str(_directory))
