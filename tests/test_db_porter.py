"""`mephisto db export|import` (`mephisto/tools/db_porter.py`): one of two completed,
reviewed tasks moves into a database that already has rows of its own (the same
requester and a worker of the same name among them); every id is new, every reference
consistent, nothing duplicated, a second import changes nothing, and a task name the
target has already is refused, merged or renamed as asked."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from backup_data import UPLOAD, all_rows, completed_run, data_files
from click.testing import CliRunner

from mephisto.cli import cli
from mephisto.db import schema as s
from mephisto.db.archive import ArchiveError
from mephisto.db.backup import backup
from mephisto.db.database import MephistoDB
from mephisto.errors import ConfigError, DatabaseError, EntryAlreadyExists, EntryDoesNotExist
from mephisto.testing.db_contract import Run
from mephisto.testing.fixtures import LaunchedRun
from mephisto.tools.db_porter import export_tasks, import_tasks


@pytest.fixture
def source(launch_static_run: Callable[..., LaunchedRun]) -> MephistoDB:
    run_a = completed_run(launch_static_run, "task-a", units=4)
    run_b = completed_run(launch_static_run, "task-b", units=3)
    db = run_b.db
    # records keyed by run and unit ids, as the MTurk provider keeps them
    unit = db.find_units(task_run_id=run_a.task_run_id)[0]
    db.put_provider_record("mturk", f"units:{run_a.task_run_id}", unit.db_id, {"hit": "H1"})
    db.put_provider_record("mturk", f"hits:{run_a.task_run_id}", "H1", {"unit": unit.db_id})
    db.put_provider_record("mturk", "run", run_a.task_run_id, {"hit_type": "A"})
    db.put_provider_record("mturk", "run", run_b.task_run_id, {"hit_type": "B"})
    db.put_provider_record("mturk", "unrelated", "x", {})
    return db


@pytest.fixture
def source_dir(tmp_path: Path) -> Path:
    return tmp_path / "mephisto_data"


@pytest.fixture
def exported(source: MephistoDB, tmp_path: Path) -> Path:
    path = tmp_path / "task-a.tar.gz"
    summary = export_tasks(source, path, ["task-a"])
    assert summary.tables["units"] == 4 and summary.files >= 1
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MephistoDB]:
    """A database with rows of its own: another task with a run and units (so ids
    differ), the mock requester and a worker named like one of the source's."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'target' / 'database.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    db = MephistoDB(url)
    own = Run(db, "their-task")
    for i, unit in enumerate(own.units(5)):
        db.update_agent(own.agent(unit, f"their-{i}"), status="completed")
    db.new_requester("MOCK_REQUESTER", "mock")
    db.new_worker("uploader", "mock")
    db.make_qualification("trusted")
    yield db
    db.shutdown()


