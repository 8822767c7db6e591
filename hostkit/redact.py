"""Secrets out of logs: command lines are logged with option values that are passwords masked."""

from __future__ import annotations

import re
from collections.abc import Sequence

MASK = "***"
_SECRET_OPTION = re.compile(r"(password|passwd|secret|token)", re.IGNORECASE)


def redact_argv(argv: Sequence[str]) -> list[str]:
    """The command line with the values of password-like options masked.

    Handles `--admin-password=X`, `--admin-password X` and nested forms such as
    `--stack-arg=--admin-password=X`.
    """
    out: list[str] = []
    mask_next = False
    for arg in argv:
        text = str(arg)
        if mask_next:
            out.append(MASK)
            mask_next = False
            continue
        if text.startswith("-") and _SECRET_OPTION.search(text):
            if "=" in text:
                head = text[: text.rindex("=") + 1]
                out.append(head + MASK)
                continue
            mask_next = True
        out.append(text)
    return out
