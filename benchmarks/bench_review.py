"""Review app benchmark: pages of units (keyset) at 100,000 units, with and without
filters, plus the statistics, on a database filled with bulk inserts.

    python benchmarks/bench_review.py [--units 100000] [--workers 1000] [--database URL]
                                      [--repeat 20]

On PostgreSQL it works in a schema of its own (dropped at the end), and runs ANALYZE
after filling, as autovacuum soon would. Each figure is the median of `--repeat` calls of `queries.page_units` (50 units a page)
or of the `DataBrowser` statistic, in milliseconds. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mephisto.db import MephistoDB
from mephisto.db import schema as s
from mephisto.review.queries import UnitFilter, list_tasks, page_units, unit_detail
from mephisto.tools.data_browser import DataBrowser

CHUNK = 10_000


def fill(db: MephistoDB, n_units: int, n_workers: int) -> dict[str, Any]:
    """One task, two runs (90% / 10% of the units), `n_workers` workers; units are 60%
    submitted (awaiting review), 30% accepted, 10% rejected; agents taken one second
    apart. Rows go in by executemany, in chunks."""
    rng = random.Random(1)
    requester = db.new_requester(f"bench-{time.time()}", "mock")
    task = db.new_task(f"bench-{time.time()}", "static_task")
    runs = [db.new_task_run(task, requester, "{}", "mock", "static_task") for _ in range(2)]
    with db.engine.begin() as conn:
        first_worker = int(conn.execute(
            s.workers.insert().returning(s.workers.c.worker_id),
            {"worker_name": "bench-w0", "provider_type": "mock", "creation_date": 0.0},
        ).scalar_one())
        conn.execute(s.workers.insert(), [
            {"worker_name": f"bench-w{i}", "provider_type": "mock", "creation_date": 0.0}
            for i in range(1, n_workers)])
        next_assignment = int(conn.execute(
            s.assignments.insert().returning(s.assignments.c.assignment_id),
            {"task_id": int(task), "task_run_id": int(runs[0]), "requester_id": int(requester),
             "task_type": "static_task", "provider_type": "mock", "sandbox": True,
             "creation_date": 0.0}).scalar_one())
        unit_statuses = ["completed"] * 6 + ["accepted"] * 3 + ["rejected"]
        agent_for = {"completed": "completed", "accepted": "approved", "rejected": "rejected"}
        base = time.time() - n_units
        for start in range(0, n_units, CHUNK):
            count = min(CHUNK, n_units - start)
            assignments, units, agents = [], [], []
            for i in range(start, start + count):
                run = int(runs[0] if i % 10 else runs[1])
                aid = next_assignment + 1 + i
                status = unit_statuses[rng.randrange(10)]
                worker = first_worker + rng.randrange(n_workers)
                agent_id = f"bench-agent-{i}"
                assignments.append({
                    "assignment_id": aid, "task_id": int(task), "task_run_id": run,
                    "requester_id": int(requester), "task_type": "static_task",
                    "provider_type": "mock", "sandbox": True, "creation_date": 0.0})
                units.append({
                    "assignment_id": aid, "unit_index": 0, "pay_amount": 0.5,
                    "provider_type": "mock", "status": status, "agent_id": agent_id,
                    "worker_id": worker, "task_type": "static_task", "task_id": int(task),
                    "task_run_id": run, "sandbox": True, "requester_id": int(requester),
                    "creation_date": 0.0})
                agents.append({"agent_id": agent_id, "worker_id": worker, "task_id": int(task),
                               "task_run_id": run, "assignment_id": aid,
                               "task_type": "static_task", "provider_type": "mock",
                               "status": agent_for[status],
                               "state": {"inputs": {"i": i}, "outputs": {"a": i},
                                         "times": {"task_start": 0.0,
                                                   "task_end": 30.0 + i % 60}},
                               "creation_date": base + i, "update_date": base + i + 30})
            conn.execute(s.assignments.insert(), assignments)
            unit_ids = conn.execute(s.units.insert().returning(s.units.c.unit_id,
                                                               sort_by_parameter_order=True),
                                    units).scalars().all()
            for agent, uid in zip(agents, unit_ids, strict=True):
                agent["unit_id"] = uid
            conn.execute(s.agents.insert(), agents)
    return {"task": db.get_task(task)["task_name"], "runs": runs, "base": base,
            "worker": str(first_worker + 7)}


@contextmanager
def own_schema(url: str | None) -> Iterator[str | None]:
    """`url` as is (SQLite, None), or for PostgreSQL a URL to a fresh schema of its own,
    dropped afterwards: the benchmark leaves nothing in the server's databases."""
    if url is None or not url.startswith("postgresql"):
        yield url
        return
    import sqlalchemy as sa

    from mephisto.db.engine import normalize_url

    name = f"bench_review_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(normalize_url(url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{name}"')
    try:
        yield f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{name}"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{name}" CASCADE')
        admin.dispose()


