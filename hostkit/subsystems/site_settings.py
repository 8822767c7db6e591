"""The site settings file bootstrap writes, so a later doctor checks against the same choices."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

from hostkit.facts import Facts
from hostkit.host import LocalHost
from hostkit.settings import SETTINGS_FILE, render_settings_toml
from hostkit.steps import Change


class SiteSettingsStep:
    """Record what bootstrap set up, so a later `hostkit doctor` checks against it."""

    name = "settings"
    title = f"{SETTINGS_FILE}: what the doctor checks against"

    def __init__(self, updates: dict[str, Any]) -> None:
        self.updates = updates
        self._text = ""

    def check(self, host: LocalHost, facts: Facts) -> list[Change]:
        existing = host.read_text(SETTINGS_FILE) if host.exists(SETTINGS_FILE) else ""
        self._text = render_settings_toml(existing, self.updates)  # bad TOML: UsageError
        if self._text == existing:
            return []
        diff = "\n".join(list(difflib.unified_diff(existing.splitlines(), self._text.splitlines(),
                                                   SETTINGS_FILE, SETTINGS_FILE + " (hostkit)",
                                                   lineterm="", n=0))[2:])
        return [Change(f"record {', '.join(sorted(self.updates))}", diff)]

    def apply(self, host: LocalHost, facts: Facts, changes: Sequence[Change]) -> None:
        host.write_text(SETTINGS_FILE, self._text, mode=0o644, backup=True)
