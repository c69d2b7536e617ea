"""Move tasks between databases: `export_tasks(db, path, names)` writes chosen tasks with
everything that hangs on them to an archive (the format of `db/archive.py`, kind
"export"); `import_tasks(db, path)` adds them to another database
(`mephisto db export|import`).

What an export holds, for each task named: the task, its project, its runs with their
assignments, units, agents and onboarding agents; the requesters and workers they name;
the bonuses (`payments`) of its units; its review decisions (`worker_review`); the
qualifications granted to its workers, and their blocks by its requesters; the provider
records that belong to these (below); the runs' data files. Bonuses paid for no unit
belong to no task and stay behind.

Import, in one transaction (all or nothing; files are staged and moved before commit):

- Every integer id is new in the target (from its sequence on PostgreSQL, past its
  highest id on SQLite); every reference is remapped. Agent ids (random tokens) stay.
- Rows the target has already are reused, not duplicated: projects and qualifications by
  name, requesters by name (with the same provider), workers by name and provider,
  granted qualifications (the target's value kept) and blocks by worker and
  qualification or requester, bonuses by request token.
- A task whose name the target has already: `on_conflict="fail"` (the default) refuses,
  naming it; "merge" adds the imported runs to that task; "rename" imports it as a new
  task named "<name> (imported)" (or "(imported 2)", ...).
- Importing the same tasks again changes nothing: each imported task and run is
  recorded in the target (a provider record of provider "mephisto", kind
  "imported:<source database id>", key "tasks:<id>" or "task_runs:<id>"), and runs found
  there are skipped with everything under them. A source database gets its id (a
  random hex, in a record of provider "mephisto") on its first export; a restored
  backup keeps it.
- Provider records come along when they are keyed by something stable (an agent id, a
  bonus's request token) or by ids the import can remap: `run`/`study` records of a
  run, `units:<run>`/`unit:<run>`/`hits:<run>` kinds, `block` ("requester:worker") and
  `qualification` ("worker:name") keys. Their values are copied as they are.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from mephisto.db import migrate
from mephisto.db import schema as s
from mephisto.db.archive import ArchiveError, ArchiveReader, ArchiveWriter, Entry
from mephisto.db.backup import (
    CHUNK,
    BackupSummary,
    Progress,
    StagedFiles,
    as_conflict,
    check_revision,
    data_root,
    ordered,
    path_rewriter,
    run_files,
    runs_prefix,
    silent,
    snapshot,
    stream_rows,
)
from mephisto.errors import ConfigError, DatabaseError, EntryAlreadyExists, EntryDoesNotExist

if TYPE_CHECKING:
    from mephisto.db.database import MephistoDB

__all__ = ["ON_CONFLICT", "PortSummary", "database_id", "export_tasks", "import_tasks"]

ON_CONFLICT = ("fail", "merge", "rename")
PORTER = "mephisto"  # provider_type of the porter's own records
_RUN_KIND = re.compile(r"(units?|hits):(\d+)")
_PAIR = re.compile(r"(\d+):(.+)")


@dataclass
class PortSummary(BackupSummary):
    """What an export wrote or an import did. `tables`: rows written (export) or added
    (import); `reused`: rows of the archive the target had already."""

    tasks: list[str] = field(default_factory=list)
    reused: dict[str, int] = field(default_factory=dict)


def database_id(db: MephistoDB) -> str:
    """This database's id as a source of exports (made on first use)."""
    found = db.get_provider_record(PORTER, "database", "id")
    if not (isinstance(found, dict) and isinstance(found.get("id"), str)):
        # made once: of two processes exporting at once, the first one's id stays
        found = db.add_provider_record(PORTER, "database", "id", {"id": uuid.uuid4().hex})
    if not (isinstance(found, dict) and isinstance(found.get("id"), str)):
        found = {"id": uuid.uuid4().hex}  # a damaged record: replaced, as before
        db.put_provider_record(PORTER, "database", "id", found)
    return str(found["id"])


# -- export --------------------------------------------------------------------------------


