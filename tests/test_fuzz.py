"""Property-based fuzzing (hypothesis) of the task server, against a real live run.

One run of the static task with onboarding is launched for the module: operator, mock
provider, a SQLite file and the real task server on uvicorn. Every HTTP endpoint and the
websocket get generated input: arbitrary JSON (deep nesting, edge numbers, lone
surrogates, control characters, long strings), wrong types, missing fields, bodies that
are not JSON or not UTF-8, odd content types, methods and query strings, real agent ids
(the worker's own, another worker's, an onboarding one, finished ones) and garbage ones,
odd upload file names. Properties, checked after every request:

- no 5xx and nothing logged at ERROR (a traceback the client never sees); every request
  gets an answer, unless the client hung up first;
- a refusal (any 4xx, or request_agent answered with agent_id null) leaves the database
  as it was: row counts and a hash of every table's rows are equal before and after, and
  a refused upload leaves no file; GETs and websocket messages change nothing either;
- error bodies are `{"error": str}`; agent answers carry a string or null agent_id;
- a websocket stays open and answers heartbeats (in milliseconds a JavaScript Date can
  hold) whatever it is sent, except `alive` for an agent that does not exist (4004);
- each endpoint was seen both accepting and refusing, so a property cannot hold vacuously.

Bounded for CI: EXAMPLES per property, derandomized (the same inputs on every run), no
example database on disk. `MEPHISTO_FUZZ_EXAMPLES=3000` searches deeper.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import itertools
import json
import logging
import os
import sqlite3
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mephisto.testing.http_client import HTTPClient

T = TypeVar("T")
# a failing example's report may hold a 200 kB body: worth its cost
pytestmark = pytest.mark.filterwarnings(
    "ignore:Generating overly large repr:hypothesis.errors.HypothesisWarning")

EXAMPLES = int(os.environ.get("MEPHISTO_FUZZ_EXAMPLES", "250"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # a request's time depends on the machine, not on the input
    derandomize=True,
    database=None,
    # big bodies on purpose, and each example is a real exchange with a server
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
UNITS = max(1000, 4 * EXAMPLES)  # more than the examples use up: the run must not end
TIMEOUT = 10.0  # seconds for any one exchange: a hang is a failure, not a stuck CI job
SECRET = "TOP SECRET: outside the static directory"

# -- generated values ----------------------------------------------------------------------


@dataclass(frozen=True)
class Fragment:
    """Raw JSON text spliced into a body as is (NaN, 1e999, 1000 levels of nesting)."""

    text: str

    def __repr__(self) -> str:
        return f"Fragment({self.text[:60]!r}{'...' if len(self.text) > 60 else ''})"


@dataclass(frozen=True)
class AgentRef:
    """A real agent of the run, resolved to its id when the request is sent."""

    kind: str  # one of AGENT_KINDS


AGENT_KINDS = ("own", "foreign", "onboarding", "submitted", "failed_onboarding")
ODD_CHARS = ["\ud800", "\udbff", "\udc00", "\udfff", "\ud83d\ude00", "\x00", "\x01", "\x1f",
             "\x7f", "\n", "\r", "\t", '"', "\\", "/", "\u2028", "\ufeff", "\uffff",
             "\U0010ffff", "é", "%", "&", "=", "?", "#", " ", "{", "["]
texts = st.one_of(
    st.text(max_size=20),
    st.lists(st.sampled_from(ODD_CHARS) | st.text(max_size=3), max_size=8).map("".join),
    st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3),  # lone surrogates
    st.sampled_from(["", " ", "onboarding", "null", "../x", "x" * 300, "y" * 20_000]),
)
EDGE_NUMBERS: list[int | float] = [
    0, -0.0, 1e306, -1e306, 1.7976931348623157e308, 5e-324, 2**53 + 1, -(2**63), 2**64,
    10**30, -(10**400), 1795427151.127,
]
RAW_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e999", "-1e400", "1e-400", "-0", "1E+2",
               "1" * 4300, "1" * 5000, "01", "1.", ".5", "+1", "0x10"]
numbers = st.one_of(
    st.integers(), st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(EDGE_NUMBERS), st.sampled_from(RAW_NUMBERS).map(Fragment),
)
scalars = st.none() | st.booleans() | numbers | texts


def _deep(depth: int, opener: str) -> Fragment:
    if opener == "[":
        return Fragment("[" * depth + "1" + "]" * depth)
    return Fragment('{"k":' * depth + "1" + "}" * depth)


deep_values = st.builds(
    _deep,
    # around the limit, anywhere, and densely where Python's recursion limit (~1000 frames)
    # lets json.loads through but trips an encoder deeper down the stack
    st.sampled_from([63, 64, 65, 100, 5000]) | st.integers(1, 1100) | st.integers(940, 1100),
    st.sampled_from(["[", "{"]),
)
json_values = st.recursive(
    scalars, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(texts, kids, max_size=4),
    max_leaves=10,
)
any_json = json_values | deep_values
agent_ids = st.one_of(
    st.sampled_from(AGENT_KINDS).map(AgentRef), texts,
    st.sampled_from(["z" * 200_000, "onboarding-1", "AAAAAAAAAAAAAAAAAAAAAAAA"]), json_values,
)
timestamps = numbers | st.none() | texts
worker_names = st.sampled_from(["fuzz-own", "fuzz-other", "fuzz-failed"]) | texts
assignment_ids = st.integers(0, 10**6).map(lambda n: f"fuzz-{n}") | texts | st.none()

# What the client sends, as templates: values are strategies, nested dicts are templates.
# A "clean" body has every field of the right type (content still arbitrary where the
# protocol allows any JSON), so requests get through to the backend and the database;
# a "wild" body drops, retypes and adds keys at every level and holds anything at all.
clean_texts = st.text(max_size=20) | st.sampled_from(["", "x" * 300, "é😀", "\x00\x1f\u2028"])
clean_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(EDGE_NUMBERS) | clean_texts,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(clean_texts, kids, max_size=4),
    max_leaves=10,
) | st.builds(_deep, st.integers(1, 60), st.sampled_from(["[", "{"]))  # under the limit
clean_timestamps = st.floats(0, 2e9) | st.sampled_from(EDGE_NUMBERS) | st.none()
# free-form fields (final_data, metadata, ...): any JSON, sometimes nested past the limit
free_json = clean_json | clean_json | deep_values
own_agents = st.sampled_from(AGENT_KINDS).map(AgentRef)
# mostly the agent that may do this: the request gets through
onboarding_agents = st.sampled_from(["onboarding"] * 4 + list(AGENT_KINDS)).map(AgentRef)
task_agents = st.sampled_from(["own"] * 3 + list(AGENT_KINDS)).map(AgentRef)
CLEAN: dict[str, dict[str, Any]] = {
    "/request_agent": {
        "provider_data": {
            "worker_name": st.sampled_from(["fuzz-own", "fuzz-other", "fuzz-failed"])
            | st.text(min_size=1, max_size=30).filter(str.strip),
            "assignment_id": st.integers(0, 10**6).map(lambda n: f"fuzz-{n}"),
            "agent_registration_id": clean_texts, "provider_type": st.just("mock"),
        },
        "client_timestamp": clean_timestamps,
    },
    "/submit_onboarding": {
        "provider_data": {
            "USED_AGENT_ID": onboarding_agents,
            "onboarding_data": st.fixed_dictionaries(
                {"answer": st.sampled_from(["4", "5"]) | clean_texts}) | free_json,
        },
        "client_timestamp": clean_timestamps,
    },
    "/submit_task": {"USED_AGENT_ID": task_agents, "final_data": free_json,
                     "client_timestamp": clean_timestamps},
    "/submit_metadata": {"USED_AGENT_ID": task_agents,
                         "metadata": st.dictionaries(clean_texts, free_json, max_size=3),
                         "client_timestamp": clean_timestamps},
    "/log_error": {"USED_AGENT_ID": own_agents | st.none(), "error_data": free_json,
                   "client_timestamp": clean_timestamps},
}
REGISTRATION = {"worker_name": worker_names, "assignment_id": assignment_ids,
                "agent_registration_id": texts, "provider_type": st.just("mock") | texts}
WILD: dict[str, dict[str, Any]] = {
    "/request_agent": {"provider_data": REGISTRATION, "client_timestamp": timestamps},
    "/submit_onboarding": {
        "provider_data": {
            "USED_AGENT_ID": agent_ids,
            "onboarding_data": st.fixed_dictionaries(
                {"answer": st.sampled_from(["4", "5"]) | texts}) | any_json,
        },
        "client_timestamp": timestamps,
    },
    "/submit_task": {
        "USED_AGENT_ID": agent_ids,
        "final_data": st.fixed_dictionaries({"answer": texts}) | any_json,
        "client_timestamp": timestamps,
    },
    "/submit_metadata": {
        "USED_AGENT_ID": agent_ids,
        "metadata": st.dictionaries(texts, any_json, max_size=3) | any_json,
        "client_timestamp": timestamps,
    },
    "/log_error": {"USED_AGENT_ID": agent_ids | st.none(), "error_data": any_json,
                   "client_timestamp": timestamps},
}
# keep is listed first: hypothesis shrinks towards it, so failures come out minimal
KEY_ACTIONS = ["keep"] * 6 + ["drop", "retype"]
ENCODINGS = ["ascii", "utf-8", "indent", "utf-16", "bom", "cut", "garbage"]


@dataclass(frozen=True)
class Body:
    """A JSON body to send: a value (with Fragments and AgentRefs) and how to encode it."""

    value: Any
    encoding: str = "ascii"
    cut: float = 1.0  # for "cut": the fraction of the bytes sent
    garbage: bytes = b""  # for "garbage": sent instead of the value


def _fill(draw: Callable[[st.SearchStrategy[Any]], Any], template: Any, wild: bool = True) -> Any:
    if not isinstance(template, dict):
        return draw(template)
    out: dict[str, Any] = {}
    for key, sub in template.items():
        action = draw(st.sampled_from(KEY_ACTIONS)) if wild else "keep"
        if action == "keep":
            out[key] = _fill(draw, sub, wild)
        elif action == "retype":
            out[key] = draw(any_json)
    if not wild:
        return out
    out.update({k: v for k, v in draw(st.dictionaries(texts, any_json, max_size=2)).items()
                if k not in out})
    return out


@st.composite
def bodies(draw: Any, clean: dict[str, Any], wild: dict[str, Any]) -> Body:
    """A body from templates: clean half of the time, else wild (or not even an object)."""
    if draw(st.booleans()):
        return Body(_fill(draw, clean, wild=False), draw(st.sampled_from(["ascii", "utf-8"])))
    value = draw(any_json) if draw(st.integers(0, 10)) == 0 else _fill(draw, wild)
    encoding = draw(st.sampled_from(ENCODINGS))
    return Body(
        value, encoding,
        cut=draw(st.floats(0, 1)) if encoding == "cut" else 1.0,
        garbage=draw(st.binary(max_size=64)) if encoding == "garbage" else b"",
    )


def _quote(text: str) -> str:
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


queries = st.one_of(
    st.just(""),
    st.just("?worker_id=fuzz-own&assignment_id=fuzz-1"),
    st.dictionaries(texts, texts, max_size=3).map(
        lambda d: "?" + "&".join(f"{_quote(k)}={_quote(v)}" for k, v in d.items())),
    st.sampled_from(["?", "?&&", "?=", "?a", "?%", "?%zz", "?a=%00", "?a=%ED%A0%80",
                     "?mephisto_task_version=%ud800", "?mephisto_task_version=" + "v" * 20_000,
                     "?worker_id=a&worker_id=b", "?" + "a=1&" * 3000]),
)
JSON_TYPES = ["application/json"] * 6 + [
    "application/json; charset=utf-8", "application/json; charset=utf-16", "text/plain", "",
    "application/x-www-form-urlencoded", "multipart/form-data", "multipart/form-data; boundary=z",
    "*/*", "application/json" + ";" * 100,
]

# -- the run and the checks -----------------------------------------------------------------


class ErrorRecords(logging.Handler):
    """Records at ERROR and above, from any thread (the server logs on the operator's)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def take(self) -> list[str]:
        taken, self.records = self.records, []
        return [_shorten(self.format(r), 3000) for r in taken]


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class TableSnapshots:
    """Row count and a hash of the rows of every table of a SQLite file.

    Read through a connection of our own; `PRAGMA data_version` changes whenever another
    connection commits, so the tables are read again only after a commit."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.tables = [name for (name,) in self.conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name")]
        self._version: int | None = None
        self._snapshot: dict[str, tuple[int, str]] = {}

    def take(self) -> dict[str, tuple[int, str]]:
        version = self.conn.execute("PRAGMA data_version").fetchone()[0]
        if version != self._version:
            self.conn.execute("BEGIN")
            try:
                self._snapshot = {table: self._digest(table) for table in self.tables}
            finally:
                self.conn.execute("COMMIT")
            self._version = version
        return self._snapshot

    def _digest(self, table: str) -> tuple[int, str]:
        rows = sorted(repr(row) for row in self.conn.execute(f'SELECT * FROM "{table}"'))
        digest = hashlib.blake2b(digest_size=16)
        for row in rows:
            digest.update(row.encode("utf-8", "surrogatepass"))
        return len(rows), digest.hexdigest()

    def close(self) -> None:
        self.conn.close()


@dataclass
class State:
    tables: dict[str, tuple[int, str]]
    files: list[str] | None

    def changes(self, after: State) -> list[str]:
        changed = [f"table {t}: {self.tables[t]} -> {after.tables[t]}"
                   for t in self.tables if self.tables[t] != after.tables.get(t)]
        if self.files != after.files:
            changed.append(f"files: {self.files} -> {after.files}")
        return changed


@dataclass
class Outcomes:
    """What each endpoint answered during the fuzzing, to check it was not vacuous."""

    seen: dict[str, Counter[str]] = field(default_factory=dict)

    def add(self, endpoint: str, outcome: str) -> None:
        self.seen.setdefault(endpoint, Counter())[outcome] += 1

    def require(self, endpoint: str, *outcomes: str) -> None:
        seen = self.seen.get(endpoint, Counter())
        missing = [o for o in outcomes if not seen[o]]
        assert not missing, f"{endpoint}: never saw {missing} (saw {dict(seen)})"


class FuzzTarget:
    """The live run, a keep-alive client on a loop of our own, and the property checks."""

    def __init__(self, run: Any, db_path: Path, errors: ErrorRecords) -> None:
        from mephisto.utils.dirs import get_run_dir

        self.run_dir = lambda: get_run_dir(run.task_run_id)
        self.url = run.url.rstrip("/")
        self.host, port = self.url.removeprefix("http://").split(":")
        self.port = int(port)
        self.loop = asyncio.new_event_loop()
        self.http = HTTPClient(self.url)
        self.tables = TableSnapshots(db_path)
        self.errors = errors
        self.outcomes = Outcomes()
        self._agents: dict[str, str] = {}
        self._submitted: list[str] = []
        self._serial = itertools.count()

    def call(self, coro: Awaitable[T]) -> T:
        return self.loop.run_until_complete(asyncio.wait_for(coro, TIMEOUT))

    def request(self, method: str, target: str, body: bytes | None = None,
                content_type: str = "application/json") -> tuple[int, bytes]:
        return self.call(self.http.request(method, target, body, content_type))

    def close(self) -> None:
        self.call(self.http.close())
        self.loop.close()
        self.tables.close()

    # -- real agents ---------------------------------------------------------------------

    def _request_agent(self, worker: str, assignment: str) -> dict[str, Any]:
        body = {"provider_data": {"worker_name": worker, "assignment_id": assignment,
                                  "agent_registration_id": f"{assignment}-{worker}",
                                  "provider_type": "mock"}}
        status, answer = self.request("POST", "/request_agent", json.dumps(body).encode())
        assert status == 200, answer
        return json.loads(answer)["data"]  # type: ignore[no-any-return]

    def _onboard(self, worker: str, answer: str) -> dict[str, Any]:
        agent_id = self._request_agent(worker, f"{worker}-onboarding")["agent_id"]
        assert agent_id.startswith("onboarding"), agent_id
        body = {"provider_data": {"USED_AGENT_ID": agent_id, "onboarding_data": {"answer": answer}}}
        status, data = self.request("POST", "/submit_onboarding", json.dumps(body).encode())
        assert status == 200, data
        return json.loads(data)["data"]  # type: ignore[no-any-return]

    def setup_agents(self) -> None:
        """Workers as the fuzzing needs them: `fuzz-own` and `fuzz-other` passed onboarding,
        `fuzz-failed` failed it (its agent is refused ever after); one unit submitted."""
        for worker in ("fuzz-own", "fuzz-other"):
            assert self._onboard(worker, "4")["agent_id"]
        failed = self._request_agent("fuzz-failed", "fuzz-failed-onboarding")["agent_id"]
        body = {"provider_data": {"USED_AGENT_ID": failed, "onboarding_data": {"answer": "5"}}}
        status, data = self.request("POST", "/submit_onboarding", json.dumps(body).encode())
        assert status == 200 and json.loads(data)["data"]["agent_id"] is None, data
        self._agents["failed_onboarding"] = failed
        done = self.agent("own")
        status, data = self.request("POST", "/submit_task", json.dumps(
            {"USED_AGENT_ID": done, "final_data": {"answer": "x"}}).encode())
        assert status == 200, data
        self.spent(done)

    def agent(self, kind: str) -> str:
        """An agent id of `kind`, made on first use and after it was used up."""
        agent_id = self._agents.get(kind)
        if agent_id is not None:
            return agent_id
        n = next(self._serial)
        if kind == "own":
            agent_id = self._request_agent("fuzz-own", f"own-{n}")["agent_id"]
        elif kind == "foreign":  # another worker's: requests come as fuzz-own's
            agent_id = self._request_agent("fuzz-other", f"other-{n}")["agent_id"]
        elif kind == "onboarding":
            agent_id = self._request_agent(f"fuzz-new-{n}", f"new-{n}")["agent_id"]
        elif kind == "submitted":
            agent_id = self._submitted[n % len(self._submitted)]
        assert isinstance(agent_id, str), (kind, agent_id)
        if kind != "submitted":
            self._agents[kind] = agent_id
        return agent_id

    def spent(self, agent_id: str) -> None:
        """This agent submitted: later requests of its kind get a fresh one."""
        for kind, known in list(self._agents.items()):
            if known == agent_id and kind != "failed_onboarding":
                del self._agents[kind]
        if agent_id not in self._submitted:
            self._submitted.append(agent_id)

    def resolve(self, value: Any) -> Any:
        """`value` with every AgentRef replaced by a real agent id."""
        if isinstance(value, AgentRef):
            return self.agent(value.kind)
        if isinstance(value, dict):
            return {k: self.resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        return value

    def submitted(self, path: str, value: Any) -> None:
        """After a 2xx from `path` for a body of `value`: its agent is used up."""
        if path == "/submit_onboarding" and isinstance(value, dict):
            value = value.get("provider_data")
        if path in ("/submit_task", "/submit_onboarding") and isinstance(value, dict):
            agent_id = value.get("USED_AGENT_ID")
            if isinstance(agent_id, str):
                self.spent(agent_id)

    def encode(self, body: Body) -> tuple[bytes, Any]:
        """The bytes to send, and the value they encode (agent ids resolved)."""
        if body.encoding == "garbage":
            return body.garbage, None
        value = self.resolve(body.value)
        if body.encoding in ("utf-8", "utf-16"):
            text = to_json(value, ensure_ascii=False)
            return text.encode(body.encoding, "surrogatepass"), value
        raw = to_json(value, indent=2 if body.encoding == "indent" else None).encode()
        if body.encoding == "bom":
            return b"\xef\xbb\xbf" + raw, value
        if body.encoding == "cut":
            return raw[:int(len(raw) * body.cut)], None
        return raw, value

    # -- the properties ------------------------------------------------------------------

    def state(self, files: bool = False) -> State:
        listing = None
        if files:
            root = self.run_dir()
            listing = sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists(
                ) else []
        return State(self.tables.take(), listing)

    def check_no_errors(self, what: str) -> None:
        errors = self.errors.take()
        assert not errors, f"{what}: logged at ERROR:\n" + "\n".join(errors)

    def check_answer(self, endpoint: str, request: str, status: int | None, answer: bytes,
                     before: State, files: bool = False, changes_nothing: bool = False) -> None:
        """The properties every answer must have; `changes_nothing`: even a 2xx must not
        change the database (GETs, and requests that were cut off)."""
        what = f"{request} -> {status} {answer[:300]!r}"
        self.check_no_errors(what)
        assert status is None or status < 500, what
        refused = status is None or status >= 400
        if status is not None and endpoint in CLEAN:
            parsed = json.loads(answer)  # our endpoints always answer JSON
            if status >= 400:
                assert isinstance(parsed, dict) and set(parsed) == {"error"}, what
                assert isinstance(parsed["error"], str), what
            elif endpoint in ("/request_agent", "/submit_onboarding"):
                agent_id = parsed["data"]["agent_id"]
                assert agent_id is None or isinstance(agent_id, str), what
                if agent_id is None:
                    self.outcomes.add(endpoint, "no agent")
                    refused = refused or endpoint == "/request_agent"
        self.outcomes.add(endpoint, "none" if status is None else f"{status // 100}xx")
        if refused or changes_nothing:
            changes = before.changes(self.state(files))
            assert not changes, (f"{what}: {'refused, yet ' if refused else ''}changed the "
                                 "database:\n" + "\n".join(changes))


def to_json(value: Any, ensure_ascii: bool = True, indent: int | None = None) -> str:
    """json.dumps with each Fragment spliced in as raw text."""
    fragments: dict[str, str] = {}

    def splice(obj: Any) -> str:
        if not isinstance(obj, Fragment):
            raise TypeError(f"cannot encode {obj!r}")
        token = f"FRAGMENT-{uuid.uuid4().hex}"
        fragments[json.dumps(token)] = obj.text
        return token

    text = json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, default=splice)
    for token, raw in fragments.items():
        text = text.replace(token, raw, 1)
    return text


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzTarget]:
    from mephisto.abstractions.blueprints.static_task import SharedStaticTaskState
    from mephisto.db import MephistoDB
    from mephisto.operations.operator import Operator
    from mephisto.testing.fixtures import DEFAULT_HTML, LaunchedRun, static_run_config

    tmp = tmp_path_factory.mktemp("fuzz")
    (tmp / "secret.txt").write_text(SECRET)
    static = tmp / "static"
    (static / "sub").mkdir(parents=True)
    (static / "hello.txt").write_text("hello static")
    (static / "sub" / "inner.txt").write_text("inner file")
    (static / ".hidden").write_text(SECRET)
    os.symlink(tmp / "secret.txt", static / "link-out.txt")
    (tmp / "task.html").write_text(DEFAULT_HTML)
    (tmp / "onboarding.html").write_text('<input name="answer"><button>Go</button>')
    errors = ErrorRecords()
    loggers = [logging.getLogger(), logging.getLogger("uvicorn")]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MEPHISTO_HOME", str(tmp / "home"))
        env.setenv("MEPHISTO_DATA_DIR", str(tmp / "data"))
        env.delenv("MEPHISTO_DATABASE_URL", raising=False)
        db_path = tmp / "mephisto.db"
        db = MephistoDB(f"sqlite:///{db_path}")
        operator = Operator(db)
        try:
            state = SharedStaticTaskState(
                static_task_data=[{"text": f"item-{i}"} for i in range(UNITS)],
                onboarding_data={"question": "2+2"},
                validate_onboarding=lambda data: isinstance(data["outputs"], dict)
                and data["outputs"].get("answer") == "4",
            )
            config = static_run_config(
                tmp / "task.html",
                blueprint__onboarding_qualification="fuzz-onboarded",
                blueprint__onboarding_source=str(tmp / "onboarding.html"),
                blueprint__extra_source_dir=str(static),
            )
            run = LaunchedRun(operator, operator.launch_task_run(config, state))
            for logger in loggers:
                logger.addHandler(errors)
            fuzz = FuzzTarget(run, db_path, errors)
            try:
                fuzz.setup_agents()
                fuzz.check_no_errors("setup")
                yield fuzz
                fuzz.check_no_errors("after the fuzzing")  # e.g. from a background task
            finally:
                fuzz.close()
        finally:
            for logger in loggers:
                logger.removeHandler(errors)
            operator.shutdown()
            db.shutdown()


# -- the properties, endpoint by endpoint ----------------------------------------------------


@pytest.mark.parametrize("path", list(CLEAN))
def test_json_endpoints(target: FuzzTarget, path: str) -> None:
    @FUZZ
    @given(body=bodies(CLEAN[path], WILD[path]), query=queries,
           content_type=st.sampled_from(JSON_TYPES))
    def fuzz(body: Body, query: str, content_type: str) -> None:
        raw, value = target.encode(body)
        before = target.state()
        status, answer = target.request("POST", path + query, raw, content_type)
        target.check_answer(path, f"POST {path}{query[:100]} ({content_type}) {raw[:300]!r}",
                            status, answer, before)
        if 200 <= status < 300:
            target.submitted(path, value)

    fuzz()
    target.outcomes.require(path, "2xx", "4xx")
    if path == "/request_agent":
        target.outcomes.require(path, "no agent")  # fuzz-failed is refused: a null answer


GET_PATHS = [
    "/", "/task_config.json", "/wrap_crowd_source.js", "/_mephisto/static-task.js", "/healthz",
    "/metrics", "/hello.txt", "/sub/inner.txt", "/.hidden", "/link-out.txt", "/../secret.txt",
    "/%2e%2e/secret.txt", "/sub/%2e%2e/%2e%2e/secret.txt", "//etc/passwd", "/hello.txt%00.png",
    "/sub/", "/sub", "/index.html", "/bundle.js", "/" + "a" * 5000,
]
SEGMENTS = ["..", ".", "", "%2e%2e", "%2E%2e", "sub", "hello.txt", "%00", "%2f", "%5c", "~",
            "secret.txt", "link-out.txt", ".hidden", "%", "%zz"]
paths = st.sampled_from(GET_PATHS) | st.lists(
    st.sampled_from(SEGMENTS) | texts.map(_quote), min_size=1, max_size=5,
).map(lambda segments: "/" + "/".join(segments))


def test_get_endpoints_and_static_paths(target: FuzzTarget) -> None:
    @FUZZ
    @given(path=paths, query=queries)
    def fuzz(path: str, query: str) -> None:
        before = target.state()
        status, answer = target.request("GET", path + query, None)
        target.check_answer("GET", f"GET {path[:200]}{query[:100]}", status, answer, before,
                            changes_nothing=True)
        assert SECRET.encode() not in answer, path

    fuzz()
    target.outcomes.require("GET", "2xx", "4xx")


# -- multipart submits ------------------------------------------------------------------------

ODD_FILENAMES = [
    "", "a.txt", "../x", "..", ".", "/etc/passwd", "a/../../b", "..\\..\\x", "a\x00b.txt", "\x00",
    "é.png", "😀.png", "\ud800.txt", ".hidden", "CON", "x" * 300, "%2e%2e%2fx", " ", "a" * 255,
    "ü" * 200, "a\r\nContent-Type: text/html", 'a"b.txt', "a;b=c.txt",
]
long_names = st.builds(lambda char, n: char * n, st.sampled_from(["x", "é", "😀", "_", "."]),
                       st.sampled_from([100, 254, 255, 256, 300, 1000]))
filenames = st.sampled_from(ODD_FILENAMES) | texts | long_names


@dataclass(frozen=True)
class FilePart:
    field_name: str
    filename: str
    style: str  # "quoted" (as browsers send it), "star" (RFC 5987), "bare" (unquoted)
    content_type: str | None
    data: bytes


file_parts = st.builds(
    FilePart,
    field_name=st.sampled_from(["file", "photo", "USED_AGENT_ID", "final_string_data"]) | texts,
    filename=filenames,
    style=st.sampled_from(["quoted", "quoted", "quoted", "star", "bare"]),
    content_type=st.none() | st.sampled_from(
        ["application/octet-stream", "image/png", "", "x" * 300]),
    data=st.binary(max_size=64) | st.sampled_from([b"", b"\x00" * 4096]),
)
BOUNDARIES = ["fuzzboundary", "----WebKitFormBoundary7MA4YWxkTrZu0gW", "x" * 70,
              "a'()+_,-./:=?", "b"]
MULTIPART_TYPES = ["multipart/form-data; boundary={b}"] * 4 + [
    'multipart/form-data; boundary="{b}"', "multipart/form-data",
    "multipart/form-data; boundary={b}; charset=utf-16",
    "multipart/form-data; boundary={b}; charset=nonsense", "multipart/form-data; boundary=other",
    "Multipart/Form-Data; boundary={b}", "multipart/form-data; boundary={b}{b}",
]


@dataclass(frozen=True)
class Multipart:
    """A multipart /submit_task: the parts in order, then how the whole is framed."""

    agent_ids: list[Any]  # USED_AGENT_ID parts (none, one, or repeated)
    final: list[Body]  # final_string_data parts
    files: list[FilePart]
    extra: list[tuple[str, str]]
    boundary: str
    content_type: str  # "{b}" stands for the boundary
    cut: float = 1.0  # the fraction of the bytes sent


@st.composite
def multiparts(draw: Any) -> Multipart:
    files = draw(st.lists(file_parts, max_size=3) | st.builds(lambda f: [f] * 101, file_parts))
    boundary = draw(st.sampled_from(BOUNDARIES))
    if draw(st.booleans()):  # clean: what the static task sends, with odd files
        return Multipart([draw(task_agents)], [Body(draw(free_json))], files, [], boundary,
                         MULTIPART_TYPES[0])
    cut = draw(st.just(1.0) | st.floats(0, 1) | st.floats(0.9, 1, exclude_max=True))
    return Multipart(
        draw(st.lists(agent_ids, max_size=2)),
        draw(st.lists(st.builds(Body, any_json, st.sampled_from(ENCODINGS[:5])), max_size=2)),
        files, draw(st.lists(st.tuples(texts, texts), max_size=2)), boundary,
        draw(st.sampled_from(MULTIPART_TYPES)), cut,
    )


def _header_value(text: str) -> bytes:
    """A quoted header parameter as browsers write it: CR, LF and '"' percent-escaped."""
    raw = text.encode("utf-8", "surrogatepass")
    return raw.replace(b"\r", b"%0D").replace(b"\n", b"%0A").replace(b'"', b"%22")


def render_multipart(target: FuzzTarget, form: Multipart) -> tuple[bytes, str, Any]:
    """The body, its content type, and the USED_AGENT_ID sent (if one string)."""
    parts: list[bytes] = []
    sent_ids = [target.resolve(a) for a in form.agent_ids]
    for value in sent_ids:
        text = value if isinstance(value, str) else to_json(value)
        parts.append(b'Content-Disposition: form-data; name="USED_AGENT_ID"\r\n\r\n'
                     + text.encode("utf-8", "surrogatepass"))
    for body in form.final:
        parts.append(b'Content-Disposition: form-data; name="final_string_data"\r\n\r\n'
                     + target.encode(body)[0])
    for f in form.files:
        head = b'Content-Disposition: form-data; name="' + _header_value(f.field_name) + b'"'
        if f.style == "quoted":
            head += b'; filename="' + _header_value(f.filename) + b'"'
        elif f.style == "star":
            head += b"; filename*=UTF-8\'\'" + _quote(f.filename).encode()
        else:
            head += b"; filename=" + f.filename.encode("utf-8", "surrogatepass")
        if f.content_type is not None:
            head += b"\r\nContent-Type: " + f.content_type.encode()
        parts.append(head + b"\r\n\r\n" + f.data)
    for name, value in form.extra:
        parts.append(b'Content-Disposition: form-data; name="' + _header_value(name) + b'"\r\n\r\n'
                     + value.encode("utf-8", "surrogatepass"))
    boundary = form.boundary.encode()
    data = b"".join(b"--" + boundary + b"\r\n" + part + b"\r\n" for part in parts)
    data += b"--" + boundary + b"--\r\n"
    data = data[:int(len(data) * form.cut)]
    agent = {"USED_AGENT_ID": sent_ids[0]} if len(sent_ids) == 1 else None
    return data, form.content_type.replace("{b}", form.boundary), agent


def test_multipart_submit(target: FuzzTarget) -> None:
    @FUZZ
    @given(form=multiparts(), query=queries)
    def fuzz(form: Multipart, query: str) -> None:
        raw, content_type, agent = render_multipart(target, form)
        before = target.state(files=True)
        status, answer = target.request("POST", "/submit_task" + query, raw, content_type)
        target.check_answer("/submit_task", f"POST /submit_task{query[:100]} ({content_type}) "
                            f"{raw[:600]!r}", status, answer, before, files=True)
        if 200 <= status < 300:
            target.submitted("/submit_task", agent)
            target.outcomes.add("multipart", "2xx")
        else:
            target.outcomes.add("multipart", "4xx")

    fuzz()
    gc.collect()  # an upload left unclosed warns now (ResourceWarning: an error here)
    target.outcomes.require("multipart", "2xx", "4xx")


# -- any method, any framing, over a fresh connection ------------------------------------------

METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND",
           "get", "FOO", "M-SEARCH"]
RAW_PATHS = [*CLEAN, *GET_PATHS, "/nope", "*"]
EXTRA_HEADERS = ["", "", "", "", "Expect: 100-continue\r\n", "Content-Encoding: gzip\r\n",
                 "Transfer-Encoding: gzip\r\n", "Content-Length: 3\r\n", "Host: evil\r\n",
                 "Connection: keep-alive\r\n", "Cookie: a=b\r\n", "X-Forwarded-For: 1.2.3.4\r\n"]
# "short" declares 100 bytes more than it sends, then hangs up: a browser tab closed
# while its body was on the way
FRAMINGS = ["length", "length", "chunked", "none", "short"]


@dataclass(frozen=True)
class RawRequest:
    method: str
    path: str
    query: str
    content_type: str | None
    body: Body
    framing: str
    extra: str

    def render(self, target: FuzzTarget) -> bytes:
        body = target.encode(self.body)[0]
        head = f"{self.method} {self.path}{self.query} HTTP/1.1\r\nHost: fuzz\r\n"
        head += "Connection: close\r\n" + self.extra
        if self.content_type is not None:
            head += f"Content-Type: {self.content_type}\r\n"
        if self.framing == "chunked":
            half = len(body) // 2
            chunks = [c for c in (body[:half], body[half:]) if c]
            body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
            head += "Transfer-Encoding: chunked\r\n"
        elif self.framing == "length":
            head += f"Content-Length: {len(body)}\r\n"
        elif self.framing == "short":
            head += f"Content-Length: {len(body) + 100}\r\n"
        return (head + "\r\n").encode() + body


@st.composite
def raw_requests(draw: Any) -> RawRequest:
    """Half the time a POST to a JSON endpoint (odd framing and headers), else anything."""
    if draw(st.booleans()):
        method, path = "POST", draw(st.sampled_from(list(CLEAN)))
    else:
        method, path = draw(st.sampled_from(METHODS)), draw(st.sampled_from(RAW_PATHS) | paths)
    template = path if path in CLEAN else draw(st.sampled_from(list(CLEAN)))
    return RawRequest(
        method, path, draw(queries), draw(st.none() | st.sampled_from(JSON_TYPES)),
        draw(bodies(CLEAN[template], WILD[template])), draw(st.sampled_from(FRAMINGS)),
        draw(st.sampled_from(EXTRA_HEADERS)),
    )


class _Collect(asyncio.Protocol):
    """Keeps every byte received, even when the connection is then reset (a server that
    answers without reading a big body resets the connection as it closes it; a
    StreamReader would raise the reset instead of returning the answer it holds)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.data += data

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set_result(None)


async def raw_exchange(host: str, port: int, data: bytes, hang_up: bool) -> tuple[int | None,
                                                                                  bytes]:
    """Send bytes on a new connection; (status, body) of the first final answer, or
    (None, b"") if the server closed without answering."""
    transport, protocol = await asyncio.get_running_loop().create_connection(
        _Collect, host, port)
    transport.write(data)
    if hang_up:
        try:
            transport.write_eof()
        except OSError:  # the server answered and closed first (e.g. a 405)
            pass
    await protocol.closed
    answer = bytes(protocol.data)
    while answer.startswith(b"HTTP/1.1 100 "):  # Expect: 100-continue
        answer = answer.partition(b"\r\n\r\n")[2]
    if not answer:
        return None, b""
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def test_raw_requests(target: FuzzTarget) -> None:
    @FUZZ
    @given(request=raw_requests())
    def fuzz(request: RawRequest) -> None:
        data = request.render(target)
        hang_up = request.framing == "short"
        before = target.state()
        status, answer = target.call(raw_exchange(target.host, target.port, data, hang_up))
        what = _shorten(repr(data), 600)
        assert status is not None or hang_up, f"{what}: no answer"
        # a body cut short cannot have been acted on, whatever was answered
        target.check_answer("raw", what, status, answer, before, changes_nothing=hang_up)

    fuzz()
    target.outcomes.require("raw", "2xx", "4xx", "none")


# -- the websocket ----------------------------------------------------------------------------

WS_CLEAN = {
    "packet_type": st.sampled_from(["heartbeat", "mephisto_bound_live_update", "alive"]),
    "subject_id": task_agents | st.sampled_from(["no-such-agent", "onboarding-1"]),
    "data": st.fixed_dictionaries({"update_id": clean_texts}) | st.dictionaries(
        clean_texts, clean_json, max_size=3),
    "client_timestamp": clean_timestamps,
}
WS_WILD = {
    "packet_type": st.sampled_from(["heartbeat", "mephisto_bound_live_update", "alive",
                                    "client_bound_live_update", "update_status", "register_agent",
                                    "submit_unit"]) | texts | json_values,
    "subject_id": agent_ids | st.none(),
    "data": any_json,
    "client_timestamp": timestamps,
}
MAX_JS_DATE_MS = 8.64e15


@dataclass(frozen=True)
class WsMessage:
    body: Body
    binary: bool  # a binary frame (else text; bytes that are not UTF-8 always go binary)


class Socket:
    """One websocket to the run, bound (`alive`) to the fuzzing worker's agent."""

    def __init__(self, target: FuzzTarget) -> None:
        self.target = target
        self.session: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._marker = itertools.count(1_000_000_000)  # heartbeat probes: seconds

    async def open(self) -> aiohttp.ClientWebSocketResponse:
        if self.ws is None or self.ws.closed:
            if self.session is None:
                self.session = aiohttp.ClientSession()
            self.ws = await self.session.ws_connect(self.target.url + "/", max_msg_size=0)
            await self.ws.send_str(json.dumps({"packet_type": "alive", "subject_id":
                                               self.target.agent("own"), "data": {}}))
        return self.ws

    async def exchange(self, data: bytes, binary: bool) -> int | None:
        """Send `data`, then a heartbeat probe; None once the probe is answered, else the
        code the socket was closed with. Every heartbeat answer is checked on the way."""
        ws = await self.open()
        marker = next(self._marker)
        try:
            if binary:
                await ws.send_bytes(data)
            else:
                await ws.send_str(data.decode())
            await ws.send_str(json.dumps({"packet_type": "heartbeat", "client_timestamp": marker}))
        except ConnectionError:
            pass  # closed by the server: its close frame tells why
        while True:
            message = await ws.receive()
            if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                                aiohttp.WSMsgType.CLOSED):
                await ws.close()
                return ws.close_code
            assert message.type == aiohttp.WSMsgType.TEXT, message
            packet = json.loads(message.data)
            if packet.get("packet_type") == "heartbeat":
                ping = packet["data"]["last_mephisto_ping"]
                assert isinstance(ping, int) and abs(ping) <= MAX_JS_DATE_MS, packet
                if ping == marker * 1000:
                    return None

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.session is not None:
            await self.session.close()