def view(db: MephistoDB, task_name: str, data_dir: Path) -> dict[str, Any]:
    """The task's data with every id replaced by what it names (names, tokens, indexes),
    so two databases can be compared whatever their ids."""
    with db.engine.connect() as conn:
        def rows(query: Any) -> list[tuple[Any, ...]]:
            return sorted((tuple(r) for r in conn.execute(query)), key=repr)

        t, r, a, u, ag, w, req = (s.tasks, s.task_runs, s.assignments, s.units, s.agents,
                                  s.workers, s.requesters)
        task = t.c.task_name == task_name
        unit_of = sa.select(u.c.unit_id, a.c.data, u.c.unit_index).join(
            a, a.c.assignment_id == u.c.assignment_id).subquery()
        p, wr, q, g = s.payments, s.worker_review, s.qualifications, s.granted_qualifications
        workers = sa.select(ag.c.worker_id).join(t, t.c.task_id == ag.c.task_id).where(task)
        out = {
            "runs": rows(sa.select(req.c.requester_name, r.c.init_params, r.c.provider_type,
                                   r.c.is_completed).join(t, t.c.task_id == r.c.task_id)
                         .join(req, req.c.requester_id == r.c.requester_id).where(task)),
            "units": rows(sa.select(a.c.data, u.c.unit_index, u.c.status, u.c.pay_amount,
                                    w.c.worker_name, u.c.agent_id)
                          .join(a, a.c.assignment_id == u.c.assignment_id)
                          .join(t, t.c.task_id == u.c.task_id)
                          .outerjoin(w, w.c.worker_id == u.c.worker_id).where(task)),
            "agents": rows(sa.select(ag.c.agent_id, w.c.worker_name, unit_of.c.data,
                                     unit_of.c.unit_index, ag.c.status, ag.c.state)
                           .join(w, w.c.worker_id == ag.c.worker_id)
                           .join(unit_of, unit_of.c.unit_id == ag.c.unit_id)
                           .join(t, t.c.task_id == ag.c.task_id).where(task)),
            "payments": rows(sa.select(p.c.request_token, w.c.worker_name, unit_of.c.data,
                                       p.c.amount, p.c.status, p.c.reason)
                             .join(w, w.c.worker_id == p.c.worker_id)
                             .join(unit_of, unit_of.c.unit_id == p.c.unit_id)
                             .join(u, u.c.unit_id == p.c.unit_id)
                             .join(t, t.c.task_id == u.c.task_id).where(task)),
            "reviews": rows(sa.select(w.c.worker_name, wr.c.agent_id, wr.c.status,
                                      wr.c.review_note, wr.c.bonus, p.c.request_token,
                                      q.c.qualification_name, wr.c.blocked_worker)
                            .join(w, w.c.worker_id == wr.c.worker_id)
                            .join(t, t.c.task_id == wr.c.task_id)
                            .outerjoin(p, p.c.payment_id == wr.c.payment_id)
                            .outerjoin(q, q.c.qualification_id == wr.c.updated_qualification_id)
                            .where(task)),
            "grants": rows(sa.select(w.c.worker_name, q.c.qualification_name, g.c.value)
                           .join(w, w.c.worker_id == g.c.worker_id)
                           .join(q, q.c.qualification_id == g.c.qualification_id)
                           .where(g.c.worker_id.in_(workers))),
            "blocks": rows(sa.select(w.c.worker_name, req.c.requester_name)
                           .join(w, w.c.worker_id == s.worker_blocks.c.worker_id)
                           .join(req, req.c.requester_id == s.worker_blocks.c.requester_id)
                           .where(s.worker_blocks.c.worker_id.in_(workers))),
        }
    # upload paths name the run folder: compare them relative to it
    out["agents"] = [(*row[:5], json.loads(json.dumps(row[5]).replace(str(data_dir), "DATA")))
                     for row in out["agents"]]
    return out


def strip_runs(v: dict[str, Any]) -> str:
    """`v` as text, run folders' ids left out."""
    return re.sub(r"DATA/runs/\d+/", "DATA/runs/N/", json.dumps(v, sort_keys=True, default=str))


def counts(db: MephistoDB) -> dict[str, int]:
    return {k: len(v) for k, v in all_rows(db).items()}


