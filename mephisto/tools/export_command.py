"""`mephisto export`: the command over `mephisto.tools.export` (added to the CLI group in
`mephisto/cli.py`). It prints only to stderr, so that stdout carries nothing but the
data when no `--output` is given."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from mephisto.data_model.status import AssignmentState


class _Time(click.ParamType[float, Any]):
    """An ISO 8601 date or time (`2026-11-30`, `2026-11-30T09:30`, with an optional
    offset); one without an offset is UTC. Converted to UNIX seconds."""

    name = "DATE"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        try:
            parsed = datetime.fromisoformat(str(value).strip())
        except ValueError:
            self.fail(f"{value!r} is not a date: use ISO 8601, e.g. 2026-11-30 or "
                      "2026-11-30T09:30:00", param, ctx)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()


_STATUSES = [str(x) for x in AssignmentState.valid_unit()]


@click.command("export", short_help="Write collected data, one row per unit, as JSON Lines or CSV.")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default=None,
              help="Output format (default: csv for an --output ending in .csv, else jsonl).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="File to write (default, or '-': standard output). Written whole or not "
              "at all.")
@click.option("--task", "task_names", multiple=True, metavar="NAME",
              help="Only units of this task (repeatable).")
@click.option("--run", "run_ids", multiple=True, type=click.IntRange(min=1), metavar="ID",
              help="Only units of this task run (repeatable).")
@click.option("--status", "statuses", multiple=True,
              type=click.Choice(_STATUSES, case_sensitive=False),
              help="Only units in this status (repeatable).")
@click.option("--kind", "kinds", multiple=True, default=("task",), show_default=True,
              type=click.Choice(["task", "screening", "gold", "all"]),
              help="Units of the run's data (task), or those made to check workers "
              "(screening, gold), kept out of the dataset unless asked for (repeatable).")
@click.option("--since", type=_Time(), help="Only units a worker took at or after this "
              "date/time (ISO 8601, UTC unless an offset is given).")
@click.option("--until", type=_Time(), help="Only units a worker took at or before this.")
@click.option("--database", envvar="MEPHISTO_DATABASE_URL", help="Database URL.")
def export(fmt: str | None, output: Path | None, task_names: tuple[str, ...],
           run_ids: tuple[int, ...], statuses: tuple[str, ...], kinds: tuple[str, ...],
           since: float | None, until: float | None, database: str | None) -> None:
    """Export the data of units: ids, worker, statuses, reward, times, inputs, outputs,
    latest review and bonuses; one JSON object a line (jsonl) or one CSV row each
    (nested fields as dotted columns)."""
    from mephisto.cli import _handle_errors  # here: cli.py imports this module

    if since is not None and until is not None and since > until:
        raise click.BadParameter("--since is after --until", param_hint="--since")
    if output is not None and str(output) == "-":
        output = None
    if fmt is None:
        fmt = "csv" if output is not None and output.suffix.lower() == ".csv" else "jsonl"
    chosen = () if "all" in kinds else kinds
    _handle_errors(_export)(fmt, output, task_names, [str(r) for r in run_ids],
                            [s.lower() for s in statuses], chosen, since, until, database)


def _export(fmt: str, output: Path | None, task_names: tuple[str, ...], run_ids: list[str],
            statuses: list[str], kinds: tuple[str, ...], since: float | None,
            until: float | None, database: str | None) -> None:
    from mephisto.cli import _open_db, err_console
    from mephisto.tools.export import ExportFilter, export_to_file, export_units

    flt = ExportFilter(task_names=task_names, run_ids=run_ids, statuses=statuses,
                       since=since, until=until, kinds=kinds)
    db = _open_db(database)
    try:
        if output is None:
            count = export_units(db, fmt, sys.stdout, flt)
            sys.stdout.flush()
            where = "standard output"
        elif err_console.is_terminal:
            count = _with_progress(db, fmt, output, flt, err_console)
            where = str(output)
        else:
            count = export_to_file(db, fmt, output, flt)
            where = str(output)
    finally:
        db.shutdown()
    err_console.print(f"exported {count:,} units to {where}", highlight=False, soft_wrap=True)


def _with_progress(db: Any, fmt: str, output: Path, flt: Any, console: Any) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from mephisto.tools.export import export_to_file

    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeRemainingColumn(), console=console,
                  transient=True) as bar:
        task = bar.add_task(f"exporting to {output.name}", total=None)
        return export_to_file(
            db, fmt, output, flt,
            progress=lambda done: bar.update(task, completed=done),
            total=lambda n: bar.update(task, total=n))
