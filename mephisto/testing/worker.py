"""A simulated worker that plays the mephisto-task 2.x client's wire protocol over real
HTTP and websockets (aiohttp), plus a small load generator built on it.

Bodies, query strings and packets mirror what the published client sends with the mock
provider's shim (docs/wire-protocol.md §1, §4, §6): `provider_data` wrapped around
request_agent / submit_onboarding, flat bodies elsewhere, `client_timestamp` in seconds,
and `?worker_id=&assignment_id=` on every HTTP request.

    async with SimulatedWorker(url, "w1") as worker:
        await worker.request_agent()
        await worker.submit({"answer": 42})

`run_simulated_workers(..., browser_like=True)` makes every unit a new browser: a new
worker identity on a new connection that loads the page and each script and stylesheet
it references (as an empty-cache browser does) before the config, agent and submit.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit

import aiohttp

from mephisto.testing.http_client import HTTPClient

__all__ = [
    "CLIENT_VERSION",
    "NoWorkAvailable",
    "RunStats",
    "SimulatedWorker",
    "SimulatedWorkerError",
    "complete_unit",
    "page_assets",
    "run_simulated_workers",
]

# The version the shipped mephisto-task 2.0.4 bundle reports (it says 2.0.3).
CLIENT_VERSION = "2.0.3"

Answer = Any | Callable[["SimulatedWorker"], Any]

# <link rel=...> values whose href a browser fetches while loading the page
_FETCHED_LINK_RELS = frozenset({"stylesheet", "preload", "modulepreload", "icon"})


class _AssetParser(HTMLParser):
    """Collects `<script src>` and `<link href>` (fetched rels) in document order,
    template contents included (the static task renders its <template> into the page)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name.lower(): value for name, value in attrs if value}
        if tag == "script" and values.get("src"):
            self.refs.append(values["src"])
        elif tag == "link" and values.get("href"):
            rels = set(values.get("rel", "").lower().split())
            if rels & _FETCHED_LINK_RELS:
                self.refs.append(values["href"])

    handle_startendtag = handle_starttag


def page_assets(html: str, page_url: str) -> list[str]:
    """The same-origin scripts and stylesheets a browser fetches for `html` (served at
    `page_url`): `<script src>` and `<link rel=stylesheet|preload|modulepreload|icon
    href>`, resolved against the page, as request targets (path and query), in document
    order, without repeats. Other origins (a CDN) are left out: they do not load this
    server."""
    parser = _AssetParser()
    parser.feed(html)
    parser.close()
    page = urlsplit(page_url)
    targets: list[str] = []
    for ref in parser.refs:
        url = urlsplit(urljoin(page_url, ref.strip()))
        if (url.scheme, url.netloc) != (page.scheme, page.netloc):
            continue
        target = (url.path or "/") + (f"?{url.query}" if url.query else "")
        if target not in targets:
            targets.append(target)
    return targets


class SimulatedWorkerError(Exception):
    """The server answered outside 200-299 (or broke the protocol's response shape).
    `body` is the parsed JSON when the answer was JSON, else its text."""

    def __init__(self, status: int, body: Any, request: str = "") -> None:
        super().__init__(f"{request or 'request'}: HTTP {status}: {body!r}")
        self.status = status
        self.body = body
        self.request = request

    @property
    def error(self) -> str | None:
        """The server's `error` message, if it sent one."""
        return self.body.get("error") if isinstance(self.body, dict) else None


class NoWorkAvailable(Exception):
    """request_agent (or submit_onboarding) answered `agent_id: null`."""

    def __init__(self, failure_reason: str | None) -> None:
        super().__init__(failure_reason or "no agent: no more work for this worker")
        self.failure_reason = failure_reason


