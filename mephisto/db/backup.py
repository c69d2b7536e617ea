"""Back up a whole database with its data files into one archive, and restore it into an
empty database: `backup(db, path)`, `restore(db, path)` (`mephisto db backup|restore`).

- What: every table of `schema.metadata` (so tables and columns added by later
  migrations come along by themselves) and the files of the database's task runs under
  the data directory (`runs/<task_run_id>/`: uploads, a React task's served front-end),
  except what only a live server uses (`live.json`, `metrics_token`, `.uploads/`). The
  format is in `db/archive.py`; it is the same on both engines, so a SQLite backup
  restores into PostgreSQL and back.
- Consistency: all tables are read in one transaction, a REPEATABLE READ read-only one
  on PostgreSQL and one read transaction on SQLite (WAL: a snapshot; writers go on).
- Restore: only into a database with no rows and a data directory with no run files,
  and only from an archive of the same schema revision. One transaction: rows are
  inserted in chunks, PostgreSQL's sequences are moved past the restored ids, the row
  counts are checked against the manifest, files are staged in the data directory and
  moved into place before the commit. Any failure leaves the target as it was.
- Saved uploads are listed in agents' outputs by absolute path: restoring into another
  data directory rewrites those paths (`archive.rewrite_paths`).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from mephisto.db import migrate
from mephisto.db import schema as s
from mephisto.db.archive import (
    ArchiveError,
    ArchiveReader,
    ArchiveWriter,
    json_columns,
    rewrite_paths,
)
from mephisto.errors import DatabaseError

if TYPE_CHECKING:
    from mephisto.db.database import MephistoDB

__all__ = ["ArchiveError", "BackupSummary", "Progress", "backup", "restore"]

# progress(what, done, total): called as work advances (total None: not known)
Progress = Callable[[str, int, "int | None"], None]

CHUNK = 2000  # rows per executemany / fetch
RUNTIME_ONLY = frozenset({"live.json", "metrics_token", ".uploads"})  # under a run dir


@dataclass
class BackupSummary:
    """What a backup or restore moved."""

    path: Path
    tables: dict[str, int] = field(default_factory=dict)
    files: int = 0
    file_bytes: int = 0
    archive_bytes: int = 0
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(self.tables.values())


def silent(_what: str, _done: int, _total: int | None) -> None:
    """A `Progress` that reports nothing."""


# -- reading a database --------------------------------------------------------------------


@contextlib.contextmanager
def snapshot(db: MephistoDB) -> Iterator[sa.Connection]:
    """One read-only transaction over every table: what it reads is one moment's state."""
    with db.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ",
                                          postgresql_readonly=True)
        with conn.begin():
            yield conn


def stream_rows(conn: sa.Connection, query: sa.Select[Any]) -> Iterator[Sequence[Any]]:
    """The rows of `query`, fetched in chunks (a server-side cursor on PostgreSQL)."""
    result = conn.execute(query, execution_options={"yield_per": CHUNK})
    for partition in result.partitions():
        yield from partition


def ordered(table: sa.Table) -> sa.Select[Any]:
    return sa.select(table).order_by(*table.primary_key.columns)


def run_files(data_dir: Path, run_ids: Iterable[str]) -> Iterator[tuple[str, Path]]:
    """(path relative to the data directory, file) for each data file of these runs."""
    for run_id in run_ids:
        run_dir = data_dir / "runs" / run_id
        if not run_dir.is_dir():
            continue
        for root, dirs, files in os.walk(run_dir):
            here = Path(root)
            if here == run_dir:
                dirs[:] = [d for d in dirs if d not in RUNTIME_ONLY]
                files = [f for f in files if f not in RUNTIME_ONLY]
            dirs.sort()
            for name in sorted(files):
                path = here / name
                if path.is_file() and not path.is_symlink():
                    yield path.relative_to(data_dir).as_posix(), path


def data_root(data_dir: str | Path | None) -> Path:
    """`data_dir` made absolute, or the configured data directory."""
    if data_dir is None:
        from mephisto.utils.dirs import get_data_dir

        return get_data_dir().resolve()
    return Path(data_dir).resolve()


