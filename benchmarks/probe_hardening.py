"""Attack probe: launch a real task run and attack it over real sockets; print what it measured.

Each attack starts its own run in a subprocess (operator + static task + local architect on
a free port + mock provider + a fresh SQLite file in a temporary directory), attacks it over
TCP, reads the SQLite file with plain `sqlite3`, watches the subprocess's RSS
(`/proc/<pid>/status`) and its stderr (written to a file), and reports one row per attack.
Only wire-level behaviour and APIs present in old and new checkouts are used, so the same
script measures both. Run it against two checkouts (the venv is shared; `PYTHONPATH` picks
the code, for this process and the run subprocesses):

    PYTHONPATH=/work/wt-before /work/main/.venv/bin/python benchmarks/probe_hardening.py
    PYTHONPATH=/work/wt-probe /work/main/.venv/bin/python benchmarks/probe_hardening.py

Options: `--only metadata,log_flood` runs some attacks, `--json PATH` also writes the
results, `--keep` keeps the temporary directory (databases, stderr logs).

The whole probe takes about two minutes; every attack has a timeout and reports "hung" or
"error: ..." instead of stopping the probe. The idle-socket attack runs its server with a
soft open-file limit of 1024 (the usual Linux default; `--server-nofile 0` inherits this
process's limit), so that 1,100 idle connections mean something on machines with a high
limit. This is a benchmark-style script (it prints figures), not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import select
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlencode, urlsplit

# The run subprocess. Logging goes to stderr with level names, as a task script would set it
# up, so the probe can look for ERROR lines, tracebacks and forged lines.
RUN_SCRIPT = textwrap.dedent(
    """
    import json, logging, resource, sys

    opts = json.loads(sys.argv[1])
    if opts["nofile"]:
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(opts["nofile"], hard), hard))
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import mephisto
    from mephisto.abstractions.blueprints.static_task import SharedStaticTaskState
    from mephisto.db import MephistoDB
    from mephisto.operations.operator import Operator
    from mephisto.testing.fixtures import static_run_config


    def validate(data):
        outputs = data.get("outputs") if isinstance(data, dict) else None
        return isinstance(outputs, dict) and outputs.get("answer") == "4"


    extra, state_args = {}, {}
    if opts["onboarding_html"]:
        extra["blueprint__onboarding_qualification"] = "probe-onboarded"
        extra["blueprint__onboarding_source"] = opts["onboarding_html"]
        state_args = {"validate_onboarding": validate, "onboarding_data": {"question": "2+2"}}
    if opts["allowed_concurrent"]:
        extra["allowed_concurrent"] = opts["allowed_concurrent"]
    operator = Operator(MephistoDB("sqlite:///" + opts["db"]))
    data = [{"text": f"item-{i}"} for i in range(opts["units"])]
    config = static_run_config(opts["html"], task_name=opts["task_name"],
                               resume_incomplete_run=opts["resume"], **extra)
    run_id = operator.launch_task_run(
        config, SharedStaticTaskState(static_task_data=data, **state_args))
    try:
        print("MEPHISTO", mephisto.__file__, flush=True)
        print("URL", operator.get_running_task_runs()[run_id].url, flush=True)
        operator.wait_for_runs_then_shutdown(skip_input=True)
    except KeyboardInterrupt:
        operator.shutdown()
    """
)

TASK_HTML = '<input name="answer"><button type="submit">Go</button>\n'
CLIENT_VERSION = "2.0.3"  # what the shipped mephisto-task 2.0.4 bundle reports
MB = 1024 * 1024


class ProbeError(Exception):
    """The probe could not set up what an attack needs (reported as `error: ...`)."""


# -- the run subprocess ----------------------------------------------------------------------


@dataclass
class Run:
    """A task run in its own process, serving at `port`."""

    proc: subprocess.Popen[bytes]
    port: int
    db: Path
    stderr_path: Path
    mephisto_path: str

    def status_kb(self, key: str) -> int | None:
        """A `/proc/<pid>/status` figure in kB (VmRSS, VmHWM), or None once it is gone."""
        try:
            with open(f"/proc/{self.proc.pid}/status") as status:
                for line in status:
                    if line.startswith(key + ":"):
                        return int(line.split()[1])
        except (OSError, ValueError):
            return None
        return None

    def rss_mb(self) -> float | None:
        kb = self.status_kb("VmRSS")
        return None if kb is None else kb / 1024

    def nofile_soft(self) -> str:
        try:
            for line in Path(f"/proc/{self.proc.pid}/limits").read_text().splitlines():
                if line.startswith("Max open files"):
                    return line.split()[3]
        except OSError:
            pass
        return "?"

    def stderr_size(self) -> int:
        return self.stderr_path.stat().st_size

    def stderr_since(self, offset: int) -> bytes:
        with open(self.stderr_path, "rb") as err:
            err.seek(offset)
            return err.read()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: the probe's runs and databases are thrown away, so no clean shutdown
        is owed, and a clean shutdown would wait for the connections an attack left."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@dataclass
class Probe:
    """What the attacks share: the work directory, options, and every run started."""

    workdir: Path
    server_nofile: int
    runs: list[Run] = field(default_factory=list)
    mephisto_paths: set[str] = field(default_factory=set)

    def _start(
        self, name: str, units: int, onboarding: bool, allowed_concurrent: int,
        resume: bool, db: Path | None, nofile: int,
    ) -> Run:
        html = self.workdir / "task.html"
        onboarding_html = self.workdir / "onboarding.html"
        script = self.workdir / "run_task.py"
        if not script.exists():
            html.write_text(TASK_HTML)
            onboarding_html.write_text(TASK_HTML)
            script.write_text(RUN_SCRIPT)
        db = db or self.workdir / f"{name}.db"
        stderr_path = self.workdir / f"{name}-{len(self.runs)}.stderr"
        opts = {
            "db": str(db), "html": str(html), "units": units, "task_name": f"probe-{name}",
            "onboarding_html": str(onboarding_html) if onboarding else None,
            "allowed_concurrent": allowed_concurrent, "resume": resume, "nofile": nofile,
        }
        with open(stderr_path, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, str(script), json.dumps(opts)], stdout=subprocess.PIPE,
                stderr=err, env=dict(os.environ), cwd=self.workdir, bufsize=0,
            )
        assert proc.stdout is not None
        # raw reads of the pipe (no read-ahead buffer that select() cannot see)
        mephisto_path, url, pending = "?", None, b""
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            pending += chunk
            while b"\n" in pending and url is None:
                line, _, pending = pending.partition(b"\n")
                kind, _, value = line.decode(errors="replace").strip().partition(" ")
                if kind == "MEPHISTO":
                    mephisto_path = value
                elif kind == "URL":
                    url = value
        if url is None:
            proc.kill()
            proc.wait()
            tail = stderr_path.read_text(errors="replace")[-600:]
            raise ProbeError(f"run process did not start: {tail.strip()}")
        run = Run(proc, urlsplit(url).port or 80, db, stderr_path, mephisto_path)
        self.runs.append(run)
        self.mephisto_paths.add(str(Path(mephisto_path).parent))
        return run

    async def start(
        self, name: str, units: int = 5, *, onboarding: bool = False,
        allowed_concurrent: int = 0, resume: bool = False, db: Path | None = None,
        nofile: int = 0,
    ) -> Run:
        return await asyncio.to_thread(
            self._start, name, units, onboarding, allowed_concurrent, resume, db, nofile
        )

    def kill_all(self) -> None:
        for run in self.runs:
            run.kill()


# -- HTTP over raw sockets ---------------------------------------------------------------------


@dataclass
class Answer:
    """One HTTP exchange. `status` None: no answer (`note` says why); `sent`: the whole
    request was written."""

    status: int | None
    body: bytes = b""
    note: str = ""
    sent: bool = False
    seconds: float = 0.0

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def label(self) -> str:
        return str(self.status) if self.status is not None else self.note or "no answer"


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        return status, await reader.readexactly(int(headers["content-length"]))
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                return status, body
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    return status, await reader.read()


async def http(
    port: int, method: str, path: str, *, query: dict[str, str] | None = None,
    body: bytes | None = None, chunks: Sequence[bytes] | None = None,
    content_type: str = "application/json", timeout: float = 10.0,
    on_sent: Callable[[], None] | None = None,
) -> Answer:
    """One request on a fresh connection (`Connection: close`). The body is `body` or the
    concatenation of `chunks` (streamed). The response is read while the body is still being
    written, so an early answer (413, 403) is seen even if the server then resets. `on_sent`
    is called once the whole request is written."""
    parts: Sequence[bytes] = chunks if chunks is not None else ([body] if body else [])
    length = sum(len(p) for p in parts)
    target = path + ("?" + urlencode(query) if query else "")
    head = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
    if body is not None or chunks is not None:
        head += f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n"
    answer = Answer(None)
    start = time.perf_counter()
    writer: asyncio.StreamWriter | None = None
    response: asyncio.Future[tuple[int, bytes]] | None = None
    try:
        async with asyncio.timeout(timeout):
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError as exc:
                answer.note = f"connect failed ({exc.strerror or exc})"
                return answer
            response = asyncio.ensure_future(_read_response(reader))
            try:
                writer.write((head + "\r\n").encode("latin-1"))
                for part in parts:
                    if response.done():
                        break
                    writer.write(part)
                    await writer.drain()
                else:
                    await writer.drain()
                    answer.sent = True
                    if on_sent is not None:
                        on_sent()
            except OSError:
                pass  # the server stopped reading; its answer may still be there
            try:
                answer.status, answer.body = await response
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError, ValueError,
                    IndexError) as exc:
                answer.note = "reset" if isinstance(exc, ConnectionResetError) else "closed"
    except TimeoutError:
        answer.note = "timeout"
    finally:
        answer.seconds = time.perf_counter() - start
        if response is not None and not response.done():
            response.cancel()
        if writer is not None:
            writer.close()
    return answer


def multipart(fields: Iterable[tuple[str, str]], files: Iterable[tuple[str, str, bytes]],
              boundary: str = "probe-boundary-7d9f") -> list[bytes]:
    """A multipart/form-data body as chunks (files cut in 1 MB pieces, no copies)."""
    out: list[bytes] = []
    for name, value in fields:
        out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                   f"{value}\r\n".encode())
    for name, filename, data in files:
        out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                   f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
                   .encode())
        view = memoryview(data)
        out.extend(bytes(view[i:i + MB]) for i in range(0, len(data), MB))
        out.append(b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return out


MULTIPART = "multipart/form-data; boundary=probe-boundary-7d9f"


def dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


@dataclass
class Worker:
    """A mock-provider worker: `?worker_id=&assignment_id=` on every request, as the shim."""

    port: int
    name: str
    assignment: str

    @property
    def query(self) -> dict[str, str]:
        return {"worker_id": self.name, "assignment_id": self.assignment}

    def registration(self) -> dict[str, Any]:
        return {"worker_name": self.name, "assignment_id": self.assignment,
                "agent_registration_id": f"{self.assignment}-{self.name}",
                "provider_type": "mock"}

    async def post(self, path: str, payload: Any, timeout: float = 10.0) -> Answer:
        return await http(self.port, "POST", path, query=self.query, body=dumps(payload),
                          timeout=timeout)

    async def request_agent(self) -> tuple[Answer, str | None]:
        answer = await self.post("/request_agent", {"provider_data": self.registration(),
                                                    "client_timestamp": time.time()})
        return answer, agent_id_of(answer)

    async def agent(self) -> str:
        answer, agent_id = await self.request_agent()
        if agent_id is None:
            raise ProbeError(f"request_agent for {self.name}: {answer.label()} "
                             f"{answer.body[:200]!r}")
        return agent_id

    async def submit(self, agent_id: str, final_data: Any, timeout: float = 10.0) -> Answer:
        return await self.post("/submit_task", {"USED_AGENT_ID": agent_id,
                                                "final_data": final_data,
                                                "client_timestamp": time.time()},
                               timeout=timeout)

    async def submit_onboarding(self, agent_id: str, onboarding_data: Any) -> Answer:
        provider_data = {"USED_AGENT_ID": agent_id, "onboarding_data": onboarding_data}
        return await self.post("/submit_onboarding", {"provider_data": provider_data,
                                                      "client_timestamp": time.time()})

    async def submit_metadata(self, agent_id: str, metadata: dict[str, Any]) -> Answer:
        return await self.post("/submit_metadata", {"USED_AGENT_ID": agent_id,
                                                    "metadata": metadata,
                                                    "client_timestamp": time.time()})


def agent_id_of(answer: Answer) -> str | None:
    body = answer.json()
    data = body.get("data") if isinstance(body, dict) else None
    agent_id = data.get("agent_id") if isinstance(data, dict) else None
    return agent_id if isinstance(agent_id, str) else None


def codes(answers: Iterable[Answer]) -> str:
    """`200x12, 409x3` (most common first)."""
    counts = Counter(a.label() for a in answers)
    return ", ".join(f"{code}x{n}" for code, n in counts.most_common()) or "none"


def code_counts(answers: Iterable[Answer]) -> dict[str, int]:
    return dict(Counter(a.label() for a in answers))


# -- the SQLite file, read with plain sqlite3 --------------------------------------------------


def query_db(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as c:
        return c.execute(sql, args).fetchall()


def agent_state(db: Path, agent_id: str) -> Any:
    rows = query_db(db, "SELECT state FROM agents WHERE agent_id = ?", agent_id)
    if not rows or rows[0][0] is None:
        return None
    state = rows[0][0]
    return json.loads(state) if isinstance(state, str) else state


def outputs_of(db: Path, agent_id: str) -> Any:
    state = agent_state(db, agent_id)
    return state.get("outputs") if isinstance(state, dict) else None


def count_for_worker(db: Path, table: str, worker_name: str) -> int:
    rows = query_db(db, f"SELECT COUNT(*) FROM {table} AS t JOIN workers AS w "
                        "ON t.worker_id = w.worker_id WHERE w.worker_name = ?", worker_name)
    return int(rows[0][0])


def yes(flag: bool) -> str:
    return "yes" if flag else "no"


def mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} MB"


class RssSampler:
    """Samples a run's VmRSS every 50 ms while active; `peak` is the highest seen, or the
    process's VmHWM if higher (each attack has a fresh process)."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.peak: float = run.rss_mb() or 0.0
        self._task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        while True:
            self.peak = max(self.peak, self.run.rss_mb() or 0.0)
            await asyncio.sleep(0.05)

    def __enter__(self) -> Self:
        self._task = asyncio.get_running_loop().create_task(self._loop())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
        hwm = self.run.status_kb("VmHWM")
        self.peak = max(self.peak, self.run.rss_mb() or 0.0, hwm / 1024 if hwm else 0.0)


