"""The record a served task run leaves on disk, so other processes on this machine
(`mephisto metrics`) can find its server and its metrics.

While an operator serves a run it keeps `<run dir>/live.json` (mode 600, written
atomically): the run's id and task name, its server URL, the file holding its metrics
token (the token itself stays in that file), the operator's process id and host, when it
went live, and its database (password hidden). The record is removed when the run stops
being served. A process that died leaves it behind: readers check that the process is
still there (`LiveRecord.process_alive`) and that the server answers.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from mephisto.utils.dirs import get_data_dir, get_run_dir
from mephisto.utils.files import write_private_file

__all__ = ["LiveRecord", "find_live_records", "read_live_record", "record_path",
           "remove_live_record", "write_live_record"]

RECORD_NAME = "live.json"


@dataclass(frozen=True)
class LiveRecord:
    task_run_id: str
    task_name: str
    url: str  # the task server, ending in "/"
    metrics_token_file: str
    pid: int
    host: str
    started_at: float  # UNIX seconds
    database: str = ""  # the database URL, password hidden

    @property
    def metrics_url(self) -> str:
        return self.url + "metrics"

    def process_alive(self) -> bool | None:
        """Whether the operator's process still runs (None: it ran on another host)."""
        if self.host != socket.gethostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # someone else's process with that id
            return True
        return True


def record_path(task_run_id: str) -> Path:
    return get_run_dir(task_run_id) / RECORD_NAME


def write_live_record(task_run_id: str, task_name: str, url: str, metrics_token_file: Path,
                      database: str) -> LiveRecord:
    record = LiveRecord(
        task_run_id=str(task_run_id), task_name=task_name,
        url=url if url.endswith("/") else url + "/",
        metrics_token_file=str(metrics_token_file), pid=os.getpid(),
        host=socket.gethostname(), started_at=time.time(), database=database,
    )
    write_private_file(record_path(task_run_id), json.dumps(asdict(record), indent=1) + "\n")
    return record


def remove_live_record(task_run_id: str) -> None:
    """Remove the run's record if this process wrote it (a later operator serving the
    same run has replaced it)."""
    path = record_path(task_run_id)
    record = _read(path)
    if record is not None and record.pid == os.getpid() and record.host == socket.gethostname():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _read(path: Path) -> LiveRecord | None:
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    names = {f.name for f in fields(LiveRecord)}
    try:
        return LiveRecord(**{k: v for k, v in data.items() if k in names})
    except TypeError:  # a field missing: not a record of ours
        return None


def read_live_record(task_run_id: str) -> LiveRecord | None:
    """The run's record, or None if no operator on this machine serves it (or it is
    unreadable)."""
    try:
        path = record_path(task_run_id)
    except ValueError:  # an id that cannot name a folder names no run
        return None
    return _read(path)


def find_live_records() -> list[LiveRecord]:
    """Every record under the data directory, by run id."""
    runs = get_data_dir() / "runs"
    found = [r for r in (_read(p) for p in runs.glob(f"*/{RECORD_NAME}")) if r is not None]
    return sorted(found, key=lambda r: (len(r.task_run_id), r.task_run_id))
