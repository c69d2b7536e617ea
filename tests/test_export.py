"""`mephisto export` (`tools/export.py`, `db/export_query.py`, `tools/export_command.py`):
records read back match the database, filters select exactly their units, bad input
writes nothing, memory stays flat, SQLite and PostgreSQL alike."""

from __future__ import annotations

import csv
import io
import json
import os
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from export_data import build, inputs_of, outputs_of

from mephisto.cli import cli
from mephisto.db import schema as s
from mephisto.db.database import MephistoDB
from mephisto.errors import EntryDoesNotExist, MephistoError, UnknownStatus
from mephisto.testing.db_contract import Run
from mephisto.tools import export as export_module
from mephisto.tools.export import ExportFilter, export_to_file, export_units


def expected(db: MephistoDB) -> dict[str, dict[str, Any]]:
    """What the database says of every unit, through MephistoDB's own calls."""
    units = {u.db_id: u for u in db.find_units()}
    agents = {a.db_id: a for a in db.find_agents()}
    latest: dict[str, dict[str, Any]] = {}
    for review in db.find_worker_reviews():  # oldest first: the last one wins
        latest[review["unit_id"]] = review
    paid: dict[str, float] = {}
    for payment in db.find_payments():
        if payment.status == "paid":
            paid[payment.unit_id] = paid.get(payment.unit_id, 0.0) + payment.amount
    out = {}
    for unit_id, unit in units.items():
        agent = agents.get(unit.agent_id) if unit.agent_id else None
        out[unit_id] = {
            "unit_status": unit.db_status, "agent_id": unit.agent_id,
            "assignment_id": unit.assignment_id, "task_run_id": unit.task_run_id,
            "agent_status": agent.db_status if agent else None,
            "worker_id": agent.worker_id if agent else None,
            "outputs": agent.state.outputs if agent else None,
            "review": latest.get(unit_id), "bonus_paid": paid.get(unit_id, 0.0),
        }
    return out


def check_records(db: MephistoDB, records: list[dict[str, Any]], n: int) -> None:
    want = expected(db)
    assert len(records) == len(want) == n
    assert [r["unit_id"] for r in records] == sorted(want, key=int)
    for i, record in enumerate(records):
        exp = want[record["unit_id"]]
        for name in ("unit_status", "agent_id", "assignment_id", "task_run_id",
                     "agent_status", "worker_id", "outputs", "bonus_paid"):
            assert record[name] == exp[name], (record["unit_id"], name)
        assert record["inputs"] == inputs_of(i)
        if exp["outputs"] is not None:
            assert record["outputs"] == outputs_of(i)
            assert record["duration"] == 30.0
        review = exp["review"]
        if review is None:
            assert record["review"] is None
        else:
            assert record["review"]["note"] == review["review_note"]
            assert record["review"]["bonus"] == review["bonus"]
            assert record["review"]["status"] == review["status"]


def parse_csv(text: str) -> list[dict[str, Any]]:
    """CSV rows back into records: dotted columns nested again, JSON cells decoded."""
    records = []
    for row in csv.DictReader(io.StringIO(text, newline="")):
        record: dict[str, Any] = {}
        for column, cell in row.items():
            value: Any = None if cell == "" else cell
            if column in ("inputs.n", "outputs.score", "outputs.tags", "outputs.detail.confident",
                          "review.bonus", "bonus_paid", "duration") and value is not None:
                value = json.loads(value)
            target = record
            *parents, leaf = column.split(".")
            for part in parents:
                target = target.setdefault(part, {})
            target[leaf] = value
        for name in ("inputs", "outputs", "review"):
            if name not in record or all(v is None for v in _leaves(record[name])):
                record[name] = None
        records.append(record)
    return records


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in _leaves(v)]
    return [value]


