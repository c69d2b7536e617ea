"""The file format of backups and task exports: one `.tar.gz`, read and written as a
stream, so a database of any size goes through in constant memory.

Members, in this order:

- `manifest.json`: what the archive holds. `format` ("mephisto-archive"),
  `format_version`, `kind` ("backup" or "export"), `created` (ISO 8601, UTC),
  `alembic_revision`, `source_dialect`, `source_database` (URL, password hidden),
  `data_dir` (the source's data directory), `tables` ({name: {"columns": [...],
  "rows": n, "sha256": hex}}), `files` ({"count": n, "bytes": n}), plus what the kind
  adds (an export names its tasks and its source database).
- `tables/<name>.jsonl`: one JSON array per line, a row's values in the order of
  `columns`, in primary-key order; tables in dependency order (parents first).
- `files/<path>`: data files, `<path>` relative to the data directory
  (`runs/<task_run_id>/<agent_id>/...`).

Values are plain JSON (ids as integers, times as floats, JSON columns as JSON), so an
archive made from SQLite restores into PostgreSQL and the other way round. The manifest
comes first so a reader checks it before touching anything; the row counts and
checksums it lists are checked while the rows stream past.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any, Self

import sqlalchemy as sa

from mephisto.errors import ArchiveError

__all__ = [
    "FORMAT", "FORMAT_VERSION", "ArchiveError", "ArchiveReader", "ArchiveWriter", "Entry",
    "json_columns", "rewrite_paths",
]

FORMAT = "mephisto-archive"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TABLES_DIR = "tables/"
FILES_DIR = "files/"
_COMPRESS_LEVEL = 6  # gzip's 9 is ~3x slower for a few per cent


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# -- writing -------------------------------------------------------------------------------


class ArchiveWriter:
    """Collects tables (spooled to temporary files next to the target, so their counts
    and checksums can go into the manifest that leads the archive) and data files, then
    writes the archive to `path` whole: a failure leaves no partial file behind."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if path.exists():
            raise ArchiveError(f"{path} already exists: choose another file name")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = tempfile.TemporaryDirectory(dir=path.parent, prefix=".mephisto-archive-")
        self.tables: dict[str, dict[str, Any]] = {}
        self._files: list[tuple[str, Path, int]] = []

    def close(self) -> None:
        self._tmp.cleanup()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write_table(self, table: sa.Table, rows: Iterator[Sequence[Any]]) -> int:
        """Spool `rows` (value sequences in the table's column order); returns the count."""
        digest = hashlib.sha256()
        count = 0
        spool = Path(self._tmp.name) / f"{table.name}.jsonl"
        with spool.open("wb") as f:
            for row in rows:
                line = json.dumps(list(row), separators=(",", ":"), ensure_ascii=False)
                data = line.encode() + b"\n"
                digest.update(data)
                f.write(data)
                count += 1
        self.tables[table.name] = {
            "columns": [c.name for c in table.columns], "rows": count,
            "sha256": digest.hexdigest(),
        }
        return count

    def add_file(self, relative: str, source: Path) -> None:
        """A data file, stored as `files/<relative>` (a path under the data directory)."""
        self._files.append((relative, source, source.stat().st_size))

    @property
    def file_bytes(self) -> int:
        return sum(size for _r, _s, size in self._files)

    def finish(self, manifest: dict[str, Any]) -> int:
        """Write the archive: the manifest (with tables and files filled in), tables,
        files. Returns its size in bytes."""
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "created": now_iso(),
            **manifest, "tables": self.tables,
            "files": {"count": len(self._files), "bytes": self.file_bytes},
        }
        part = self.path.with_name(self.path.name + ".part")
        try:
            with tarfile.open(part, "w:gz", compresslevel=_COMPRESS_LEVEL) as tar:
                _add_bytes(tar, MANIFEST, json.dumps(manifest, indent=1).encode())
                for name in self.tables:
                    tar.add(Path(self._tmp.name) / f"{name}.jsonl", f"{TABLES_DIR}{name}.jsonl",
                            recursive=False, filter=_plain)
                for relative, source, _size in self._files:
                    tar.add(source, FILES_DIR + relative, recursive=False, filter=_plain)
            os.replace(part, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                part.unlink()
            raise
        return self.path.stat().st_size


def _plain(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o600
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    info.mode = 0o600
    tar.addfile(info, io.BytesIO(data))


# -- reading -------------------------------------------------------------------------------


@dataclass
class Entry:
    """A member after the manifest: a table (`rows()` streams it, checking its count
    and checksum at the end) or a data file (`copy_to()` writes it out)."""

    kind: str  # "table" or "file"
    name: str  # table name, or file path relative to the data directory
    _reader: ArchiveReader
    _stream: IO[bytes]

    def rows(self, transform: Callable[[list[Any]], list[Any]] | None = None,
             only_if: str | None = None) -> Iterator[list[Any]]:
        """The table's rows, each passed through `transform` (when its line holds
        `only_if`, if given: a cheap test that spares most rows the work)."""
        expected = self._reader.manifest["tables"][self.name]
        digest = hashlib.sha256()
        count = 0
        needle = None if only_if is None else json.dumps(only_if, ensure_ascii=False)[1:-1]
        with self._reader.guard():
            for line in self._stream:
                digest.update(line)
                row = json.loads(line)
                if not isinstance(row, list) or len(row) != len(expected["columns"]):
                    raise ValueError(f"a row of {self.name} does not match its columns")
                count += 1
                if transform is not None and (needle is None or needle.encode() in line):
                    row = transform(row)
                yield row
        if count != expected["rows"] or digest.hexdigest() != expected["sha256"]:
            raise ArchiveError(
                f"{self._reader.path}: table {self.name} is damaged ({count} rows read, "
                f"{expected['rows']} listed, checksum {'ok' if digest.hexdigest() == expected['sha256'] else 'wrong'})")

    def copy_to(self, target: Path) -> int:
        target.parent.mkdir(parents=True, exist_ok=True)
        with self._reader.guard(), target.open("wb") as out:
            shutil.copyfileobj(self._stream, out, 1 << 20)
        return target.stat().st_size


class ArchiveReader:
    """Reads an archive front to back: `manifest` on opening (checked), then `entries()`.
    Every problem of the file itself is an `ArchiveError` naming it."""

    def __init__(self, path: str | Path, kind: str | None = None) -> None:
        self.path = Path(path)
        try:
            self._tar = tarfile.open(self.path, "r|gz")  # noqa: SIM115 - closed by close()
        except (OSError, tarfile.TarError, EOFError, zlib.error) as exc:
            raise ArchiveError(f"cannot read {self.path}: {exc}") from exc
        try:
            self.manifest = self._read_manifest()
            if kind is not None and self.manifest.get("kind") != kind:
                raise ArchiveError(f"{self.path} is a {self.manifest.get('kind')} archive, "
                                   f"not a {kind}")
        except BaseException:
            self._tar.close()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._tar.close()

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Turn errors of reading the file into `ArchiveError`s."""
        try:
            yield
        except (OSError, tarfile.TarError, EOFError, zlib.error, ValueError) as exc:
            raise ArchiveError(f"{self.path} is damaged or not a Mephisto archive: "
                               f"{exc}") from exc

    def _next(self) -> tarfile.TarInfo | None:
        with self.guard():
            return self._tar.next()

    def _read_manifest(self) -> dict[str, Any]:
        member = self._next()
        if member is None or member.name != MANIFEST or not member.isfile():
            raise ArchiveError(f"{self.path} is not a Mephisto archive (no {MANIFEST} first)")
        with self.guard():
            stream = self._tar.extractfile(member)
            assert stream is not None  # a regular file
            manifest = json.loads(stream.read())
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise ArchiveError(f"{self.path} is not a Mephisto archive")
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise ArchiveError(
                f"{self.path} has format version {version!r}; this version of Mephisto "
                f"reads version {FORMAT_VERSION}")
        if not isinstance(manifest.get("tables"), dict):
            raise ArchiveError(f"{self.path}: its manifest lists no tables")
        return manifest

    def entries(self) -> Iterator[Entry]:
        while (member := self._next()) is not None:
            name = member.name
            if not member.isfile():
                raise ArchiveError(f"{self.path}: unexpected member {name!r} (not a file)")
            with self.guard():
                stream = self._tar.extractfile(member)
            assert stream is not None
            if name.startswith(TABLES_DIR) and name.endswith(".jsonl"):
                table = name[len(TABLES_DIR):-len(".jsonl")]
                if table not in self.manifest["tables"]:
                    raise ArchiveError(f"{self.path}: table {table!r} is not in its manifest")
                yield Entry("table", table, self, stream)
            elif name.startswith(FILES_DIR):
                yield Entry("file", safe_relative(name[len(FILES_DIR):], self.path), self,
                            stream)
            else:
                raise ArchiveError(f"{self.path}: unexpected member {name!r}")


def safe_relative(name: str, archive: Path) -> str:
    """`name` if it is a plain relative path (no `..`, not absolute), else an error."""
    pure = PurePosixPath(name)
    if not name or pure.is_absolute() or ".." in pure.parts or "\\" in name or "\0" in name:
        raise ArchiveError(f"{archive}: refusing file path {name!r}")
    return pure.as_posix()


# -- values --------------------------------------------------------------------------------


def json_columns(table: sa.Table) -> list[int]:
    """Positions of the table's JSON columns (those that may hold file paths)."""
    return [i for i, c in enumerate(table.columns) if isinstance(c.type, sa.JSON)]


def rewrite_paths(value: Any, old_root: str, new_root: str,
                  runs: dict[str, str] | None = None) -> Any:
    """`value` (JSON) with every string naming a file under `<old_root>/runs/<run>/`
    moved to `<new_root>/runs/<runs[run] or run>/` (saved uploads are listed in agents'
    outputs by absolute path)."""
    prefix = old_root.rstrip("/") + "/runs/"
    if isinstance(value, str):
        if not value.startswith(prefix):
            return value
        run, sep, rest = value[len(prefix):].partition("/")
        if runs is not None:
            run = runs.get(run, run)
        return f"{new_root.rstrip('/')}/runs/{run}{sep}{rest}"
    if isinstance(value, list):
        return [rewrite_paths(v, old_root, new_root, runs) for v in value]
    if isinstance(value, dict):
        return {k: rewrite_paths(v, old_root, new_root, runs) for k, v in value.items()}
    return value
