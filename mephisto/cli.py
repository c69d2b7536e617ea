"""The `mephisto` command. The only module that prints and exits: library errors are
mapped to messages and exit codes here (config errors: 2, other Mephisto errors: 1)."""

from __future__ import annotations

import functools
import logging
import sys
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mephisto.errors import ConfigError, MephistoError, ProviderError

if TYPE_CHECKING:
    from mephisto.abstractions.providers.inhouse import ParticipantLink
    from mephisto.db.database import MephistoDB

console = Console(stderr=False)
err_console = Console(stderr=True)


def _handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            err_console.print(f"[bold red]Config error:[/] {escape(str(exc))}")
            sys.exit(2)
        except ProviderError as exc:
            err_console.print(f"[bold red]Provider error:[/] {escape(str(exc))}")
            sys.exit(1)
        except MephistoError as exc:
            err_console.print(f"[bold red]Error:[/] {escape(str(exc))}")
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
    requester_rows: list[tuple[str, str, str]] = []
    try:
        db = _open_db(database)
        tasks = len(db.find_tasks())
        table.add_row("database", "ok", f"{db.url} ({tasks} tasks)")
        requester_rows = _requester_rows(db)
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
    for row in requester_rows:
        table.add_row(*row)
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


# -- requesters --------------------------------------------------------------------------


def _requester_rows(db: MephistoDB) -> list[tuple[str, str, str]]:
    """`mephisto check`'s rows: one per registered requester (never a secret)."""
    from mephisto.tools.requesters import requester_statuses

    statuses = requester_statuses(db)
    if not statuses:
        return [("requesters", "[yellow]none[/]",
                 "register one: mephisto register <provider> name=<name> ...")]
    return [
        (f"requester {escape(s.requester_name)}",
         "ready" if s.check.ready else "[yellow]not ready[/]",
         escape(f"{s.provider_type}: {s.check.message}"))
        for s in statuses
    ]


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("provider_type")
@click.argument("pairs", nargs=-1, type=click.UNPROCESSED)
@click.option("--database", envvar="MEPHISTO_DATABASE_URL", help="Database URL.")
@_handle_errors
def register(provider_type: str, pairs: tuple[str, ...], database: str | None) -> None:
    """Register a requester: mephisto register PROVIDER name=NAME [KEY=VALUE ...].

    The pairs other than name are the provider's credentials (e.g. for mturk
    access_key_id=... secret_access_key=..., for prolific api_key=...; inhouse takes
    none). The provider keeps them where its service does; they are never printed."""
    from mephisto.operations.registry import get_crowd_provider_from_type
    from mephisto.tools.requesters import parse_credentials, register_requester

    get_crowd_provider_from_type(provider_type)  # an unknown type is named before anything
    name, credentials = parse_credentials(pairs)
    db = _open_db(database)
    try:
        status = register_requester(db, provider_type, name, credentials)
    finally:
        db.shutdown()
    verdict = "[green]ready[/]" if status.check.ready else "[yellow]not ready[/]"
    console.print(f"Registered requester [bold]{escape(status.requester_name)}[/] for "
                  f"{escape(status.provider_type)}: "
                  f"{verdict}. {escape(status.check.message)}")
    if not status.check.ready:
        sys.exit(1)


@cli.command()
@click.option("--database", envvar="MEPHISTO_DATABASE_URL", help="Database URL.")
@_handle_errors
def requesters(database: str | None) -> None:
    """List requesters, their provider and whether each is ready to launch."""
    from mephisto.tools.requesters import requester_statuses

    db = _open_db(database)
    try:
        statuses = requester_statuses(db)
    finally:
        db.shutdown()
    if not statuses:
        console.print("No requesters yet: mephisto register <provider> name=<name> ...")
        return
    table = Table(title="requesters")
    for col in ("requester", "provider", "ready", "detail"):
        table.add_column(col)
    for s in statuses:
        table.add_row(escape(s.requester_name), escape(s.provider_type),
                      "[green]yes[/]" if s.check.ready else "[yellow]no[/]",
                      escape(s.check.message))
    console.print(table)


# -- in-house participant links ------------------------------------------------------------


def _expiry(days: float) -> timedelta:
    if not days > 0:
        raise ConfigError("--days must be more than 0", key="days")
    return timedelta(days=days)


def _print_links(links: Sequence[ParticipantLink], signer: str) -> None:
    """The links, one `participant<TAB>url` line each on stdout (no wrapping: copy them
    or redirect them to a file); what they are on stderr."""
    from mephisto.abstractions.providers.inhouse.tokens import format_time

    if links:
        err_console.print(f"{len(links)} participant link(s), signed by {escape(signer)}, "
                          f"valid until {format_time(links[0].expires_at)}:")
    for link in links:
        click.echo(f"{link.participant}\t{link.url}")


