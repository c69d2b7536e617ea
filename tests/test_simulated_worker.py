"""The simulated worker sends what the real mephisto-task client sends (checked against a
recording server), and drives many workers against the real task server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from mephisto.server.app import create_app
from mephisto.testing.fake_backend import FakeBackend
from mephisto.testing.server import running_server
from mephisto.testing.worker import (
    CLIENT_VERSION,
    NoWorkAvailable,
    RunStats,
    SimulatedWorker,
    SimulatedWorkerError,
    complete_unit,
    page_assets,
    run_simulated_workers,
)


class Recorder:
    """A server that records each request and answers like a task server would."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.packets: list[dict[str, Any]] = []
        self.agent_answers = [
            {"data": {"agent_id": "onboarding-1", "worker_id": "7", "init_task_data": {"a": 1}}},
            {"data": {"agent_id": "5", "worker_id": "7", "init_task_data": {"b": 2}}},
        ]

    async def http(self, request: Request) -> Response:
        body = await request.body()
        self.requests.append({
            "method": request.method,
            "path": request.url.path,
            "query": parse_qsl(request.url.query, keep_blank_values=True),
            "content_type": request.headers.get("content-type", ""),
            "body": body,
        })
        path = request.url.path
        if path == "/":
            return Response("<html>task</html>", media_type="text/html")
        if path in ("/request_agent", "/submit_onboarding"):
            return JSONResponse(self.agent_answers.pop(0))
        if path == "/teapot":
            return JSONResponse({"error": "short and stout"}, status_code=418)
        return JSONResponse({"status": "ok", "path": path})

    async def websocket(self, websocket: WebSocket) -> None:
        await websocket.accept()
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            packet = json.loads(message["text"])
            self.packets.append(packet)
            if packet["packet_type"] == "heartbeat":
                await websocket.send_json({"packet_type": "heartbeat",
                                           "data": {"last_mephisto_ping": 1}})

    def app(self) -> Starlette:
        return Starlette(routes=[
            WebSocketRoute("/", self.websocket),
            Route("/{path:path}", self.http, methods=["GET", "POST"]),
        ])


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[Recorder, str]]:
    rec = Recorder()
    async with running_server(rec.app()) as url:
        yield rec, url


def _json(request: dict[str, Any]) -> Any:
    assert request["content_type"] == "application/json"
    return json.loads(request["body"])


async def test_http_requests_match_the_real_client(recorder: tuple[Recorder, str]) -> None:
    rec, url = recorder
    async with SimulatedWorker(url, "w1", "as1") as worker:
        assert await worker.open_page() == "<html>task</html>"
        await worker.task_config()
        data = await worker.request_agent()
        assert data["agent_id"] == "onboarding-1" and worker.is_onboarding
        assert (worker.mephisto_worker_id, worker.init_data) == ("7", {"a": 1})
        await worker.submit_onboarding({"ans": 4})
        assert (worker.agent_id, worker.init_data) == ("5", {"b": 2})
        await worker.submit({"final": 1})
        await worker.submit_metadata({"feedback": {"type": "feedback"}})
        await worker.log_error({"error": "x"})

    provider = [("worker_id", "w1"), ("assignment_id", "as1")]
    page, config, agent, onboarding, submit, metadata, error = rec.requests
    assert (page["method"], page["path"], page["query"]) == ("GET", "/", provider)
    assert (config["method"], config["path"]) == ("GET", "/task_config.json")
    assert config["query"] == [("mephisto_task_version", CLIENT_VERSION), *provider]
    assert CLIENT_VERSION == "2.0.3"

    for request in (agent, onboarding, submit, metadata, error):
        assert request["method"] == "POST" and request["query"] == provider

    body = _json(agent)
    assert agent["path"] == "/request_agent" and set(body) == {"provider_data",
                                                               "client_timestamp"}
    assert list(body["provider_data"].items()) == [
        ("worker_name", "w1"), ("assignment_id", "as1"), ("agent_registration_id", "as1-w1"),
        ("provider_type", "mock")]
    assert isinstance(body["client_timestamp"], float)

    body = _json(onboarding)
    assert onboarding["path"] == "/submit_onboarding"
    assert body["provider_data"] == {"USED_AGENT_ID": "onboarding-1", "onboarding_data": {"ans": 4}}
    assert set(body) == {"provider_data", "client_timestamp"}

    body = _json(submit)
    assert submit["path"] == "/submit_task"
    assert set(body) == {"USED_AGENT_ID", "final_data", "client_timestamp"}
    assert (body["USED_AGENT_ID"], body["final_data"]) == ("5", {"final": 1})

    body = _json(metadata)
    assert body["metadata"] == {"feedback": {"type": "feedback"}}
    assert set(body) == {"USED_AGENT_ID", "metadata", "client_timestamp"}

    body = _json(error)
    assert (body["USED_AGENT_ID"], body["error_data"]) == ("5", {"error": "x"})


