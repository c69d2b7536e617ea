"""`mephisto architect cleanup`: delete what crashed runs of `ec2`/`heroku` left running."""

from __future__ import annotations

import click

__all__ = ["architect_group"]


@click.group("architect")
def architect_group() -> None:
    """Architects' resources (routers started on EC2 or Heroku)."""


@architect_group.command("cleanup")
@click.option("--type", "architect_type", type=click.Choice(["ec2", "heroku"]),
              help="Only this architect's leftovers (default: all).")
@click.option("--force", is_flag=True,
              help="Also delete what live runs of this host use (they stop serving).")
def cleanup(architect_type: str | None, force: bool) -> None:
    """Delete the instances, load balancers and apps that runs which died without
    shutting down left behind (recorded under <data dir>/architects/)."""
    from mephisto.cli import _handle_errors

    _handle_errors(_cleanup)(architect_type, force)


def _cleanup(architect_type: str | None, force: bool) -> None:
    import asyncio

    from mephisto.abstractions.architects.provisioned import cleanup_leftovers, ledgers

    before = ledgers(architect_type)
    cleaned = asyncio.run(cleanup_leftovers(architect_type, force))
    for name in cleaned:
        click.echo(f"deleted {name}")
    skipped = len(before) - len(cleaned)
    if skipped:
        click.echo(f"{skipped} in use by a live run (--force to delete anyway)", err=True)
    if not before:
        click.echo("nothing to clean up")