def backup(db: MephistoDB, path: str | Path, data_dir: str | Path | None = None,
           progress: Progress | None = None) -> BackupSummary:
    """Write the whole database and its runs' data files to a new archive at `path`."""
    started = time.perf_counter()
    report = progress or silent
    root = data_root(data_dir)
    summary = BackupSummary(Path(path))
    with ArchiveWriter(Path(path)) as writer:
        with snapshot(db) as conn:
            revision = migrate.current_revision(conn)
            for table in s.metadata.sorted_tables:
                total = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
                summary.tables[table.name] = writer.write_table(
                    table, _counted(stream_rows(conn, ordered(table)), table.name, total, report))
            runs = [str(r) for r in conn.execute(sa.select(s.task_runs.c.task_run_id)).scalars()]
        for relative, source in run_files(root, runs):
            writer.add_file(relative, source)
        summary.files = len(writer._files)
        summary.file_bytes = writer.file_bytes
        report("writing archive", 0, None)
        summary.archive_bytes = writer.finish({
            "kind": "backup", "alembic_revision": revision, "source_dialect": db.dialect,
            "source_database": db.url, "data_dir": str(root),
        })
    summary.seconds = time.perf_counter() - started
    return summary


def _counted(rows: Iterator[Sequence[Any]], what: str, total: int | None,
             report: Progress) -> Iterator[Sequence[Any]]:
    done = 0
    report(what, 0, total)
    for row in rows:
        yield row
        done += 1
        if done % CHUNK == 0:
            report(what, done, total)
    report(what, done, total)


# -- writing a database --------------------------------------------------------------------


def check_revision(reader: ArchiveReader) -> None:
    """The archive must be of the schema revision this code (and the target) has."""
    theirs, ours = reader.manifest.get("alembic_revision"), migrate.head_revision()
    if theirs != ours:
        raise ArchiveError(
            f"{reader.path} was made at schema revision {theirs!r}, this database is at "
            f"{ours!r}: restore it with the Mephisto version that made it, then upgrade")
    for name, info in reader.manifest["tables"].items():
        table = s.metadata.tables.get(name)
        if table is None or info.get("columns") != [c.name for c in table.columns]:
            raise ArchiveError(f"{reader.path}: table {name!r} does not match this schema")


def require_empty(conn: sa.Connection, root: Path) -> None:
    """Refuse a target that holds any row or any run file."""
    for table in s.metadata.sorted_tables:
        if conn.execute(sa.select(sa.literal(1)).select_from(table).limit(1)).first():
            raise DatabaseError(
                f"the target database is not empty (table {table.name} has rows): "
                "restore only into an empty database")
    runs = root / "runs"
    if runs.is_dir() and any(p.is_file() for p in runs.rglob("*")):
        raise DatabaseError(f"the target data directory has run files ({runs}): "
                            "restore only into an empty data directory (--data-dir)")


def insert_rows(conn: sa.Connection, table: sa.Table, rows: Iterator[Sequence[Any]],
                report: Progress = silent, total: int | None = None) -> int:
    """Insert `rows` (value lists in column order, as an archive holds them); returns the
    count. Bulk paths below SQLAlchemy's per-row parameter handling: COPY on PostgreSQL,
    the driver's executemany on SQLite. JSON columns are serialized here as SQLAlchemy
    would (None as JSON null)."""
    positions = json_columns(table)

    def raw(row: Sequence[Any]) -> list[Any]:
        values = list(row)
        for i in positions:
            values[i] = json.dumps(values[i])
        return values

    count = 0
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg":
        columns = ", ".join(f'"{c.name}"' for c in table.columns)
        dbapi: Any = conn.connection.dbapi_connection  # psycopg's, in our transaction
        with dbapi.cursor() as cursor, cursor.copy(
                f'COPY "{table.name}" ({columns}) FROM STDIN') as copy:
            for row in rows:
                copy.write_row(raw(row))
                count += 1
                if count % CHUNK == 0:
                    report(table.name, count, total)
        report(table.name, count, total)
        return count
    columns = ", ".join(f'"{c.name}"' for c in table.columns)
    marks = ", ".join("?" for _c in table.columns)
    statement = f'INSERT INTO "{table.name}" ({columns}) VALUES ({marks})'
    chunk: list[tuple[Any, ...]] = []
    for row in rows:
        chunk.append(tuple(raw(row)))
        if len(chunk) >= CHUNK:
            conn.exec_driver_sql(statement, chunk)
            count += len(chunk)
            chunk = []
            report(table.name, count, total)
    if chunk:
        conn.exec_driver_sql(statement, chunk)
        count += len(chunk)
    report(table.name, count, total)
    return count


def fix_sequences(conn: sa.Connection, tables: Iterable[sa.Table]) -> None:
    """On PostgreSQL, make the next id of each table with a sequence follow its rows."""
    if conn.dialect.name != "postgresql":
        return
    for table in tables:
        col = table.autoincrement_column
        if col is None:
            continue
        conn.execute(sa.text(
            f"SELECT setval(pg_get_serial_sequence(:t, :c), "
            f"COALESCE(MAX({col.name}), 0) + 1, false) FROM {table.name}"),
            {"t": table.name, "c": col.name})