Result = tuple[str, dict[str, Any]]


# -- 1. metadata -------------------------------------------------------------------------------


async def attack_metadata(probe: Probe) -> Result:
    run = await probe.start("metadata")
    worker = Worker(run.port, "meta-w", "meta-as")
    agent = await worker.agent()
    marker = "probe-metadata-" + uuid.uuid4().hex[:8]
    meta = await worker.submit_metadata(agent, {"feedback": {"type": "feedback", "text": marker}})
    submit = await worker.submit(agent, {"answer": "1"})
    state = agent_state(run.db, agent)
    kept = isinstance(state, dict) and marker in json.dumps(state.get("metadata"))
    summary = (f"metadata kept: {yes(kept)} (submit_metadata {meta.label()}, "
               f"submit {submit.label()})")
    return summary, {"metadata_kept": kept, "submit_metadata": meta.status, "submit": submit.status}


# -- 2. onboarding race ------------------------------------------------------------------------


async def attack_onboarding_race(probe: Probe) -> Result:
    run = await probe.start("onboarding", onboarding=True)
    name = "ob-racer"
    workers = [Worker(run.port, name, f"ob-as-{i}") for i in range(20)]
    answers = await asyncio.gather(*(w.request_agent() for w in workers))
    first_of: dict[str, Worker] = {}
    for worker, (_answer, agent_id) in zip(workers, answers, strict=True):
        if agent_id is not None and agent_id.startswith("onboarding"):
            first_of.setdefault(agent_id, worker)
    in_db = count_for_worker(run.db, "onboarding_agents", name)
    figures: dict[str, Any] = {"request_agent": code_counts(a for a, _ in answers),
                               "onboarding_agents_answered": len(first_of),
                               "onboarding_agents_in_db": in_db}
    if not first_of:
        return f"no onboarding agent answered ({codes(a for a, _ in answers)})", figures
    ids = list(first_of)
    failed_id, passed_id = ids[0], ids[1] if len(ids) > 1 else ids[0]
    fail = await first_of[failed_id].submit_onboarding(failed_id, {"answer": "5"})
    passed = await first_of[passed_id].submit_onboarding(passed_id, {"answer": "4"})
    got = agent_id_of(passed)
    working = got is not None and not got.startswith("onboarding")
    if not working:  # maybe the pass is honoured on the next request
        _answer, again = await Worker(run.port, name, "ob-as-after").request_agent()
        working = again is not None and not again.startswith("onboarding")
    task_agents = count_for_worker(run.db, "agents", name)
    figures.update(fail=fail.status, fail_agent=agent_id_of(fail), pass_status=passed.status,
                   worker_working=working, task_agents_in_db=task_agents)
    other = "another" if passed_id != failed_id else "the same one"
    summary = (f"onboarding agents: {len(first_of)} answered, {in_db} in DB; fail one "
               f"({fail.label()}), pass {other} ({passed.label()}) -> worker working: "
               f"{yes(working)} ({task_agents} task agents in DB)")
    return summary, figures