async def test_multipart_request_matches_the_static_task_client(
    recorder: tuple[Recorder, str],
) -> None:
    rec, url = recorder
    async with SimulatedWorker(url, "w1") as worker:
        worker.agent_id = "5"
        await worker.submit_multipart({"f": {"name": "a.txt"}}, {"f": ("a.txt", b"abc")})
    (request,) = rec.requests
    assert request["content_type"].startswith("multipart/form-data; boundary=")
    body = request["body"]
    assert b'name="USED_AGENT_ID"\r\n\r\n5\r\n' in body
    assert b'name="final_string_data"\r\n\r\n{"f": {"name": "a.txt"}}\r\n' in body
    assert b'name="f"; filename="a.txt"' in body and b"\r\n\r\nabc\r\n" in body
    assert request["query"] == [("worker_id", "w1"), ("assignment_id", "mock-w1")]


async def test_websocket_packets_match_the_real_client(recorder: tuple[Recorder, str]) -> None:
    rec, url = recorder
    async with SimulatedWorker(url, "w1") as worker:
        worker.heartbeat_interval = 0.05
        worker.agent_id = "5"
        await worker.connect()
        await worker.wait_for_packet("heartbeat")
        sent = await worker.send_live_update({"text": "hi"})
        await worker.send_live_update({"text": "id kept", "update_id": "mine"})
        await worker.disconnect()
    alive, heartbeat = rec.packets[0], rec.packets[1]
    assert set(alive) == {"packet_type", "subject_id", "data", "client_timestamp"}
    assert (alive["packet_type"], alive["subject_id"]) == ("alive", "5")
    assert set(alive["data"]) == {"update_id"}
    assert set(heartbeat) == {"packet_type", "subject_id", "client_timestamp"}  # no data
    updates = [p for p in rec.packets if p["packet_type"] == "mephisto_bound_live_update"]
    assert [u["data"] for u in updates] == [sent, {"text": "id kept", "update_id": "mine"}]
    assert len(sent["update_id"]) == 36 and updates[0]["subject_id"] == "5"


async def test_non_2xx_raises_with_status_and_body(recorder: tuple[Recorder, str]) -> None:
    _, url = recorder
    async with SimulatedWorker(url, "w1") as worker:
        with pytest.raises(SimulatedWorkerError) as info:
            await worker._request("teapot", "GET", "/teapot")
    assert info.value.status == 418
    assert info.value.body == {"error": "short and stout"}
    assert info.value.error == "short and stout"
    assert worker.timings["teapot"]


async def test_calls_that_need_an_agent_say_so() -> None:
    async with SimulatedWorker("http://127.0.0.1:9", "w1") as worker:
        with pytest.raises(RuntimeError, match="request_agent"):
            await worker.submit({})
        with pytest.raises(RuntimeError, match="request_agent"):
            await worker.connect()


async def test_shared_session_is_left_open() -> None:
    backend = FakeBackend(units=2)
    async with running_server(create_app(backend)) as url, aiohttp.ClientSession() as session:
        async with SimulatedWorker(url, "a", session=session) as worker:
            await complete_unit(worker, {"x": 1})
        assert not session.closed
        async with SimulatedWorker(url, "b", session=session) as worker:
            await complete_unit(worker, lambda w: {"unit": w.init_data["unit"]})
    assert [data for _, data, _ in backend.submissions] == [{"x": 1}, {"unit": 1}]


async def test_complete_unit_passes_onboarding_and_reports_no_work() -> None:
    backend = FakeBackend(units=1, onboarding=True)
    async with running_server(create_app(backend)) as url, SimulatedWorker(url, "w1") as worker:
        latency = await complete_unit(worker, {"answer": 1})
        assert latency > 0 and worker.unit_latencies == [latency]
        assert set(worker.timings) == {"page", "config", "request_agent",
                                       "submit_onboarding", "submit"}
        worker.new_assignment()
        with pytest.raises(NoWorkAvailable) as info:
            await complete_unit(worker, {"answer": 2})
    assert "no more work" in str(info.value)
    assert len(backend.submissions) == 1


async def test_fifty_workers_complete_two_hundred_units() -> None:
    backend = FakeBackend(units=200)
    async with running_server(create_app(backend)) as url:
        stats = await run_simulated_workers(url, num_workers=50)
    assert stats.errors == []
    assert stats.units_completed == 200 and len(backend.submissions) == 200
    # every worker asks once more and is told there is no more work
    assert stats.counts == {"page": 250, "config": 250, "request_agent": 250, "submit": 200}
    units = sorted(backend.agents[agent_id].unit_index or 0
                   for agent_id, _, _ in backend.submissions)
    assert units == list(range(200))
    assert len({a.worker_name for a in backend.agents.values()}) == 50
    summary = stats.summary()
    assert summary["unit"]["count"] == 200 and summary["submit"]["p99_ms"] > 0
    assert stats.units_per_second > 0