def round_trip(db: MephistoDB, tmp_path: Path, n: int, reviews: int) -> None:
    build(db, n, reviews=reviews)
    tmp_path = tmp_path / "exports"
    tmp_path.mkdir()
    assert len(db.find_worker_reviews()) > reviews  # some units reviewed twice
    jsonl = tmp_path / "out.jsonl"
    assert export_to_file(db, "jsonl", jsonl) == n
    check_records(db, [json.loads(line) for line in jsonl.read_text("utf-8").splitlines()], n)
    table = tmp_path / "out.csv"
    assert export_to_file(db, "csv", table) == n
    text = table.read_text("utf-8")
    header = text.split("\n", 1)[0].split(",")
    assert {"inputs.text", "inputs.meta.lang", "outputs.answer", "outputs.detail.confident",
            "review.note", "review.bonus"} <= set(header)
    assert "outputs" not in header and "inputs" not in header
    check_records(db, parse_csv(text), n)
    assert sorted(os.listdir(tmp_path)) == ["out.csv", "out.jsonl"]


def test_round_trip_of_10000_units_sqlite(mephisto_db: MephistoDB, tmp_path: Path) -> None:
    round_trip(mephisto_db, tmp_path, 10_000, reviews=240)


def test_round_trip_postgres(postgres_url: str, tmp_path: Path) -> None:
    db = MephistoDB(postgres_url)
    try:
        round_trip(db, tmp_path, 1_500, reviews=60)
    finally:
        db.shutdown()


def test_a_unit_reviewed_twice_shows_its_latest_review_and_both_bonuses(
    mephisto_db: MephistoDB
) -> None:
    build(mephisto_db, 10, reviews=1)  # unit 5: approved with $0.50, then a $0.25 bonus
    records = [json.loads(x) for x in _export(mephisto_db, "jsonl").splitlines()]
    (reviewed,) = [r for r in records if r["review"] is not None]
    assert reviewed["unit_status"] == "accepted" and reviewed["agent_status"] == "approved"
    assert reviewed["review"]["note"] == "an extra thank-you"
    assert reviewed["review"]["bonus"] == 0.25 and reviewed["review"]["status"] is None
    assert reviewed["bonus_paid"] == 0.75 and reviewed["bonus_unpaid"] == 0.0


def _export(db: MephistoDB, fmt: str, flt: ExportFilter | None = None, **kw: Any) -> str:
    out = io.StringIO()
    export_units(db, fmt, out, flt, **kw)
    return out.getvalue()


def peak_bytes(db: MephistoDB, fmt: str, run_id: str) -> int:
    with open(os.devnull, "w", encoding="utf-8") as sink:
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            export_units(db, fmt, sink, ExportFilter(run_ids=[run_id]))
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_memory_stays_flat(mephisto_db: MephistoDB, fmt: str,
                           capsys: pytest.CaptureFixture[str]) -> None:
    db = mephisto_db
    small = build(db, 2_000, name="small").run.task_run_id
    large = build(db, 10_000, name="large").run.task_run_id
    peak_small, peak_large = peak_bytes(db, fmt, small), peak_bytes(db, fmt, large)
    with capsys.disabled():
        print(f"\n{fmt}: peak traced memory 2,000 units {peak_small / 1e6:.2f} MB, "
              f"10,000 units {peak_large / 1e6:.2f} MB")
    assert peak_large < 2 * peak_small + 512 * 1024


# -- filters -----------------------------------------------------------------------------


@pytest.fixture
def three_runs(mephisto_db: MephistoDB) -> dict[str, Any]:
    """Task a with runs 1 (30 units) and 2 (20), task b with run 3 (20); the agents of
    run 1 were created a minute apart from 2023-11-14 22:13:20 UTC (1,700,000,000)."""
    db = mephisto_db
    a1 = build(db, 30, name="task-a")
    run2 = Run.__new__(Run)
    run2.db, run2.task_id, run2.requester_id = db, a1.run.task_id, a1.run.requester_id
    run2.task_run_id = db.new_task_run(a1.run.task_id, a1.run.requester_id, "{}", "mock", "mock")
    a2 = build(db, 20, name="task-a", run=run2)
    b3 = build(db, 20, name="task-b")
    with db.transaction() as conn:
        for i, unit_id in enumerate(a1.unit_ids):
            conn.execute(s.agents.update().where(s.agents.c.unit_id == int(unit_id))
                         .values(creation_date=1_700_000_000 + 60 * i))
    return {"a1": a1, "a2": a2, "b3": b3}


