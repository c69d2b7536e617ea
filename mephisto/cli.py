"""The `mephisto` command. The only module that prints and exits: library errors are
mapped to messages and exit codes here (config errors: 2, other Mephisto errors: 1)."""

from __future__ import annotations

import functools
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from mephisto.errors import ConfigError, MephistoError

console = Console(stderr=False)
err_console = Console(stderr=True)


def _handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            err_console.print(f"[bold red]Config error:[/] {exc}")
            sys.exit(2)
        except MephistoError as exc:
            err_console.print(f"[bold red]Error:[/] {exc}")
            sys.exit(1)

    return wrapper


def setup_logging(level: str = "info") -> None:
    from rich.logging import RichHandler

    handler = RichHandler(console=err_console, show_path=False, rich_tracebacks=True)
    logging.basicConfig(level=level.upper(), format="%(message)s", handlers=[handler], force=True)
    for noisy in ("uvicorn", "uvicorn.error", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _open_db(database: str | None) -> Any:
    from mephisto.db import MephistoDB

    return MephistoDB(database)


@click.group()
@click.version_option(package_name="mephisto")
def cli() -> None:
    """Collect human data through crowdsourcing."""


@cli.command()
@click.option("--database", envvar="MEPHISTO_DATABASE_URL", help="Database URL (default: SQLite in the data directory).")
@_handle_errors
def check(database: str | None) -> None:
    """Check that this machine can run tasks: database, data directory, tools."""
    import shutil

    from mephisto.operations.registry import (
        get_valid_architect_types,
        get_valid_blueprint_types,
        get_valid_provider_types,
    )
    from mephisto.utils.dirs import get_data_dir

    table = Table(title="mephisto check", show_header=True)
    table.add_column("what")
    table.add_column("status")
    table.add_column("detail")
    ok = True
    table.add_row("python", "ok", sys.version.split()[0])
    data_dir = get_data_dir()
    table.add_row("data directory", "ok", str(data_dir))
    try:
        db = _open_db(database)
        tasks = len(db.find_tasks())
        table.add_row("database", "ok", f"{db.url} ({tasks} tasks)")
        db.shutdown()
    except MephistoError as exc:
        ok = False
        table.add_row("database", "[red]failed[/]", str(exc))
    npm = shutil.which("npm")
    table.add_row("npm", "ok" if npm else "[yellow]missing[/]",
                  npm or "needed only to build React task front-ends")
    table.add_row("blueprints", "ok", ", ".join(get_valid_blueprint_types()))
    table.add_row("architects", "ok", ", ".join(get_valid_architect_types()))
    table.add_row("providers", "ok", ", ".join(get_valid_provider_types()))
    console.print(table)
    if not ok:
        sys.exit(1)


@cli.command()
@click.option("--database", envvar="MEPHISTO_DATABASE_URL", help="Database URL.")
@click.option("--task", "task_name", help="Only runs of this task_name.")
@_handle_errors
def runs(database: str | None, task_name: str | None) -> None:
    """List task runs and their units by status."""
    from mephisto.data_model.status import AssignmentState

    db = _open_db(database)
    tasks = {t.db_id: t for t in db.find_tasks(task_name=task_name)}
    rows = [
        (run, tasks[run.task_id], db.get_unit_status_counts(run.db_id))
        for run in db.find_task_runs()
        if run.task_id in tasks
    ]
    db.shutdown()
    if not rows:
        console.print("No task runs yet." + (f" (task_name={task_name})" if task_name else ""))
        return
    present = {status for _r, _t, counts in rows for status in counts}
    statuses = [str(s) for s in AssignmentState.valid_unit() if str(s) in present]
    table = Table(title="task runs")
    for col in ("run", "task", "blueprint", "provider", "finished", *statuses):
        table.add_column(col, justify="right" if col in statuses else "left")
    for run, task, counts in rows:
        table.add_row(
            run.db_id, task.task_name, run.task_type, run.provider_type,
            "yes" if run.is_completed else "no", *[str(counts.get(s, 0)) for s in statuses],
        )
    console.print(table)


@cli.command()
@click.option("--workers", "num_workers", default=0, show_default=True,
              help="Simulated workers that complete the run (0: wait for you in a browser).")
@click.option("--units", default=20, show_default=True, help="Units to create.")
@click.option("--port", default=3000, show_default=True, help="Port of the task server (0: any free port).")
@click.option("--database", envvar="MEPHISTO_DATABASE_URL", help="Database URL (default: SQLite in the data directory).")
@_handle_errors
def demo(num_workers: int, units: int, port: int, database: str | None) -> None:
    """Run a demo task: static HTML, local server, mock provider, SQLite."""
    from mephisto.abstractions.blueprints.static_task import SharedStaticTaskState
    from mephisto.operations.operator import Operator
    from mephisto.tools.demo import DEMO_HTML, demo_data

    setup_logging()
    if units < 1:
        raise ConfigError("--units must be at least 1", key="units")
    db = _open_db(database)
    config = {
        "blueprint": {"_blueprint_type": "static_task", "task_source": str(DEMO_HTML)},
        "architect": {"_architect_type": "local", "port": str(port)},
        "provider": {"_provider_type": "mock"},
        "task": {
            "task_name": "mephisto-demo",
            "task_title": "Rate the sentiment of a sentence",
            "task_description": "Read one sentence and say how it feels.",
            "task_reward": 0.05,
            "task_tags": "demo,sentiment",
        },
    }
    operator = Operator(db)
    started = time.monotonic()
    try:
        task_run_id = operator.launch_task_run(config, SharedStaticTaskState(static_task_data=demo_data(units)))
        url = operator.get_progress()[task_run_id]["url"]
        console.print(f"\n[bold]Demo task run {task_run_id} is live.[/] Open as a worker:")
        console.print(f"  {url}?worker_id=alice&assignment_id=a1\n")
        if num_workers:
            console.print(f"Driving it with {num_workers} simulated workers...")
            _simulate(url, num_workers)
        else:
            console.print("Waiting for workers (Ctrl-C to stop; the run can be resumed).")
        operator.wait_for_runs_then_shutdown(skip_input=True, log_rate=10)
    except KeyboardInterrupt:
        operator.shutdown()
        return
    elapsed = time.monotonic() - started
    counts = db.get_unit_status_counts(task_run_id)
    console.print(
        f"\n[bold green]Done:[/] {counts.get('completed', 0)} of {units} units completed in "
        f"{elapsed:.1f} s. Results are in {db.url} (see `mephisto runs`)."
    )
    _show_results(db, task_run_id)
    db.shutdown()


def _simulate(url: str, num_workers: int) -> None:
    import asyncio
    import random
    import threading

    from mephisto.testing.worker import run_simulated_workers

    def answer(_data: Any) -> dict[str, str]:
        return {"sentiment": random.choice(["positive", "neutral", "negative"]), "comment": ""}

    threading.Thread(
        target=lambda: asyncio.run(run_simulated_workers(url, num_workers, answer_fn=answer)),
        name="simulated-workers",
        daemon=True,
    ).start()


def _show_results(db: Any, task_run_id: str, limit: int = 5) -> None:
    table = Table(title=f"first results of run {task_run_id}")
    for col in ("unit", "worker", "sentence", "answer"):
        table.add_column(col)
    for unit in db.find_units(task_run_id=task_run_id, status="completed")[:limit]:
        agent = unit.get_assigned_agent()
        if agent is None:
            continue
        data = agent.state.get_data()
        table.add_row(
            unit.db_id, agent.get_worker().worker_name, str((data["inputs"] or {}).get("text", "")),
            str((data["outputs"] or {}).get("sentiment", "")),
        )
    console.print(table)


def main() -> None:  # pragma: no cover - console entry point
    cli()


if __name__ == "__main__":  # pragma: no cover
    cli()
