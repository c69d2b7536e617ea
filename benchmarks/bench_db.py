"""Database benchmark: bulk creation of a launch's units, and the reads a run makes.

    python benchmarks/bench_db.py [--units 100000] [--database URL]

Prints a table of figures; nothing is asserted (tests assert behaviour).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from mephisto.db import MephistoDB, batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--units", type=int, default=100_000)
    parser.add_argument("--database", help="database URL (default: a fresh SQLite file)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        url = args.database or f"sqlite:///{Path(tmp) / 'bench.db'}"
        rows: list[tuple[str, float, str]] = []

        t = time.perf_counter()
        db = MephistoDB(url)
        rows.append(("open + migrate", time.perf_counter() - t, ""))

        requester = db.new_requester(f"bench-{time.time()}", "mock")
        task = db.new_task(f"bench-{time.time()}", "static_task")
        run = db.new_task_run(task, requester, "{}", "mock", "static_task")
        data = [{"shared": {"text": f"item {i}"}, "unit_data": [{}]} for i in range(args.units)]

        t = time.perf_counter()
        created = batch.new_assignments_with_units(db, run, data, 0.5)
        elapsed = time.perf_counter() - t
        rows.append((f"create {args.units:,} assignments+units (one call)", elapsed,
                     f"{args.units / elapsed:,.0f} units/s"))

        unit_ids = [u for _a, us in created for u in us]
        t = time.perf_counter()
        batch.update_units_status(db, unit_ids, "launched")
        elapsed = time.perf_counter() - t
        rows.append((f"mark {args.units:,} units launched", elapsed, f"{args.units / elapsed:,.0f} units/s"))

        t = time.perf_counter()
        counts = db.get_unit_status_counts(run)
        rows.append(("count units by status", time.perf_counter() - t, str(counts)))

        t = time.perf_counter()
        units = db.find_units(task_run_id=run)
        elapsed = time.perf_counter() - t
        rows.append((f"find_units -> {len(units):,} Unit objects", elapsed, ""))
        db.shutdown()

    width = max(len(r[0]) for r in rows)
    print(f"database: {url.split('?')[0]}")
    for name, seconds, note in rows:
        print(f"  {name:<{width}}  {seconds * 1000:9.1f} ms  {note}")


if __name__ == "__main__":
    main()