def ids(db: MephistoDB, flt: ExportFilter) -> list[str]:
    return [json.loads(x)["unit_id"] for x in _export(db, "jsonl", flt).splitlines()]


def test_filters_select_exactly_their_units(mephisto_db: MephistoDB,
                                            three_runs: dict[str, Any]) -> None:
    db = mephisto_db
    a1, a2, b3 = three_runs["a1"], three_runs["a2"], three_runs["b3"]
    assert ids(db, ExportFilter()) == a1.unit_ids + a2.unit_ids + b3.unit_ids
    assert ids(db, ExportFilter(task_names=["task-a"])) == a1.unit_ids + a2.unit_ids
    assert ids(db, ExportFilter(task_names=["task-b", "task-a"])) == ids(db, ExportFilter())
    assert ids(db, ExportFilter(run_ids=[a2.run.task_run_id])) == a2.unit_ids
    assert ids(db, ExportFilter(task_names=["task-a"], run_ids=[a1.run.task_run_id])) == \
        a1.unit_ids
    by_status = {u.db_id for u in db.find_units(status=["expired", "assigned"])}
    assert set(ids(db, ExportFilter(statuses=["expired", "assigned"]))) == by_status
    assert len(by_status) == 14  # 7 of each 70 units
    launched_b = [u.db_id for u in db.find_units(task_run_id=b3.run.task_run_id,
                                                 status="launched")]
    assert ids(db, ExportFilter(run_ids=[b3.run.task_run_id], statuses=["launched"])) == \
        launched_b
    # a time window: units whose worker took them then (run 1's agents: a minute apart)
    taken = [u for u in a1.unit_ids if db.get_unit(u)["agent_id"]]
    since, until = 1_700_000_000 + 60 * 10, 1_700_000_000 + 60 * 20
    window = [u for i, u in enumerate(a1.unit_ids)
              if u in taken and since <= 1_700_000_000 + 60 * i <= until]
    assert ids(db, ExportFilter(since=since, until=until)) == window
    assert ids(db, ExportFilter(until=until)) == [
        u for i, u in enumerate(a1.unit_ids) if u in taken and i <= 20]
    assert ids(db, ExportFilter(statuses=["launched"], since=0)) == []  # never taken


@pytest.mark.parametrize(("flt", "error", "words"), [
    (ExportFilter(task_names=["nope"]), EntryDoesNotExist, "no task named 'nope'"),
    (ExportFilter(run_ids=["999"]), EntryDoesNotExist, "no task run 999"),
    (ExportFilter(run_ids=["x1"]), MephistoError, "positive whole number"),
    (ExportFilter(statuses=["done"]), UnknownStatus, "not a unit status"),
    (ExportFilter(statuses=["mixed"]), MephistoError, "never a unit's"),
    (ExportFilter(since=10.0, until=5.0), MephistoError, "since is after until"),
    (ExportFilter(since=float("nan")), MephistoError, "UNIX seconds"),
])
def test_bad_filters_are_errors_and_write_nothing(
    mephisto_db: MephistoDB, tmp_path: Path, flt: ExportFilter, error: type[Exception],
    words: str
) -> None:
    build(mephisto_db, 5)
    target = tmp_path / "out" / "data.jsonl"
    target.parent.mkdir()
    with pytest.raises(error, match=words):
        export_to_file(mephisto_db, "jsonl", target, flt)
    assert os.listdir(target.parent) == []
    out = io.StringIO()
    with pytest.raises(error, match=words):
        export_units(mephisto_db, "jsonl", out, flt)
    assert out.getvalue() == ""


def test_a_run_of_another_task_is_an_error(mephisto_db: MephistoDB,
                                           three_runs: dict[str, Any]) -> None:
    with pytest.raises(EntryDoesNotExist, match="is not a run of 'task-b'"):
        ids(mephisto_db, ExportFilter(task_names=["task-b"],
                                      run_ids=[three_runs["a1"].run.task_run_id]))