def _scopes(task_ids: list[int]) -> dict[str, sa.ColumnElement[bool]]:
    """For each table, which of its rows belong to the tasks."""
    t, r, u, a, o, p, w = (s.tasks, s.task_runs, s.units, s.agents, s.onboarding_agents,
                           s.payments, s.worker_review)
    runs = sa.select(r.c.task_run_id).where(r.c.task_id.in_(task_ids))
    units = sa.select(u.c.unit_id).where(u.c.task_run_id.in_(runs))
    reviews = sa.or_(w.c.task_id.in_(task_ids), w.c.task_run_id.in_(runs), w.c.unit_id.in_(units))
    workers = sa.union(
        sa.select(a.c.worker_id).where(a.c.task_run_id.in_(runs)),
        sa.select(o.c.worker_id).where(o.c.task_run_id.in_(runs)),
        sa.select(u.c.worker_id).where(u.c.task_run_id.in_(runs), u.c.worker_id.is_not(None)),
        sa.select(p.c.worker_id).where(p.c.unit_id.in_(units)),
        sa.select(w.c.worker_id).where(reviews),
    )
    requesters = sa.union(
        sa.select(r.c.requester_id).where(r.c.task_id.in_(task_ids)),
        sa.select(p.c.requester_id).where(p.c.unit_id.in_(units)),
        sa.select(w.c.requester_id).where(reviews, w.c.requester_id.is_not(None)),
    )
    g = s.granted_qualifications
    qualifications = sa.union(
        sa.select(g.c.qualification_id).where(g.c.worker_id.in_(workers)),
        sa.select(w.c.updated_qualification_id).where(reviews),
        sa.select(w.c.revoked_qualification_id).where(reviews),
    )
    b = s.worker_blocks
    return {
        "projects": s.projects.c.project_id.in_(
            sa.select(t.c.project_id).where(t.c.task_id.in_(task_ids))),
        "tasks": t.c.task_id.in_(task_ids),
        "requesters": s.requesters.c.requester_id.in_(requesters),
        "workers": s.workers.c.worker_id.in_(workers),
        "qualifications": s.qualifications.c.qualification_id.in_(qualifications),
        "granted_qualifications": g.c.worker_id.in_(workers),
        "worker_blocks": sa.and_(b.c.worker_id.in_(workers), b.c.requester_id.in_(requesters)),
        "task_runs": r.c.task_id.in_(task_ids),
        "assignments": s.assignments.c.task_run_id.in_(runs),
        "units": u.c.task_run_id.in_(runs),
        "agents": a.c.task_run_id.in_(runs),
        "onboarding_agents": o.c.task_run_id.in_(runs),
        "payments": p.c.unit_id.in_(units),
        "worker_review": reviews,
        "provider_records": s.provider_records.c.provider_type != PORTER,  # then by key
    }


@dataclass
class _Ids:
    """Ids of exported rows, by table (str), that provider records may name."""

    ids: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    def ported(self, kind: str, key: str) -> bool:
        """Whether a provider record of `kind` and `key` belongs to the export."""
        m = _RUN_KIND.fullmatch(kind)
        if m:
            return m[2] in self.ids["task_runs"]
        if kind in ("run", "study"):
            return key in self.ids["task_runs"]
        pair = _PAIR.fullmatch(key)
        if kind == "block" and pair:
            return pair[1] in self.ids["requesters"] and pair[2] in self.ids["workers"]
        if kind == "qualification" and pair:
            return pair[1] in self.ids["workers"]
        return key in self.ids["agents"] or key in self.ids["payments"]