class SimulatedWorker:
    """One worker's browser tab. Shares `session` if given, else owns one.

    Every HTTP method returns the parsed JSON answer (the page: its HTML) and raises
    `SimulatedWorkerError` on a non-2xx answer. Latencies are kept per request type in
    `timings` (seconds). Websocket packets from the server collect in `received`.
    """

    heartbeat_interval: float = 6.0  # the real client's HEARTBEAT_TIME
    # For `retry_for` seconds, a request answered 503 (as the real client does) or
    # failing to connect (as a person clicking again does) is sent again every
    # `retry_delay` seconds. 0: every failure is raised at once.
    retry_for: float = 0.0
    retry_delay: float = 0.1

    def __init__(
        self,
        base_url: str,
        worker_id: str,
        assignment_id: str | None = None,
        session: aiohttp.ClientSession | None = None,
        http: HTTPClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.worker_id = worker_id
        self.assignment_id = assignment_id if assignment_id is not None else f"mock-{worker_id}"
        self._session = session
        self._owns_session = session is None
        # plain-HTTP requests use the light keep-alive client (shared when given)
        self._owns_http = http is None
        if http is None and base_url.startswith("http://"):
            http = HTTPClient(base_url)
        self._http = http
        self._base_path = urlsplit(base_url).path.rstrip("/") + "/"
        self.agent_id: str | None = None
        self.mephisto_worker_id: str | None = None
        self.init_data: Any = None
        self.failure_reason: str | None = None
        self.units_completed = 0
        self.retries = 0
        self._assignments = 0
        self.timings: dict[str, list[float]] = {}
        self.unit_latencies: list[float] = []
        # websocket state
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.received: list[dict[str, Any]] = []
        self.ws_close_code: int | None = None
        self._changed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    @property
    def is_onboarding(self) -> bool:
        return self.agent_id is not None and self.agent_id.startswith("onboarding")

    def provider_params(self) -> dict[str, str]:
        """What the mock shim's getProviderURLParams adds to every request's query."""
        return {"worker_id": self.worker_id, "assignment_id": self.assignment_id}

    def agent_registration(self) -> dict[str, Any]:
        """What the mock shim's getAgentRegistration returns (sent as provider_data)."""
        return {
            "worker_name": self.worker_id,
            "assignment_id": self.assignment_id,
            "agent_registration_id": f"{self.assignment_id}-{self.worker_id}",
            "provider_type": "mock",
        }

    def new_assignment(self, assignment_id: str | None = None) -> None:
        """Move to a new assignment (a new HIT in provider terms): forget the agent."""
        self._assignments += 1
        self.assignment_id = assignment_id or f"mock-{self.worker_id}-{self._assignments}"
        self.agent_id = self.mephisto_worker_id = self.init_data = self.failure_reason = None

    # -- HTTP -------------------------------------------------------------------------

    async def _request(
        self, kind: str, method: str, path: str, *, body: Any = None,
        form: aiohttp.FormData | None = None, params: dict[str, str] | None = None,
        parse: bool = True, provider: bool = True,
    ) -> Any:
        query = dict(params or {})
        if provider:  # as the page's shim does; a browser loading <script src> adds none
            query.update(self.provider_params())
        payload = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        start = time.perf_counter()
        while True:
            try:
                status, raw = await self._send(method, path, query, payload, form)
            except (OSError, aiohttp.ClientConnectionError):
                if not await self._retry(start):
                    raise
                continue
            if status != 503 or not await self._retry(start):
                break
        self.timings.setdefault(kind, []).append(time.perf_counter() - start)
        text = raw.decode("utf-8", "replace")
        if not 200 <= status < 300:
            try:
                error_body: Any = json.loads(text)
            except ValueError:
                error_body = text
            raise SimulatedWorkerError(status, error_body, f"{method} {path}")
        if not parse:
            return text
        try:
            return json.loads(text)
        except ValueError:
            raise SimulatedWorkerError(status, text, f"{method} {path} (not JSON)") from None

    async def _retry(self, start: float) -> bool:
        """Whether a request begun at `start` goes again (`retry_for`), after the wait."""
        if time.perf_counter() - start >= self.retry_for:
            return False
        self.retries += 1
        await asyncio.sleep(self.retry_delay)
        return True

    async def _send(self, method: str, path: str, query: dict[str, str],
                    payload: bytes | None, form: aiohttp.FormData | None) -> tuple[int, bytes]:
        if form is None and self._http is not None:
            target = f"{self._base_path}{path.lstrip('/')}"
            if query:
                target += f"?{urlencode(query)}"
            return await self._http.request(method, target, payload)
        # multipart bodies (and https) go through aiohttp
        headers = None if payload is None else {"Content-Type": "application/json"}
        async with self.session.request(
            method, self.base_url + path, params=query, data=form if form else payload,
            headers=headers,
        ) as response:
            return response.status, await response.read()

    def _require_agent(self) -> str:
        if self.agent_id is None:
            raise RuntimeError("no agent: call request_agent() first")
        return self.agent_id

    def _take_agent(self, answer: Any, kind: str) -> dict[str, Any]:
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, dict):
            raise SimulatedWorkerError(200, answer, f"{kind}: answer has no `data` object")
        agent_id = data.get("agent_id")
        if agent_id is not None and not isinstance(agent_id, str):
            raise SimulatedWorkerError(200, answer, f"{kind}: agent_id is not a string or null")
        self.agent_id = agent_id
        self.mephisto_worker_id = data.get("worker_id")
        self.init_data = data.get("init_task_data")
        self.failure_reason = data.get("failure_reason")
        return data

    async def open_page(self) -> str:
        """GET / as the worker's browser opens it; returns the HTML."""
        return await self._request("page", "GET", "/", parse=False)  # type: ignore[no-any-return]

    async def fetch_asset(self, target: str) -> bytes:
        """GET one script or stylesheet of the page (`target`: path and query on this
        server, as `page_assets` gives it), as the browser does: no provider query.
        Timed as `asset <path>`; returns the body."""
        path, _, query = target.partition("?")
        if path.startswith(self._base_path):  # our _request adds the base path back
            path = "/" + path[len(self._base_path):]
        text = await self._request(
            f"asset {path}", "GET", path, params=dict(parse_qsl(query, keep_blank_values=True)), parse=False,
            provider=False,
        )
        return text.encode()  # type: ignore[no-any-return]

    async def open_page_as_browser(self) -> tuple[str, list[str]]:
        """GET / then each same-origin script and stylesheet it references (an
        empty-cache browser's page load); returns the HTML and the assets fetched."""
        html = await self.open_page()
        assets = page_assets(html, self._page_url())
        for target in assets:
            await self.fetch_asset(target)
        return html, assets

    def _page_url(self) -> str:
        return f"{self.base_url}/?{urlencode(self.provider_params())}"

    async def task_config(self) -> dict[str, Any]:
        return await self._request(  # type: ignore[no-any-return]
            "config", "GET", "/task_config.json",
            params={"mephisto_task_version": CLIENT_VERSION},
        )

    async def request_agent(self) -> dict[str, Any]:
        """POST /request_agent; returns the `data` object and keeps agent_id/init_data."""
        answer = await self._request(
            "request_agent", "POST", "/request_agent",
            body={"provider_data": self.agent_registration(), "client_timestamp": time.time()},
        )
        return self._take_agent(answer, "request_agent")

    async def submit_onboarding(self, onboarding_data: Any) -> dict[str, Any]:
        """POST /submit_onboarding; the answer names the next agent (or null)."""
        provider_data = {"USED_AGENT_ID": self._require_agent(),
                         "onboarding_data": onboarding_data}
        answer = await self._request(
            "submit_onboarding", "POST", "/submit_onboarding",
            body={"provider_data": provider_data, "client_timestamp": time.time()},
        )
        return self._take_agent(answer, "submit_onboarding")

    async def submit(self, final_data: Any) -> dict[str, Any]:
        """POST /submit_task with a JSON body (what mephisto-task's handleSubmit sends)."""
        result = await self._request(
            "submit", "POST", "/submit_task",
            body={"USED_AGENT_ID": self._require_agent(), "final_data": final_data,
                  "client_timestamp": time.time()},
        )
        self.units_completed += 1
        return result  # type: ignore[no-any-return]

    async def submit_multipart(
        self, final_data: Any, files: dict[str, tuple[str, bytes]]
    ) -> dict[str, Any]:
        """POST /submit_task as multipart (what the static HTML task sends with files):
        `USED_AGENT_ID`, `final_string_data` (final_data as JSON) and one part per file,
        keyed by form field name."""
        form = aiohttp.FormData()
        form.add_field("USED_AGENT_ID", self._require_agent())
        form.add_field("final_string_data", json.dumps(final_data))
        for field_name, (filename, content) in files.items():
            # a stream, not bytes: aiohttp warns (an error under pytest) past 1 MB of bytes
            form.add_field(field_name, io.BytesIO(content), filename=filename,
                           content_type="application/octet-stream")
        result = await self._request("submit", "POST", "/submit_task", form=form)
        self.units_completed += 1
        return result  # type: ignore[no-any-return]

    async def submit_metadata(self, metadata: dict[str, Any]) -> dict[str, Any]:
        return await self._request(  # type: ignore[no-any-return]
            "submit_metadata", "POST", "/submit_metadata",
            body={"USED_AGENT_ID": self._require_agent(), "metadata": metadata,
                  "client_timestamp": time.time()},
        )

    async def log_error(self, error_data: Any) -> dict[str, Any]:
        """POST /log_error; USED_AGENT_ID is null before an agent exists, as in the client."""
        return await self._request(  # type: ignore[no-any-return]
            "log_error", "POST", "/log_error",
            body={"USED_AGENT_ID": self.agent_id, "error_data": error_data,
                  "client_timestamp": time.time()},
        )

    # -- websocket ----------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the websocket at `/` (with the provider's query parameters), send `alive`
        for the agent, start heartbeats."""
        self._require_agent()
        if self.ws is not None:
            await self.disconnect()
        scheme, _, rest = self.base_url.partition("://")
        # the provider's identity rides on the socket's URL too, as our mephisto-task
        # package sends it (the public 2.0.4 client sends none there)
        url = (("wss" if scheme == "https" else "ws") + "://" + rest + "/?"
               + urlencode(self.provider_params()))
        self.ws = await self.session.ws_connect(url, autoping=True)
        self.ws_close_code = None
        self._reader = asyncio.get_running_loop().create_task(self._read_loop(self.ws))
        await self.send_packet("alive", {"update_id": str(uuid.uuid4())})
        self._heartbeat = asyncio.get_running_loop().create_task(self._heartbeat_loop())

    async def send_packet(self, packet_type: str, data: dict[str, Any] | None = None) -> None:
        """Send a client packet envelope (heartbeats have no `data`, like the client's)."""
        packet: dict[str, Any] = {"packet_type": packet_type, "subject_id": self.agent_id}
        if data is not None:
            packet["data"] = data
        packet["client_timestamp"] = time.time()
        await self.send_raw(json.dumps(packet))

    async def send_raw(self, message: str | bytes) -> None:
        if self.ws is None:
            raise RuntimeError("not connected: call connect() first")
        if isinstance(message, bytes):
            await self.ws.send_bytes(message)
        else:
            await self.ws.send_str(message)

    async def send_live_update(self, data: dict[str, Any]) -> dict[str, Any]:
        """Send a `mephisto_bound_live_update`; adds a fresh `update_id` when absent (as
        the client does) and returns the data sent."""
        payload = dict(data)
        payload.setdefault("update_id", str(uuid.uuid4()))
        await self.send_packet("mephisto_bound_live_update", payload)
        return payload

    async def _read_loop(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            async for message in ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    try:
                        packet = json.loads(message.data)
                    except ValueError:
                        continue
                    if isinstance(packet, dict):
                        self.received.append(packet)
                        self._notify()
        finally:
            self.ws_close_code = ws.close_code
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _heartbeat_loop(self) -> None:
        # First heartbeat soon after open, then every heartbeat_interval (as the client).
        await asyncio.sleep(min(0.5, self.heartbeat_interval))
        while self.ws is not None and not self.ws.closed:
            try:
                await self.send_packet("heartbeat")
            except (aiohttp.ClientError, ConnectionError, RuntimeError):
                return
            await asyncio.sleep(self.heartbeat_interval)

    async def wait_for_packet(
        self, packet_type: str | None = None, *, since: int = 0, timeout: float = 5.0,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
    ) -> dict[str, Any]:
        """The first received packet at index >= `since` matching type and predicate;
        waits up to `timeout` seconds for it (TimeoutError)."""
        async with asyncio.timeout(timeout):
            while True:
                changed = self._changed
                for packet in self.received[since:]:
                    if (packet_type is None or packet.get("packet_type") == packet_type) and (
                        predicate is None or predicate(packet)
                    ):
                        return packet
                await changed.wait()

    async def wait_closed(self, timeout: float = 5.0) -> int | None:
        """Wait until the server closes the websocket; returns the close code."""
        if self._reader is None:
            return self.ws_close_code
        async with asyncio.timeout(timeout):
            await asyncio.shield(self._reader)
        return self.ws_close_code

    async def disconnect(self) -> None:
        """Close the websocket (the worker's tab closes or loses the connection)."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            try:
                await self._heartbeat
            except asyncio.CancelledError:
                pass
            self._heartbeat = None
        if self.ws is not None:
            await self.ws.close()
            self.ws = None
        if self._reader is not None:
            await self._reader
            self._reader = None

    async def close(self) -> None:
        await self.disconnect()
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None
        if self._owns_http and self._http is not None:
            await self._http.close()


def _resolve(answer: Answer, worker: SimulatedWorker) -> Any:
    return answer(worker) if callable(answer) else answer


async def complete_unit(
    worker: SimulatedWorker, answer: Answer, *, fetch_assets: bool = False
) -> float:
    """Work one unit as a browser would: open the page, load the task config, take an
    agent (passing onboarding, if asked, with the same answer) and submit `answer`
    (or `answer(worker)` when callable, evaluated once `worker.init_data` is known).
    With `fetch_assets`, the page's scripts and stylesheets are fetched after it, as an
    empty-cache browser does. Returns the unit's latency in seconds; raises
    `NoWorkAvailable` when the server has no agent for the worker."""
    start = time.perf_counter()
    if fetch_assets:
        await worker.open_page_as_browser()
    else:
        await worker.open_page()
    await worker.task_config()
    await worker.request_agent()
    if worker.agent_id is not None and worker.is_onboarding:
        await worker.submit_onboarding(_resolve(answer, worker))
    if worker.agent_id is None:
        raise NoWorkAvailable(worker.failure_reason)
    await worker.submit(_resolve(answer, worker))
    latency = time.perf_counter() - start
    worker.unit_latencies.append(latency)
    return latency


@dataclass
class RunStats:
    """What `run_simulated_workers` measured. Latencies are in seconds."""

    workers: int = 0
    elapsed: float = 0.0
    unit_latencies: list[float] = field(default_factory=list)
    latencies: dict[str, list[float]] = field(default_factory=dict)  # by request type
    errors: list[str] = field(default_factory=list)

    @property
    def units_completed(self) -> int:
        return len(self.unit_latencies)

    @property
    def counts(self) -> dict[str, int]:
        """Requests made, by type (page, config, request_agent, submit, ...)."""
        return {kind: len(values) for kind, values in self.latencies.items()}

    @property
    def units_per_second(self) -> float:
        return self.units_completed / self.elapsed if self.elapsed > 0 else 0.0

    @staticmethod
    def percentile(values: list[float], q: float) -> float:
        """The q-th percentile (0-100, nearest rank) of `values`; 0.0 when empty."""
        if not values:
            return 0.0
        ordered = sorted(values)
        index = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
        return ordered[index]

    def summary(self) -> dict[str, dict[str, float]]:
        """Count and p50/p90/p99/max latency in milliseconds, per request type and `unit`."""
        table = {}
        for kind, values in {**self.latencies, "unit": self.unit_latencies}.items():
            table[kind] = {
                "count": float(len(values)),
                **{f"p{q}_ms": self.percentile(values, q) * 1000 for q in (50, 90, 99)},
                "max_ms": max(values, default=0.0) * 1000,
            }
        return table


def _default_answer(worker: SimulatedWorker) -> dict[str, Any]:
    return {"simulated_worker": worker.worker_id, "unit": worker.units_completed}


async def run_simulated_workers(
    base_url: str,
    num_workers: int,
    units_per_worker: int | None = None,
    answer_fn: Callable[[SimulatedWorker], Any] | None = None,
    concurrency: int | None = None,
    *,
    worker_prefix: str = "sim-worker",
    browser_like: bool = False,
    retry_for: float = 0.0,
) -> RunStats:
    """Run `num_workers` simulated workers (at most `concurrency` at once, default all),
    each completing units on fresh assignments until the server gives it no agent or it
    has done `units_per_worker`. A worker whose request fails stops; the failure is
    listed in `errors`. `answer_fn(worker)` makes each submitted answer.

    With `browser_like`, each of the `num_workers` slots is a stream of new browsers:
    every unit is worked by a new worker identity (`{worker_prefix}-{slot}-{n}`) on a
    new connection (nothing kept alive from one unit to the next), which loads the page
    and each script and stylesheet it references (requests timed as `asset <path>`)
    before the config, agent and submit. `units_per_worker` then counts units per slot.

    `retry_for`: each worker's `SimulatedWorker.retry_for` (retry 503s and failed
    connections for that many seconds per request).
    """
    answer = answer_fn or _default_answer
    stats = RunStats(workers=num_workers)
    limit = asyncio.Semaphore(concurrency or max(1, num_workers))
    if browser_like:
        start = time.perf_counter()
        await asyncio.gather(*(
            _browser_slot(base_url, f"{worker_prefix}-{i}", units_per_worker, answer, stats,
                          limit, retry_for)
            for i in range(num_workers)
        ))
        stats.elapsed = time.perf_counter() - start
        return stats
    connector = aiohttp.TCPConnector(limit=0)

    async def work(index: int, session: aiohttp.ClientSession) -> None:
        async with limit:
            worker = SimulatedWorker(
                base_url, f"{worker_prefix}-{index}", session=session, http=http
            )
            worker.retry_for = retry_for
            try:
                while units_per_worker is None or worker.units_completed < units_per_worker:
                    worker.new_assignment()
                    if not await _one_unit(worker, answer, stats):
                        break
            finally:
                _keep_timings(worker, stats)
                await worker.close()

    http = HTTPClient(base_url) if base_url.startswith("http://") else None
    start = time.perf_counter()
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            await asyncio.gather(*(work(i, session) for i in range(num_workers)))
    finally:
        if http is not None:
            await http.close()
    stats.elapsed = time.perf_counter() - start
    return stats


async def _one_unit(worker: SimulatedWorker, answer: Answer, stats: RunStats,
                    fetch_assets: bool = False) -> bool:
    """One unit, its latency recorded; False when the worker stops: no work left, or a
    failed request (listed in `stats.errors`)."""
    try:
        stats.unit_latencies.append(await complete_unit(worker, answer,
                                                        fetch_assets=fetch_assets))
    except NoWorkAvailable:
        return False
    except (SimulatedWorkerError, aiohttp.ClientError, OSError) as exc:
        stats.errors.append(f"{worker.worker_id}: {exc!r}")
        return False
    return True


def _keep_timings(worker: SimulatedWorker, stats: RunStats) -> None:
    for kind, values in worker.timings.items():
        stats.latencies.setdefault(kind, []).extend(values)


async def _browser_slot(
    base_url: str, prefix: str, units: int | None, answer: Answer, stats: RunStats,
    limit: asyncio.Semaphore, retry_for: float = 0.0,
) -> None:
    """New browsers one after another, one unit each, until no work is left."""
    async with limit:
        n = 0
        while units is None or n < units:
            # owns its HTTP client (and, for https, its aiohttp session): a new connection
            worker = SimulatedWorker(base_url, f"{prefix}-{n}")
            worker.retry_for = retry_for
            n += 1
            try:
                if not await _one_unit(worker, answer, stats, fetch_assets=True):
                    break
            finally:
                _keep_timings(worker, stats)
                await worker.close()


def run_simulated_workers_sync(base_url: str, num_workers: int, **kwargs: Any) -> RunStats:
    """`run_simulated_workers` on a new event loop of this thread, blocking until done.
    Uses uvloop when it is installed (it ships with uvicorn[standard]): the load
    generator then needs about half the CPU, which leaves more for the server when both
    share a machine."""
    coro = run_simulated_workers(base_url, num_workers, **kwargs)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        return asyncio.run(coro)
    return uvloop.run(coro)
