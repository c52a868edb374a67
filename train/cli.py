"""`globmed-edge train`: not available yet (issue #5)."""

from __future__ import annotations

import click

from globmed_edge.errors import NotAvailableError


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def train() -> None:
    """Fine-tune a model (not available yet: issue #5)."""
    raise NotAvailableError("`globmed-edge train` is not available yet (tracked in issue #5)")
