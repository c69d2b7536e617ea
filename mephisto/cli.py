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


def _bench_load(url: str, workers: int, prefix: str, browser: bool = False) -> dict[str, Any]:
    """Drive a run with `workers` simulated workers until no work is left (runs in the
    load process; returns plain data so it pickles). `browser`: each unit is a new
    browser (new worker, new connection, the page's scripts and stylesheets loaded)."""

    from mephisto.testing.worker import run_simulated_workers_sync

    stats = run_simulated_workers_sync(url, workers, worker_prefix=prefix, browser_like=browser)
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
@click.option("--browser", is_flag=True,
              help="Browser-like workers: each unit is a new worker on a new connection that "
                   "also loads the page's scripts and stylesheets (an empty-cache visit).")
@_handle_errors
def bench(task_source: str | None, threshold_ms: float, levels: list[int],
          units_per_level: int, database: str | None, browser: bool) -> None:
    """How many concurrent workers can my task take?

    For each level, launches a fresh static run (local server on a free port, mock
    provider) with --units-per-level units and has that many simulated workers complete
    it over real sockets, each doing what a browser does for a unit. The workers run in a
    separate process (spawned), so they do not share the operator's GIL, but they do
    share this machine's cores. Stops at the first level whose p95 unit latency crosses
    --threshold-ms (or whose requests fail) and recommends the highest level under it as
    max_num_concurrent_units.

    With --browser, every unit is a new browser: a new worker identity on a new
    connection, loading the page, each script and stylesheet it references, the config,
    an agent and the submit (without it, each worker keeps its connection and loads only
    the page itself from unit to unit).
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
                  f"{units_per_level} units per level, levels {', '.join(map(str, levels))}"
                  f"{'; browser-like workers (a new one per unit)' if browser else ''}.",
                  soft_wrap=True)
    passed: list[tuple[int, float]] = []  # (level, p95 ms)
    with tempfile.TemporaryDirectory(prefix="mephisto-bench-") as tmp, ProcessPoolExecutor(
        max_workers=1, mp_context=multiprocessing.get_context("spawn")
    ) as load_process:
        db = _open_db(database or f"sqlite:///{tmp}/bench.db")
        try:
            for level in levels:
                row = _bench_level(db, source, level, units_per_level, load_process, browser)
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


def _bench_level(db: MephistoDB, source: str, level: int, units: int, load_process: Any,
                 browser: bool = False) -> dict[str, Any]:
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
        row: dict[str, Any] = load_process.submit(
            _bench_load, url, level, f"bench-{run_id}", browser
        ).result()
        if not row["errors"] and len(row["unit_latencies"]) == units:
            operator.wait_for_runs_then_shutdown(skip_input=True)
        return row
    finally:
        operator.shutdown()


def main() -> None:  # pragma: no cover - console entry point
    cli()


# -- config, wut, metrics, budget, spend, cost (logic in mephisto/tools/settings.py, wut.py,
# -- run_metrics.py, spending.py) --------------------------------------------------------


def _money(amount: float | None) -> str:
    if amount is None:
        return "-"
    return f"-${-amount:,.2f}" if amount < -0.005 else f"${abs(amount):,.2f}"


_SOURCES = {"env": "environment", "config": "config file", "default": "default"}


@cli.command("config", short_help="Show the configuration; read or set one value.")
@click.argument("identifier", required=False)
@click.argument("value", required=False)
@click.option("--unset", is_flag=True, help="Remove IDENTIFIER from the config file (its "
                                            "default applies again).")
@_handle_errors
def config(identifier: str | None, value: str | None, unset: bool) -> None:
    """Show the configuration, or read or set one value: mephisto config [SECTION.KEY [VALUE]].

    With no argument: the settings in effect and where each comes from (environment,
    config file, default), the config file, and the environment variables that matter.
    `mephisto config core.database_url postgresql://me@db/mephisto` sets a value in
    $MEPHISTO_HOME/config.yml (default ~/.mephisto); unknown keys are refused. Passwords
    in database URLs are never shown."""
    from mephisto.tools import settings

    if identifier is None:
        if unset:
            raise ConfigError("--unset needs the setting to remove, e.g. mephisto config "
                              "core.database_url --unset", key="unset")
        _show_config()
        return
    if unset and value is not None:
        raise ConfigError("give a value or --unset, not both", key="unset")
    if unset:
        now = settings.unset_setting(identifier)
        console.print(f"Removed {escape(identifier)} from the config file; in effect: "
                      f"{escape(now.value)} ({_SOURCES[now.source]}).", soft_wrap=True)
        return
    if value is None:
        click.echo(settings.get_setting(identifier).value)
        return
    now = settings.set_setting(identifier, value)
    path, _exists = settings.config_file()
    console.print(f"[green]{escape(identifier)} set[/] in {escape(str(path))}.", soft_wrap=True)
    if now.source != "config":
        err_console.print(f"[yellow]Note:[/] {escape(now.setting.env)} is set in the "
                          f"environment and overrides it (in effect: {escape(now.value)}).",
                          soft_wrap=True)


def _show_config() -> None:
    from mephisto.tools import settings
    from mephisto.utils.config_handler import HOME_ENV, env_setting, get_mephisto_home

    home = get_mephisto_home()
    path, exists = settings.config_file()
    table = Table(title="mephisto config")
    table.add_column("setting", no_wrap=True)
    for col in ("value", "from", "note"):
        table.add_column(col, overflow="fold")
    home_from_env = env_setting(HOME_ENV) is not None
    table.add_row("home", escape(str(home)),
                  f"env {HOME_ENV}" if home_from_env else _SOURCES["default"], "")
    table.add_row("config file", escape(str(path)), "", "" if exists else "not created yet")
    for v in settings.setting_values():
        source = f"env {v.setting.env}" if v.source == "env" else _SOURCES[v.source]
        note = (f"overrides the config file's {escape(v.overridden_file_value)}"
                if v.overridden_file_value else escape(v.setting.help))
        table.add_row(v.setting.identifier, escape(v.value), source, note)
    for identifier, value in settings.other_file_values():
        table.add_row(escape(identifier), escape(value), _SOURCES["config"],
                      "[yellow]not read by this version[/]")
    console.print(table)
    env = Table(title="environment")
    for col in ("variable", "value", "what it does"):
        env.add_column(col, overflow="fold")
    for var in settings.env_variables():
        env.add_row(var.name, "[dim]not set[/]" if var.value is None else escape(var.value),
                    escape(var.help))
    console.print(env)


@cli.command("wut", context_settings={"ignore_unknown_options": True},
             short_help="Describe the plugin types and the arguments a run config can set.")
@click.argument("args", nargs=-1)
@_handle_errors
def wut(args: tuple[str, ...]) -> None:
    """Describe what a run config can set: mephisto wut [KIND[=TYPE] [ARG ...]].

    `mephisto wut` lists the kinds (blueprint, architect, provider, task) and their
    types; `mephisto wut blueprint` the blueprint types; `mephisto wut
    blueprint=static_task` its arguments (type, default, required, help), `mephisto wut
    task` the mephisto.task.* arguments; name arguments after it to see only those."""
    from mephisto.tools import wut as wut_tool

    if not args:
        table = Table(title="what a run config chooses (mephisto wut KIND=TYPE for its "
                            "arguments)")
        for col in ("kind", "decides", "types"):
            table.add_column(col, overflow="fold")
        for kind, text, types in wut_tool.kinds():
            table.add_row(kind, escape(text), escape(", ".join(types)) if types
                          else "(no types: mephisto wut task)")
        console.print(table)
        return
    spec, only = args[0], args[1:]
    if "=" not in spec and spec in wut_tool.KINDS and spec != "task":
        table = Table(title=f"{spec} types")
        table.add_column("type")
        for name in wut_tool.valid_types(spec):
            table.add_row(escape(name))
        console.print(f"{spec}: {escape(wut_tool.KINDS[spec])}", soft_wrap=True)
        console.print(table)
        console.print(f"Arguments of one: mephisto wut {spec}=TYPE", soft_wrap=True)
        return
    found = wut_tool.describe(spec, only)
    title = found.config_prefix + (f" ({found.type_name})" if found.type_name else "")
    console.print(f"[bold]{escape(title)}[/]: {escape(found.summary)}", soft_wrap=True)
    _print_args(f"{title} arguments (set as {found.config_prefix}.NAME=VALUE)", found.args)
    if found.shared_state:
        _print_args(f"{found.shared_state_class} fields (set in your run script, not the "
                    "config)", found.shared_state)


def _print_args(title: str, args: Sequence[Any]) -> None:
    table = Table(title=title)
    table.add_column("argument", no_wrap=True)
    helped = any(a.help for a in args)
    for col in ("type", "default", "required", *(("help",) if helped else ())):
        table.add_column(col, overflow="fold")
    for a in args:
        table.add_row(escape(a.name), escape(a.type), escape(a.default),
                      "[bold]yes[/]" if a.required else "no",
                      *((escape(a.help),) if helped else ()))
    if not args:
        table.add_row("(none)", "", "", "")
    console.print(table)


_MEPHISTO_METRICS_ACTIONS = ("install", "reinstall", "view", "cleanup")


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.1f}"


@cli.command("metrics", short_help="Key figures of live runs, from their /metrics.")
@click.argument("action", required=False)
@click.option("--run", "task_run_ids", multiple=True,
              help="Only this task run (repeatable). Default: every live run.")
@click.option("--interval", default=0.0, show_default=True,
              help="Read twice, this many seconds apart: rates and latencies of that "
                   "interval instead of since the run went live.")
@_handle_errors
def metrics(action: str | None, task_run_ids: tuple[str, ...], interval: float) -> None:
    """Key figures of live runs: units by status, active agents, request and submit
    latency, throughput.

    Read from each run's GET /metrics (Prometheus text) with its bearer token, found
    through the record its operator keeps in <data dir>/runs/<id>/live.json. A run that
    is not served (stopped, or its operator gone) is reported as not live; with --run,
    that exits 1.

    Mephisto's `metrics install`, `view`, `reinstall` and `cleanup` (a local Grafana
    and Prometheus) do not apply: every run's server exposes /metrics itself, so point
    your own Prometheus at it (README: "Metrics")."""
    from mephisto.tools import run_metrics

    if action is not None:
        if action in _MEPHISTO_METRICS_ACTIONS:
            raise ConfigError(
                f"`mephisto metrics {action}` is Mephisto's Grafana/Prometheus setup, which "
                "does not apply here: each run's server serves /metrics itself (scrape "
                "<run url>metrics with the bearer token in <data dir>/runs/<id>/"
                "metrics_token). `mephisto metrics` shows the live runs' figures.",
                key="action")
        raise ConfigError(f"unexpected argument {action!r}: mephisto metrics [--run ID] "
                          "[--interval SECONDS]", key="action")
    if interval < 0 or interval > 3600:
        raise ConfigError("--interval is seconds between 0 and 3600", key="interval")
    first = run_metrics.scrape_runs(list(task_run_ids) or None)
    if not first:
        from mephisto.utils.dirs import get_data_dir

        console.print(f"No live runs: no operator on this machine serves a run from "
                      f"{escape(str(get_data_dir()))}.", soft_wrap=True)
        return
    if interval > 0 and any(s.samples is not None for s in first):
        _wait(interval, "reading again in")
        second = run_metrics.scrape_runs([s.task_run_id for s in first])
        figures = [run_metrics.run_figures(a, b) for a, b in zip(first, second, strict=True)]
    else:
        figures = [run_metrics.run_figures(a) for a in first]
    live = [f for f in figures if f.live]
    if live:
        span = f"over {interval:g} s" if interval > 0 else "since each went live"
        table = Table(title=f"live runs (counts, rates and latencies {span})")
        table.add_column("figure", no_wrap=True)
        for f in live:
            table.add_column(f"run {escape(f.task_run_id)} ({escape(f.task_name)})",
                             justify="right", overflow="fold")
        figure_rows: list[tuple[str, Callable[[Any], str]]] = [
            ("units", lambda f: _unit_counts(f.units)),
            ("active agents", lambda f: str(f.active_agents)),
            ("requests", lambda f: f"{f.requests:,}"),
            ("errors", lambda f: f"{f.request_errors + f.submit_errors:,}"),
            ("request ms p50 / p95", lambda f: f"{_ms(f.request_p50)} / {_ms(f.request_p95)}"),
            ("submits", lambda f: f"{f.submits:,}"),
            ("submit commit ms p50 / p95",
             lambda f: f"{_ms(f.submit_p50)} / {_ms(f.submit_p95)}"),
            ("submits/s", lambda f: f"{f.submits_per_second:,.2f}"),
            ("requests/s", lambda f: f"{f.requests_per_second:,.1f}"),
        ]
        for label, cell in figure_rows:
            table.add_row(label, *[cell(f) for f in live])
        console.print(table)
    for f in figures:
        if not f.live:
            console.print(f"task run {escape(f.task_run_id)}: [yellow]not live[/]: "
                          f"{escape(f.problem or '')}", soft_wrap=True)
    if task_run_ids and len(live) < len(figures):
        sys.exit(1)


def _wait(seconds: float, what: str) -> None:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn(),
                  console=err_console, transient=True) as progress:
        task = progress.add_task(what, total=seconds)
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(0.1, left))
            progress.update(task, completed=seconds - max(left - 0.1, 0.0))


def _unit_counts(units: dict[str, int]) -> str:
    from mephisto.data_model.status import AssignmentState

    order = [str(s) for s in AssignmentState.valid_unit()]
    known = [s for s in order if units.get(s)] + sorted(s for s in units if s not in order
                                                          and units[s])
    return ", ".join(f"{units[s]:,} {s}" for s in known) or "none"


@cli.command("budget", context_settings={"ignore_unknown_options": True},
             short_help="Show or set the budgets of projects and runs.")
@click.argument("amount", nargs=-1, type=click.UNPROCESSED)
@click.option("--project", help="The project whose budget to show or set (made if new).")
@click.option("--run", "task_run_id", help="The task run whose budget to show or set.")
@click.option("--clear", is_flag=True, help="Remove the cap.")
@click.option("--add-task", "add_tasks", multiple=True,
              help="Put this task (all its runs) into --project (repeatable).")
@click.option("--database", envvar="MEPHISTO_DATABASE_URL", help="Database URL.")
@_handle_errors
def budget(amount: tuple[str, ...], project: str | None, task_run_id: str | None,
           clear: bool, add_tasks: tuple[str, ...], database: str | None) -> None:
    """Show or set spending caps: mephisto budget [--project NAME | --run ID] [AMOUNT | --clear].

    With no amount: every project's and run's budget, what it committed (rewards of
    units not rejected or expired, bonuses, the provider's fee) and paid, and what is
    left. `mephisto budget --project NAME 500` caps a project (its runs together),
    `--run ID 50` one run; launches and bonuses past a cap are refused. `--add-task
    TASK` puts a task and its runs into the project."""
    from mephisto.tools.spending import budget_overview, set_budget

    for word in amount:  # unknown options arrive here too (so that -5 can be refused)
        if word.startswith("--"):
            raise ConfigError(f"unknown option {word!r}; see mephisto budget --help",
                              key="amount")
    if len(amount) > 1:
        raise ConfigError(f"one amount only, got {' '.join(amount)!r}", key="amount")
    text = amount[0] if amount else None
    db = _open_db(database)
    try:
        if text is None and not clear and not add_tasks:
            overview = budget_overview(db, project)
            runs = [r for r in overview.runs if task_run_id is None or r.id == task_run_id]
            if task_run_id is not None and not runs:
                db.get_task_run(task_run_id)  # names a run that does not exist
            _print_budgets(overview.projects if task_run_id is None else [], runs)
            return
        change = set_budget(db, project=project, run=task_run_id, amount=text, clear=clear,
                            add_tasks=add_tasks)
    finally:
        db.shutdown()
    if change.created_project:
        console.print(f"Created {escape(change.target)}.")
    if change.moved_tasks:
        console.print(f"Moved task(s) {escape(', '.join(change.moved_tasks))} into "
                      f"{escape(change.target)}.")
    committed = f"committed {_money(change.committed)}"
    if change.budget is None:
        console.print(f"{escape(change.target)}: no budget ({committed}).")
        return
    left = change.budget - change.committed
    console.print(f"{escape(change.target)}: budget {_money(change.budget)}, {committed}, "
                  f"{_money(left)} left.")
    if left < -0.005:
        err_console.print(f"[yellow]Note:[/] {escape(change.target)} has committed more than "
                          "this budget: its launches and bonuses will be refused.",
                          soft_wrap=True)


def _print_budgets(projects: Sequence[Any], runs: Sequence[Any]) -> None:
    if not projects and not runs:
        console.print("No projects or task runs yet.")
        return
    money = ("budget", "committed", "paid", "left")
    if projects:
        table = Table(title="project budgets")
        for col in ("project", *money):
            table.add_column(col, justify="left" if col == "project" else "right")
        for p in projects:
            table.add_row(escape(p.name), _money(p.budget) if p.budget is not None else "none",
                          _money(p.spending.committed), _money(p.spending.paid), _money(p.left))
        console.print(table)
    if runs:
        table = Table(title="task run budgets")
        for col in ("run", "task", "project", "provider", "finished", *money):
            table.add_column(col, justify="right" if col in money else "left")
        for r in runs:
            table.add_row(r.id, escape(r.name), escape(r.project) or "-", escape(r.provider_type),
                          "yes" if r.is_completed else "no",
                          _money(r.budget) if r.budget is not None else "none",
                          _money(r.spending.committed), _money(r.spending.paid), _money(r.left))
        console.print(table)


_NO_GROUP = {"project": "(no project)", "worker": "(no worker yet)", "task": "(no task)",
             "run": "(no run)"}


def _group_name(by: str, gid: str | None, names: dict[str | None, str]) -> str:
    if gid is None:
        return _NO_GROUP[by]
    name = names.get(gid)
    if by == "run":
        return f"{gid} ({name})" if name else gid
    return name if name is not None else f"{by} {gid}"


@cli.command("spend", short_help="Spending per project, task, run or worker.")
@click.option("--by", "by", type=click.Choice(["project", "task", "run", "worker"]),
              default="project", show_default=True, help="One row per what.")
@click.option("--project", help="Only the tasks of this project.")
@click.option("--task", "task_name", help="Only this task.")
@click.option("--database", envvar="MEPHISTO_DATABASE_URL", help="Database URL.")
@_handle_errors
def spend(by: str, project: str | None, task_name: str | None, database: str | None) -> None:
    """What was spent, per project, task, run or worker: rewards, bonuses, the
    provider's fee, committed against paid, and units by status.

    Committed: rewards of units not rejected or expired (owed once done), bonuses
    recorded, and the fee on both; paid: rewards of accepted units, bonuses the provider
    paid, and their fee."""
    from mephisto.tools.spending import spend_report

    db = _open_db(database)
    try:
        report = spend_report(db, by, project, task_name)
    finally:
        db.shutdown()
    rows = [(_group_name(by, gid, report.names), spent) for gid, spent in report.groups.items()]
    rows.sort(key=lambda row: (-row[1].committed, row[0]))
    if report.unattributed is not None:
        rows.append(("(bonuses for no unit)", report.unattributed))
    scope = " ".join(x for x in (f"project {project!r}" if project else "",
                                 f"task {task_name!r}" if task_name else "") if x)
    if not rows:
        console.print("Nothing spent yet" + (f" in {escape(scope)}." if scope else "."))
        return
    table = Table(title=f"spending by {by}" + (f" ({escape(scope)})" if scope else ""),
                  show_footer=True)
    total = report.total
    money_cols = ("rewards", "bonuses", "fees", "committed", "paid")
    footer = {"rewards": _money(total.rewards_committed),
              "bonuses": _money(total.bonuses_committed), "fees": _money(total.fees_committed),
              "committed": _money(total.committed), "paid": _money(total.paid)}
    table.add_column(by, footer="total")
    table.add_column("units", footer=_unit_counts(total.units), overflow="fold")
    for col in money_cols:
        table.add_column(col, footer=footer[col], justify="right")
    for name, spent in rows:
        bonuses = _money(spent.bonuses_committed) + (f" ({spent.bonuses})" if spent.bonuses
                                                      else "")
        table.add_row(escape(name), _unit_counts(spent.units), _money(spent.rewards_committed),
                      bonuses, _money(spent.fees_committed), _money(spent.committed),
                      _money(spent.paid))
    console.print(table)


@cli.command("cost", short_help="What a launch will cost, and where it leaves each budget.")
@click.option("--units", type=int, required=True, help="Units to launch.")
@click.option("--reward", type=float, required=True, help="Reward per unit, in dollars "
                                                         "(mephisto.task.task_reward).")
@click.option("--provider", help="Provider type of the new run (mephisto.provider).")
@click.option("--planned-bonus", type=float, default=0.0, show_default=True,
              help="Bonus you expect to pay per unit (mephisto.task.planned_bonus_per_unit).")
@click.option("--project", help="Project the run will count under (mephisto.task.project_name).")
@click.option("--budget", "run_budget", type=float,
              help="The run's own cap (mephisto.task.budget).")
@click.option("--run", "task_run_id", help="Preview more units of this existing run instead.")
@click.option("--database", envvar="MEPHISTO_DATABASE_URL", help="Database URL.")
@_handle_errors
def cost(units: int, reward: float, provider: str | None, planned_bonus: float,
         project: str | None, run_budget: float | None, task_run_id: str | None,
         database: str | None) -> None:
    """What a launch will cost, before launching: units x reward + planned bonuses +
    the provider's fee, and where it leaves each budget.

    Exits 1 when the launch would be refused (its rewards and fee alone pass a cap);
    planned bonuses that pass one are a warning (each bonus is checked when paid)."""
    from mephisto.errors import BudgetExceeded
    from mephisto.tools.spending import launch_cost

    db = _open_db(database)
    try:
        preview, caps, notes = launch_cost(
            db, units=units, reward=reward, provider=provider, planned_bonus=planned_bonus,
            project=project, budget=run_budget, run=task_run_id)
    finally:
        db.shutdown()
    table = Table(title=f"cost of {units:,} units on {escape(preview.provider_type)}",
                  show_footer=True)
    table.add_column("what", footer="total")
    table.add_column("amount", justify="right", footer=_money(preview.total))
    table.add_row(f"rewards: {units:,} x {_money(preview.reward)}", _money(preview.rewards))
    if preview.planned_bonus_per_unit:
        table.add_row(f"planned bonuses: {units:,} x {_money(preview.planned_bonus_per_unit)}",
                      _money(preview.bonuses))
    table.add_row(f"{escape(preview.provider_type)} fee: {preview.fee_rate:.1%} of "
                  f"{_money(preview.rewards + preview.bonuses)}", _money(preview.fees))
    console.print(table)
    if caps:
        capt = Table(title="budgets after this launch")
        for col in ("cap", "budget", "committed", "this launch", "left"):
            capt.add_column(col, justify="left" if col == "cap" else "right")
        for c in caps:
            left = _money(c.left) if c.fits else f"[red]{_money(c.left)}[/]"
            capt.add_row(escape(c.cap), _money(c.limit), _money(c.committed), _money(c.adding),
                         left)
        console.print(capt)
    else:
        console.print("No budget caps this launch.")
    for note in notes:
        console.print(f"[dim]{escape(note)}[/]", soft_wrap=True)
    for c in caps:
        if c.refuses_launch:
            raise BudgetExceeded(c.cap, c.limit, c.committed + c.at_launch,
                                 f"launching {units:,} units at {_money(reward)}")
        if not c.fits:
            err_console.print(f"[yellow]Note:[/] with the planned bonuses {escape(c.cap)} is "
                              f"{_money(-c.left)} short: bonuses past it will be refused "
                              "when paid.", soft_wrap=True)


# -- commands whose logic lives in their own modules ----------------------------------------

from mephisto.db.command import db_command
from mephisto.review.command import review as review_command
from mephisto.router.command import router_group
from mephisto.tools.architect_command import architect_group
from mephisto.tools.export_command import export as export_command
from mephisto.tools.quality_commands import qualifications_group, workers_group

cli.add_command(architect_group)
cli.add_command(db_command)
cli.add_command(export_command)
cli.add_command(qualifications_group)
cli.add_command(review_command)
cli.add_command(router_group)
cli.add_command(workers_group)


if __name__ == "__main__":  # pragma: no cover
    cli()