def export_tasks(db: MephistoDB, path: str | Path, task_names: Iterable[str],
                 data_dir: str | Path | None = None,
                 progress: Progress | None = None) -> PortSummary:
    """Write the tasks named (and all that belongs to them) to a new archive at `path`."""
    started = time.perf_counter()
    report = progress or silent
    names = list(dict.fromkeys(task_names))
    if not names:
        raise ConfigError("name at least one task to export (--task NAME)", key="task")
    with db.read() as conn:
        found = dict(conn.execute(sa.select(s.tasks.c.task_name, s.tasks.c.task_id)
                                  .where(s.tasks.c.task_name.in_(names))).all())
    missing = [n for n in names if n not in found]
    if missing:
        raise EntryDoesNotExist(f"no task named {', '.join(map(repr, missing))} in {db.url}")
    task_ids = [int(found[n]) for n in names]
    scopes = _scopes(task_ids)
    unknown = set(s.metadata.tables) - set(scopes)
    if unknown:
        raise DatabaseError(f"the porter does not know table(s) {sorted(unknown)}")
    source = database_id(db)
    root = data_root(data_dir)
    summary = PortSummary(Path(path), tasks=names)
    with ArchiveWriter(Path(path)) as writer:
        with snapshot(db) as conn:
            revision = migrate.current_revision(conn)
            ids = _Ids()
            for name, source_table, col in (
                    ("task_runs", s.task_runs, "task_run_id"), ("agents", s.agents, "agent_id"),
                    ("agents", s.onboarding_agents, "onboarding_agent_id"),
                    ("payments", s.payments, "request_token"),
                    ("requesters", s.requesters, "requester_id"),
                    ("workers", s.workers, "worker_id")):
                query = sa.select(source_table.c[col]).where(scopes[source_table.name])
                ids.ids[name].update(str(v) for v in conn.execute(query).scalars())
            for table in s.metadata.sorted_tables:
                rows: Iterator[Sequence[Any]] = stream_rows(
                    conn, ordered(table).where(scopes[table.name]))
                if table is s.provider_records:
                    rows = (row for row in rows if ids.ported(row[1], row[2]))
                summary.tables[table.name] = writer.write_table(table, rows)
                report(table.name, summary.tables[table.name], summary.tables[table.name])
        for relative, file in run_files(root, sorted(ids.ids["task_runs"], key=int)):
            writer.add_file(relative, file)
        summary.files = len(writer._files)
        summary.file_bytes = writer.file_bytes
        summary.archive_bytes = writer.finish({
            "kind": "export", "alembic_revision": revision, "source_dialect": db.dialect,
            "source_database": db.url, "source_database_id": source, "data_dir": str(root),
            "task_names": names,
        })
    summary.seconds = time.perf_counter() - started
    return summary


# -- import --------------------------------------------------------------------------------

# integer id columns that refer to another table without a foreign key
_LOOSE_REFS = {("units", "worker_id"): "workers"}
# natural keys: rows the target has already are reused
_NATURAL = {"projects": ("project_name",), "qualifications": ("qualification_name",),
            "requesters": ("requester_name",), "workers": ("provider_type", "worker_name"),
            "granted_qualifications": ("worker_id", "qualification_id"),
            "worker_blocks": ("worker_id", "requester_id"), "payments": ("request_token",)}
_RUN_OWNED = ("assignments", "units", "agents", "onboarding_agents")


def import_tasks(db: MephistoDB, path: str | Path, on_conflict: str = "fail",
                 data_dir: str | Path | None = None,
                 progress: Progress | None = None) -> PortSummary:
    """Add the tasks of an export archive to `db` (see the module docstring)."""
    if on_conflict not in ON_CONFLICT:
        raise ConfigError(f"on_conflict must be one of {', '.join(ON_CONFLICT)}, not "
                          f"{on_conflict!r}", key="on_conflict")
    started = time.perf_counter()
    root = data_root(data_dir)
    summary = PortSummary(Path(path))
    with ArchiveReader(path, kind="export") as reader:
        check_revision(reader)
        manifest = reader.manifest
        summary.tasks = list(manifest.get("task_names") or [])
        source = manifest.get("source_database_id")
        if not isinstance(source, str) or not source:
            raise ArchiveError(f"{reader.path}: its manifest names no source database")
        staged = StagedFiles(root)
        try:
            with db.transaction() as conn, tempfile.TemporaryFile("w+") as records:
                if conn.dialect.name == "sqlite":
                    conn.exec_driver_sql("PRAGMA defer_foreign_keys=ON")
                run = _Import(conn, source, on_conflict, str(root),
                              str(manifest.get("data_dir") or root), progress or silent)
                seen: set[str] = set()
                files = 0
                for entry in reader.entries():
                    if entry.kind == "file":
                        files += 1
                        old_run, _sep, rest = entry.name.removeprefix("runs/").partition("/")
                        new_run = run.new_runs.get(int(old_run)) if old_run.isdigit() else None
                        if new_run is not None:
                            staged.add(f"runs/{new_run}/{rest}", entry)
                            summary.files += 1
                    elif entry.name == "provider_records":
                        for row in entry.rows():
                            records.write(json.dumps(row) + "\n")
                    else:
                        run.table(s.metadata.tables[entry.name], entry)
                    if entry.kind == "table":
                        seen.add(entry.name)
                missing = set(manifest["tables"]) - seen
                if missing or files != manifest["files"]["count"]:
                    raise ArchiveError(f"{reader.path} is incomplete: tables {sorted(missing)} "
                                       f"missing, {files} of {manifest['files']['count']} "
                                       "files found")
                records.seek(0)
                run.provider_records(json.loads(line) for line in records)
                staged.commit()
        except BaseException as exc:
            staged.undo()
            refused = as_conflict(db, exc, f"cannot import {reader.path}")
            if refused is not None:
                raise refused from exc
            raise
        finally:
            staged.cleanup()
    summary.tables = dict(run.inserted)
    summary.reused = dict(run.reused)
    summary.file_bytes = staged.bytes
    summary.archive_bytes = Path(path).stat().st_size
    summary.seconds = time.perf_counter() - started
    return summary