# -- 3. assignment race ------------------------------------------------------------------------


async def attack_assignment_race(probe: Probe) -> Result:
    run = await probe.start("assignment", allowed_concurrent=1)
    name, assignment = "ar-racer", "ar-as"
    answers = await asyncio.gather(
        *(Worker(run.port, name, assignment).request_agent() for _ in range(30))
    )
    ids = {agent_id for _a, agent_id in answers if agent_id is not None}
    in_db = count_for_worker(run.db, "agents", name)
    reload_answer, reloaded = await Worker(run.port, name, assignment).request_agent()
    if reloaded is None:
        body = reload_answer.json()
        data = body.get("data") if isinstance(body, dict) else None
        reason = data.get("failure_reason") if isinstance(data, dict) else None
        verdict = f"refused ({reload_answer.label()}: {str(reason)[:60]})"
    elif reloaded in ids:
        verdict = "same agent back"
    else:
        verdict = "a new agent"
    summary = (f"agents created: {len(ids)} answered, {in_db} in DB "
               f"({codes(a for a, _ in answers)}); reload -> {verdict}")
    return summary, {"request_agent": code_counts(a for a, _ in answers),
                     "agents_answered": len(ids), "agents_in_db": in_db, "reload": verdict}


# -- 4. double completion ----------------------------------------------------------------------