@cli.command()
@click.argument("participants", nargs=-1)
@click.option("--run", "task_run_id",
              help="An in-house task run being served: links to its server.")
@click.option("--url", help="Links to this task server URL instead (with --requester).")
@click.option("--requester", "requester_name", help="In-house requester signing links for --url.")
@click.option("--count", default=0, show_default=True,
              help="Also make this many links for anonymous participants (p-xxxxxxxx).")
@click.option("--days", default=7.0, show_default=True, help="Days the links stay valid.")
@click.option("--database", envvar="MEPHISTO_DATABASE_URL", help="Database URL.")
@_handle_errors
def links(participants: tuple[str, ...], task_run_id: str | None, url: str | None,
          requester_name: str | None, count: int, days: float, database: str | None) -> None:
    """Make in-house participant links: mephisto links --run RUN_ID alice bob ...

    Each link is the task server's URL with a token naming the participant, signed with
    the requester's secret and valid for --days. Printed as participant<TAB>link lines."""
    from mephisto.abstractions.providers.inhouse import (
        anonymous_participants,
        links_for_requester,
        links_for_run,
    )

    if (task_run_id is None) == (url is None):
        raise ConfigError("give either --run RUN_ID or --url URL --requester NAME", key="run")
    if url is not None and not requester_name:
        raise ConfigError("--url needs --requester (the in-house requester signing the links)",
                          key="requester")
    if task_run_id is not None and requester_name:
        raise ConfigError("--requester goes with --url; a run's links are signed by its "
                          "requester", key="requester")
    if count < 0:
        raise ConfigError("--count must not be negative", key="count")
    names = [*participants, *anonymous_participants(count)]
    if not names:
        raise ConfigError("name the participants (mephisto links --run 3 alice bob) or give "
                          "--count N", key="participants")
    expires_in = _expiry(days)
    if url is not None and requester_name:
        made = links_for_requester(requester_name, url, names, expires_in)
        _print_links(made, f"requester {requester_name}")
        return
    db = _open_db(database)
    try:
        made = links_for_run(db, str(task_run_id), names, expires_in)
    finally:
        db.shutdown()
    _print_links(made, f"the requester of run {task_run_id}")


@cli.command()
@click.option("--workers", "num_workers", default=0, show_default=True,
              help="Simulated workers that complete the run (0: wait for you in a browser).")
@click.option("--units", default=20, show_default=True, help="Units to create.")
@click.option("--port", default=3000, show_default=True, help="Port of the task server (0: any free port).")
@click.option("--database", envvar="MEPHISTO_DATABASE_URL", help="Database URL (default: SQLite in the data directory).")
@_handle_errors
def demo(num_workers: int, units: int, port: int, database: str | None) -> None:
    """Run a demo task: static HTML, local server, mock provider, SQLite."""

    def announce(_db: MephistoDB, task_run_id: str, url: str) -> None:
        console.print(f"\n[bold]Demo task run {task_run_id} is live.[/] Open as a worker:")
        console.print(f"  {url}?worker_id=alice&assignment_id=a1\n")
        if num_workers:
            console.print(f"Driving it with {num_workers} simulated workers...")
            _simulate(url, num_workers)
        else:
            console.print("Waiting for workers (Ctrl-C to stop; the run can be resumed).")

    _serve_demo(database, "mephisto-demo", {"_provider_type": "mock"}, units, port, announce)


@cli.command("inhouse-demo")
@click.option("--participants", default="alice,bob,carol", show_default=True,
              help="Comma list of the participants to make links for.")
@click.option("--requester", "requester_name", default="inhouse-demo", show_default=True,
              help="In-house requester to run as (registered if it is not yet).")
@click.option("--units", default=6, show_default=True, help="Units to create.")
@click.option("--port", default=3000, show_default=True,
              help="Port of the task server (0: any free port).")
@click.option("--days", default=7.0, show_default=True, help="Days the links stay valid.")
@click.option("--database", envvar="MEPHISTO_DATABASE_URL",
              help="Database URL (default: SQLite in the data directory).")
