"""`mephisto architect cleanup`: delete what crashed runs of `ec2`/`heroku` left running
(instances, load balancers, apps), from the ledgers under `<data dir>/architects/`."""

from __future__ import annotations

import click

__all__ = ["architect_group", "cleanup_leftovers"]


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
    for name in cleanup_leftovers(architect_type, force):
        click.echo(f"deleted {name}")


def cleanup_leftovers(architect_type: str | None = None, force: bool = False) -> list[str]:
    """Destroy what crashed runs of every provisioning architect (or of one type) left;
    returns the `<type>:<name>`s deleted. Says on stderr what was skipped and why."""
    import asyncio

    from mephisto.abstractions.architects.provisioned import (
        ProvisionedArchitect,
        cleanup_ledgers,
        ledgers,
    )
    from mephisto.operations.registry import get_plugin

    found = ledgers(architect_type)
    if not found:
        click.echo("nothing to clean up", err=True)
        return []
    cleaned: list[str] = []
    for kind in sorted({str(ledger.data.get("type")) for ledger in found}):
        cls = get_plugin("architect", kind)
        if isinstance(cls, type) and issubclass(cls, ProvisionedArchitect):
            cleaned += asyncio.run(cleanup_ledgers(cls, force))
    if len(cleaned) < len(found):
        click.echo(f"{len(found) - len(cleaned)} left: in use by a live run of this host "
                   "(--force deletes them anyway)", err=True)
    return cleaned