async def attack_double_completion(probe: Probe) -> Result:
    run = await probe.start("double")
    worker = Worker(run.port, "dc-w", "dc-as")
    agent = await worker.agent()
    first = await worker.submit(agent, {"answer": "first"})
    second = await worker.submit(agent, {"answer": "second"})
    stored = outputs_of(run.db, agent)
    rewritten = stored == {"answer": "second"}
    summary = (f"first {first.label()}, second (different data) {second.label()}; stored output "
               f"rewritten: {yes(rewritten)} (stored {json.dumps(stored)})")
    return summary, {"first": first.status, "second": second.status, "rewritten": rewritten,
                     "stored": stored}


# -- 5. retry after kill -9 --------------------------------------------------------------------


@dataclass
class Submit:
    """One worker's submit in the kill -9 attack."""

    worker: Worker
    agent: str
    data: dict[str, str]
    answer: Answer = field(default_factory=lambda: Answer(None))

    def body(self) -> bytes:
        return dumps({"USED_AGENT_ID": self.agent, "final_data": self.data,
                      "client_timestamp": time.time()})


async def _submit_and_kill(run: Run, submits: list[Submit], at_first_answer: bool) -> None:
    """All submits at once; SIGKILL the run at the first answer (`at_first_answer`) or
    once every request is written (whichever comes first), so it dies mid-way."""
    killed = asyncio.Event()
    sent = 0

    def kill() -> None:
        if not killed.is_set():
            killed.set()
            os.kill(run.proc.pid, signal.SIGKILL)

    def one_sent() -> None:
        nonlocal sent
        sent += 1
        if sent == len(submits):
            kill()

    async def one(submit: Submit) -> None:
        submit.answer = await http(run.port, "POST", "/submit_task", query=submit.worker.query,
                                   body=submit.body(), timeout=15,
                                   on_sent=None if at_first_answer else one_sent)
        if submit.answer.status is not None:
            kill()

    tasks = [asyncio.ensure_future(one(s)) for s in submits]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(killed.wait(), 10)
    kill()
    await asyncio.gather(*tasks)
    await asyncio.to_thread(run.kill)


