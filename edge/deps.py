"""Importing optional heavy dependencies with a clear error naming the install extra."""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

from globmed_edge.errors import DependencyError


def require(module: str, extra: str) -> ModuleType:
    """Import `module`, or raise DependencyError telling which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        # Only translate "this module is missing", not an ImportError raised inside it.
        if exc.name and module.split(".")[0] != exc.name.split(".")[0]:
            raise
        raise DependencyError(module, extra) from exc


def require_transformers() -> ModuleType:
    """`require("transformers", "torch")`, with its progress bars off unless stderr is a terminal.

    Its per-tensor weight-loading bar is hundreds of carriage-return updates in a log file (339 for a
    1.5B model), burying the lines that matter; the toolkit's own bars say what is going on.
    """
    transformers = require("transformers", "torch")
    if not sys.stderr.isatty():
        transformers.utils.logging.disable_progress_bar()
    return transformers
