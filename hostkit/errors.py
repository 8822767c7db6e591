"""One error family for every expected failure: a message and a hint, never a traceback."""

from __future__ import annotations


class HostkitError(Exception):
    """An expected failure: the CLI prints `message` and `hint` and exits non-zero."""

    exit_code = 1

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message


class UsageError(HostkitError):
    """Bad input from the user: exit code 2."""

    exit_code = 2


class CheckNotApplicable(HostkitError):
    """A probe cannot be made on this host (e.g. no image to test with): SKIP, not ERROR."""


class CommandError(HostkitError):
    """A command on the host exited non-zero or could not be started."""

    def __init__(self, argv: list[str], returncode: int, stderr: str, hint: str = "") -> None:
        tail = stderr.strip().splitlines()[-1] if stderr.strip() else "no output"
        from hostkit.redact import redact_argv

        super().__init__(f"`{' '.join(redact_argv(argv))}` failed (exit {returncode}): {tail}", hint)
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr
