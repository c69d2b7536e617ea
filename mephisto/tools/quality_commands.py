"""`mephisto qualifications` and `mephisto workers`: the click groups the CLI adds
(`cli.add_command`). They parse, call `tools/qualify.py` and `tools/workers.py`, and
print; errors go through the CLI's `_handle_errors` (config errors exit 2, others 1)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from mephisto.data_model.worker import Worker

__all__ = ["qualifications_group", "workers_group"]

_database = click.option("--database", envvar="MEPHISTO_DATABASE_URL", help="Database URL.")
_provider = click.option("--provider", "provider_type",
                         help="Provider type of the worker(s), when a name is known to several.")


def _cli(fn: Callable[..., None]) -> Callable[..., None]:
    """Open the database for the command, close it after, and map errors as the CLI
    does (imported when called: `mephisto.cli` imports this module)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, database: str | None = None, **kwargs: Any) -> None:
        from mephisto.cli import _handle_errors, _open_db

        def run() -> None:
            db = _open_db(database)
            try:
                fn(db, *args, **kwargs)
            finally:
                db.shutdown()

        _handle_errors(run)()

    return wrapper


def _out() -> Any:
    from mephisto.cli import console

    return console


def _warn(messages: Sequence[str]) -> None:
    from rich.markup import escape

    from mephisto.cli import err_console

    for message in messages:
        err_console.print(f"[yellow]Warning:[/] {escape(message)}", soft_wrap=True)


