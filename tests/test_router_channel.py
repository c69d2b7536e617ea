"""The router's side of the channel, against a real router app under uvicorn in this
process: what an operator must show and send, and what browsers get while no operator
is there."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from mephisto.errors import TokenRefused
from mephisto.router import channel
from mephisto.router.app import ROUTER_WS_MAX_BYTES, create_router_app
from mephisto.router.auth import mint_token, new_secret, verify_token
from mephisto.testing.server import running_server

SECRET = new_secret()


class Router:
    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.AsyncClient(base_url=url)

    def operator(self, token: str | None = None, headers: dict[str, str] | None = None
                 ) -> Any:
        if headers is None:
            headers = {"Authorization": f"Bearer {token or mint_token(SECRET)}"}
        return connect(self.url.replace("http://", "ws://") + channel.OPERATOR_PATH,
                       additional_headers=headers)

    async def status(self) -> dict[str, Any]:
        result: dict[str, Any] = (await self.http.get(channel.STATUS_PATH)).json()
        return result


@pytest.fixture
async def router(tmp_path: Path) -> AsyncIterator[Router]:
    app = create_router_app(SECRET, tmp_path / "cache")
    async with running_server(app, ws_max_message_bytes=ROUTER_WS_MAX_BYTES) as url:
        r = Router(url)
        try:
            yield r
        finally:
            await r.http.aclose()


def _hello(run: str = "run-1", files: list[dict[str, Any]] | None = None) -> str:
    return channel.dumps({"t": "hello", "run": run, "page": "<p>task</p>",
                          "script": "/* shim */", "config": {"task_title": "T"},
                          "files": files or []})


async def _recv(ws: ClientConnection) -> Any:
    return json.loads(await ws.recv())


async def _closed_with(ws: ClientConnection) -> tuple[int | None, str]:
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await ws.recv()
    received = closed.value.rcvd
    return (received.code if received else None), (received.reason if received else "")


async def _ready(ws: ClientConnection, run: str = "run-1") -> None:
    await ws.send(_hello(run))
    assert await _recv(ws) == {"t": "want", "paths": [], "storage": False}
    assert await _recv(ws) == {"t": "ready"}


# -- tokens ------------------------------------------------------------------------------


def test_tokens_verify_and_refuse() -> None:
    token = mint_token(SECRET, 60)
    assert verify_token(SECRET, token)["exp"] > time.time()
    with pytest.raises(TokenRefused, match="expired"):
        verify_token(SECRET, token, now=time.time() + 61)
    with pytest.raises(TokenRefused, match="not signed"):
        verify_token(new_secret(), token)
    prefix, _payload, signature = token.split(".")
    forged = json.dumps({"exp": 4102444800, "nonce": "x"}).encode()
    tampered = ".".join([prefix, base64.urlsafe_b64encode(forged).decode().rstrip("="),
                         signature])
    with pytest.raises(TokenRefused, match="not signed"):
        verify_token(SECRET, tampered)
    with pytest.raises(TokenRefused, match="malformed"):
        verify_token(SECRET, "mro1.only-two")
    with pytest.raises(ValueError):
        mint_token("short")


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"},
                                     {"Authorization": f"Bearer {mint_token(new_secret())}"},
                                     {"Authorization": f"Bearer {mint_token(SECRET, -5)}"}],
                         ids=["missing", "malformed", "foreign", "expired"])
async def test_an_operator_without_a_good_token_is_closed_and_changes_nothing(
        router: Router, headers: dict[str, str]) -> None:
    async with router.operator(headers=headers) as ws:
        code, _reason = await _closed_with(ws)
    assert code == channel.CLOSE_TOKEN_REFUSED
    assert await router.status() == {
        "run": None, "operator": False, "finished": False, "sockets": 0}


# -- what browsers get -----------------------------------------------------------------


async def test_before_any_operator_browsers_get_503_with_retry_after(router: Router) -> None:
    for method, path in (("GET", "/"), ("GET", "/task_config.json"),
                         ("POST", "/request_agent"), ("POST", "/submit_task")):
        body = {"provider_data": {}} if path == "/request_agent" else {
            "USED_AGENT_ID": "a1", "final_data": {}}
        answer = await router.http.request(method, path,
                                           json=body if method == "POST" else None)
        assert answer.status_code == 503, path
        assert answer.headers["Retry-After"] == "2"
        assert "operator" in answer.json()["error"]
    assert (await router.http.get("/healthz")).json() == {"status": "ok"}


async def test_the_hello_is_served_without_asking_the_operator(router: Router) -> None:
    async with router.operator() as ws:
        await _ready(ws)
        assert (await router.http.get("/")).text == "<p>task</p>"
        assert (await router.http.get("/wrap_crowd_source.js")).text == "/* shim */"
        assert (await router.http.get("/task_config.json")).json() == {"task_title": "T"}
        assert (await router.status())["operator"] is True
        await ws.send(channel.dumps({"t": "bye"}))
        await asyncio.sleep(0.05)
        # the run is over: workers are told so, not asked to retry
        answer = await router.http.post("/request_agent", json={"provider_data": {}})
        assert answer.status_code == 200
        assert answer.json()["data"]["agent_id"] is None
        assert "no longer accepting work" in answer.json()["data"]["failure_reason"]


async def test_static_files_come_once_and_damaged_ones_are_refused(router: Router,
                                                                   tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.js"
    bundle.write_bytes(b"console.log('hi');" * 100_000)  # several chunks
    sha = hashlib.sha256(bundle.read_bytes()).hexdigest()
    entry = {"path": "js/bundle.js", "sha": sha, "size": bundle.stat().st_size}
    async with router.operator() as ws:
        await ws.send(_hello(files=[entry]))
        assert await _recv(ws) == {"t": "want", "paths": ["js/bundle.js"], "storage": False}
        for frame in channel.file_chunks(bundle, {"k": "static", "path": "js/bundle.js"}):
            await ws.send(frame)
        assert await _recv(ws) == {"t": "ready"}
        assert (await router.http.get("/js/bundle.js")).content == bundle.read_bytes()
    async with router.operator() as ws:  # the same run again: nothing to send
        await ws.send(_hello(files=[entry]))
        assert await _recv(ws) == {"t": "want", "paths": [], "storage": False}
        assert await _recv(ws) == {"t": "ready"}
    other = {"path": "other.js", "sha": "0" * 64, "size": 3}
    async with router.operator() as ws:
        await ws.send(_hello(files=[entry, other]))
        assert (await _recv(ws))["paths"] == ["other.js"]
        await ws.send(channel.chunk_frame({"k": "static", "path": "other.js", "last": True,
                                           "sha": "f" * 64}, b"abc"))
        code, reason = await _closed_with(ws)
    assert code == channel.CLOSE_PROTOCOL and "damaged" in reason
    assert (await router.http.get("/other.js")).status_code == 404


@pytest.mark.parametrize("hello", [
    "not json",
    channel.dumps({"t": "call", "id": 1}),
    channel.dumps({"t": "hello", "run": "", "page": "", "script": "", "config": {}}),
    channel.dumps({"t": "hello", "run": "r", "page": "p", "script": "s", "config": {},
                   "files": [{"path": "../../etc/passwd", "sha": "0" * 64, "size": 1}]}),
    channel.dumps({"t": "hello", "run": "r", "page": "p", "script": "s", "config": {},
                   "files": [{"path": "mephisto.db", "sha": "0" * 64, "size": 1}]}),
], ids=["not-json", "not-hello", "empty-run", "traversal", "private-file"])
async def test_a_bad_hello_is_refused(router: Router, hello: str) -> None:
    async with router.operator() as ws:
        await ws.send(hello)
        code, _reason = await _closed_with(ws)
    assert code == channel.CLOSE_PROTOCOL
    assert (await router.status())["operator"] is False
    assert (await router.http.get("/")).status_code == 503


async def test_a_second_run_is_refused_while_one_is_served(router: Router) -> None:
    async with router.operator() as first:
        await _ready(first, "run-1")
        async with router.operator() as second:
            await second.send(_hello("run-2"))
            code, reason = await _closed_with(second)
        assert code == channel.CLOSE_OTHER_RUN and "run-1" in reason
        assert (await router.status())["run"] == "run-1"
        assert (await router.status())["operator"] is True


async def test_calls_reach_the_operator_and_its_errors_come_back(router: Router) -> None:
    async with router.operator() as ws:
        await _ready(ws)
        browser = asyncio.ensure_future(router.http.post(
            "/submit_task", params={"worker_id": "w"},
            json={"USED_AGENT_ID": "a1", "final_data": {"x": 1}}))
        call = await _recv(ws)
        assert call["t"] == "call" and call["m"] == "submit_task"
        assert call["a"] == {"agent_id": "a1", "final_data": {"x": 1}, "files": [],
                             "caller": {"worker_id": "w"}}
        await ws.send(channel.dumps({"t": "err", "id": call["id"], "e": {
            "type": "AlreadySubmitted", "message": "this unit was already submitted"}}))
        answer = await browser
        assert answer.status_code == 409
        assert answer.json() == {"error": "this unit was already submitted"}
        # a call in flight when the link drops is answered 503: the browser retries
        browser = asyncio.ensure_future(router.http.post(
            "/request_agent", json={"provider_data": {"worker_name": "w"}}))
        assert (await _recv(ws))["m"] == "request_agent"
    answer = await browser
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "2"


async def test_metrics_are_asked_of_the_operator_with_the_browsers_header(router: Router
                                                                         ) -> None:
    assert (await router.http.get("/metrics")).status_code == 503  # no operator yet
    async with router.operator() as ws:
        await _ready(ws)
        scraper = asyncio.ensure_future(router.http.get(
            "/metrics", headers={"Authorization": "Bearer run-token"}))
        call = await _recv(ws)
        assert call["m"] == "metrics" and call["a"] == {"authorization": "Bearer run-token"}
        await ws.send(channel.dumps({"t": "ret", "id": call["id"], "r": {
            "status": 200, "body": "mephisto_units 1.0\n", "type": "text/plain"}}))
        answer = await scraper
        assert (answer.status_code, answer.text) == (200, "mephisto_units 1.0\n")
        assert answer.headers["cache-control"] == "no-store"
        refused = asyncio.ensure_future(router.http.get("/metrics"))
        call = await _recv(ws)
        assert call["a"] == {"authorization": ""}
        await ws.send(channel.dumps({"t": "ret", "id": call["id"], "r": {
            "status": 401, "body": '{"error": "token"}', "type": "application/json"}}))
        answer = await refused
        assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"
        odd = asyncio.ensure_future(router.http.get("/metrics"))
        call = await _recv(ws)
        await ws.send(channel.dumps({"t": "ret", "id": call["id"], "r": ["not", "a", "dict"]}))
        assert (await odd).status_code == 502
        assert (await router.http.delete("/metrics")).status_code == 405


# -- the command -----------------------------------------------------------------------


def test_router_token_command_mints_for_this_hosts_secret(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    from mephisto.cli import cli

    monkeypatch.delenv("MEPHISTO_ROUTER_SECRET", raising=False)
    first = CliRunner().invoke(cli, ["router", "token", "--ttl", "2h"])
    assert first.exit_code == 0, first.output
    second = CliRunner().invoke(cli, ["router", "token"])
    from mephisto.router.command import _secret

    secret = _secret()  # made on first use, kept in the data dir
    claims = verify_token(secret, first.output.strip())
    assert 7100 < int(claims["exp"]) - time.time() <= 7200  # type: ignore[call-overload]
    verify_token(secret, second.output.strip())
    bad = CliRunner().invoke(cli, ["router", "token", "--ttl", "soon"])
    assert bad.exit_code != 0 and "no duration" in bad.output


async def test_a_call_cut_off_by_the_runs_end_is_answered_as_the_end(router: Router) -> None:
    async with router.operator() as ws:
        await _ready(ws)
        browser = asyncio.ensure_future(router.http.post(
            "/request_agent", json={"provider_data": {"worker_name": "w"}}))
        assert (await _recv(ws))["m"] == "request_agent"
        await ws.send(channel.dumps({"t": "bye"}))  # then the operator goes
    answer = await browser
    assert answer.status_code == 200
    assert answer.json()["data"]["agent_id"] is None
    assert "no longer accepting work" in answer.json()["data"]["failure_reason"]


async def test_the_operator_side_answers_metrics_with_the_runs_token(tmp_path: Path) -> None:
    """The link answers `metrics` with the run's own check (`create_app`'s), or 404 for
    an app that serves none."""
    from prometheus_client import CollectorRegistry, Counter

    from mephisto.router.link import OperatorLink
    from mephisto.server.app import create_app
    from mephisto.server.backend import ServerSettings
    from mephisto.testing.fake_backend import FakeBackend

    registry = CollectorRegistry()
    Counter("mephisto_probe", "a probe", registry=registry).inc()
    app: Any = create_app(FakeBackend(), ServerSettings(metrics_token="t0ken"),
                          metrics_registry=registry)
    link = OperatorLink(app.backend, "http://router/", "tok", run_id="r",
                        upload_dir=tmp_path, metrics=app.metrics)
    good = await link._dispatch(None, "metrics", {"authorization": "Bearer t0ken"}, [])
    assert good["status"] == 200 and "mephisto_probe_total 1.0" in good["body"]
    for header in ("", "Bearer t0ke", "t0ken", None):
        bad = await link._dispatch(None, "metrics", {"authorization": header}, [])
        assert bad["status"] == 401 and "t0ken" not in bad["body"]
    bare: Any = create_app(FakeBackend())
    none = OperatorLink(bare.backend, "http://router/", "tok", run_id="r",
                        upload_dir=tmp_path, metrics=bare.metrics)
    assert (await none._dispatch(None, "metrics", {}, []))["status"] == 404


def test_the_routers_timings_reach_the_runs_metrics_and_bad_ones_are_skipped(
        tmp_path: Path) -> None:
    from mephisto.router.link import OperatorLink
    from mephisto.testing.fake_backend import FakeBackend

    seen: list[tuple[str, float, int]] = []
    link = OperatorLink(FakeBackend(), "http://router/", "tok", run_id="r",
                        upload_dir=tmp_path,
                        on_request=lambda *timing: seen.append(timing))
    link._observed([["submit_task", 0.004, 200], ["static", 1, 404],
                    ["made-up-endpoint", 0.1, 200], ["task_page", -1, 200],
                    ["task_page", True, 200], ["task_page", 0.1, 99], ["task_page", 0.1],
                    "junk", ["log_error", float("inf"), 200], ["log_error", 0.2, "200"]])
    assert seen == [("submit_task", 0.004, 200), ("static", 1.0, 404)]
    link._observed("not a list")
    assert len(seen) == 2
    OperatorLink(FakeBackend(), "http://router/", "tok", run_id="r",
                 upload_dir=tmp_path)._observed([["submit_task", 0.1, 200]])  # no hook


async def test_the_router_keeps_the_newest_timings_while_no_operator_is_there(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mephisto.router import remote_backend

    monkeypatch.setattr(remote_backend, "MAX_TIMINGS", 5)
    monkeypatch.setattr(remote_backend, "TIMINGS_EVERY", 0.01)
    backend = remote_backend.RemoteBackend(SECRET, tmp_path)
    for i in range(8):
        backend.record_request("static", i / 1000, 200)
    await asyncio.sleep(0.05)  # no operator: kept, tried again later
    assert [t[1] for t in backend._timings] == [0.003, 0.004, 0.005, 0.006, 0.007]
    assert backend._timings_due is not None
    backend._timings_due.cancel()
