"""`mephisto db backup|restore` (`mephisto/db/backup.py`): a completed, reviewed run
through the mock provider goes into one archive and comes back identical (every row of
every table, every data file's bytes) on SQLite, PostgreSQL and across the two; a target
that is not empty, and archives that are damaged or of another version or schema, are
refused with nothing changed."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from backup_data import all_rows, completed_run, data_files, moved, saved_upload_paths
from click.testing import CliRunner

from mephisto.cli import cli
from mephisto.db import batch
from mephisto.db import schema as s
from mephisto.db.archive import ArchiveError
from mephisto.db.backup import backup, restore
from mephisto.db.database import MephistoDB
from mephisto.db.engine import normalize_url
from mephisto.errors import DatabaseError
from mephisto.testing.fixtures import LaunchedRun


@pytest.fixture
def source(launch_static_run: Callable[..., LaunchedRun], tmp_path: Path) -> LaunchedRun:
    return completed_run(launch_static_run, "backup-task")


@pytest.fixture
def source_dir(tmp_path: Path) -> Path:
    return tmp_path / "mephisto_data"  # conftest's MEPHISTO_DATA_DIR


@pytest.fixture
def archive(source: LaunchedRun, tmp_path: Path) -> Path:
    path = tmp_path / "backup.tar.gz"
    summary = backup(source.db, path)
    assert summary.files >= 1 and summary.tables["units"] == 4
    return path


ENGINES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def sqlite_db(folder: Path) -> MephistoDB:
    return MephistoDB(f"sqlite:///{folder / 'database.db'}")


def assert_same(source: MephistoDB, source_dir: Path, target: MephistoDB,
                target_dir: Path) -> None:
    expected = moved(all_rows(source), source_dir, target_dir)
    got = all_rows(target)
    for name in expected:
        assert got[name] == expected[name], name
    assert data_files(target_dir) == data_files(source_dir)


def test_the_data_is_realistic(source: LaunchedRun, source_dir: Path) -> None:
    rows = all_rows(source.db)
    for table in ("units", "agents", "workers", "worker_review", "payments",
                  "granted_qualifications", "worker_blocks", "provider_records"):
        assert rows[table], table
    (upload,) = saved_upload_paths(source.db)
    assert upload.startswith(str(source_dir)) and Path(upload).read_bytes()


def test_sqlite_backup_restores_into_a_fresh_sqlite_data_dir(
    source: LaunchedRun, source_dir: Path, archive: Path, tmp_path: Path
) -> None:
    target_dir = tmp_path / "restored"
    target = sqlite_db(target_dir)
    summary = restore(target, archive, target_dir)
    assert summary.tables == {k: len(v) for k, v in all_rows(source.db).items()}
    assert_same(source.db, source_dir, target, target_dir)
    (upload,) = saved_upload_paths(target)  # the output names the restored file
    assert upload.startswith(str(target_dir)) and Path(upload).is_file()
    assert not list(target_dir.glob(".restore-*"))
    target.new_worker("after-restore", "mock")  # ids go on after the restored ones


@pytest.mark.postgres
def test_postgresql_round_trip_and_back_to_sqlite(
    source: LaunchedRun, source_dir: Path, archive: Path, tmp_path: Path, postgres_url: str
) -> None:
    pg_dir = tmp_path / "pg_data"
    pg = MephistoDB(postgres_url)
    try:
        restore(pg, archive, pg_dir)  # SQLite -> PostgreSQL
        assert_same(source.db, source_dir, pg, pg_dir)
        before = {k: len(v) for k, v in all_rows(pg).items()}
        worker = pg.new_worker("after-restore", "mock")  # the sequences were moved on
        assert int(worker) > max(k[0] for k in all_rows(source.db)["workers"])
        with pg.engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM workers WHERE worker_name = 'after-restore'"))
        # PostgreSQL -> PostgreSQL (a second schema) and PostgreSQL -> SQLite
        pg_archive = tmp_path / "from_pg.tar.gz"
        backup(pg, pg_archive, pg_dir)
        with second_schema(postgres_url) as url2:
            pg2_dir = tmp_path / "pg2_data"
            pg2 = MephistoDB(url2)
            try:
                restore(pg2, pg_archive, pg2_dir)
                assert_same(pg, pg_dir, pg2, pg2_dir)
            finally:
                pg2.shutdown()
        back_dir = tmp_path / "back"
        back = sqlite_db(back_dir)
        restore(back, pg_archive, back_dir)
        assert_same(source.db, source_dir, back, back_dir)
        assert {k: len(v) for k, v in all_rows(back).items()} == before
    finally:
        pg.shutdown()


class second_schema:
    """Another empty schema on the server of `url` (the fixture gives one per test)."""

    def __init__(self, url: str) -> None:
        self.base = url.split("?")[0]
        self.schema = "t_" + uuid.uuid4().hex[:12]
        self.admin = sa.create_engine(normalize_url(self.base), isolation_level="AUTOCOMMIT")

    def __enter__(self) -> str:
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{self.schema}"'))
        return f"{self.base}?options=-csearch_path%3D{self.schema}"

    def __exit__(self, *exc: object) -> None:
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{self.schema}" CASCADE'))
        self.admin.dispose()


# -- refusals: nothing changes ---------------------------------------------------------------


def test_a_target_with_rows_is_refused_and_kept(archive: Path, tmp_path: Path) -> None:
    target_dir = tmp_path / "busy"
    target = sqlite_db(target_dir)
    target.new_project("mine")
    before = all_rows(target)
    with pytest.raises(DatabaseError, match="not empty.*projects"):
        restore(target, archive, target_dir)
    assert all_rows(target) == before
    assert data_files(target_dir) == {} and not list(target_dir.glob(".restore-*"))


def test_a_data_dir_with_run_files_is_refused_and_kept(archive: Path, tmp_path: Path) -> None:
    target_dir = tmp_path / "busy"
    (target_dir / "runs" / "9").mkdir(parents=True)
    (target_dir / "runs" / "9" / "keep.txt").write_text("mine")
    target = sqlite_db(tmp_path / "db")
    with pytest.raises(DatabaseError, match="run files"):
        restore(target, archive, target_dir)
    assert all(not rows for rows in all_rows(target).values())
    assert data_files(target_dir) == {"runs/9/keep.txt": b"mine"}


def rewrite(archive: Path, out: Path, manifest: Callable[[dict[str, Any]], None] | None = None,
            member: Callable[[str, bytes], bytes] | None = None) -> Path:
    """A copy of `archive` with its manifest or members changed, still a valid .tar.gz."""
    with tarfile.open(archive, "r:gz") as src, tarfile.open(out, "w:gz") as dst:
        for info in src.getmembers():
            data = src.extractfile(info).read()  # type: ignore[union-attr]
            if info.name == "manifest.json" and manifest:
                m = json.loads(data)
                manifest(m)
                data = json.dumps(m).encode()
            elif member:
                data = member(info.name, data)
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))
    return out


def _truncated(archive: Path, out: Path) -> Path:
    out.write_bytes(archive.read_bytes()[: archive.stat().st_size * 2 // 3])
    return out


def _flipped(archive: Path, out: Path) -> Path:
    data = bytearray(archive.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 40):
        data[i] ^= 0x5A
    out.write_bytes(bytes(data))
    return out


def _not_gzip(archive: Path, out: Path) -> Path:
    out.write_bytes(b"this is not an archive\n" * 10)
    return out


def _bad_rows(archive: Path, out: Path) -> Path:
    def change(name: str, data: bytes) -> bytes:
        return data.replace(b'"mock"', b'"m0ck"') if name == "tables/units.jsonl" else data
    return rewrite(archive, out, member=change)


def _dropped_row(archive: Path, out: Path) -> Path:
    def change(name: str, data: bytes) -> bytes:
        return b"".join(data.splitlines(True)[:-1]) if name == "tables/agents.jsonl" else data
    return rewrite(archive, out, member=change)


def _gzip_only(archive: Path, out: Path) -> Path:
    out.write_bytes(gzip.compress(b"{}"))
    return out


@pytest.mark.parametrize(("damage", "words"), [
    (_truncated, "damaged|cannot read"),
    (_flipped, "damaged|cannot read"),
    (_not_gzip, "cannot read|not a Mephisto"),
    (_gzip_only, "cannot read|not a Mephisto|damaged"),
    (_bad_rows, "table units is damaged"),
    (_dropped_row, "table agents is damaged"),
    (lambda a, o: rewrite(a, o, manifest=lambda m: m.update(format_version=99)),
     "format version 99"),
    (lambda a, o: rewrite(a, o, manifest=lambda m: m.update(alembic_revision="0001")),
     "revision '0001'.*at '0"),
    (lambda a, o: rewrite(a, o, manifest=lambda m: m.update(kind="export")), "not a backup"),
    (lambda a, o: rewrite(a, o, member=lambda n, d: d,
                          manifest=lambda m: m["files"].update(count=5)), "5 listed"),
])
def test_a_bad_archive_is_refused_and_the_target_stays_empty(
    archive: Path, tmp_path: Path, damage: Callable[[Path, Path], Path], words: str
) -> None:
    bad = damage(archive, tmp_path / "bad.tar.gz")
    target_dir = tmp_path / "target"
    target = sqlite_db(target_dir)
    with pytest.raises(ArchiveError, match=words):
        restore(target, bad, target_dir)
    assert all(not rows for rows in all_rows(target).values())
    assert data_files(target_dir) == {} and not list(target_dir.glob(".restore-*"))
    restore(target, archive, target_dir)  # and the good one still goes in


def test_a_path_of_an_archive_cannot_escape_the_data_dir(archive: Path, tmp_path: Path) -> None:
    bad = tmp_path / "escape.tar.gz"
    with tarfile.open(archive, "r:gz") as src, tarfile.open(bad, "w:gz") as dst:
        for info in src.getmembers():
            data = src.extractfile(info).read()  # type: ignore[union-attr]
            if info.name.startswith("files/"):
                info.name = "files/../../evil.txt"
            dst.addfile(info, io.BytesIO(data))
    target = sqlite_db(tmp_path / "t")
    with pytest.raises(ArchiveError, match="refusing file path"):
        restore(target, bad, tmp_path / "t")
    assert not (tmp_path / "evil.txt").exists()


def test_backup_never_overwrites(archive: Path, source: LaunchedRun) -> None:
    before = archive.read_bytes()
    with pytest.raises(ArchiveError, match="already exists"):
        backup(source.db, archive)
    assert archive.read_bytes() == before


# -- the command -------------------------------------------------------------------------------


def test_the_commands(source: LaunchedRun, source_dir: Path, tmp_path: Path,
                      monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    monkeypatch.setenv("MEPHISTO_DATABASE_URL", source.db.url)
    out = tmp_path / "cli.tar.gz"
    result = runner.invoke(cli, ["db", "backup", str(out)])
    assert result.exit_code == 0, result.output
    assert "Backed up" in result.output and f"{len(s.metadata.tables)} tables" in result.output
    monkeypatch.delenv("MEPHISTO_DATABASE_URL")
    target_dir = tmp_path / "cli_target"
    result = runner.invoke(cli, ["db", "restore", str(out), "--data-dir", str(target_dir)])
    assert result.exit_code == 0, result.output
    assert "Restored" in result.output
    assert_same(source.db, source_dir, sqlite_db(target_dir), target_dir)
    result = runner.invoke(cli, ["db", "restore", str(out), "--data-dir", str(target_dir)])
    assert result.exit_code == 1 and "not empty" in result.output
    result = runner.invoke(cli, ["db", "restore", str(tmp_path / "missing.tar.gz"),
                                 "--data-dir", str(tmp_path / "x")])
    assert result.exit_code == 1 and "cannot read" in result.output


@pytest.mark.parametrize("engine", ENGINES)
def test_a_backup_is_one_moment_while_others_write(
    archive: Path, tmp_path: Path, engine: str, request: pytest.FixtureRequest
) -> None:
    """Rows committed by another connection while the backup runs are not in it (and
    the tables it holds agree with each other)."""
    if engine == "sqlite":
        live_dir, db = tmp_path / "live", sqlite_db(tmp_path / "live")
    else:
        live_dir, db = tmp_path / "live", MephistoDB(request.getfixturevalue("postgres_url"))
    try:
        restore(db, archive, live_dir)
        before = all_rows(db)
        run_id = next(iter(before["task_runs"]))[0]
        writes: list[str] = []

        def write_meanwhile(what: str, done: int, total: int | None) -> None:
            if what == "qualifications" and not writes:  # after the first table was read
                writes.append(db.new_worker("late-worker", "mock"))
                writes.append(db.make_qualification("late-qual"))
                db.new_project("late-project")
                batch.new_assignments_with_units(db, str(run_id), [{"shared": {},
                                                 "unit_data": [{}]}], pay_amount=0.1)

        snap = tmp_path / "during.tar.gz"
        backup(db, snap, live_dir, progress=write_meanwhile)
        assert writes
        assert len(all_rows(db)["units"]) == len(before["units"]) + 1
        again_dir = tmp_path / "again"
        again = sqlite_db(again_dir)
        restore(again, snap, again_dir)
        assert all_rows(again) == moved(before, live_dir, again_dir)
    finally:
        db.shutdown()


@pytest.mark.parametrize("engine", ENGINES)
def test_an_archive_breaking_a_constraint_is_refused(
    archive: Path, tmp_path: Path, engine: str, request: pytest.FixtureRequest
) -> None:
    """A well-formed archive whose rows break a constraint (a worker twice, its counts
    and checksum made to match) is a clear error, with nothing restored."""
    import hashlib

    doubled: dict[str, bytes] = {}

    def change(name: str, data: bytes) -> bytes:
        if name == "tables/workers.jsonl":
            data = data + data.splitlines(True)[0]
            doubled["data"] = data
        return data

    step = rewrite(archive, tmp_path / "step.tar.gz", member=change)
    bad = rewrite(step, tmp_path / "bad.tar.gz", manifest=lambda m: m["tables"]["workers"].update(
        rows=m["tables"]["workers"]["rows"] + 1,
        sha256=hashlib.sha256(doubled["data"]).hexdigest()))
    url = (f"sqlite:///{tmp_path / 'c' / 'database.db'}" if engine == "sqlite"
           else request.getfixturevalue("postgres_url"))
    target = MephistoDB(url)
    try:
        with pytest.raises(DatabaseError, match="conflicts with one in the target"):
            restore(target, bad, tmp_path / "c")
        assert all(not rows for rows in all_rows(target).values())
        assert data_files(tmp_path / "c") == {}
    finally:
        target.shutdown()