async def attack_kill9_retry(probe: Probe) -> Result:
    """Up to three rounds of: (re)start the run, retry the previous round's unanswered
    submits, 20 new submits at once, kill -9 mid-way. Rounds stop once unanswered submits
    of both kinds were seen (stored before the kill, and not stored)."""
    db = probe.workdir / "kill9.db"
    answered: list[Submit] = []
    unanswered: list[Submit] = []
    stored_before = 0
    retried: list[Answer] = []
    to_retry: list[Submit] = []
    rounds = 0
    for trigger in ("first answer", "first answer", "all written"):
        run = await probe.start("kill9", units=64, resume=True, db=db)
        if to_retry:
            retried += await asyncio.gather(*(
                Worker(run.port, s.worker.name, s.worker.assignment).submit(s.agent, s.data)
                for s in to_retry
            ))
        rounds += 1
        workers = [Worker(run.port, f"k{rounds}-w{i}", f"k{rounds}-as-{i}") for i in range(20)]
        agents = await asyncio.gather(*(w.agent() for w in workers))
        submits = [Submit(w, a, {"answer": f"{w.name}"}) for w, a in zip(workers, agents,
                                                                          strict=True)]
        await _submit_and_kill(run, submits, trigger == "first answer")
        to_retry = [s for s in submits if s.answer.status is None and s.answer.sent]
        answered += [s for s in submits if s.answer.status is not None]
        unanswered += to_retry
        stored_now = sum(outputs_of(db, s.agent) == s.data for s in to_retry)
        stored_before += stored_now
        if stored_before and len(unanswered) > stored_before:
            break
    if to_retry:
        run = await probe.start("kill9", units=64, resume=True, db=db)
        retried += await asyncio.gather(*(
            Worker(run.port, s.worker.name, s.worker.assignment).submit(s.agent, s.data)
            for s in to_retry
        ))
    acked = [s for s in answered if s.answer.status is not None and s.answer.status < 300]
    acked_stored = sum(outputs_of(db, s.agent) == s.data for s in acked)
    stored_after = sum(outputs_of(db, s.agent) == s.data for s in unanswered)
    figures: dict[str, Any] = {
        "kills": rounds, "submits": 20 * rounds,
        "answered": code_counts(s.answer for s in answered),
        "acked_and_stored": acked_stored, "sent_unanswered": len(unanswered),
        "unanswered_stored_before_retry": stored_before,
        "retry": code_counts(retried), "unanswered_stored_after_retry": stored_after,
    }
    summary = (f"{rounds} kills, {20 * rounds} submits: answered "
               f"{codes(s.answer for s in answered)} ({acked_stored}/{len(acked)} 2xx stored); "
               f"sent+unanswered {len(unanswered)} "
               f"({stored_before} stored before the retry)")
    if not unanswered:
        return summary + "; nothing to retry", figures
    return (summary + f"; retry after restart: {codes(retried)}; stored "
            f"{stored_after}/{len(unanswered)}"), figures


# -- 6. foreign agent --------------------------------------------------------------------------


async def attack_foreign_agent(probe: Probe) -> Result:
    run = await probe.start("foreign")
    owner = Worker(run.port, "fa-owner", "fa-as-owner")
    intruder = Worker(run.port, "fa-intruder", "fa-as-intruder")
    victim = await owner.agent()
    await intruder.agent()
    marker = "probe-intruder-" + uuid.uuid4().hex[:8]
    meta = await intruder.submit_metadata(victim, {"forged": {"type": "forged", "by": marker}})
    submit = await intruder.submit(victim, {"answer": marker})
    state = agent_state(run.db, victim)
    stored = marker in json.dumps(state)
    summary = (f"submit_metadata {meta.label()}, submit_task {submit.label()}; "
               f"stored on the owner's agent: {yes(stored)}")
    return summary, {"submit_metadata": meta.status, "submit_task": submit.status, "stored": stored}


# -- 7. huge header ----------------------------------------------------------------------------


def _stream_header(port: int, total: int, cap: float, stop: threading.Event) -> dict[str, Any]:
    """Stream `X-Pad: aaa...` in 64 KB writes until `total` bytes, `cap` seconds, or the
    server answers or stops reading; then report what the server said."""
    out: dict[str, Any] = {"sent": 0, "status": None, "outcome": ""}
    start = time.monotonic()
    chunk = b"a" * 65536
    response = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.settimeout(1.0)
        sock.sendall(b"GET /task_config.json HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ")
        try:
            while out["sent"] < total and not stop.is_set():
                if time.monotonic() - start > cap:
                    out["outcome"] = f"capped at {cap:.0f} s"
                    break
                readable, _, _ = select.select([sock], [], [], 0)
                if readable:
                    response = sock.recv(65536)
                    out["outcome"] = "answered mid-header" if response else "closed mid-header"
                    break
                try:
                    out["sent"] += sock.send(chunk)
                except TimeoutError:
                    continue  # the server is not reading: keep trying until the cap
            else:
                if not stop.is_set():
                    sock.sendall(b"\r\n\r\n")
                    out["outcome"] = "whole header sent"
            out["seconds"] = time.monotonic() - start
            if not response:
                sock.settimeout(2.0)
                response = sock.recv(65536)
        except TimeoutError:
            out["outcome"] += ", no answer"
        except OSError as exc:
            out["outcome"] += f", {exc.strerror or exc}".lstrip(", ")
    out.setdefault("seconds", time.monotonic() - start)
    if response.startswith(b"HTTP/"):
        with contextlib.suppress(IndexError, ValueError):
            out["status"] = int(response.split()[1])
    return out