def _date(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M")


def _rate(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.0%}"


def _who(workers: Sequence[Worker]) -> str:
    return ", ".join(f"{w.worker_name} ({w.provider_type})" for w in workers)


# -- mephisto qualifications ------------------------------------------------------------


@click.group("qualifications")
def qualifications_group() -> None:
    """List, grant, revoke and delete qualifications (also on the crowd provider)."""


@qualifications_group.command("list")
@click.option("--worker", "worker_name", help="Only the qualifications this worker holds.")
@_provider
@_database
@_cli
def list_command(db: Any, worker_name: str | None, provider_type: str | None) -> None:
    """Every qualification: workers holding it, lowest and highest value, creation date."""
    from rich.markup import escape
    from rich.table import Table

    from mephisto.tools.qualify import list_qualifications

    lines = list_qualifications(db, worker_name, provider_type)
    if not lines:
        _out().print("No qualifications yet." if worker_name is None else
                     f"{escape(worker_name)} holds no qualifications.")
        return
    table = Table(title="qualifications" + (f" of {escape(worker_name)}" if worker_name else ""))
    table.add_column("qualification")
    if worker_name is not None:
        table.add_column("value", justify="right")
    for col in ("workers", "min", "max"):
        table.add_column(col, justify="right")
    table.add_column("created")
    for q in lines:
        mine = [] if worker_name is None else [str(q.worker_value)]
        table.add_row(escape(q.name), *mine, str(q.workers),
                      "-" if q.min_value is None else str(q.min_value),
                      "-" if q.max_value is None else str(q.max_value), _date(q.creation_date))
    _out().print(table)


@qualifications_group.command("grant")
@click.argument("name")
@click.argument("worker_names", metavar="WORKER...", nargs=-1, required=True)
@click.option("--value", default="1", show_default=True, help="The value granted (an integer).")
@_provider
@click.option("--create", is_flag=True, help="Make the qualification if it does not exist.")
@_database
@_cli
def grant_command(db: Any, name: str, worker_names: tuple[str, ...], value: str,
                  provider_type: str | None, create: bool) -> None:
    """Grant qualification NAME to workers (by worker name), here and on their provider."""
    from rich.markup import escape

    from mephisto.tools.qualify import grant_qualification

    change = grant_qualification(db, name, worker_names, value, provider_type, create)
    if change.created:
        _out().print(f"Created qualification {escape(name)!r}.")
    _out().print(f"Granted {escape(name)!r} (value {change.value}) to "
                 f"{escape(_who(change.workers))}.", soft_wrap=True)
    if change.told:
        _out().print(f"The provider was told for {escape(_who(change.told))}.", soft_wrap=True)
    _warn(change.warnings)


@qualifications_group.command("revoke")
@click.argument("name")
@click.argument("worker_names", metavar="WORKER...", nargs=-1, required=True)
@_provider
@_database
@_cli
def revoke_command(db: Any, name: str, worker_names: tuple[str, ...],
                   provider_type: str | None) -> None:
    """Revoke qualification NAME from workers, here and on their provider."""
    from rich.markup import escape

    from mephisto.tools.qualify import revoke_qualification

    change = revoke_qualification(db, name, worker_names, provider_type)
    _out().print(f"Revoked {escape(name)!r} from {escape(_who(change.workers))}.",
                 soft_wrap=True)
    if change.told:
        _out().print(f"The provider was told for {escape(_who(change.told))}.", soft_wrap=True)
    _warn(change.warnings)


@qualifications_group.command("delete")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_database
@_cli
def delete_command(db: Any, name: str, yes: bool) -> None:
    """Delete qualification NAME and every grant of it (revoked on the providers too)."""
    from rich.markup import escape

    from mephisto.tools.qualify import delete_qualification, find_qualification, holders

    held = len(holders(db, find_qualification(db, name)))
    if not yes:
        click.confirm(f"Delete qualification {name!r}, held by {held} worker(s)?", abort=True)
    change = delete_qualification(db, name)
    _out().print(f"Deleted qualification {escape(name)!r} and {len(change.workers)} grant(s).")
    if change.told:
        _out().print(f"The provider was told for {escape(_who(change.told))}.", soft_wrap=True)
    _warn(change.warnings)


# -- mephisto workers ----------------------------------------------------------------------


@click.group("workers")
def workers_group() -> None:
    """List workers, show one, block or unblock one (also on the crowd provider)."""


@workers_group.command("list")
@click.option("--task", "task_name", help="Only workers with units of this task (and only "
                                          "those units counted).")
@click.option("--provider", "provider_type", help="Only workers of this provider type.")
@click.option("--blocked", is_flag=True, help="Only workers some requester blocked.")
@_database
@_cli
def workers_list(db: Any, task_name: str | None, provider_type: str | None,
                 blocked: bool) -> None:
    """Workers with their units by status, approval rate, blocks and qualifications."""
    from rich.markup import escape
    from rich.table import Table

    from mephisto.tools.workers import list_workers

    lines = list_workers(db, task_name, provider_type, blocked)
    if not lines:
        _out().print("No workers" + (" match." if task_name or provider_type or blocked
                                     else " yet."))
        return
    table = Table(title="workers" + (f" of task {escape(task_name)}" if task_name else ""))
    table.add_column("worker")
    table.add_column("provider")
    table.caption = ("units: done (not reviewed yet), approved, rejected, soft-rejected; "
                     "rate: approved of reviewed; quals: qualifications held")
    for col in ("done", "appr.", "rej.", "soft", "rate", "blocked", "quals"):
        table.add_column(col, justify="left" if col == "blocked" else "right")
    for w in lines:
        u = w.units
        table.add_row(escape(w.name), escape(w.provider_type), str(u["completed"]),
                      str(u["accepted"]), str(u["rejected"]), str(u["soft_rejected"]),
                      _rate(w.approval_rate), "yes" if w.blocked else "no",
                      str(w.qualifications))
    _out().print(table)


@workers_group.command("show")
@click.argument("name")
@_provider
@_database
@_cli
def workers_show(db: Any, name: str, provider_type: str | None) -> None:
    """One worker: qualifications, blocks, latest units and reviews, pay so far."""
    from rich.markup import escape
    from rich.table import Table

    from mephisto.cli import _money, _unit_counts
    from mephisto.tools.workers import show_worker

    view = show_worker(db, name, provider_type)
    out = _out()
    w = view.worker
    out.print(f"[bold]{escape(w.worker_name)}[/] ({escape(w.provider_type)}, worker "
              f"{w.db_id}): {view.units_total} unit(s): {_unit_counts(view.unit_counts)}; "
              f"approval rate {_rate(view.approval_rate)}; paid {_money(view.paid)} "
              f"({_money(view.rewards_paid)} rewards, {_money(view.bonuses_paid)} in "
              f"{view.bonuses} bonus(es))", soft_wrap=True)
    sections: list[tuple[str, Sequence[str], list[Sequence[str]]]] = [
        ("qualifications", ("qualification", "value", "since"),
         [(escape(n), str(v), _date(d)) for n, v, d in view.qualifications]),
        ("blocks", ("requester", "reason", "since"),
         [(escape(r), escape(reason), _date(d)) for r, reason, d in view.blocks]),
        (f"latest units ({len(view.units)} of {view.units_total})",
         ("unit", "task", "run", "status", "reward", "created"),
         [(u.unit_id, escape(u.task_name), u.task_run_id, u.status, _money(u.reward),
           _date(u.creation_date)) for u in view.units]),
        (f"reviews ({len(view.reviews)} of {view.reviews_total})",
         ("date", "unit", "decision", "note"),
         [(_date(r.creation_date), r.unit_id or "-", escape(_decision(r)),
           escape(r.note or "")) for r in view.reviews]),
    ]
    for title, columns, rows in sections:
        if not rows:
            out.print(f"No {title.split(' (')[0]}.")
            continue
        table = Table(title=title)
        for col in columns:
            table.add_column(col, justify="right" if col in ("value", "reward") else "left")
        for row in rows:
            table.add_row(*row)
        out.print(table)


def _decision(review: Any) -> str:
    parts = [review.status] if review.status else []
    if review.bonus:
        parts.append(f"bonus ${review.bonus:,.2f}")
    if review.blocked:
        parts.append("blocked")
    if review.unblocked:
        parts.append("unblocked")
    if review.value is not None:
        parts.append(f"granted {review.qualification or '(deleted)'}={review.value}")
    if review.revoked:
        parts.append(f"revoked {review.revoked}")
    return ", ".join(parts) or "-"


@workers_group.command("block")
@click.argument("name")
@click.option("--reason", required=True, help="Why (the provider may show it).")
@click.option("--requester", "requester_name",
              help="Block for this requester (default: the only one of the worker's provider).")
@_provider
@_database
@_cli
def workers_block(db: Any, name: str, reason: str, requester_name: str | None,
                  provider_type: str | None) -> None:
    """Block a worker from a requester's tasks, here and on the provider."""
    from rich.markup import escape

    from mephisto.tools.workers import block_worker

    change = block_worker(db, name, reason, requester_name, provider_type)
    told = " (the provider too)" if change.provider_told else ""
    _out().print(f"Blocked {escape(_who([change.worker]))} for requester "
                 f"{escape(change.requester.requester_name)}{told}.", soft_wrap=True)
    _warn(change.warnings)


@workers_group.command("unblock")
@click.argument("name")
@click.option("--requester", "requester_name",
              help="The requester's block (default: the only one of the worker's provider).")
@_provider
@_database
@_cli
def workers_unblock(db: Any, name: str, requester_name: str | None,
                    provider_type: str | None) -> None:
    """Lift a requester's block of a worker, here and on the provider."""
    from rich.markup import escape

    from mephisto.tools.workers import unblock_worker

    change = unblock_worker(db, name, requester_name, provider_type)
    told = " (the provider too)" if change.provider_told else ""
    _out().print(f"Unblocked {escape(_who([change.worker]))} for requester "
                 f"{escape(change.requester.requester_name)}{told}.", soft_wrap=True)
    _warn(change.warnings)
