"""One way to register things: a dict of lazy "module:attr" strings.

Listing names imports nothing; `load` imports only the one asked for; an unknown name gets a
did-you-mean error. Backends, exporters and bench tasks all use this.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from globmed_edge.errors import UnknownNameError


class LazyRegistry:
    def __init__(self, kind: str, entries: Mapping[str, str]) -> None:
        self.kind = kind
        self._entries = dict(entries)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def target(self, name: str) -> str:
        if name not in self._entries:
            raise UnknownNameError(self.kind, name, list(self._entries))
        return self._entries[name]

    def load(self, name: str) -> Any:
        module_name, _, attr = self.target(name).partition(":")
        module = importlib.import_module(module_name)
        return getattr(module, attr)
