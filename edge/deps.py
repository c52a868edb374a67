"""Importing optional heavy dependencies with a clear error naming the install extra."""

from __future__ import annotations

import importlib
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
