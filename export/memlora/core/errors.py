"""User-facing errors: one line that names the file and the fix; the CLI exits with code 2."""
from __future__ import annotations

from pathlib import Path


class MemloraError(Exception):
    """An error caused by the user's input, shown as one line without a traceback.

    Args:
        message: what is wrong.
        path: the file or folder at fault, if any.
        fix: what the user should do about it.
    """

    exit_code = 2

    def __init__(self, message: str, path: str | Path | None = None, fix: str | None = None):
        self.message = message
        self.path = str(path) if path is not None else None
        self.fix = fix
        super().__init__(self.one_line())

    def one_line(self) -> str:
        parts = [f"{self.path}: {self.message}" if self.path else self.message]
        if self.fix:
            parts.append(f"fix: {self.fix}")
        return " -- ".join(parts)


class ExportFailure(MemloraError):
    """A model or graph the backend could not lower (names the backend, family and failing op)."""


class ParityFailure(MemloraError):
    """An exported artifact disagrees with PyTorch beyond the tolerance table."""

    exit_code = 1
