"""`globmed-edge quantize`: not available yet (issue #3)."""

from __future__ import annotations

import click

from globmed_edge.errors import NotAvailableError


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def quantize() -> None:
    """Export GGUF / ONNX / GPTQ builds (not available yet: issue #3)."""
    raise NotAvailableError("`globmed-edge quantize` is not available yet (tracked in issue #3)")