def test_one_task_moves_with_new_ids_and_nothing_duplicated(
    source: MephistoDB, source_dir: Path, exported: Path, target: MephistoDB, tmp_path: Path
) -> None:
    target_dir = tmp_path / "target_data"
    before = counts(target)
    summary = import_tasks(target, exported, data_dir=target_dir)
    assert summary.tasks == ["task-a"]
    assert summary.reused["requesters"] == 1 and summary.reused["workers"] >= 1
    assert summary.reused["qualifications"] == 1
    assert target.find_tasks(task_name="task-b") == []
    got, want = view(target, "task-a", target_dir), view(source, "task-a", source_dir)
    assert strip_runs(got) == strip_runs(want)
    assert got["payments"] and got["reviews"] and got["grants"] and got["blocks"]
    # no duplicates: one requester, one "uploader", one "trusted"
    assert len(target.find_requesters(requester_name="MOCK_REQUESTER")) == 1
    assert len(target.find_workers(worker_name="uploader")) == 1
    assert len(target.find_qualifications(qualification_name="trusted")) == 1
    # the ids are the target's: the imported run is not the source's run 1
    (task,) = target.find_tasks(task_name="task-a")
    (run,) = target.find_task_runs(task_id=task.db_id)
    assert run.db_id != "1"
    # the uploaded file is under the new run and the output names it
    agent_rows = view(target, "task-a", Path("/nowhere"))["agents"]
    paths = [f["path"] for row in agent_rows for f in (row[5].get("outputs") or {}).get("files", [])]
    assert len(paths) == 1 and paths[0].startswith(f"{target_dir}/runs/{run.db_id}/")
    assert Path(paths[0]).read_bytes() == UPLOAD
    # provider records came along with remapped keys (the mock's review and bonus records)
    reviews = target.find_provider_records("mock", "review")
    assert {row[0] for row in agent_rows} & set(reviews)
    blocks = target.find_provider_records("mock", "block")
    assert blocks and all(target.is_worker_blocked(k.split(":")[1], k.split(":")[0])
                          for k in blocks)
    grants = target.find_provider_records("mock", "qualification")
    trusted = target.find_qualifications(qualification_name="trusted")[0].db_id
    assert grants and all(target.get_granted_qualification(trusted, k.split(":")[0])
                          for k in grants)
    assert target.find_provider_records("mturk", "run") == {run.db_id: {"hit_type": "A"}}
    (hit_unit,) = target.find_provider_records("mturk", f"units:{run.db_id}")
    assert target.get_unit(hit_unit)["task_run_id"] == run.db_id
    (source_run,) = source.find_task_runs(task_id=source.find_tasks(task_name="task-a")[0].db_id)
    (source_unit,) = source.find_provider_records("mturk", f"units:{source_run.db_id}")
    assert target.get_unit(hit_unit)["agent_id"] == source.get_unit(source_unit)["agent_id"]
    assert target.find_provider_records("mturk", f"hits:{run.db_id}") == \
        source.find_provider_records("mturk", f"hits:{source_run.db_id}")  # values as they are
    assert target.find_provider_records("mturk", "unrelated") == {}
    assert counts(target)["units"] == before["units"] + 4
    if target.dialect == "sqlite":
        with target.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_key_check").all() == []
    # importing again changes nothing, in the database or the data directory
    rows, files = all_rows(target), data_files(target_dir)
    again = import_tasks(target, exported, data_dir=target_dir)
    assert again.rows == 0 and again.files == 0
    assert all_rows(target) == rows and data_files(target_dir) == files
    Run(target, "later").units(2)  # ids go on after the imported ones


def test_a_task_name_in_use_fails_merges_or_renames(
    source: MephistoDB, exported: Path, tmp_path: Path
) -> None:
    target_dir = tmp_path / "t_data"
    target = MephistoDB(f"sqlite:///{tmp_path / 't.db'}")
    mine = Run(target, "task-a")  # an unrelated task of the same name
    mine.units(2)
    before, files = all_rows(target), data_files(target_dir)
    with pytest.raises(EntryAlreadyExists, match="task 'task-a' already exists.*--on-conflict"):
        import_tasks(target, exported, data_dir=target_dir)
    assert all_rows(target) == before and data_files(target_dir) == files
    assert not list(target_dir.glob(".restore-*")) if target_dir.exists() else True

    renamed = import_tasks(target, exported, "rename", data_dir=target_dir)
    assert renamed.tables["tasks"] == 1
    (copy,) = target.find_tasks(task_name="task-a (imported)")
    assert len(target.find_task_runs(task_id=copy.db_id)) == 1
    after = all_rows(target)
    assert import_tasks(target, exported, "rename", data_dir=target_dir).rows == 0
    assert import_tasks(target, exported, data_dir=target_dir).rows == 0  # known: no conflict
    assert all_rows(target) == after

    merged_db = MephistoDB(f"sqlite:///{tmp_path / 'm.db'}")
    theirs = Run(merged_db, "task-a")
    theirs.units(2)
    import_tasks(merged_db, exported, "merge", data_dir=tmp_path / "m_data")
    (task,) = merged_db.find_tasks(task_name="task-a")
    assert len(merged_db.find_task_runs(task_id=task.db_id)) == 2
    assert len(merged_db.find_units(task_id=task.db_id)) == 2 + 4
    with pytest.raises(ConfigError, match="on_conflict"):
        import_tasks(merged_db, exported, "overwrite")


