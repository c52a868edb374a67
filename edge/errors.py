"""The one error hierarchy of globmed-edge.

Library code raises these; only the CLI turns them into a one-line message on stderr and a
non-zero exit, and the TUI shows them as notifications. Messages name the file, line, key or
value at fault so that a user can act on them without a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class GlobmedError(Exception):
    """Base class: every error the user is meant to read."""

    exit_code = 1


class ConfigError(GlobmedError):
    """A configuration file, key or value is wrong (unknown key, bad type, bad range)."""

    exit_code = 2


class UnknownNameError(ConfigError):
    """A registry lookup failed; carries a did-you-mean suggestion."""

    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        import difflib

        self.kind, self.name, self.known = kind, name, sorted(known)
        close = difflib.get_close_matches(name, self.known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        super().__init__(
            f"unknown {kind} {name!r}{hint} (known: {', '.join(self.known) or 'none'})"
        )


class DataError(GlobmedError):
    """A dataset file or record is malformed. `path` and `line` locate it (line is 1-based)."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        self.path = str(path) if path is not None else None
        self.line = line
        self.reason = message
        where = ""
        if self.path is not None:
            where = f"{self.path}:{line}: " if line is not None else f"{self.path}: "
        super().__init__(f"{where}{message}")


class ModelError(GlobmedError):
    """A model folder or build is missing files, unsupported or corrupted."""


class ManifestError(ModelError):
    """A build's manifest is missing, invalid, or its files do not match it."""


class BundleError(GlobmedError):
    """A deployment bundle is incomplete, altered, unsafe or cannot be made for the target asked."""


class HistoryError(GlobmedError):
    """The chat history file is damaged or is not a globmed-edge history; it was left untouched."""


class BackendError(GlobmedError):
    """A runtime backend failed to load or run a build."""


class DependencyError(GlobmedError):
    """An optional dependency (install extra) is not installed."""

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(
            f"this needs the Python package {module!r}, which is not installed; "
            f"install it with: pip install 'globmed-edge[{extra}]'"
        )


class NotAvailableError(GlobmedError):
    """A feature that cannot run here (no CUDA, not built yet): said plainly, never faked."""


class ParityError(GlobmedError):
    """A build drifted from its source beyond the thresholds for its quantization.

    `parity` is the failed check's result (quantize/parity.py `ParityResult.to_dict()`), so that
    whoever catches the error can record or show the numbers.
    """

    def __init__(self, message: str, parity: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.parity = parity


class Interrupted(GlobmedError):
    """The user pressed Ctrl+C (SIGINT): the work in progress was stopped cleanly."""

    exit_code = 130
