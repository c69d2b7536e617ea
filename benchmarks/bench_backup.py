"""Backup and restore benchmark: a SQLite database of a finished run with N units (each
with its agent, worker and submitted outputs) and some uploaded files is backed up,
then restored into a fresh SQLite file and, if a server is given, into PostgreSQL; the
task is also exported and imported into another SQLite file (the data porter).

    python benchmarks/bench_backup.py [--units 100000] [--files 1000]
        [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/test]

(`--postgres` defaults to MEPHISTO_TEST_POSTGRES_URL; a throwaway schema is used.) Each
backup and restore runs in a process of its own, so its peak memory (max RSS) is its
own. Prints a table; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from mephisto.db import MephistoDB, batch


def populate(url: str, data_dir: Path, units: int, files: int) -> None:
    db = MephistoDB(url)
    requester = db.new_requester("bench-requester", "mock")
    task = db.new_task("bench-task", "static_task")
    run = db.new_task_run(task, requester, "{}", "mock", "static_task")
    data = [{"shared": {"text": f"item {i}"}, "unit_data": [{}]} for i in range(units)]
    created = batch.new_assignments_with_units(db, run, data, 0.5)
    unit_ids = [u for _a, us in created for u in us]
    batch.update_units_status(db, unit_ids, "launched")
    workers = batch.find_or_new_workers(db, [f"w{i}" for i in range(1000)], "mock")
    names = sorted(workers)
    for start in range(0, units, 5000):
        chunk = []
        for i in range(start, min(units, start + 5000)):
            chunk.append({
                "agent_id": f"agent-{i}", "worker_id": workers[names[i % len(names)]],
                "unit_id": unit_ids[i], "task_id": task, "task_run_id": run,
                "assignment_id": created[i][0], "task_type": "static_task",
                "provider_type": "mock", "status": "in task",
                "state": {"inputs": {"text": f"item {i}"}},
            })
        batch.create_agents(db, chunk)
        batch.complete_agents(db, [
            (a["agent_id"], a["unit_id"],
             {"outputs": {"answer": f"answer {a['agent_id']}", "score": 3.5}}) for a in chunk])
    for i in range(files):
        folder = data_dir / "runs" / run / f"agent-{i}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "0-upload.bin").write_bytes(os.urandom(2048) + b"x" * 2048)
    db.shutdown()


def child(phase: str, url: str, data_dir: str, archive: str) -> None:
    """Run in a child process: one backup or restore; prints its summary as JSON."""
    from mephisto.db.backup import backup, restore
    from mephisto.tools.db_porter import export_tasks, import_tasks

    db = MephistoDB(url)
    summary: Any
    if phase == "export":
        summary = export_tasks(db, archive, ["bench-task"], data_dir)
    elif phase == "import":
        summary = import_tasks(db, archive, data_dir=data_dir)
    else:
        summary = (backup if phase == "backup" else restore)(db, archive, data_dir)
    db.shutdown()
    print(json.dumps({"seconds": summary.seconds, "rows": summary.rows,
                      "files": summary.files, "archive_bytes": summary.archive_bytes,
                      "peak_mb": _peak_mb()}))


def _peak_mb() -> float:
    """This process's peak resident memory since it started (VmHWM: unlike the rusage
    of a child, it does not count the parent's memory the child was forked with)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(phase: str, url: str, data_dir: Path, archive: Path) -> dict[str, Any]:
    done = subprocess.run([sys.executable, __file__, "--child", phase, url, str(data_dir),
                           str(archive)], stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{phase} failed ({done.returncode})")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:6])
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--units", type=int, default=100_000)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--postgres", default=os.environ.get("MEPHISTO_TEST_POSTGRES_URL"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        src = root / "source"
        t = time.perf_counter()
        populate(f"sqlite:///{src / 'database.db'}", src, args.units, args.files)
        made = time.perf_counter() - t
        archive = root / "backup.tar.gz"
        rows: list[tuple[str, dict[str, Any]]] = []
        rows.append(("backup (SQLite)", measure("backup", f"sqlite:///{src / 'database.db'}",
                                                src, archive)))
        dst = root / "restored"
        rows.append(("restore into SQLite", measure("restore", f"sqlite:///{dst / 'database.db'}",
                                                    dst, archive)))
        if args.postgres:
            schema = "bench_" + uuid.uuid4().hex[:10]
            from mephisto.db.engine import normalize_url

            admin = sa.create_engine(normalize_url(args.postgres), isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
            try:
                sep = "&" if "?" in args.postgres else "?"
                pg_url = f"{args.postgres}{sep}options=-csearch_path%3D{schema}"
                rows.append(("restore into PostgreSQL",
                             measure("restore", pg_url, root / "pg_data", archive)))
            finally:
                with admin.connect() as conn:
                    conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
                admin.dispose()
        exported = root / "export.tar.gz"
        rows.append(("export the task (porter)",
                     measure("export", f"sqlite:///{src / 'database.db'}", src, exported)))
        rows.append(("import it into SQLite", measure(
            "import", f"sqlite:///{root / 'imported' / 'database.db'}", root / "imported",
            exported)))
        db_bytes = (src / "database.db").stat().st_size

    print(f"{args.units:,} units with agents and outputs, {args.files:,} files of 4 KB; "
          f"source SQLite {db_bytes / 2**20:.1f} MB (made in {made:.1f} s)")
    print(f"  {'phase':<26}{'seconds':>9}{'rows/s':>10}{'peak RSS':>11}  notes")
    for name, r in rows:
        note = f"archive {r['archive_bytes'] / 2**20:.1f} MB, {r['rows']:,} rows, {r['files']:,} files"
        print(f"  {name:<26}{r['seconds']:>9.1f}{r['rows'] / r['seconds']:>10,.0f}"
              f"{r['peak_mb']:>8.0f} MB  {note}")


if __name__ == "__main__":
    main()