def median_ms(fn: Callable[[], Any], repeat: int) -> float:
    fn()  # warm the cache
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--units", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--database", help="database URL (default: a fresh SQLite file)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, own_schema(args.database) as schema_url:
        url = schema_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        db = MephistoDB(url)
        t = time.perf_counter()
        made = fill(db, args.units, args.workers)
        if db.dialect == "postgresql":
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("ANALYZE")
        fill_s = time.perf_counter() - t
        run = made["runs"][0]
        mid = made["base"] + args.units / 2

        def cursor_at(f: UnitFilter, fraction: float) -> str | None:
            """The cursor of the page at `fraction` of the units matching `f`."""
            from mephisto.db import schema

            if fraction == 0:
                return None
            with db.engine.connect() as conn:
                top = conn.execute(schema.units.select().with_only_columns(
                    schema.units.c.unit_id).order_by(schema.units.c.unit_id.desc()).limit(1)
                ).scalar_one()
            return str(int(top * fraction) - 50 if fraction == 1 else int(top * fraction))

        cases: list[tuple[str, UnitFilter]] = [
            ("awaiting review, all runs", UnitFilter()),
            ("awaiting review, run 1", UnitFilter(run_id=run)),
            ("awaiting review, task", UnitFilter(task_name=made["task"])),
            ("any status, all runs", UnitFilter(status=None)),
            ("awaiting, one worker", UnitFilter(worker=f"bench-w{7}")),
            ("awaiting, run 1, date range (middle 10%)",
             UnitFilter(run_id=run, since=mid - args.units * 0.05, until=mid + args.units * 0.05)),
            ("awaiting, run 1, worker + dates",
             UnitFilter(run_id=run, worker="bench-w7", since=mid - args.units * 0.25,
                        until=mid + args.units * 0.25)),
        ]
        rows: list[tuple[str, str, str, str, str]] = []
        for name, f in cases:
            figures = []
            for fraction in (0, 0.5, 1):
                cursor = cursor_at(f, fraction)
                ms = median_ms(lambda f=f, c=cursor: page_units(db, f, c), args.repeat)
                figures.append(f"{ms:.2f}")
            total = page_units(db, f)
            shown = f"{total['total']}{'+' if total['total_capped'] else ''}"
            rows.append((name, figures[0], figures[1], figures[2], shown))
        browser = DataBrowser(db)
        stats = [
            ("get_task_stats (task)",
             median_ms(lambda: browser.get_task_stats(task_name=made["task"]), 3)),
            ("get_worker_stats (one worker)",
             median_ms(lambda: browser.get_worker_stats(made["worker"]), args.repeat)),
            ("list_tasks (the task chooser's counts)",
             median_ms(lambda: list_tasks(db), args.repeat)),
            ("unit_detail (one unit, its reviews)",
             median_ms(lambda: unit_detail(db, str(args.units // 2)), args.repeat)),
        ]
        db.shutdown()

    print(f"database: {url.split('?')[0]}; {args.units:,} units, {args.workers:,} workers; "
          f"filled in {fill_s:.1f} s ({3 * args.units / fill_s:,.0f} rows/s)")
    width = max(len(r[0]) for r in rows)
    print(f"{'page of 50 units (median ms)':<{width}}  {'first':>8}  {'middle':>8}  "
          f"{'last':>8}  {'total':>6}")
    for name, first, middle, last, total in rows:
        print(f"{name:<{width}}  {first:>8}  {middle:>8}  {last:>8}  {total:>6}")
    for name, ms in stats:
        print(f"{name:<{width}}  {ms:>8.2f}")


if __name__ == "__main__":
    main()