async def attack_huge_header(probe: Probe) -> Result:
    run = await probe.start("header")
    await asyncio.sleep(0.3)
    rss_before = run.rss_mb()
    stop = threading.Event()
    latencies: list[float] = []
    failures: list[str] = []
    with RssSampler(run) as sampler:
        attacker = asyncio.ensure_future(
            asyncio.to_thread(_stream_header, run.port, 100 * MB, 15.0, stop)
        )
        try:
            await asyncio.sleep(0.2)
            for _ in range(50):
                answer = await http(run.port, "GET", "/task_config.json",
                                    query={"mephisto_task_version": CLIENT_VERSION}, timeout=3)
                if answer.status == 200:
                    latencies.append(answer.seconds * 1000)
                else:
                    failures.append(answer.label())
                await asyncio.sleep(0.2)  # spread over most of the attack
            attack = await asyncio.wait_for(asyncio.shield(attacker), 25)
        finally:
            stop.set()
    p50 = statistics.median(latencies) if latencies else None
    worst = max(latencies) if latencies else None
    peak = sampler.peak
    status = attack["status"] if attack["status"] is not None else "none"
    fails = f", {len(failures)} failed ({', '.join(sorted(set(failures)))})" if failures else ""
    p50_text = "n/a" if p50 is None else f"{p50:.1f} ms"
    max_text = "n/a" if worst is None else f"{worst:.1f} ms"
    summary = (f"other client: p50 {p50_text}, max {max_text} ({len(latencies)}/50 ok{fails}); "
               f"server RSS {mb(rss_before)} -> peak {mb(peak)}; attacker got {status} after "
               f"{attack['sent'] / MB:.1f} MB in {attack['seconds']:.1f} s ({attack['outcome']})")
    return summary, {"p50_ms": p50, "max_ms": worst, "ok": len(latencies), "failed": failures,
                     "rss_before_mb": rss_before, "rss_peak_mb": peak,
                     "attacker_status": attack["status"],
                     "attacker_sent_bytes": attack["sent"], "attacker_seconds": attack["seconds"],
                     "attacker_outcome": attack["outcome"]}


# -- 8. idle sockets ---------------------------------------------------------------------------


def _open_idle(port: int, count: int) -> tuple[list[socket.socket], int]:
    sockets, failed = [], 0
    for _ in range(count):
        try:
            sockets.append(socket.create_connection(("127.0.0.1", port), timeout=2))
        except OSError:
            failed += 1
    return sockets, failed


def _closed_by_server(sock: socket.socket) -> bool:
    """True if the server closed (EOF or reset) or answered on this idle socket."""
    try:
        sock.setblocking(False)
        sock.recv(1, socket.MSG_PEEK)
        return True  # EOF (b"") or the server sent something (a 408, say)
    except BlockingIOError:
        return False
    except OSError:
        return True


async def attack_idle_sockets(probe: Probe) -> Result:
    count = 1100
    run = await probe.start("idle", nofile=probe.server_nofile)
    server_limit = run.nofile_soft()
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count + 200
    if limits[0] != resource.RLIM_INFINITY and limits[0] < wanted:
        hard = limits[1]
        soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    sockets: list[socket.socket] = []
    try:
        opened_at = time.monotonic()
        sockets, failed = await asyncio.to_thread(_open_idle, run.port, count)
        await asyncio.sleep(0.5)
        closed_at_once = sum(_closed_by_server(s) for s in sockets)
        normal = await asyncio.gather(*(
            http(run.port, "GET", "/task_config.json",
                 query={"mephisto_task_version": CLIENT_VERSION}, timeout=5)
            for _ in range(5)
        ))
        ok = sum(a.status == 200 for a in normal)
        await asyncio.sleep(max(0.0, 20 - (time.monotonic() - opened_at)))
        closed = sum(_closed_by_server(s) for s in sockets)
    finally:
        for sock in sockets:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, limits)
    return (f"normal requests ok: {ok}/5 ({codes(normal)}); idle sockets closed by the server: "
            f"{closed_at_once}/{len(sockets)} at once, {closed} after 20 s (server nofile soft "
            f"limit {server_limit}" + (f", {failed} connects failed" if failed else "") + ")",
            {"normal_ok": ok, "normal": code_counts(normal), "idle_opened": len(sockets),
             "connect_failed": failed, "closed_at_once": closed_at_once,
             "closed_after_20s": closed, "server_nofile_soft": server_limit})


# -- 9. uploads for an unknown agent -----------------------------------------------------------


async def attack_unknown_uploads(probe: Probe) -> Result:
    run = await probe.start("uploads")
    await asyncio.sleep(0.3)
    rss_before = run.rss_mb()
    payload = b"\0" * (19 * MB)
    body = multipart([("USED_AGENT_ID", "probe-unknown-agent-0001"),
                      ("final_string_data", '{"answer": "upload"}')],
                     [("file", "upload.bin", payload)])
    start = time.monotonic()
    with RssSampler(run) as sampler:
        answers = await asyncio.gather(*(
            http(run.port, "POST", "/submit_task", chunks=body, content_type=MULTIPART,
                 query={"worker_id": f"up-w{i}", "assignment_id": f"up-as-{i}"}, timeout=40)
            for i in range(30)
        ))
        seconds = time.monotonic() - start
        await asyncio.sleep(5)
    rss_after = run.rss_mb()
    summary = (f"{codes(answers)} in {seconds:.1f} s; server RSS before {mb(rss_before)}, "
               f"peak {mb(sampler.peak)}, 5 s after {mb(rss_after)}")
    return summary, {"answers": code_counts(answers), "seconds": seconds,
                     "rss_before_mb": rss_before, "rss_peak_mb": sampler.peak,
                     "rss_after_5s_mb": rss_after}


# -- 10. log flood -----------------------------------------------------------------------------