def test_unknown_tasks_and_bad_files_are_refused(
    source: MephistoDB, exported: Path, tmp_path: Path
) -> None:
    with pytest.raises(EntryDoesNotExist, match="'nope'"):
        export_tasks(source, tmp_path / "x.tar.gz", ["task-a", "nope"])
    assert not (tmp_path / "x.tar.gz").exists()
    assert not list(tmp_path.glob(".mephisto-archive-*"))
    target = MephistoDB(f"sqlite:///{tmp_path / 'empty.db'}")
    before = all_rows(target)
    backup_file = tmp_path / "full.tar.gz"
    backup(source, backup_file)
    with pytest.raises(ArchiveError, match="not a export|is a backup archive"):
        import_tasks(target, backup_file, data_dir=tmp_path / "d")
    damaged = tmp_path / "damaged.tar.gz"
    damaged.write_bytes(exported.read_bytes()[:-200])
    with pytest.raises(ArchiveError):
        import_tasks(target, damaged, data_dir=tmp_path / "d")
    assert all_rows(target) == before and data_files(tmp_path / "d") == {}


def test_the_commands(source: MephistoDB, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "cli.tar.gz"
    result = runner.invoke(cli, ["db", "export", str(out), "--task", "task-b",
                                 "--database", source.url])
    assert result.exit_code == 0, result.output
    assert "Exported 1 task(s) (task-b): 1 runs, 3 units" in result.output
    target_url = f"sqlite:///{tmp_path / 'cli.db'}"
    args = ["db", "import", str(out), "--database", target_url,
            "--data-dir", str(tmp_path / "cli_data")]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "1 new runs, 3 units" in result.output
    result = runner.invoke(cli, args)
    assert result.exit_code == 0 and "0 new runs, 0 units, 0 rows added" in result.output
    mine = MephistoDB(f"sqlite:///{tmp_path / 'mine.db'}")
    Run(mine, "task-b")
    mine.shutdown()
    mine_args = ["db", "import", str(out), "--database", f"sqlite:///{tmp_path / 'mine.db'}",
                 "--data-dir", str(tmp_path / "mine_data")]
    result = runner.invoke(cli, mine_args)
    assert result.exit_code == 1 and "task 'task-b' already exists" in result.output
    result = runner.invoke(cli, [*mine_args, "--on-conflict", "rename"])
    assert result.exit_code == 0 and "1 new runs" in result.output
    result = runner.invoke(cli, ["db", "export", str(tmp_path / "y.tar.gz"), "--task", "zzz",
                                 "--database", source.url])
    assert result.exit_code == 1 and "no task named 'zzz'" in result.output


def test_a_requester_of_the_same_name_on_another_provider_is_refused(
    exported: Path, tmp_path: Path
) -> None:
    target = MephistoDB(f"sqlite:///{tmp_path / 'r.db'}")
    target.new_requester("MOCK_REQUESTER", "prolific")
    before = all_rows(target)
    with pytest.raises(EntryAlreadyExists, match="'MOCK_REQUESTER'.*'prolific'.*'mock'"):
        import_tasks(target, exported, data_dir=tmp_path / "r_data")
    assert all_rows(target) == before and data_files(tmp_path / "r_data") == {}


@pytest.mark.postgres
def test_export_from_postgresql(
    source: MephistoDB, source_dir: Path, tmp_path: Path, postgres_url: str
) -> None:
    """The same export from a PostgreSQL copy of the source (its snapshot) imports the
    same data."""
    full = tmp_path / "full.tar.gz"
    backup(source, full)
    pg = MephistoDB(postgres_url)
    try:
        from mephisto.db.backup import restore

        pg_dir = tmp_path / "pg_data"
        restore(pg, full, pg_dir)
        out = tmp_path / "from_pg.tar.gz"
        export_tasks(pg, out, ["task-b"], pg_dir)
    finally:
        pg.shutdown()
    target_dir = tmp_path / "t_data"
    target = MephistoDB(f"sqlite:///{tmp_path / 't.db'}")
    import_tasks(target, out, data_dir=target_dir)
    assert strip_runs(view(target, "task-b", target_dir)) == \
        strip_runs(view(source, "task-b", source_dir))
    assert len(data_files(target_dir)) == 1


def test_rows_the_target_holds_under_other_ids_are_a_clear_refusal(
    source: MephistoDB, exported: Path, tmp_path: Path
) -> None:
    """A target restored from a backup of the source holds the same agents; merging the
    export into it would make them twice: refused, nothing changed."""
    full = tmp_path / "full.tar.gz"
    backup(source, full)
    copy_dir = tmp_path / "copy"
    copy = MephistoDB(f"sqlite:///{copy_dir / 'database.db'}")
    from mephisto.db.backup import restore

    restore(copy, full, copy_dir)
    before, files = all_rows(copy), data_files(copy_dir)
    with pytest.raises(DatabaseError, match="conflicts with one in the target"):
        import_tasks(copy, exported, "merge", data_dir=copy_dir)
    assert all_rows(copy) == before and data_files(copy_dir) == files


def test_a_later_export_adds_only_the_new_runs(
    source: MephistoDB, exported: Path, tmp_path: Path,
    launch_static_run: Callable[..., LaunchedRun],
) -> None:
    target_dir = tmp_path / "t_data"
    target = MephistoDB(f"sqlite:///{tmp_path / 't.db'}")
    import_tasks(target, exported, data_dir=target_dir)
    before = counts(target)
    completed_run(launch_static_run, "task-a", units=2, prefix="new-")  # a second run
    later = tmp_path / "later.tar.gz"
    export_tasks(source, later, ["task-a"])
    summary = import_tasks(target, later, data_dir=target_dir)
    assert summary.tables["task_runs"] == 1 and summary.tables["units"] == 2
    assert summary.reused["task_runs"] == 1 and summary.reused["units"] == 4
    after = counts(target)
    assert after["units"] == before["units"] + 2 and after["tasks"] == before["tasks"]
    new_run = max(source.find_task_runs(), key=lambda r: int(r.db_id))
    new_workers = {a.worker_id for a in source.find_agents(task_run_id=new_run.db_id)}
    assert len(new_workers) == 2 and after["workers"] == before["workers"] + 2
    (task,) = target.find_tasks(task_name="task-a")
    assert len(target.find_task_runs(task_id=task.db_id)) == 2
    assert len(data_files(target_dir)) == 2  # one upload per run
    assert import_tasks(target, later, data_dir=target_dir).rows == 0


@pytest.mark.parametrize("dropped", ["tables/agents.jsonl", "files/"])
def test_an_export_missing_a_member_is_refused(
    exported: Path, tmp_path: Path, dropped: str
) -> None:
    import io
    import tarfile

    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(exported, "r:gz") as src, tarfile.open(bad, "w:gz") as dst:
        for info in src.getmembers():
            if not info.name.startswith(dropped):
                dst.addfile(info, io.BytesIO(src.extractfile(info).read()))  # type: ignore[union-attr]
    target = MephistoDB(f"sqlite:///{tmp_path / 'b.db'}")
    with pytest.raises(ArchiveError, match="incomplete"):
        import_tasks(target, bad, data_dir=tmp_path / "b_data")
    assert all(not rows for rows in all_rows(target).values())
    assert data_files(tmp_path / "b_data") == {}
