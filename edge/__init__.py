"""globmed-edge: offline edge deployment of multilingual medical language models.

Importing this package is cheap: no torch, transformers, onnxruntime, llama_cpp or
textual is imported here or by the CLI entry point (see tests/test_import_hygiene.py).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