async def attack_log_flood(probe: Probe) -> Result:
    run = await probe.start("logflood")
    await asyncio.sleep(0.3)
    rss_before = run.rss_mb()
    offset = run.stderr_size()
    marker = "FORGED-" + uuid.uuid4().hex[:12]
    worker = Worker(run.port, "log-w", "log-as")
    forged = await worker.post("/log_error", {
        "USED_AGENT_ID": f"probe-agent\n{marker} CRITICAL mephisto: forged line",
        "error_data": {"error": "probe"}, "client_timestamp": time.time(),
    })
    gate = asyncio.Semaphore(10)

    async def flood(i: int) -> Answer:
        agent_id = f"{i:05d}-" + "x" * (900_000 - 6)
        async with gate:
            return await worker.post("/log_error", {"USED_AGENT_ID": agent_id,
                                                    "error_data": {"error": f"probe {i}"},
                                                    "client_timestamp": time.time()}, timeout=20)

    with RssSampler(run) as sampler:
        answers = await asyncio.gather(*(flood(i) for i in range(100)))
        await asyncio.sleep(1.0)
    growth = run.stderr_size() - offset
    logged = run.stderr_since(offset)
    forged_line = logged.startswith(marker.encode()) or (b"\n" + marker.encode()) in logged
    rss_after = run.rss_mb()
    rss_growth = None if rss_after is None or rss_before is None else rss_after - rss_before
    summary = (f"flood {codes(answers)}, newline id {forged.label()}; stderr grew "
               f"{growth / MB:.1f} MB ({growth} bytes); RSS +{mb(rss_growth)} "
               f"(peak {mb(sampler.peak)}); forged line: {yes(forged_line)}")
    return summary, {"flood": code_counts(answers), "newline_id": forged.status,
                     "stderr_growth_bytes": growth, "rss_growth_mb": rss_growth,
                     "rss_peak_mb": sampler.peak, "forged_line": forged_line}


# -- 11. odd inputs ----------------------------------------------------------------------------


def _logged_error(text: bytes) -> bool:
    return b"ERROR" in text or b"Traceback" in text


async def _ws_huge_timestamp(port: int, worker: Worker, agent_id: str) -> dict[str, Any]:
    import aiohttp

    out: dict[str, Any] = {"answered": False, "open_after": False, "normal_answered": False,
                           "close_code": None}
    url = f"ws://127.0.0.1:{port}/?{urlencode(worker.query)}"

    async def heartbeat_reply(ws: aiohttp.ClientWebSocketResponse) -> bool:
        deadline = time.monotonic() + 2.0
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = await ws.receive(timeout=left)
            except TimeoutError:
                return False
            if message.type != aiohttp.WSMsgType.TEXT:
                return False  # closed (or closing)
            with contextlib.suppress(ValueError, AttributeError):
                if json.loads(message.data).get("packet_type") == "heartbeat":
                    return True
        return False

    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        await ws.send_str(json.dumps({"packet_type": "alive", "subject_id": agent_id,
                                      "data": {"update_id": str(uuid.uuid4())},
                                      "client_timestamp": time.time()}))
        await ws.send_str(json.dumps({"packet_type": "heartbeat", "subject_id": agent_id,
                                      "client_timestamp": 1e306}))
        out["answered"] = await heartbeat_reply(ws)
        if not ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_str(json.dumps({"packet_type": "heartbeat",
                                              "subject_id": agent_id,
                                              "client_timestamp": time.time()}))
                out["normal_answered"] = await heartbeat_reply(ws)
        out["open_after"] = not ws.closed
        out["close_code"] = ws.close_code
    return out