@st.composite
def ws_messages(draw: Any) -> WsMessage:
    return WsMessage(draw(bodies(WS_CLEAN, WS_WILD)), draw(st.booleans()))


def _closes_socket(message: WsMessage) -> bool:
    """Whether the server may close the socket for `message`: `alive` for an agent id
    that is not one of the run's (4004)."""
    value = message.body.value
    return (isinstance(value, dict) and value.get("packet_type") == "alive"
            and not isinstance(value.get("subject_id"), AgentRef))


@pytest.fixture
def socket(target: FuzzTarget) -> Iterator[Socket]:
    sock = Socket(target)
    yield sock
    target.call(sock.close())


def test_websocket(target: FuzzTarget, socket: Socket) -> None:
    @FUZZ
    @given(message=ws_messages())
    def fuzz(message: WsMessage) -> None:
        data, _ = target.encode(message.body)
        binary = message.binary
        try:
            data.decode()
        except UnicodeDecodeError:
            binary = True
        before = target.state()
        closed = target.call(socket.exchange(data, binary))
        what = f"websocket {'binary' if binary else 'text'} {_shorten(repr(data), 600)}"
        target.check_answer("websocket", what, None, b"", before, changes_nothing=True)
        if closed is None:
            target.outcomes.add("ws", "answered")
        else:
            assert _closes_socket(message) and 4000 <= closed < 5000, f"{what}: closed {closed}"
            target.outcomes.add("ws", f"closed {closed}")

    fuzz()
    target.outcomes.require("ws", "answered", "closed 4004")


