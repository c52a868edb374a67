"""`globmed-edge bench`: not available yet (issue #4)."""

from __future__ import annotations

import click

from globmed_edge.errors import NotAvailableError


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def bench() -> None:
    """Benchmark builds (not available yet: issue #4)."""
    raise NotAvailableError("`globmed-edge bench` is not available yet (tracked in issue #4)")
