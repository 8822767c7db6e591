"""The README documents every bundled check and probe (it is the admin's reference)."""

from __future__ import annotations

from pathlib import Path

from hostkit.catalogue import load_catalogue
from hostkit.probes import probe_names

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_bundled_check_is_in_the_readme_table() -> None:
    missing = [s.id for s in load_catalogue() if f"| `{s.id}` |" not in README]
    assert missing == []


def test_every_probe_is_listed_in_the_readme() -> None:
    missing = [name for name in probe_names() if f"`{name}`" not in README]
    assert missing == []
