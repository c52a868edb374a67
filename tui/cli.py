"""`globmed-edge chat`: not available yet (issue #6)."""

from __future__ import annotations

import click

from globmed_edge.errors import NotAvailableError


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def chat() -> None:
    """Offline chat (not available yet: issue #6)."""
    raise NotAvailableError("`globmed-edge chat` is not available yet (tracked in issue #6)")
