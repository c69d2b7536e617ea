"""`mephisto db`: back up and restore a whole database, export tasks from one database
and import them into another. An edge like `mephisto.cli` (it prints), kept beside the
database it works on; `mephisto.cli` adds the group (`cli.add_command(db_command)`).

Progress goes to stderr (a rich progress bar per table), the summary line to stdout.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from mephisto.db.backup import Progress
    from mephisto.db.database import MephistoDB

DATABASE_HELP = "Database URL (default: the configured one, or SQLite in the data directory)."


def _errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`mephisto.cli`'s error handling (imported when called: it imports this module)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from mephisto.cli import _handle_errors

        return _handle_errors(fn)(*args, **kwargs)

    return wrapper


def _open(database: str | None, data_dir: str | None = None) -> MephistoDB:
    """The database: `database`, else SQLite in `data_dir` when given, else the default."""
    from mephisto.db.database import MephistoDB

    if database is None and data_dir is not None:
        database = f"sqlite:///{(Path(data_dir).resolve() / 'database.db').as_posix()}"
    return MephistoDB(database)


@contextmanager
def _progress() -> Iterator[Progress]:
    """A rich progress display on stderr, one bar per table (or stage)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from mephisto.cli import err_console

    bars: dict[str, Any] = {}
    with Progress(TextColumn("{task.description:>24}"), BarColumn(), MofNCompleteColumn(),
                  console=err_console, transient=True) as display:

        def report(what: str, done: int, total: int | None) -> None:
            if what not in bars:
                bars[what] = display.add_task(what, total=total)
            display.update(bars[what], completed=done, total=total)

        yield report


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    raise AssertionError("unreachable")


def _say(message: str) -> None:
    from mephisto.cli import console

    console.print(message, soft_wrap=True, highlight=False)


@click.group("db")
def db_command() -> None:
    """Back up, restore, export and import databases."""


@db_command.command("backup")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option("--database", envvar="MEPHISTO_DATABASE_URL", help=DATABASE_HELP)
@click.option("--data-dir", type=click.Path(file_okay=False),
              help="Data directory whose run files to include (default: the configured one).")
@_errors
def backup_command(file: str | None, database: str | None, data_dir: str | None) -> None:
    """Write the whole database and its data files to FILE (.tar.gz)."""
    from mephisto.db.backup import backup

    if file is None:
        file = f"mephisto-backup-{datetime.now(UTC):%Y%m%d-%H%M%S}.tar.gz"
    db = _open(database)
    try:
        with _progress() as report:
            summary = backup(db, file, data_dir, report)
    finally:
        db.shutdown()
    _say(f"Backed up {summary.rows:,} rows of {len(summary.tables)} tables and "
         f"{summary.files:,} files ({_size(summary.file_bytes)}) to {summary.path} "
         f"({_size(summary.archive_bytes)}) in {summary.seconds:.1f} s.")


@db_command.command("restore")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--database", envvar="MEPHISTO_DATABASE_URL",
              help="Database URL of an empty database (default: SQLite in --data-dir, "
                   "else the configured one).")
@click.option("--data-dir", type=click.Path(file_okay=False),
              help="Data directory for the files (default: the configured one).")
@_errors
def restore_command(file: str, database: str | None, data_dir: str | None) -> None:
    """Restore a backup FILE into an empty database and data directory."""
    from mephisto.db.backup import restore

    db = _open(database, data_dir)
    try:
        with _progress() as report:
            summary = restore(db, file, data_dir, report)
    finally:
        db.shutdown()
    _say(f"Restored {summary.rows:,} rows of {len(summary.tables)} tables and "
         f"{summary.files:,} files ({_size(summary.file_bytes)}) from {summary.path} "
         f"in {summary.seconds:.1f} s.")


@db_command.command("export", short_help="Write chosen tasks, with all they need, to a file.")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--task", "task_names", multiple=True, required=True,
              help="A task_name to export (repeat for more).")
@click.option("--database", envvar="MEPHISTO_DATABASE_URL", help=DATABASE_HELP)
@click.option("--data-dir", type=click.Path(file_okay=False),
              help="Data directory whose run files to include (default: the configured one).")
@_errors
def export_command(file: str, task_names: tuple[str, ...], database: str | None,
                   data_dir: str | None) -> None:
    """Write the tasks named, with their runs, workers, reviews and files, to FILE."""
    from mephisto.tools.db_porter import export_tasks

    db = _open(database)
    try:
        with _progress() as report:
            summary = export_tasks(db, file, task_names, data_dir, report)
    finally:
        db.shutdown()
    _say(f"Exported {len(summary.tasks)} task(s) ({', '.join(summary.tasks)}): "
         f"{summary.tables.get('task_runs', 0):,} runs, {summary.tables.get('units', 0):,} "
         f"units, {summary.rows:,} rows and {summary.files:,} files to {summary.path} "
         f"({_size(summary.archive_bytes)}) in {summary.seconds:.1f} s.")


@db_command.command("import", short_help="Add the tasks of an export file to a database.")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--database", envvar="MEPHISTO_DATABASE_URL", help=DATABASE_HELP)
@click.option("--data-dir", type=click.Path(file_okay=False),
              help="Data directory for the files (default: the configured one).")
@click.option("--on-conflict", type=click.Choice(["fail", "merge", "rename"]), default="fail",
              show_default=True,
              help="When a task_name exists already: refuse, add the runs to that task, "
                   "or import the task under a new name.")
@_errors
def import_command(file: str, database: str | None, data_dir: str | None,
                   on_conflict: str) -> None:
    """Add the tasks of an export FILE to a database (ids are remapped; rows it has
    already are reused; importing the same file again changes nothing)."""
    from mephisto.tools.db_porter import import_tasks

    db = _open(database)
    try:
        with _progress() as report:
            summary = import_tasks(db, file, on_conflict, data_dir, report)
    finally:
        db.shutdown()
    _say(f"Imported {', '.join(summary.tasks)} from {summary.path}: "
         f"{summary.tables.get('task_runs', 0):,} new runs, "
         f"{summary.tables.get('units', 0):,} units, {summary.rows:,} rows added, "
         f"{sum(summary.reused.values()):,} found already, {summary.files:,} files, "
         f"in {summary.seconds:.1f} s.")