async def attack_odd_inputs(probe: Probe) -> Result:
    run = await probe.start("odd", units=6)
    port = run.port
    parts: list[str] = []
    figures: dict[str, Any] = {}

    async def settle_errors(offset: int) -> bool:
        await asyncio.sleep(0.3)
        return _logged_error(run.stderr_since(offset))

    def note(logged: bool) -> str:
        return " +ERROR logged" if logged else ""

    # a lone surrogate as worker_name (valid JSON text; not encodable as UTF-8)
    offset = run.stderr_size()
    raw = (b'{"provider_data":{"worker_name":"\\ud800","assignment_id":"odd-sur",'
           b'"agent_registration_id":"odd-sur-x","provider_type":"mock"},"client_timestamp":1}')
    surrogate = await http(port, "POST", "/request_agent", body=raw)
    logged = await settle_errors(offset)
    given = agent_id_of(surrogate)
    parts.append(f"surrogate worker_name {surrogate.label()}"
                 + (" (got an agent)" if given else "") + note(logged))
    figures["surrogate"] = {"status": surrogate.status, "agent": given is not None,
                            "error_logged": logged}

    # final_data nested 980 levels deep
    nest_worker = Worker(port, "odd-nest", "odd-nest-as")
    agent = await nest_worker.agent()
    offset = run.stderr_size()
    body = (f'{{"USED_AGENT_ID":{json.dumps(agent)},"final_data":'.encode()
            + b"[" * 980 + b"]" * 980 + b',"client_timestamp":1}')
    nested = await http(port, "POST", "/submit_task", query=nest_worker.query, body=body)
    logged = await settle_errors(offset)
    parts.append(f"nesting 980 {nested.label()}{note(logged)}")
    figures["nested_980"] = {"status": nested.status, "error_logged": logged}

    # a multipart upload with a 300-character file name, for a valid agent
    file_worker = Worker(port, "odd-file", "odd-file-as")
    agent = await file_worker.agent()
    offset = run.stderr_size()
    upload = multipart([("USED_AGENT_ID", agent), ("final_string_data", '{"answer": "f"}')],
                       [("file", "f" * 296 + ".txt", b"hello")])
    long_name = await http(port, "POST", "/submit_task", query=file_worker.query, chunks=upload,
                           content_type=MULTIPART)
    logged = await settle_errors(offset)
    parts.append(f"300-char file name {long_name.label()}{note(logged)}")
    figures["long_filename"] = {"status": long_name.status, "error_logged": logged}

    # a websocket heartbeat with client_timestamp 1e306
    ws_worker = Worker(port, "odd-ws", "odd-ws-as")
    agent = await ws_worker.agent()
    offset = run.stderr_size()
    try:
        ws = await asyncio.wait_for(_ws_huge_timestamp(port, ws_worker, agent), 10)
        logged = await settle_errors(offset)
        parts.append(f"ws heartbeat 1e306: answered {yes(ws['answered'])}, open after "
                     f"{yes(ws['open_after'])}, next heartbeat answered "
                     f"{yes(ws['normal_answered'])}"
                     + (f", close code {ws['close_code']}" if ws["close_code"] else "")
                     + note(logged))
        figures["ws_1e306"] = {**ws, "error_logged": logged}
    except Exception as exc:  # noqa: BLE001 - reported; the last input still runs
        parts.append(f"ws heartbeat 1e306: error: {type(exc).__name__}: {exc}"[:120])
        figures["ws_1e306"] = {"error": f"{type(exc).__name__}: {exc}"}

    # a client that disconnects mid-body
    offset = run.stderr_size()
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /submit_task HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Content-Type: application/json\r\nContent-Length: 10000\r\n\r\n"
                 + b'{"USED_AGENT_ID":"' + b"x" * 82)
    await writer.drain()
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    await asyncio.sleep(1.0)
    logged = _logged_error(run.stderr_since(offset))
    later = [await http(port, "GET", "/task_config.json",
                        query={"mephisto_task_version": CLIENT_VERSION}, timeout=5)
             for _ in range(3)]
    later_ok = sum(a.status == 200 for a in later)
    parts.append(f"mid-body disconnect: ERROR/traceback logged {yes(logged)}, "
                 f"later requests ok {later_ok}/3")
    figures["mid_body_disconnect"] = {"error_logged": logged, "later_ok": later_ok}
    return "; ".join(parts), figures


# -- driver ------------------------------------------------------------------------------------

Attack = Callable[[Probe], Awaitable[Result]]

ATTACKS: dict[str, tuple[Attack, float]] = {
    "metadata": (attack_metadata, 40),
    "onboarding_race": (attack_onboarding_race, 40),
    "assignment_race": (attack_assignment_race, 40),
    "double_completion": (attack_double_completion, 40),
    "kill9_retry": (attack_kill9_retry, 60),
    "foreign_agent": (attack_foreign_agent, 40),
    "huge_header": (attack_huge_header, 60),
    "idle_sockets": (attack_idle_sockets, 60),
    "unknown_uploads": (attack_unknown_uploads, 70),
    "log_flood": (attack_log_flood, 60),
    "odd_inputs": (attack_odd_inputs, 60),
}


async def run_attack(probe: Probe, name: str) -> dict[str, Any]:
    attack, timeout = ATTACKS[name]
    start = time.monotonic()
    figures: dict[str, Any] = {}
    try:
        result, figures = await asyncio.wait_for(attack(probe), timeout)
    except TimeoutError:
        result = f"hung (no result after {timeout:.0f} s)"
    except Exception as exc:  # noqa: BLE001 - any failure is a row of the table
        result = f"error: {type(exc).__name__}: {exc}"[:300]
    finally:
        await asyncio.to_thread(probe.kill_all)
        probe.runs.clear()
    seconds = time.monotonic() - start
    print(f"[probe] {name}: {seconds:.1f} s", file=sys.stderr, flush=True)
    return {"attack": name, "result": result, "seconds": round(seconds, 2), "figures": figures}


def table(rows: list[dict[str, Any]], width: int = 96) -> str:
    name_width = max(len("attack"), *(len(r["attack"]) for r in rows))
    rule = "-" * name_width + "-+-" + "-" * width
    lines = [f"{'attack':<{name_width}} | result", rule]
    for row in rows:
        wrapped = textwrap.wrap(row["result"], width) or [""]
        lines.append(f"{row['attack']:<{name_width}} | {wrapped[0]}")
        lines.extend(f"{'':<{name_width}} | {more}" for more in wrapped[1:])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated attacks: " + ",".join(ATTACKS))
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--server-nofile", type=int, default=1024,
                        help="soft open-file limit of the idle_sockets server (0: inherit)")
    args = parser.parse_args(argv)
    names = list(ATTACKS)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in ATTACKS]
        if unknown:
            parser.error(f"unknown attack(s) {', '.join(unknown)}; known: {', '.join(ATTACKS)}")
    workdir = Path(tempfile.mkdtemp(prefix="probe-hardening-"))
    probe = Probe(workdir, args.server_nofile)
    start = time.monotonic()
    try:
        rows = [asyncio.run(run_attack(probe, name)) for name in names]
    finally:
        probe.kill_all()
        if args.keep:
            print(f"[probe] kept {workdir}", file=sys.stderr)
        else:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    code = ", ".join(sorted(probe.mephisto_paths)) or "?"
    print(f"code under test: {code}   ({time.monotonic() - start:.0f} s)")
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps({"code": sorted(probe.mephisto_paths), "rows": rows},
                                        indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
