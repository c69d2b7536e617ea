"""Realistic data for the backup and porter tests: completed runs through the mock
provider (one submit with an uploaded file), review decisions with a bonus, a grant and a
block; and helpers that read back every row of every table and every data file."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from mephisto.db import schema as s
from mephisto.db.backup import RUNTIME_ONLY
from mephisto.db.database import MephistoDB
from mephisto.testing.fixtures import LaunchedRun
from mephisto.testing.worker import SimulatedWorker
from mephisto.tools.provider_review import Decision, review_unit

UPLOAD = b"uploaded bytes \x00\x01\xff" * 100


async def _upload(url: str, worker: str) -> None:
    async with SimulatedWorker(url, worker) as w:
        await w.open_page()
        await w.task_config()
        await w.request_agent()
        await w.submit_multipart({"answer": "see the file"},
                                 {"attachment": ("notes.txt", UPLOAD)})


def completed_run(launch: Any, task_name: str, units: int = 4,
                  prefix: str = "") -> LaunchedRun:
    """A run of `units` units, all submitted (the first with a file), then reviewed:
    approved with a bonus and a grant, rejected, blocked."""
    run: LaunchedRun = launch([{"text": f"{task_name}-{i}"} for i in range(units)],
                              task_name=task_name)
    asyncio.run(_upload(run.url, f"{prefix}uploader"))
    run.simulate(2, worker_prefix=f"{prefix}sim-worker")
    assert run.wait(30)
    db = run.db
    done = [u for u in db.find_units(task_run_id=run.task_run_id)
            if u.get_assigned_agent() is not None]
    assert len(done) == units
    review_unit(db, done[0].db_id, Decision("approve", note="good", bonus=0.5,
                                            bonus_reason="careful", grant=("trusted", 3)))
    review_unit(db, done[1].db_id, Decision("reject", note="empty answer"))
    if len(done) > 2:
        review_unit(db, done[2].db_id, Decision("approve", block=True, block_reason="spam"))
    return run


def all_rows(db: MephistoDB) -> dict[str, dict[tuple[Any, ...], tuple[Any, ...]]]:
    """Every row of every table, by primary key."""
    out: dict[str, dict[tuple[Any, ...], tuple[Any, ...]]] = {}
    with db.engine.connect() as conn:
        for table in s.metadata.sorted_tables:
            pk = [c.name for c in table.primary_key.columns]
            out[table.name] = {
                tuple(r._mapping[c] for c in pk): tuple(r)
                for r in conn.execute(sa.select(table))
            }
    return out


def moved(rows: dict[str, dict[Any, tuple[Any, ...]]], old: Path, new: Path
          ) -> dict[str, dict[Any, tuple[Any, ...]]]:
    """`rows` with the data directory `old` named `new` in JSON columns."""
    out = {}
    for name, by_pk in rows.items():
        table = s.metadata.tables[name]
        json_cols = [i for i, c in enumerate(table.columns) if isinstance(c.type, sa.JSON)]
        fixed = {}
        for pk, row in by_pk.items():
            values = list(row)
            for i in json_cols:
                values[i] = json.loads(json.dumps(values[i]).replace(str(old), str(new)))
            fixed[pk] = tuple(values)
        out[name] = fixed
    return out


def data_files(data_dir: Path) -> dict[str, bytes]:
    """Every run file under `data_dir` (what a backup takes), by relative path."""
    runs = data_dir / "runs"
    found = {}
    for path in sorted(runs.rglob("*")) if runs.is_dir() else []:
        rel = path.relative_to(data_dir)
        if path.is_file() and not (set(rel.parts[2:3]) & RUNTIME_ONLY):
            found[rel.as_posix()] = path.read_bytes()
    return found


def saved_upload_paths(db: MephistoDB) -> list[str]:
    """The paths of uploaded files listed in agents' outputs."""
    paths = []
    with db.engine.connect() as conn:
        for (state,) in conn.execute(sa.select(s.agents.c.state)):
            outputs = (state or {}).get("outputs") or {}
            for f in outputs.get("files", []) if isinstance(outputs, dict) else []:
                paths.append(f["path"])
    return paths
