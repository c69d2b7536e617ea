"""Export collected data: one record per unit, as JSON Lines or CSV, streamed.

    with open("out.jsonl", "w") as f:
        export_units(db, "jsonl", f, ExportFilter(task_names=["my-task"]))
    export_to_file(db, "csv", Path("out.csv"))     # written whole or not at all

A record has the unit's ids (unit, assignment, run, task, agent, worker), the worker's
provider name, the provider, the unit's and the agent's status, the reward, times in
UNIX seconds (`created_at`: the unit; `accepted_at`: its worker took it; `started_at`,
`submitted_at` and `duration` from the agent's saved times; `updated_at`: the agent's
last change), the latest review (`review`: status, note, bonus, blocked_worker, time),
bonus dollars paid and not yet paid, and the data: `inputs` (what the worker was given)
and `outputs` (what they submitted). Units are read in chunks (`db/export_query.py`),
so memory stays flat however many there are.

JSON Lines keeps nested values as JSON. CSV flattens nested objects into dotted columns
(`inputs.text`, `outputs.answer`, `review.note`); lists and other non-text values are
JSON in their cell, missing values are empty. A CSV file's header comes first, so a CSV
export reads the inputs and outputs twice: once to learn their columns (one cheap query
a chunk), once to write, both in one read transaction (`snapshot`).
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Literal

from mephisto.db.database import MephistoDB
from mephisto.db.export_query import (
    CHUNK,
    ExportFilter,
    count_units,
    iter_unit_data,
    iter_units,
    resolve_filter,
    snapshot,
)
from mephisto.errors import MephistoError

__all__ = ["FORMATS", "MAX_CSV_COLUMNS", "ExportFilter", "Format", "csv_columns",
           "export_to_file", "export_units", "flatten"]

Format = Literal["jsonl", "csv"]
FORMATS: tuple[Format, ...] = ("jsonl", "csv")
MAX_CSV_COLUMNS = 5000  # more dotted columns than this is data for JSON Lines
Progress = Callable[[int], None]  # called with the number of units written so far

# the record's fields before the data, in CSV order ("review" becomes review.*)
_FIXED = ("unit_id", "assignment_id", "unit_index", "unit_kind", "task_run_id", "task_id", "task_name",
          "agent_id", "worker_id", "worker_name", "provider_type", "unit_status",
          "agent_status", "reward", "created_at", "accepted_at", "started_at",
          "submitted_at", "duration", "updated_at")
_REVIEW = ("review.status", "review.note", "review.bonus", "review.blocked_worker",
           "review.time")
_TAIL = ("bonus_paid", "bonus_unpaid")
_DATA = ("inputs", "outputs")


def flatten(value: Any, prefix: str, into: dict[str, Any]) -> dict[str, Any]:
    """`value` as dotted keys under `prefix`: objects are walked into, anything else is
    a leaf, except None at the top (no inputs or outputs) and an empty object, which
    add nothing."""
    if value is None and "." not in prefix:
        return into
    if isinstance(value, dict):
        for name, inner in value.items():
            flatten(inner, f"{prefix}.{name}", into)
    else:
        into[prefix] = value
    return into


def _cell(value: Any) -> Any:
    """A CSV cell: text as is, None empty, anything else as JSON (numbers and booleans
    spelled as JSON spells them, without the cost of `json.dumps`)."""
    kind = type(value)
    if kind is str:
        return value
    if value is None:
        return ""
    if kind is bool:
        return "true" if value else "false"
    if kind is int or (kind is float and math.isfinite(value)):
        return repr(value)
    return json.dumps(value, ensure_ascii=False)


def csv_columns(data: Iterable[tuple[Any, Any]]) -> list[str]:
    """The CSV header for units whose `(inputs, outputs)` are `data`: the fixed fields,
    then every dotted input column, then every output column, each in first-seen order."""
    found: dict[str, dict[str, None]] = {name: {} for name in _DATA}
    total = 0
    for pair in data:
        for name, value in zip(_DATA, pair, strict=True):
            seen = found[name]
            for column in flatten(value, name, {}):
                if column not in seen:
                    seen[column] = None
                    total += 1
        if total > MAX_CSV_COLUMNS:
            raise MephistoError(
                f"the inputs and outputs make more than {MAX_CSV_COLUMNS:,} CSV columns: "
                "export them as JSON Lines (--format jsonl)")
    return [*_FIXED, *_REVIEW, *_TAIL, *found["inputs"], *found["outputs"]]


def _csv_row(record: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {name: _cell(record[name]) for name in (*_FIXED, *_TAIL)}
    review = record["review"] or {}
    for column in _REVIEW:
        row[column] = _cell(review.get(column.removeprefix("review.")))
    for name in _DATA:
        for column, value in flatten(record[name], name, {}).items():
            row[column] = _cell(value)
    return row


def _write(records: Iterator[dict[str, Any]], fmt: Format, out: IO[str],
           columns: list[str] | None, progress: Progress | None) -> int:
    written = 0
    writer = None
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=columns or [], restval="",
                                lineterminator="\n")
        writer.writeheader()
    for record in records:
        if writer is not None:
            writer.writerow(_csv_row(record))
        else:
            out.write(json.dumps(record, ensure_ascii=False))
            out.write("\n")
        written += 1
        if progress is not None and written % CHUNK == 0:
            progress(written)
    if progress is not None:
        progress(written)
    return written


def _check_format(fmt: str) -> Format:
    if fmt not in FORMATS:
        raise MephistoError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
    return fmt


def export_units(
    db: MephistoDB,
    fmt: str,
    out: IO[str],
    flt: ExportFilter | None = None,
    progress: Progress | None = None,
    total: Callable[[int], None] | None = None,
    chunk: int = CHUNK,
) -> int:
    """Write the units `flt` selects to `out` as `fmt` ("jsonl" or "csv"); returns how
    many. The filter is checked before anything is written (`MephistoError`,
    `EntryDoesNotExist`). `total`, if given, is told the number of units first (one
    COUNT); `progress` is called as units are written."""
    fmt = _check_format(fmt)
    resolved = resolve_filter(db, flt or ExportFilter())
    with snapshot(db) as conn:
        if total is not None:
            total(count_units(conn, resolved))
        columns = csv_columns(iter_unit_data(conn, resolved, chunk)) if fmt == "csv" \
            else None
        return _write(iter_units(conn, resolved, chunk), fmt, out, columns, progress)


def export_to_file(
    db: MephistoDB,
    fmt: str,
    path: Path,
    flt: ExportFilter | None = None,
    progress: Progress | None = None,
    total: Callable[[int], None] | None = None,
    chunk: int = CHUNK,
) -> int:
    """`export_units` into the file `path`, written whole or not at all: into a
    temporary file beside it, renamed over `path` at the end. On any error the
    temporary file is removed and `path` is as it was."""
    fmt = _check_format(fmt)
    path = Path(path)
    if path.is_dir():
        raise MephistoError(f"{path} is a directory: give a file to export to")
    if not path.parent.is_dir():
        raise MephistoError(f"cannot write {path}: no directory {path.parent}")
    resolve_filter(db, flt or ExportFilter())  # bad filters: fail before making a file
    try:
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                        suffix=".part")
    except OSError as exc:
        raise MephistoError(f"cannot write in {path.parent}: {exc.strerror}") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            count = export_units(db, fmt, out, flt, progress, total, chunk)
        os.chmod(tmp, 0o666 & ~_umask())  # as open() would have made it
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise MephistoError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return count


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