class _Import:
    """The state of one import: id maps (old id -> new id, by table), the runs skipped
    because an earlier import brought them, counts."""

    def __init__(self, conn: sa.Connection, source: str, on_conflict: str, root: str,
                 old_root: str, report: Progress) -> None:
        self.conn = conn
        self.kind = f"imported:{source}"
        self.on_conflict = on_conflict
        self.root, self.old_root = root, old_root
        self.report = report
        self.ids: dict[str, dict[int, int]] = defaultdict(dict)
        self.new_runs: dict[int, int] = {}  # runs added by this import
        self.skipped_runs: set[int] = set()  # runs an earlier import added
        self.skipped_units: set[int] = set()
        self.fresh_tasks: set[int] = set()  # tasks first imported now
        self.inserted: Counter[str] = Counter()
        self.reused: Counter[str] = Counter()
        self._next_id: dict[str, int] = {}

    # -- plumbing ---------------------------------------------------------------------

    def allocate(self, table: sa.Table, n: int) -> list[int]:
        """`n` new ids of the table's integer primary key."""
        col = table.autoincrement_column
        assert col is not None
        if self.conn.dialect.name == "postgresql":
            return list(self.conn.execute(sa.text(
                "SELECT nextval(pg_get_serial_sequence(:t, :c)) FROM generate_series(1, :n)"),
                {"t": table.name, "c": col.name, "n": n}).scalars())
        if table.name not in self._next_id:
            top = self.conn.execute(sa.select(sa.func.max(col))).scalar()
            self._next_id[table.name] = int(top or 0) + 1
        start = self._next_id[table.name]
        self._next_id[table.name] = start + n
        return list(range(start, start + n))

    def remap(self, table: sa.Table, row: dict[str, Any]) -> dict[str, Any]:
        """`row` with its references moved to the target's ids (a reference the export
        does not hold: None where the column allows it, else an error)."""
        for col in table.columns:
            target = _LOOSE_REFS.get((table.name, col.name))
            for fk in col.foreign_keys:
                target = fk.column.table.name
            value = row[col.name]
            if target is None or value is None or (col.primary_key and target == table.name):
                continue
            new = self.ids[target].get(int(value))
            if new is None and not col.nullable:
                raise ArchiveError(f"{table.name} row refers to {target} {value}, which "
                                       "the export does not hold")
            row[col.name] = new
        return row

    def record(self, what: str, old: int) -> int | None:
        """The target id an earlier import gave this source row, if it is still there."""
        r = s.provider_records
        value = self.conn.execute(sa.select(r.c.value).where(
            r.c.provider_type == PORTER, r.c.kind == self.kind,
            r.c.record_key == f"{what}:{old}")).scalar()
        if not isinstance(value, dict):
            return None
        table, pk = s.TABLES[what]
        found = self.conn.execute(sa.select(table.c[pk]).where(table.c[pk] == value["id"]))
        return int(value["id"]) if found.first() else None

    def remember(self, what: str, old: int, new: int) -> None:
        r = s.provider_records
        now = time.time()
        self.conn.execute(r.delete().where(r.c.provider_type == PORTER, r.c.kind == self.kind,
                                           r.c.record_key == f"{what}:{old}"))
        self.conn.execute(r.insert().values(provider_type=PORTER, kind=self.kind,
                                            record_key=f"{what}:{old}", value={"id": new},
                                            creation_date=now, update_date=now))

    def insert(self, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        if rows:
            self.conn.execute(table.insert(), rows)
            self.inserted[table.name] += len(rows)

    # -- tables -----------------------------------------------------------------------

    def table(self, table: sa.Table, entry: Entry) -> None:
        names = [c.name for c in table.columns]
        rewrite = path_rewriter(table, self.old_root, self.root,
                                {str(k): str(v) for k, v in self.new_runs.items()})
        chunk: list[dict[str, Any]] = []
        done = 0
        for values in entry.rows(rewrite, only_if=runs_prefix(self.old_root)):
            chunk.append(dict(zip(names, values, strict=True)))
            if len(chunk) >= CHUNK:
                self._chunk(table, chunk)
                done += len(chunk)
                self.report(table.name, done, None)
                chunk = []
        self._chunk(table, chunk)
        self.report(table.name, done + len(chunk), done + len(chunk))

    def _chunk(self, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        name = table.name
        if name == "tasks":
            for row in rows:
                self._task(row)
            return
        if name == "task_runs":
            for row in rows:
                self._run(row)
            return
        if name in _RUN_OWNED:
            rows = self._own_runs(name, rows)
        elif name in ("payments", "worker_review"):
            rows = [r for r in rows if not self._skipped(name, r)]
        col = table.autoincrement_column
        fresh: list[dict[str, Any]] = []
        for row in rows:
            old_pk = row[col.name] if col is not None else None
            mapped = self.remap(table, row)
            existing = self._existing(table, mapped) if name in _NATURAL else None
            if existing is None:
                fresh.append(mapped)
                continue
            if old_pk is not None:
                self.ids[name][int(old_pk)] = existing
            self.reused[name] += 1
        if col is not None and fresh:
            for row, new in zip(fresh, self.allocate(table, len(fresh)), strict=True):
                self.ids[name][int(row[col.name])] = new
                row[col.name] = new
        self.insert(table, fresh)

    def _own_runs(self, name: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        kept = []
        for row in rows:
            if int(row["task_run_id"]) in self.skipped_runs:
                if name == "units":
                    self.skipped_units.add(int(row["unit_id"]))
                self.reused[name] += 1
            else:
                kept.append(row)
        return kept

    def _skipped(self, name: str, row: dict[str, Any]) -> bool:
        """A bonus or review of a run an earlier import brought, or a review of no run
        of a task an earlier import brought."""
        run, unit, task = row.get("task_run_id"), row.get("unit_id"), row.get("task_id")
        skip = (run is not None and int(run) in self.skipped_runs) or (
            unit is not None and int(unit) in self.skipped_units) or (
            name == "worker_review" and run is None and unit is None and task is not None
            and int(task) not in self.fresh_tasks)
        if skip:
            self.reused[name] += 1
        return skip

    def _existing(self, table: sa.Table, row: dict[str, Any]) -> int | None:
        """The target's id of the row with the same natural key (or -1 for a table
        without an id), or None."""
        keys = _NATURAL[table.name]
        query = sa.select(*table.primary_key.columns).where(
            *[table.c[k] == row[k] for k in keys])
        found = self.conn.execute(query).first()
        if table.name == "requesters":
            other = self.conn.execute(sa.select(table.c.requester_id, table.c.provider_type)
                                      .where(table.c.requester_name == row["requester_name"])
                                      ).first()
            if other is not None and other[1] != row["provider_type"]:
                raise EntryAlreadyExists(
                    f"requester {row['requester_name']!r} exists in the target with provider "
                    f"{other[1]!r}, the import's is {row['provider_type']!r}")
        if found is None:
            return None
        return int(found[0]) if table.autoincrement_column is not None else -1

    def _task(self, row: dict[str, Any]) -> None:
        t = s.tasks
        old, name = int(row["task_id"]), row["task_name"]
        new = self.record("tasks", old)
        if new is not None:
            self.ids["tasks"][old] = new
            self.reused["tasks"] += 1
            return
        self.fresh_tasks.add(old)
        existing = self.conn.execute(sa.select(t.c.task_id).where(t.c.task_name == name)).scalar()
        if existing is not None and self.on_conflict == "fail":
            raise EntryAlreadyExists(
                f"task {name!r} already exists in the target database: import with "
                "--on-conflict merge (add its runs to that task) or rename (import it as a "
                "new task)")
        if existing is not None and self.on_conflict == "merge":
            new = int(existing)
            self.reused["tasks"] += 1
        else:
            if existing is not None:
                row["task_name"] = self._free_name(name)
            row = self.remap(t, row)  # a parent task not exported: none
            (new,) = self.allocate(t, 1)
            row["task_id"] = new
            self.insert(t, [row])
        self.ids["tasks"][old] = new
        self.remember("tasks", old, new)

    def _free_name(self, name: str) -> str:
        t = s.tasks
        taken = set(self.conn.execute(sa.select(t.c.task_name).where(
            t.c.task_name.like(f"{name} (imported%)"))).scalars())
        candidates = (f"{name} (imported{'' if i == 1 else f' {i}'})" for i in range(1, 10**6))
        return next(c for c in candidates if c not in taken)

    def _run(self, row: dict[str, Any]) -> None:
        old = int(row["task_run_id"])
        new = self.record("task_runs", old)
        if new is not None:
            self.ids["task_runs"][old] = new
            self.skipped_runs.add(old)
            self.reused["task_runs"] += 1
            return
        row = self.remap(s.task_runs, row)
        (new,) = self.allocate(s.task_runs, 1)
        row["task_run_id"] = new
        self.insert(s.task_runs, [row])
        self.ids["task_runs"][old] = new
        self.new_runs[old] = new
        self.remember("task_runs", old, new)

    # -- provider records -------------------------------------------------------------

    def provider_records(self, rows: Iterable[list[Any]]) -> None:
        r = s.provider_records
        names = [c.name for c in r.columns]
        for values in rows:
            row = dict(zip(names, values, strict=True))
            moved = self._record_key(row["kind"], row["record_key"])
            if moved is None:
                continue
            row["kind"], row["record_key"] = moved
            found = self.conn.execute(sa.select(r.c.kind).where(
                r.c.provider_type == row["provider_type"], r.c.kind == row["kind"],
                r.c.record_key == row["record_key"])).first()
            if found is not None:
                self.reused["provider_records"] += 1
                continue
            self.insert(r, [row])

    def _record_key(self, kind: str, key: str) -> tuple[str, str] | None:
        """(kind, key) in the target's ids, or None to leave the record out."""
        runs = self.ids["task_runs"]
        m = _RUN_KIND.fullmatch(kind)
        if m:
            if int(m[2]) not in self.new_runs:
                return None
            kind = f"{m[1]}:{runs[int(m[2])]}"
            if m[1] in ("unit", "units") and key.isdigit():
                unit = self.ids["units"].get(int(key))
                return None if unit is None else (kind, str(unit))
            return kind, key
        if kind in ("run", "study") and key.isdigit():
            return (kind, str(self.new_runs[int(key)])) if int(key) in self.new_runs else None
        pair = _PAIR.fullmatch(key)
        if kind == "block" and pair and pair[2].isdigit():
            req = self.ids["requesters"].get(int(pair[1]))
            worker = self.ids["workers"].get(int(pair[2]))
            return None if req is None or worker is None else (kind, f"{req}:{worker}")
        if kind == "qualification" and pair:
            worker = self.ids["workers"].get(int(pair[1]))
            return None if worker is None else (kind, f"{worker}:{pair[2]}")
        return kind, key