def path_rewriter(table: sa.Table, old_root: str, new_root: str,
                  runs: dict[str, str] | None = None
                  ) -> Callable[[list[Any]], list[Any]] | None:
    """A row transform moving file paths in the table's JSON columns, or None."""
    positions = json_columns(table)
    if not positions or (old_root == new_root and not runs):
        return None

    def transform(row: list[Any]) -> list[Any]:
        for i in positions:
            row[i] = rewrite_paths(row[i], old_root, new_root, runs)
        return row

    return transform


def runs_prefix(root: str) -> str:
    """What every path that `path_rewriter` moves starts with."""
    return root.rstrip("/") + "/runs/"


class StagedFiles:
    """Files written under a hidden folder of the data directory, moved into place by
    `commit()` and taken back out by `undo()` (if the database commit then fails)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.stage = root / f".restore-{secrets.token_hex(6)}"
        self.staged: list[str] = []
        self.moved: list[Path] = []
        self.bytes = 0

    def add(self, relative: str, entry: Any) -> None:
        self.bytes += entry.copy_to(self.stage / relative)
        self.staged.append(relative)

    def commit(self, rename: Callable[[str], str] = lambda r: r) -> None:
        for relative in self.staged:
            target = self.root / rename(relative)
            if target.exists():
                raise DatabaseError(f"{target} appeared during the restore; nothing restored")
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.stage / relative, target)
            self.moved.append(target)

    def undo(self) -> None:
        for target in self.moved:
            with contextlib.suppress(OSError):
                target.unlink()

    def cleanup(self) -> None:
        shutil.rmtree(self.stage, ignore_errors=True)


def restore(db: MephistoDB, path: str | Path, data_dir: str | Path | None = None,
            progress: Progress | None = None) -> BackupSummary:
    """Restore a backup into `db` (empty) and the data directory (no run files): all of
    it, or nothing."""
    started = time.perf_counter()
    report = progress or silent
    root = data_root(data_dir)
    summary = BackupSummary(Path(path))
    with ArchiveReader(path, kind="backup") as reader:
        check_revision(reader)
        manifest = reader.manifest
        old_root = str(manifest.get("data_dir") or root)
        staged = StagedFiles(root)
        try:
            with db.transaction() as conn:
                require_empty(conn, root)
                if conn.dialect.name == "sqlite":  # rows may refer forward (parent tasks)
                    conn.exec_driver_sql("PRAGMA defer_foreign_keys=ON")
                for entry in reader.entries():
                    if entry.kind == "table":
                        table = s.metadata.tables[entry.name]
                        total = manifest["tables"][entry.name]["rows"]
                        rows = entry.rows(path_rewriter(table, old_root, str(root)),
                                          only_if=runs_prefix(old_root))
                        summary.tables[entry.name] = insert_rows(conn, table, rows,
                                                                 report=report, total=total)
                    else:
                        staged.add(entry.name, entry)
                        summary.files += 1
                        report("files", summary.files, manifest["files"]["count"])
                fix_sequences(conn, s.metadata.sorted_tables)
                verify_counts(conn, reader)
                if summary.files != manifest["files"]["count"]:
                    raise ArchiveError(f"{reader.path}: {summary.files} files found, "
                                       f"{manifest['files']['count']} listed")
                staged.commit()
        except BaseException as exc:
            staged.undo()
            refused = as_conflict(db, exc, f"cannot restore {reader.path}")
            if refused is not None:
                raise refused from exc
            raise
        finally:
            staged.cleanup()
    summary.file_bytes = staged.bytes
    summary.archive_bytes = Path(path).stat().st_size
    summary.seconds = time.perf_counter() - started
    return summary


def as_conflict(db: MephistoDB, exc: BaseException, what: str) -> DatabaseError | None:
    """A `DatabaseError` for a constraint the target refused (through SQLAlchemy, or
    straight from the driver on the COPY path), else None."""
    dbapi_error = getattr(db.engine.dialect.loaded_dbapi, "IntegrityError", ())
    cause: BaseException | None = exc
    if isinstance(exc, sa.exc.IntegrityError):
        cause = exc.orig
    elif not isinstance(exc, dbapi_error):
        return None
    text = str(cause).strip()
    detail = text.splitlines()[0] if text else type(cause).__name__
    return DatabaseError(f"{what}: a row conflicts with one in the target ({detail}); "
                         "nothing was changed")


def verify_counts(conn: sa.Connection, reader: ArchiveReader) -> None:
    for name, info in reader.manifest["tables"].items():
        table = s.metadata.tables[name]
        found = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
        if found != info["rows"]:
            raise ArchiveError(f"{reader.path}: table {name} has {found} rows after the "
                               f"restore, {info['rows']} listed; nothing restored")