def test_a_failure_midway_keeps_the_old_file_and_leaves_no_temporary_file(
    mephisto_db: MephistoDB, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build(mephisto_db, 3000)
    tmp_path = tmp_path / "exports"
    tmp_path.mkdir()
    target = tmp_path / "data.csv"
    target.write_text("the previous export\n")
    real = export_module.iter_units

    def failing(*args: Any, **kwargs: Any) -> Any:
        for k, record in enumerate(real(*args, **kwargs)):
            if k == 2500:
                raise MephistoError("the database went away")
            yield record

    monkeypatch.setattr(export_module, "iter_units", failing)
    with pytest.raises(MephistoError, match="went away"):
        export_to_file(mephisto_db, "csv", target)
    assert os.listdir(tmp_path) == ["data.csv"]
    assert target.read_text() == "the previous export\n"


def test_output_paths_that_cannot_be_written(mephisto_db: MephistoDB, tmp_path: Path) -> None:
    tmp_path = tmp_path / "exports"
    tmp_path.mkdir()
    with pytest.raises(MephistoError, match="is a directory"):
        export_to_file(mephisto_db, "jsonl", tmp_path)
    with pytest.raises(MephistoError, match="no directory"):
        export_to_file(mephisto_db, "jsonl", tmp_path / "missing" / "x.jsonl")
    with pytest.raises(MephistoError, match="unknown export format 'xml'"):
        export_to_file(mephisto_db, "xml", tmp_path / "x.xml")
    assert os.listdir(tmp_path) == []


def test_an_empty_export(mephisto_db: MephistoDB) -> None:
    assert _export(mephisto_db, "jsonl") == ""
    header = _export(mephisto_db, "csv").strip().split(",")
    assert header[0] == "unit_id" and "review.note" in header


def test_a_csv_column_for_every_shape_of_value(mephisto_db: MephistoDB) -> None:
    built = build(mephisto_db, 10)
    with mephisto_db.transaction() as conn:  # outputs of another shape on one unit
        conn.execute(s.agents.update().where(s.agents.c.unit_id == int(built.unit_ids[5]))
                     .values(state={"outputs": {"answer": {"nested": [1, 2]}, "new": None}}))
    rows = list(csv.DictReader(io.StringIO(_export(mephisto_db, "csv"))))
    assert rows[5]["outputs.answer.nested"] == "[1, 2]" and rows[5]["outputs.new"] == ""
    assert rows[5]["outputs.answer"] == "" and rows[4]["outputs.answer"] == "answer 4"


def test_too_many_csv_columns_suggest_json_lines(
    mephisto_db: MephistoDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    build(mephisto_db, 10)
    monkeypatch.setattr(export_module, "MAX_CSV_COLUMNS", 3)
    with pytest.raises(MephistoError, match="--format jsonl"):
        _export(mephisto_db, "csv")


# -- the command -------------------------------------------------------------------------


@pytest.mark.parametrize("to_stdout", [[], ["-o", "-"]])
def test_command_writes_to_stdout_and_the_summary_to_stderr(
    mephisto_db: MephistoDB, to_stdout: list[str]
) -> None:
    built = build(mephisto_db, 40, reviews=6)
    result = CliRunner().invoke(cli, ["export", "--database", mephisto_db.url, *to_stdout,
                                      "--status", "ACCEPTED", "--status", "rejected"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert {r["unit_status"] for r in records} == {"accepted", "rejected"}
    assert len(records) == 4 and all(r["unit_id"] in built.unit_ids for r in records)
    assert result.stderr.strip() == "exported 4 units to standard output"


def test_command_writes_a_file_in_the_format_of_its_name(
    mephisto_db: MephistoDB, tmp_path: Path
) -> None:
    built = build(mephisto_db, 30)
    target = tmp_path / "units.csv"
    result = CliRunner().invoke(cli, ["export", "--database", mephisto_db.url, "-o",
                                      str(target), "--run", built.run.task_run_id,
                                      "--since", "2000-01-01", "--until",
                                      "2100-01-01T00:00:00+02:00"])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert result.stderr.strip() == f"exported 21 units to {target}"  # 3 in 10 never taken
    with target.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 21 and rows[0]["task_name"] == "task-a"


@pytest.mark.parametrize(("args", "code", "words"), [
    (["--task", "nope"], 1, "no task named 'nope'"),
    (["--run", "77"], 1, "no task run 77"),
    (["--run", "abc"], 2, "'abc' is not a valid integer"),
    (["--run", "0"], 2, "0 is not in the range x>=1"),
    (["--status", "done"], 2, "'done' is not one of"),
    (["--since", "yesterday"], 2, "not a date: use ISO 8601"),
    (["--since", "2026-02-01", "--until", "2026-01-01"], 2, "--since is after --until"),
    (["--format", "xml"], 2, "'xml' is not one of"),
])
def test_command_refuses_bad_input_and_writes_nothing(
    mephisto_db: MephistoDB, tmp_path: Path, args: list[str], code: int, words: str
) -> None:
    build(mephisto_db, 5)
    tmp_path = tmp_path / "exports"
    tmp_path.mkdir()
    target = tmp_path / "out.jsonl"
    result = CliRunner().invoke(cli, ["export", "--database", mephisto_db.url, "-o",
                                      str(target), *args])
    assert result.exit_code == code, result.output
    assert words in " ".join(result.stderr.split()), result.stderr
    assert result.stdout == ""
    assert os.listdir(tmp_path) == []


def test_exported_times_are_units_taken_then(mephisto_db: MephistoDB) -> None:
    built = build(mephisto_db, 4)
    with mephisto_db.read() as conn:
        created = conn.execute(sa.select(s.agents.c.creation_date)
                               .where(s.agents.c.unit_id == int(built.unit_ids[3]))).scalar()
    (record,) = [json.loads(x) for x in _export(mephisto_db, "jsonl").splitlines()
                 if json.loads(x)["unit_id"] == built.unit_ids[3]]
    assert record["accepted_at"] == created
    assert record["started_at"] == 1e9 + 3 and record["submitted_at"] is None
    assert record["unit_status"] == "assigned" and record["agent_status"] == "in task"


def test_small_chunks_and_gaps_give_the_same_units(mephisto_db: MephistoDB) -> None:
    db = mephisto_db
    first = build(db, 25, name="task-a")
    build(db, 40, name="task-b")
    again = build(db, 12, name="task-a", run=first.run)  # run 1's ids now have a gap
    run_ids = first.unit_ids + again.unit_ids
    flt = ExportFilter(run_ids=[first.run.task_run_id])
    for chunk in (1, 3, 10, 1000):
        assert [json.loads(x)["unit_id"] for x in
                _export(db, "jsonl", flt, chunk=chunk).splitlines()] == run_ids, chunk
        assert _export(db, "csv", flt, chunk=chunk) == _export(db, "csv", flt)
    completed = ExportFilter(run_ids=[first.run.task_run_id], statuses=["completed"])
    want = [u.db_id for u in db.find_units(task_run_id=first.run.task_run_id,
                                           status="completed")]
    assert [json.loads(x)["unit_id"] for x in
            _export(db, "jsonl", completed, chunk=4).splitlines()] == want


def test_inputs_are_the_shared_data_with_the_units_own_on_top() -> None:
    from mephisto.db.export_query import unit_inputs

    data = {"shared": {"text": "t", "k": 1}, "unit_data": [{"k": 2}, {"extra": True}]}
    assert unit_inputs(data, 0) == {"text": "t", "k": 2}
    assert unit_inputs(data, 1) == {"text": "t", "k": 1, "extra": True}
    assert unit_inputs(data, 5) == unit_inputs(data, -1) == {"text": "t", "k": 1}
    assert unit_inputs({"plain": 1}, 0) == {"plain": 1}
    assert unit_inputs({"shared": "s", "unit_data": []}, 0) == "s"
