"""Break a run on purpose, for fault tests: kill its process, fill its SQLite disk, cut
its PostgreSQL connections.

    proc = start_run_process(tmp_path, db_url, task_html, units=100)  # a run script
    ...                                                                # load it
    proc.kill()                                                        # kill -9

    with SQLiteSizeCap(db.engine) as cap:  # "database or disk is full" from now on
        ...
        cap.lift()                         # space freed
        ...                                # (cap.fill(): full again)

    url = with_application_name(postgres_url, "faults-x")  # tag the run's connections
    terminate_backends(postgres_url, "faults-x")            # kill them from outside
    killer = BackendKiller(postgres_url, "faults-x")        # ... again and again
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import TracebackType
from typing import Any, Self

# A run script as users write one: launch (or resume) the run, print its URL, serve
# until it has finished by itself (or Ctrl-C), then print "clean exit".
RUN_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from mephisto.abstractions.blueprints.static_task import SharedStaticTaskState
    from mephisto.db import MephistoDB
    from mephisto.operations.operator import Operator
    from mephisto.testing.fixtures import static_run_config

    db_url, html, units, task_name = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    operator = Operator(MephistoDB(db_url))
    data = [{"text": f"item-{i}"} for i in range(units)]
    config = static_run_config(html, task_name=task_name, resume_incomplete_run=True)
    if len(sys.argv) > 5:  # another architect than local
        config["architect"] = json.loads(sys.argv[5])
    run_id = operator.launch_task_run(config, SharedStaticTaskState(static_task_data=data))
    try:
        print(operator._runs[run_id].url, flush=True)
        operator.wait_for_runs_then_shutdown(skip_input=True)
    except KeyboardInterrupt:  # Ctrl-C before the wait began (task_script does this too)
        operator.shutdown()
    print("clean exit", flush=True)
    """
)


class RunProcess:
    """A run script (`RUN_SCRIPT`) serving one run in a subprocess."""

    def __init__(self, process: subprocess.Popen[str], url: str) -> None:
        self.process = process
        self.url = url

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind, as when the machine or the OOM killer strikes."""
        self.process.send_signal(signal.SIGKILL)
        self.process.communicate(timeout=10)  # reaps it and closes its pipes

    def interrupt(self, timeout: float = 30.0) -> tuple[str, str]:
        """SIGINT (Ctrl-C): the run shuts down gracefully. Returns (stdout, stderr)."""
        self.process.send_signal(signal.SIGINT)
        return self.process.communicate(timeout=timeout)

    def wait(self, timeout: float = 30.0) -> tuple[str, str]:
        """Wait for the run to finish by itself. Returns (stdout, stderr)."""
        return self.process.communicate(timeout=timeout)


def start_run_process(
    tmp_path: Path, db_url: str, html: Path, units: int, task_name: str = "durable",
    architect: dict[str, Any] | None = None,
) -> RunProcess:
    """Start `RUN_SCRIPT` on `units` static-task units (resuming the incomplete run of
    `task_name`, if any) and return once it serves. `architect`: its architect config
    (default: local on a free port)."""
    import json

    script = tmp_path / "run.py"
    script.write_text(RUN_SCRIPT)
    extra = [json.dumps(architect)] if architect is not None else []
    proc = subprocess.Popen(
        [sys.executable, str(script), db_url, str(html), str(units), task_name, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ},
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        proc.kill()
        _out, err = proc.communicate(timeout=10)
        raise AssertionError(f"run process failed: {url}\n{err}")
    return RunProcess(proc, url)


def sqlite_full_error() -> Exception:
    """What SQLAlchemy raises when SQLite finds the disk full (SQLITE_FULL), for code
    that fails on purpose where a real full disk is hard to time."""
    import sqlite3

    import sqlalchemy as sa

    orig = sqlite3.OperationalError("database or disk is full")
    orig.sqlite_errorcode = 13  # type: ignore[attr-defined]
    orig.sqlite_errorname = "SQLITE_FULL"  # type: ignore[attr-defined]
    return sa.exc.OperationalError("UPDATE ...", {}, orig)


class SQLiteSizeCap:
    """Make every write that needs a new page of a SQLite database fail with
    SQLITE_FULL ("database or disk is full"), as a full disk does, until `lift()`.

    `PRAGMA max_page_count` holds per connection, so it is set on every connection
    as it is checked out of the engine's pool (an engine "checkout" listener): a
    connection already checked out keeps its limit until it goes back. A cap below the
    current size means "no page more than now".
    """

    def __init__(self, engine: Any, full: bool = True) -> None:
        self.engine = engine
        self.full = full
        self._default: int | None = None

    def _on_checkout(self, dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
        if self._default is None:
            self._default = dbapi_conn.execute("PRAGMA max_page_count").fetchone()[0]
        limit = 1 if self.full else self._default
        dbapi_conn.execute(f"PRAGMA max_page_count={limit}")

    def fill(self) -> None:
        """The disk is full for connections checked out from now on."""
        self.full = True

    def lift(self) -> None:
        """Space freed: connections checked out from now on may grow the file again.
        (Keep the cap installed until they have all been checked out again.)"""
        self.full = False

    def __enter__(self) -> Self:
        from sqlalchemy import event

        event.listen(self.engine, "checkout", self._on_checkout)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        from sqlalchemy import event

        self.full = False
        event.remove(self.engine, "checkout", self._on_checkout)


def with_application_name(url: str, name: str) -> str:
    """`url` with a libpq `application_name`, so the connections it opens can be told
    apart in `pg_stat_activity` (and killed by `terminate_backends`)."""
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}application_name={name}"


class BackendKiller:
    """Terminates (`pg_terminate_backend`) every connection of this database opened with
    `application_name`, from an admin connection of its own, kept open between calls."""

    def __init__(self, admin_url: str, application_name: str) -> None:
        import sqlalchemy as sa

        from mephisto.db.engine import normalize_url

        self.application_name = application_name
        self._engine = sa.create_engine(
            normalize_url(admin_url), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
        )
        self._conn = self._engine.connect()
        self._kill = sa.text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND application_name = :name"
        )

    def kill(self) -> int:
        """Terminate them now; returns how many there were."""
        result = self._conn.execute(self._kill, {"name": self.application_name})
        return int(result.scalar_one())

    def close(self) -> None:
        self._conn.close()
        self._engine.dispose()


def terminate_backends(admin_url: str, application_name: str) -> int:
    """`BackendKiller(admin_url, application_name).kill()`, once."""
    killer = BackendKiller(admin_url, application_name)
    try:
        return killer.kill()
    finally:
        killer.close()