async def test_units_per_worker_and_concurrency_limit() -> None:
    backend = FakeBackend(units=None)
    async with running_server(create_app(backend)) as url:
        stats = await run_simulated_workers(
            url, num_workers=4, units_per_worker=3, concurrency=2,
            answer_fn=lambda w: {"by": w.worker_id}, worker_prefix="lim",
        )
    assert stats.units_completed == 12 and stats.counts["request_agent"] == 12
    by_worker: dict[str, int] = {}
    for _, data, _ in backend.submissions:
        by_worker[data["by"]] = by_worker.get(data["by"], 0) + 1
    assert by_worker == {f"lim-{i}": 3 for i in range(4)}


async def test_failed_worker_stops_and_is_reported() -> None:
    backend = FakeBackend(units=5)
    backend.raise_on["submit_task"] = RuntimeError("broken")
    async with running_server(create_app(backend)) as url:
        stats = await run_simulated_workers(url, num_workers=2)
    assert stats.units_completed == 0 and len(stats.errors) == 2
    assert "500" in stats.errors[0]


def test_run_stats_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]
    assert RunStats.percentile(values, 50) == 50.0
    assert RunStats.percentile(values, 99) == 99.0
    assert RunStats.percentile(values, 100) == 100.0
    assert RunStats.percentile([], 50) == 0.0
    stats = RunStats(workers=1, elapsed=2.0, unit_latencies=[0.1, 0.2],
                     latencies={"submit": [0.05]})
    assert stats.units_per_second == 1.0 and stats.counts == {"submit": 1}
    assert stats.summary()["submit"]["max_ms"] == 50.0


BROWSER_PAGE = (
    '<!doctype html><html><head><link rel="stylesheet" href="/task.css">'
    '<link rel="canonical" href="/elsewhere"><script src="https://cdn.example/lib.js"></script>'
    '</head><body><template id="mephisto-task-html"><link rel="stylesheet" href="extra.css">'
    '</template><div id="mephisto-root"></div>'
    '<script src="/wrap_crowd_source.js"></script>'
    '<script src="/_mephisto/static-task.js"></script>'
    '<script src="/wrap_crowd_source.js"></script></body></html>'
)


def test_page_assets_lists_same_origin_scripts_and_stylesheets() -> None:
    assert page_assets(BROWSER_PAGE, "http://127.0.0.1:5000/?worker_id=w") == [
        "/task.css", "/extra.css", "/wrap_crowd_source.js", "/_mephisto/static-task.js"]
    react = '<script src="/wrap_crowd_source.js"></script><script src="bundle.js?v=2"></script>'
    assert page_assets(react, "http://h:1/") == ["/wrap_crowd_source.js", "/bundle.js?v=2"]
    assert page_assets('<script src="http://h:1/a.js"></script>', "http://h:1/") == ["/a.js"]


async def test_browser_like_mode_opens_a_new_connection_per_unit_and_loads_assets(
    tmp_path: Path,
) -> None:
    (tmp_path / "task.css").write_text("p { color: red }")
    (tmp_path / "extra.css").write_text("b { color: blue }")
    backend = FakeBackend(units=6, static_dir=tmp_path, page=BROWSER_PAGE)
    app = create_app(backend)
    seen: list[tuple[int, str, str]] = []  # (client port, path, query) of each request

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen.append((scope["client"][1], scope["path"], scope["query_string"].decode()))
        await app(scope, receive, send)

    async with running_server(recording) as url:
        stats = await run_simulated_workers(url, num_workers=2, browser_like=True,
                                            worker_prefix="b")
    assert stats.errors == [] and stats.units_completed == 6
    assets = ["/task.css", "/extra.css", "/wrap_crowd_source.js", "/_mephisto/static-task.js"]
    # 6 units, then each slot's last browser is told there is no more work
    assert stats.counts == {"page": 8, **{f"asset {a}": 8 for a in assets},
                            "config": 8, "request_agent": 8, "submit": 6}
    # every browser is a new worker on its own connection, used for its whole page visit
    by_port: dict[int, list[tuple[str, str]]] = {}
    for port, path, query in seen:
        by_port.setdefault(port, []).append((path, query))
    assert len(by_port) == 8
    workers = set()
    for requests in by_port.values():
        paths = [path for path, _ in requests]
        assert paths[: 2 + len(assets)] == ["/", *assets, "/task_config.json"]
        assert paths[6:] in (["/request_agent", "/submit_task"], ["/request_agent"])
        # the assets are fetched as <script src> is: without the provider's query
        assert all(query == "" for path, query in requests if path in assets)
        [worker] = {dict(parse_qsl(q))["worker_id"] for p, q in requests if p not in assets}
        workers.add(worker)
    for slot in ("b-0-", "b-1-"):  # each slot's browsers: b-<slot>-0, b-<slot>-1, ...
        mine = sorted(int(w.removeprefix(slot)) for w in workers if w.startswith(slot))
        assert mine == list(range(len(mine)))
    assert len(workers) == 8
    assert len({a.worker_name for a in backend.agents.values()}) == 6
    assert len(backend.submissions) == 6