@_handle_errors
def inhouse_demo(participants: str, requester_name: str, units: int, port: int, days: float,
                 database: str | None) -> None:
    """Run the demo task for your own participants: in-house provider, local server.

    Registers the requester (a signing secret under the Mephisto home) if needed,
    launches the run and prints one link per participant to send them. The run ends
    when every unit is done; Ctrl-C stops it earlier (it can be resumed)."""
    from mephisto.abstractions.providers.inhouse import PROVIDER_TYPE, links_for_run
    from mephisto.abstractions.providers.inhouse.tokens import check_participant_name
    from mephisto.tools.requesters import register_requester

    names = [name.strip() for name in participants.split(",") if name.strip()]
    if not names:
        raise ConfigError("--participants needs at least one name", key="participants")
    for name in names:  # before anything is launched
        try:
            check_participant_name(name)
        except ValueError as exc:
            raise ConfigError(str(exc), key="participants") from None
    expires_in = _expiry(days)

    def announce(db: MephistoDB, task_run_id: str, url: str) -> None:
        links = links_for_run(db, task_run_id, names, expires_in)
        console.print(f"\n[bold]In-house task run {task_run_id} is live at {url}[/]")
        _print_links(links, f"requester {requester_name}")
        console.print("Waiting for participants (Ctrl-C to stop; the run can be resumed).")

    def register(db: MephistoDB) -> None:
        status = register_requester(db, PROVIDER_TYPE, requester_name, {})
        if not status.check.ready:
            raise ProviderError(PROVIDER_TYPE, status.check.message)

    _serve_demo(database, "mephisto-inhouse-demo",
                {"_provider_type": PROVIDER_TYPE, "requester_name": requester_name},
                units, port, announce, before=register)


