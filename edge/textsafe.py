"""Text that reaches a terminal or a Markdown file: control characters removed.

Model output, saved chat messages, dataset names, option keys and CSV headers are data, and
data can carry terminal escape sequences (ESC [2J clears the screen, OSC 52 writes the
clipboard, C1 CSI does the same without ESC). Every path that prints such text goes through
`clean_text` (multi-line text: newlines and tabs kept) or `clean_line` (one-line fields). Removing
ESC and the C0/C1 controls is enough: what is left of a sequence is plain printable text.
"""

from __future__ import annotations

import re
from typing import Any, TextIO

# C0 controls except tab and newline, DEL, C1 controls; lone surrogates (not encodable).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_LINE_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """`text` without control characters (keeps \\n and \\t; \\r\\n becomes \\n)."""
    text = text.replace("\r\n", "\n")
    return _SURROGATE.sub("\ufffd", _CONTROL.sub("", text))


def clean_line(text: Any) -> str:
    """One line of display text: controls (newlines too) become a space or vanish."""
    s = str(text)
    s = re.sub("[\t\n\r\u2028\u2029]", " ", s)
    return _SURROGATE.sub("\ufffd", _LINE_CONTROL.sub("", s))


class SafeWriter:
    """A text stream that removes control characters from everything written to it."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(clean_text(text))

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