# -- the failures found so far, against the live run ---------------------------------------------

KNOWN_BODIES = [
    # a lone surrogate reached the database, which cannot encode it: 500
    pytest.param("/request_agent", Body({"provider_data": {"worker_name": "\ud800"}}), 400,
                 id="lone-surrogate-worker-name"),
    pytest.param("/request_agent", Body({"provider_data": {"worker_name": "w\udc00"}}, "utf-8"),
                 400, id="surrogate-as-raw-bytes"),
    # parsed, then broke the database layer's JSON encoder: 500
    pytest.param("/submit_metadata", Body({"USED_AGENT_ID": AgentRef("own"),
                                           "metadata": {"a": _deep(981, "[")}}), 400,
                 id="metadata-nested-981-deep"),
    pytest.param("/submit_task", Body({"USED_AGENT_ID": AgentRef("own"),
                                       "final_data": {"a": _deep(981, "{")}}), 400,
                 id="final-data-nested-981-deep"),
    pytest.param("/log_error", Body({"USED_AGENT_ID": None, "error_data": Fragment("1e999")}),
                 400, id="number-overflowing-to-inf"),
    # the limits' edges are accepted
    pytest.param("/submit_metadata", Body({"USED_AGENT_ID": AgentRef("own"),
                                           "metadata": {"a": _deep(61, "[")}}), 200,
                 id="metadata-nested-64-deep"),
    pytest.param("/submit_metadata", Body({"USED_AGENT_ID": AgentRef("own"),
                                           "metadata": {"a": [1e306, -0.0, "\ud83d\ude00"]}}),
                 200, id="edge-numbers-and-a-surrogate-pair"),
]