def _serve_demo(
    database: str | None, task_name: str, provider: dict[str, str], units: int, port: int,
    announce: Callable[[MephistoDB, str, str], None],
    before: Callable[[MephistoDB], None] | None = None,
) -> None:
    """Launch the demo task run, `announce(db, task_run_id, url)` it, wait until it is
    done (Ctrl-C: stop) and show the first results."""
    from mephisto.abstractions.blueprints.static_task import SharedStaticTaskState
    from mephisto.operations.operator import Operator
    from mephisto.tools.demo import DEMO_HTML, demo_data

    setup_logging()
    if units < 1:
        raise ConfigError("--units must be at least 1", key="units")
    db = _open_db(database)
    if before is not None:
        before(db)
    config = {
        "blueprint": {"_blueprint_type": "static_task", "task_source": str(DEMO_HTML)},
        "architect": {"_architect_type": "local", "port": str(port)},
        "provider": provider,
        "task": {
            "task_name": task_name,
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
        announce(db, task_run_id, url)
        operator.wait_for_runs_then_shutdown(skip_input=True, log_rate=10)
    except KeyboardInterrupt:
        operator.shutdown()
        return
    except BaseException:
        operator.shutdown()
        raise
    elapsed = time.monotonic() - started
    counts = db.get_unit_status_counts(task_run_id)
    console.print(
        f"\n[bold green]Done:[/] {counts.get('completed', 0)} of {units} units completed in "
        f"{elapsed:.1f} s. Results are in {db.url} (see `mephisto runs`)."
    )
    _show_results(db, task_run_id)
    db.shutdown()


def _simulate(url: str, num_workers: int) -> None:
    import random
    import threading

    from mephisto.testing.worker import run_simulated_workers_sync

    def answer(_data: Any) -> dict[str, str]:
        return {"sentiment": random.choice(["positive", "neutral", "negative"]), "comment": ""}

    threading.Thread(
        target=lambda: run_simulated_workers_sync(url, num_workers, answer_fn=answer),
        name="simulated-workers",
        daemon=True,
    ).start()


def _show_results(db: MephistoDB, task_run_id: str, limit: int = 5) -> None:
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


def _parse_levels(_ctx: Any, _param: Any, value: str) -> list[int]:
    try:
        levels = sorted({int(part) for part in value.split(",") if part.strip()})
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma list of numbers, e.g. 5,10,25") from None
    if not levels or levels[0] < 1:
        raise click.BadParameter("give one or more concurrency levels, each at least 1")
    return levels


def _bench_load(url: str, workers: int, prefix: str) -> dict[str, Any]:
    """Drive a run with `workers` simulated workers until no work is left (runs in the
    load process; returns plain data so it pickles)."""

    from mephisto.testing.worker import run_simulated_workers_sync

    stats = run_simulated_workers_sync(url, workers, worker_prefix=prefix)
    return {"unit_latencies": stats.unit_latencies, "elapsed": stats.elapsed,
            "errors": stats.errors}


@cli.command()
@click.option("--task-source", type=click.Path(exists=True, dir_okay=False),
              help="HTML file of a static task (default: the demo task). Its ${text} is "
                   "filled with a sentence.")
@click.option("--threshold-ms", default=250.0, show_default=True,
              help="Limit on the p95 latency of a unit (page, config, request_agent, submit).")
@click.option("--levels", default="5,10,25,50,100,200", show_default=True, callback=_parse_levels,
              help="Comma list of concurrent worker counts to try, in increasing order.")
@click.option("--units-per-level", default=300, show_default=True,
              help="Units in each level's run (several times the level gives steadier figures).")
@click.option("--database", help="Database URL (default: a temporary SQLite file, deleted "
                                 "afterwards; never your real database).")
@_handle_errors
def bench(task_source: str | None, threshold_ms: float, levels: list[int],
          units_per_level: int, database: str | None) -> None:
    """How many concurrent workers can my task take?

    For each level, launches a fresh static run (local server on a free port, mock
    provider) with --units-per-level units and has that many simulated workers complete
    it over real sockets, each doing what a browser does for a unit. The workers run in a
    separate process (spawned), so they do not share the operator's GIL, but they do
    share this machine's cores. Stops at the first level whose p95 unit latency crosses
    --threshold-ms (or whose requests fail) and recommends the highest level under it as
    max_num_concurrent_units.
    """
    import multiprocessing
    import tempfile
    from concurrent.futures import ProcessPoolExecutor

    from mephisto.testing.worker import RunStats
    from mephisto.tools.demo import DEMO_HTML

    setup_logging("warning")
    if units_per_level < 1:
        raise ConfigError("--units-per-level must be at least 1", key="units_per_level")
    if units_per_level < levels[-1]:
        err_console.print(f"[yellow]Note:[/] {units_per_level} units per level is fewer than "
                          f"{levels[-1]} workers; the highest levels cannot all work at once.")
    source = task_source or str(DEMO_HTML)
    console.print(f"Benchmarking {source}: p95 unit latency limit {threshold_ms:g} ms, "
                  f"{units_per_level} units per level, levels {', '.join(map(str, levels))}.")
    passed: list[tuple[int, float]] = []  # (level, p95 ms)
    with tempfile.TemporaryDirectory(prefix="mephisto-bench-") as tmp, ProcessPoolExecutor(
        max_workers=1, mp_context=multiprocessing.get_context("spawn")
    ) as load_process:
        db = _open_db(database or f"sqlite:///{tmp}/bench.db")
        try:
            for level in levels:
                row = _bench_level(db, source, level, units_per_level, load_process)
                pct = {q: RunStats.percentile(row["unit_latencies"], q) * 1000 for q in (50, 95, 99)}
                units_done = len(row["unit_latencies"])
                rate = units_done / row["elapsed"] if row["elapsed"] > 0 else 0.0
                failed = bool(row["errors"]) or units_done < units_per_level
                ok = pct[95] <= threshold_ms and not failed
                table = Table(title=f"{level} concurrent workers")
                for col in ("workers", "units", "units/s", "p50 ms", "p95 ms", "p99 ms",
                            "errors", "verdict"):
                    table.add_column(col, justify="left" if col == "verdict" else "right")
                verdict = ("[green]ok[/]" if ok else
                           "[red]failed requests[/]" if failed else "[red]over limit[/]")
                table.add_row(str(level), str(units_done), f"{rate:.1f}", f"{pct[50]:.1f}",
                              f"{pct[95]:.1f}", f"{pct[99]:.1f}", str(len(row["errors"])), verdict)
                console.print(table)
                for error in row["errors"][:3]:
                    err_console.print(f"  [red]{error}[/]")
                if not ok:
                    break
                passed.append((level, pct[95]))
        finally:
            db.shutdown()
    if passed:
        level, p95 = passed[-1]
        console.print(f"max_num_concurrent_units ≈ {level} (p95 {p95:.1f} ms at {level} workers)",
                      soft_wrap=True)
    else:
        console.print(f"No level met the threshold: p95 above {threshold_ms:g} ms (or failed "
                      f"requests) already at {levels[0]} workers.", soft_wrap=True)


def _bench_level(db: MephistoDB, source: str, level: int, units: int, load_process: Any) -> dict[str, Any]:
    """One level: a fresh run served by its own operator, completed by the load process."""
    from mephisto.abstractions.blueprints.static_task import SharedStaticTaskState
    from mephisto.operations.operator import Operator
    from mephisto.tools.demo import demo_data

    config = {
        "blueprint": {"_blueprint_type": "static_task", "task_source": source},
        "architect": {"_architect_type": "local", "port": "0", "hostname": "127.0.0.1"},
        "provider": {"_provider_type": "mock"},
        "task": {
            "task_name": "mephisto-bench",
            "task_title": "Benchmark task",
            "task_description": "A run made by `mephisto bench`.",
            "task_reward": 0.0,
            "task_tags": "bench",
        },
    }
    operator = Operator(db)
    try:
        run_id = operator.launch_task_run(config, SharedStaticTaskState(static_task_data=demo_data(units)))
        url = operator.get_progress()[run_id]["url"]
        row: dict[str, Any] = load_process.submit(_bench_load, url, level, f"bench-{run_id}").result()
        if not row["errors"] and len(row["unit_latencies"]) == units:
            operator.wait_for_runs_then_shutdown(skip_input=True)
        return row
    finally:
        operator.shutdown()


def main() -> None:  # pragma: no cover - console entry point
    cli()


if __name__ == "__main__":  # pragma: no cover
    cli()
