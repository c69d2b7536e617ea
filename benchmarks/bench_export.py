"""Export benchmark: `mephisto export` of many units, as JSON Lines and as CSV.

    python benchmarks/bench_export.py [--units 100000] [--reviews 1000] [--database URL]

Builds the units in a fresh SQLite file (or in the database at URL) with the tests'
builder (`tests/export_data.py`: not taken, expired, at work, submitted, reviewed),
then exports them to a file in each format, timed, and once more under tracemalloc for
the peak of memory Python allocated during the export. Prints a table; nothing is
asserted (tests assert behaviour).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from export_data import build

from mephisto.db import MephistoDB
from mephisto.tools.export import ExportFilter, export_to_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--units", type=int, default=100_000)
    parser.add_argument("--reviews", type=int, default=1_000,
                        help="submitted units reviewed through review_unit")
    parser.add_argument("--database", help="database URL (default: a fresh SQLite file)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        url = args.database or f"sqlite:///{Path(tmp) / 'bench.db'}"
        db = MephistoDB(url)
        t = time.perf_counter()
        built = build(db, args.units, name=f"bench-{time.time():.0f}", reviews=args.reviews)
        build_s = time.perf_counter() - t
        flt = ExportFilter(run_ids=[built.run.task_run_id])
        rows: list[tuple[str, int, float, float, float, int]] = []
        for fmt in ("jsonl", "csv"):
            target = Path(tmp) / f"export.{fmt}"
            t = time.perf_counter()
            count = export_to_file(db, fmt, target, flt)
            wall = time.perf_counter() - t
            tracemalloc.start()
            export_to_file(db, fmt, target, flt)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            rows.append((fmt, count, wall, count / wall, peak / 1e6, target.stat().st_size))
        db.shutdown()

    print(f"database: {url.split('?')[0]}")
    print(f"built {args.units:,} units ({args.reviews:,} reviewed) in {build_s:.1f} s")
    print(f"  {'format':<6}  {'units':>9}  {'wall s':>7}  {'units/s':>9}  "
          f"{'peak MB':>8}  {'file MB':>8}")
    for fmt, count, wall, rate, peak_mb, size in rows:
        print(f"  {fmt:<6}  {count:>9,}  {wall:>7.2f}  {rate:>9,.0f}  {peak_mb:>8.1f}  "
              f"{size / 1e6:>8.1f}")


if __name__ == "__main__":
    main()