@pytest.mark.parametrize(("path", "body", "expected"), KNOWN_BODIES)
def test_known_bodies(target: FuzzTarget, path: str, body: Body, expected: int) -> None:
    raw, _ = target.encode(body)
    before = target.state()
    status, answer = target.request("POST", path, raw)
    target.check_answer(path, f"POST {path} {raw[:300]!r}", status, answer, before)
    assert status == expected, answer


def test_known_websocket_heartbeat_out_of_range(target: FuzzTarget, socket: Socket) -> None:
    """round(1e306 * 1000) raised OverflowError: the socket died with a traceback."""
    for ts in (b"1e306", b"-1e306", b"1" + b"0" * 400):
        before = target.state()
        closed = target.call(socket.exchange(
            b'{"packet_type": "heartbeat", "client_timestamp": %s}' % ts, binary=False))
        target.check_answer("websocket", f"heartbeat {ts[:20]!r}", None, b"", before,
                            changes_nothing=True)
        assert closed is None


def test_known_client_leaving_mid_body(target: FuzzTarget) -> None:
    """Starlette's ClientDisconnect was logged as an ERROR with a traceback (a 500)."""
    for path in ("/request_agent", "/submit_task"):
        before = target.state()
        data = (f"POST {path} HTTP/1.1\r\nHost: fuzz\r\nContent-Type: application/json\r\n"
                "Content-Length: 1000\r\n\r\n").encode() + b'{"USED_AGENT_ID": "'
        status, answer = target.call(raw_exchange(target.host, target.port, data, hang_up=True))
        target.check_answer("raw", f"{path}, hung up mid-body", status, answer, before,
                            changes_nothing=True)
        assert status is None
