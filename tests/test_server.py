"""The task server (mephisto.server.app) under real uvicorn, driven over real sockets by
the simulated worker and, for what a well-behaved client never sends, raw requests."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mephisto.errors import DatabaseUnavailable, NotEligible, ProviderError
from mephisto.server.app import create_app
from mephisto.server.backend import ServerSettings
from mephisto.testing.fake_backend import FakeBackend
from mephisto.testing.server import fake_server_process, running_server
from mephisto.testing.worker import SimulatedWorker, SimulatedWorkerError

SECRET = "TOP SECRET: outside the static directory"
UPLOADS = Path(tempfile.mkdtemp(prefix="mephisto-test-uploads-"))
SETTINGS = ServerSettings(
    max_body_bytes=4096,
    max_upload_bytes=64 * 1024,
    max_ws_message_bytes=2048,
    extra_headers={"X-Content-Type-Options": "nosniff"},
    upload_dir=UPLOADS,
)


@pytest.fixture
def static_dir(tmp_path: Path) -> Path:
    (tmp_path / "secret.txt").write_text(SECRET)
    static = tmp_path / "static"
    (static / "sub").mkdir(parents=True)
    (static / "hello.txt").write_text("hello static")
    (static / "sub" / "inner.txt").write_text("inner file")
    (static / ".hidden").write_text(SECRET)
    os.symlink(tmp_path / "secret.txt", static / "link-out.txt")
    os.symlink(tmp_path, static / "dir-out")
    os.symlink(static / "hello.txt", static / "link-in.txt")
    return static


@pytest.fixture
def backend(static_dir: Path) -> FakeBackend:
    return FakeBackend(units=10, static_dir=static_dir)


@pytest.fixture
def requests_seen() -> list[tuple[str, float, int]]:
    return []


@pytest.fixture
async def url(backend: FakeBackend, requests_seen: list[Any]) -> AsyncIterator[str]:
    app = create_app(backend, SETTINGS,
                     on_request=lambda name, secs, status: requests_seen.append(
                         (name, secs, status)))
    async with running_server(app) as base_url:
        yield base_url


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def call(
    session: aiohttp.ClientSession, method: str, url: str, body: Any = None, *,
    raw: bytes | None = None, headers: dict[str, str] | None = None, data: Any = None,
) -> tuple[int, Any]:
    if body is not None:
        raw = json.dumps(body).encode()
    if raw is not None:
        data = raw
        headers = {"Content-Type": "application/json", **(headers or {})}
    async with session.request(method, url, data=data, headers=headers) as response:
        text = await response.text()
        try:
            return response.status, json.loads(text)
        except ValueError:
            return response.status, text


async def raw_http(url: str, request_line_path: str) -> tuple[int, bytes]:
    """GET with the path sent byte for byte (no client-side normalisation)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET {request_line_path} HTTP/1.1\r\nHost: {host}\r\n"
                 "Connection: close\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    status = int(data.split(b" ", 2)[1])
    return status, data.partition(b"\r\n\r\n")[2]


async def eventually(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


# -- the normal flow ------------------------------------------------------------------


async def test_full_sequence(url: str, backend: FakeBackend) -> None:
    async with SimulatedWorker(url, "w1", "as1") as worker:
        page = await worker.open_page()
        assert page == backend.page
        config = await worker.task_config()
        assert config["task_title"] == "Fake task"
        data = await worker.request_agent()
        assert data["agent_id"] == worker.agent_id and len(worker.agent_id or "") >= 16
        assert data["init_task_data"] == {"unit": 0}
        assert backend.calls[-1] == ("request_agent", (worker.agent_registration(),))
        meta = await worker.submit_metadata({"feedback": {"type": "feedback", "text": "ok"}})
        assert meta["status"] == "ok"
        assert await worker.submit({"answer": 42}) == {"status": "Submitted!"}
        assert await worker.log_error({"error": "boom"}) == {"status": "ok"}
    assert backend.submissions == [(worker.agent_id, {"answer": 42}, [])]
    assert backend.errors == [(worker.agent_id, {"error": "boom"})]
    # a reload registers the same way and gets the same agent back
    async with SimulatedWorker(url, "w1", "as1") as again:
        await again.request_agent()
        assert again.agent_id == worker.agent_id


async def test_on_request_hook_and_extra_headers(
    url: str, session: aiohttp.ClientSession, requests_seen: list[Any]
) -> None:
    async with session.get(url + "/healthz") as response:
        assert await response.json() == {"status": "ok"}
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    async with SimulatedWorker(url, "w1", session=session) as worker:
        await worker.task_config()
    assert (await call(session, "POST", url + "/submit_task", raw=b"x"))[0] == 400
    names = [name for name, _, _ in requests_seen]
    assert "task_config" in names and "submit_task" in names and "healthz" not in names
    assert ("submit_task", 400) in [(n, s) for n, _, s in requests_seen]


async def test_preview_page_and_scripts(
    url: str, backend: FakeBackend, session: aiohttp.ClientSession
) -> None:
    async with session.get(url + "/") as response:  # no worker: preview
        assert response.status == 200
        assert response.headers["content-type"].startswith("text/html")
        assert await response.text() == backend.page
    async with session.get(url + "/wrap_crowd_source.js") as response:
        assert response.headers["content-type"].startswith("application/javascript")
        assert await response.text() == backend.script
    async with session.get(url + "/_mephisto/static-task.js") as response:
        assert response.headers["content-type"].startswith("application/javascript")
        assert "static-task.js" in await response.text()
    assert not any(name == "request_agent" for name, _ in backend.calls)


async def test_task_config_echoes_client_version(
    url: str, session: aiohttp.ClientSession, backend: FakeBackend
) -> None:
    status, body = await call(session, "GET", url + "/task_config.json?mephisto_task_version=9.9")
    assert status == 200 and body["mephisto_task_version"] == "9.9"
    assert body["block_mobile"] is False
    status, body = await call(session, "GET", url + "/task_config.json")
    assert "mephisto_task_version" not in body
    assert "mephisto_task_version" not in backend.config  # the backend's dict is not changed


async def test_multipart_submit_with_files(url: str, backend: FakeBackend) -> None:
    async with SimulatedWorker(url, "w1") as worker:
        await worker.request_agent()
        answer = await worker.submit_multipart(
            {"name": "x", "photo": {"name": "p.png", "size": 4}},
            {"photo": ("p.png", b"\x89PNG"), "notes": ("notes.txt", b"some notes")},
        )
    assert answer == {"status": "Submitted!"}
    ((agent_id, final_data, files),) = backend.submissions
    assert agent_id == worker.agent_id and final_data["name"] == "x"
    assert [(name, filename, data) for name, filename, _t, data in files] == [
        ("photo", "p.png", b"\x89PNG"), ("notes", "notes.txt", b"some notes")]
    assert files[0][2] == "application/octet-stream"
    assert list(UPLOADS.iterdir()) == []  # the temporary files are gone once answered


def _multipart(parts: list[tuple[str, str | None, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body of (field name, file name or None, data) parts."""
    boundary = "----fuzzboundary7MA4YWxkTrZu0gW"
    out = bytearray()
    for name, filename, data in parts:
        out += f"--{boundary}\r\n".encode()
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += f"Content-Disposition: {disposition}\r\n".encode()
        if filename is not None:
            out += b"Content-Type: application/octet-stream\r\n"
        out += b"\r\n" + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize("agent_first", [True, False])
async def test_upload_for_an_unknown_agent_is_refused_and_nothing_is_kept(
    url: str, backend: FakeBackend, session: aiohttp.ClientSession, agent_first: bool
) -> None:
    agent = ("USED_AGENT_ID", None, b"not-an-agent")
    upload = ("photo", "p.bin", b"x" * 40_000)
    final = ("final_string_data", None, b"{}")
    body, ctype = _multipart([agent, upload, final] if agent_first else [upload, agent, final])
    async with session.post(url + "/submit_task", data=body,
                            headers={"Content-Type": ctype}) as response:
        assert response.status == 404
    assert [name for name, _args in backend.calls] == ["check_submit"]
    assert backend.submissions == []
    assert not UPLOADS.exists() or list(UPLOADS.iterdir()) == []


async def test_uploads_are_streamed_to_disk_not_held_in_memory(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    """Six parallel 8 MB uploads whose file comes before the (unknown) agent id: the
    worst case, every byte has to be read. The server's memory stays flat (measured in
    its own process): the files go to disk, and are gone once refused."""
    import threading

    uploads = tmp_path / "uploads"
    settings = {"max_upload_bytes": 20_000_000, "upload_dir": str(uploads)}
    with fake_server_process(settings) as server:
        body, ctype = _multipart([("photo", "p.bin", os.urandom(8_000_000)),
                                  ("USED_AGENT_ID", None, b"not-an-agent"),
                                  ("final_string_data", None, b"{}")])
        base = server.rss_bytes()
        peak = [base]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], server.rss_bytes())
                stop.wait(0.002)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            async def post() -> int:
                async with session.post(server.url + "/submit_task", data=io.BytesIO(body),
                                        headers={"Content-Type": ctype}) as response:
                    return response.status
            statuses = await asyncio.gather(*(post() for _ in range(6)))
        finally:
            stop.set()
            sampler.join()
    assert statuses == [404] * 6
    assert not uploads.exists() or list(uploads.iterdir()) == []
    # 6 x 8 MB held in memory would be 48 MB
    assert peak[0] - base < 12_000_000, f"memory grew by {(peak[0] - base) / 1e6:.1f} MB"


async def test_upload_with_a_300_character_file_name(
    url: str, backend: FakeBackend, session: aiohttp.ClientSession
) -> None:
    async with SimulatedWorker(url, "w1") as worker:
        await worker.request_agent()
        await worker.submit_multipart({"a": 1}, {"f": ("n" * 300 + ".txt", b"data")})
    ((_agent, _data, files),) = backend.submissions
    assert files[0][1] == ("n" * 300 + ".txt")[:255] and files[0][3] == b"data"


async def test_onboarding_flow(static_dir: Path) -> None:
    backend = FakeBackend(units=5, onboarding=True)
    async with running_server(create_app(backend)) as url:
        async with SimulatedWorker(url, "good") as worker:
            await worker.request_agent()
            assert worker.is_onboarding
            data = await worker.submit_onboarding({"answer": 4})
            assert data["agent_id"] and not worker.is_onboarding
            await worker.submit({"done": True})
        async with SimulatedWorker(url, "bad") as worker:
            await worker.request_agent()
            data = await worker.submit_onboarding({"pass": False})
            assert data["agent_id"] is None and "qualification" in data["failure_reason"]


async def test_blocked_worker_is_a_200_answer(url: str, backend: FakeBackend) -> None:
    backend.units = 0
    async with SimulatedWorker(url, "w1") as worker:
        data = await worker.request_agent()
    assert data["agent_id"] is None and data["failure_reason"]


async def test_not_eligible_escaping_the_backend_is_a_blocked_agent(
    url: str, backend: FakeBackend
) -> None:
    backend.raise_on["request_agent"] = NotEligible("You have done enough of these.")
    async with SimulatedWorker(url, "w1") as worker:
        data = await worker.request_agent()
    assert data == {"agent_id": None, "failure_reason": "You have done enough of these."}


async def test_unexpected_backend_error_is_500_and_logged(
    url: str, backend: FakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    backend.raise_on["task_config"] = RuntimeError("database on fire")
    with caplog.at_level(logging.ERROR, logger="mephisto.server.app"):
        async with SimulatedWorker(url, "w1") as worker:
            with pytest.raises(SimulatedWorkerError) as info:
                await worker.task_config()
    assert info.value.status == 500
    assert info.value.body == {"error": "internal server error"}  # no detail leaks
    assert "database on fire" in caplog.text and "Traceback" in caplog.text


async def test_database_unavailable_is_503_with_retry_after(
    url: str, backend: FakeBackend, session: aiohttp.ClientSession
) -> None:
    backend.raise_on["submit_task"] = DatabaseUnavailable("connection lost")
    async with SimulatedWorker(url, "w1") as worker:
        await worker.request_agent()
        async with session.post(f"{url}/submit_task", json={
            "USED_AGENT_ID": worker.agent_id, "final_data": {"a": 1},
        }) as response:
            assert response.status == 503
            assert response.headers["Retry-After"] == "5"
            body = await response.json()
    assert "try again" in body["error"] and "connection lost" not in body["error"]


async def test_a_crowd_provider_failing_is_503_not_a_traceback(
    url: str, backend: FakeBackend, session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend.raise_on["request_agent"] = ProviderError("mturk", "the service timed out", True)
    with caplog.at_level(logging.WARNING, logger="mephisto.server.app"):
        body = {"provider_data": {"worker_name": "w1", "assignment_id": "a1"}}
        async with session.post(f"{url}/request_agent", json=body) as response:
            assert response.status == 503 and response.headers["Retry-After"] == "30"
            assert "try again" in (await response.json())["error"]
    assert "mturk: the service timed out" in caplog.text and "Traceback" not in caplog.text


# -- bad input: a clear 4xx and nothing reaches the backend ----------------------------


def _state(backend: FakeBackend) -> Any:
    return (
        [(a.agent_id, a.status, a.final_data, dict(a.metadata)) for a in backend.agents.values()],
        list(backend.submissions), list(backend.errors), backend.next_unit,
    )


MALFORMED_BODIES = [
    ("/request_agent", b"{not json", "not valid JSON"),
    ("/request_agent", b"[1, 2]", "must be a JSON object"),
    ("/request_agent", b'"string"', "must be a JSON object"),
    ("/request_agent", b"", "not valid JSON"),
    ("/request_agent", b"\xff\xfe\x00garbage", "not valid JSON"),
    ("/request_agent", b'{"provider_data": NaN}', "not valid JSON"),
    ("/request_agent", b"[" * 2000 + b"]" * 2000, "nested more than 64 levels"),  # no crash
    ("/request_agent", b'{"client_timestamp": 1}', "missing field 'provider_data'"),
    ("/request_agent", b'{"provider_data": "w1"}', "'provider_data' must be an object"),
    ("/submit_task", b'{"final_data": {}}', "missing field 'USED_AGENT_ID'"),
    ("/submit_task", b'{"USED_AGENT_ID": 5, "final_data": {}}',
     "'USED_AGENT_ID' must be a non-empty string"),
    ("/submit_task", b'{"USED_AGENT_ID": "", "final_data": {}}',
     "'USED_AGENT_ID' must be a non-empty string"),
    ("/submit_task", b'{"USED_AGENT_ID": null}', "'USED_AGENT_ID' must be"),
    ("/submit_onboarding", b'{"USED_AGENT_ID": "a", "onboarding_data": {}}',
     "missing field 'provider_data'"),
    ("/submit_onboarding", b'{"provider_data": {"onboarding_data": {}}}',
     "missing field 'provider_data.USED_AGENT_ID'"),
    ("/submit_onboarding", b'{"provider_data": {"USED_AGENT_ID": ["a"]}}',
     "'provider_data.USED_AGENT_ID' must be a non-empty string"),
    ("/submit_metadata", b'{"USED_AGENT_ID": "a"}', "missing field 'metadata'"),
    ("/submit_metadata", b'{"USED_AGENT_ID": "a", "metadata": [1]}',
     "'metadata' must be an object"),
    ("/log_error", b'{"USED_AGENT_ID": 3, "error_data": "x"}',
     "'USED_AGENT_ID' must be a non-empty string or null"),
    ("/log_error", b"nope", "not valid JSON"),
]


async def test_malformed_bodies_are_400(
    url: str, session: aiohttp.ClientSession, backend: FakeBackend
) -> None:
    before = _state(backend)
    for path, raw, message in MALFORMED_BODIES:
        status, body = await call(session, "POST", url + path, raw=raw)
        assert status == 400, (path, raw[:40], body)
        assert set(body) == {"error"}
        assert message in body["error"], (path, raw[:40], body)
    assert backend.calls == [] and _state(backend) == before


def _nested(depth: int) -> bytes:
    return b'{"a": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


async def test_json_nested_deeper_than_the_limit_is_400(
    url: str, session: aiohttp.ClientSession, backend: FakeBackend
) -> None:
    """~980 levels parsed, then the database layer's JSON encoder hit the recursion
    limit: a 500. Now anything deeper than 64 levels is refused up front."""
    async with SimulatedWorker(url, "w1") as worker:
        await worker.request_agent()
        agent = (worker.agent_id or "").encode()
    body = b'{"USED_AGENT_ID": "' + agent + b'", "metadata": {"x": '
    status, answer = await call(session, "POST", url + "/submit_metadata",
                                raw=body + _nested(62) + b"}}")  # 64 levels in all
    assert status == 200, answer
    for depth in (63, 100, 980):
        status, answer = await call(session, "POST", url + "/submit_metadata",
                                    raw=body + _nested(depth) + b"}}")
        assert status == 400 and "nested more than 64 levels deep" in answer["error"], depth
    # brackets inside strings do not count
    status, answer = await call(session, "POST", url + "/submit_metadata",
                                raw=body + b'"' + b"[{" * 500 + b'"}}')
    assert status == 200, answer
    assert [name for name, _ in backend.calls].count("submit_metadata") == 2


async def test_lone_surrogates_are_400_naming_the_field(
    url: str, session: aiohttp.ClientSession, backend: FakeBackend
) -> None:
    """A worker_name of "\\ud800" reached the database, which cannot encode it: a 500."""
    for raw, field in [
        (b'{"provider_data": {"worker_name": "\\ud800"}}', "'provider_data.worker_name'"),
        (b'{"provider_data": {"worker_name": "w", "x": [1, {"\\uDFFFk": 2}]}}',
         "'provider_data.x[1].\\udfffk'"),
        (b'{"provider_data": {"worker_name": "a\\udc00b"}, "client_timestamp": 1}',
         "'provider_data.worker_name'"),
    ]:
        status, answer = await call(session, "POST", url + "/request_agent", raw=raw)
        assert status == 400, (raw, answer)
        assert "invalid unicode" in answer["error"] and field in answer["error"], answer
    # the same code point as raw bytes (CESU-8) is not UTF-8
    status, answer = await call(session, "POST", url + "/request_agent",
                                raw=b'{"provider_data": {"worker_name": "\xed\xa0\x80"}}')
    assert status == 400 and "not UTF-8" in answer["error"]
    assert backend.calls == []
    # a proper pair is an ordinary character
    status, answer = await call(session, "POST", url + "/request_agent",
                                raw=b'{"provider_data": {"worker_name": "\\ud83d\\ude00", '
                                b'"agent_registration_id": "r"}}')
    assert status == 200 and backend.calls[-1][1][0]["worker_name"] == "\U0001f600"


async def test_numbers_overflowing_to_infinity_are_400(
    url: str, session: aiohttp.ClientSession, backend: FakeBackend
) -> None:
    for number in (b"1e999", b"-1e400", b"1" + b"0" * 400 + b".0"):
        status, answer = await call(session, "POST", url + "/log_error",
                                    raw=b'{"USED_AGENT_ID": null, "error_data": ' + number + b"}")
        assert status == 400 and "number out of range" in answer["error"], number
    status, _ = await call(session, "POST", url + "/log_error",
                           raw=b'{"USED_AGENT_ID": null, "error_data": [1e306, -0.0, 5e-324]}')
    assert status == 200
    assert backend.errors == [(None, [1e306, -0.0, 5e-324])]


async def test_multipart_final_string_data_is_checked_like_a_json_body(
    url: str, session: aiohttp.ClientSession, backend: FakeBackend
) -> None:
    async with SimulatedWorker(url, "w1") as worker:
        agent_id = (await worker.request_agent())["agent_id"]
    for final_string_data, message in [('{"a": "\\ud800"}', "invalid unicode"),
                                       ("[" * 65 + "]" * 65, "nested more than 64")]:
        form = aiohttp.FormData(default_to_multipart=True)
        form.add_field("USED_AGENT_ID", agent_id)
        form.add_field("final_string_data", final_string_data)
        status, answer = await call(session, "POST", url + "/submit_task", data=form)
        assert status == 400 and "'final_string_data'" in answer["error"], answer
        assert message in answer["error"], answer
    assert {name for name, _args in backend.calls} == {"request_agent", "check_submit"}
    assert backend.submissions == []


async def test_oversize_body_with_content_length_is_413(
    url: str, session: aiohttp.ClientSession, backend: FakeBackend
) -> None:
    big = json.dumps({"USED_AGENT_ID": "a", "final_data": "x" * 10_000}).encode()
    status, body = await call(session, "POST", url + "/submit_task", raw=big)
    assert status == 413 and "4096 bytes" in body["error"]
    assert backend.calls == []
    # the connection and server are still fine afterwards
    assert (await call(session, "GET", url + "/healthz"))[0] == 200


async def test_oversize_chunked_body_is_413(
    url: str, session: aiohttp.ClientSession, backend: FakeBackend
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"USED_AGENT_ID": "a", "final_data": "'
        for _ in range(4):
            yield b"x" * 2000
        yield b'"}'

    async with session.post(url + "/submit_task", data=chunks(),
                            headers={"Content-Type": "application/json"}) as response:
        assert "content-length" not in {k.lower() for k in response.request_info.headers}
        assert response.status == 413
        assert "larger than the limit" in (await response.json())["error"]
    assert backend.calls == []


async def test_lying_content_length_is_caught_while_streaming(
    url: str, backend: FakeBackend
) -> None:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    body = b'{"a": "' + b"x" * 6000 + b'"}'
    writer.write(b"POST /request_agent HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n"
                 + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n")
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    writer.close()
    await writer.wait_closed()
    assert head.startswith(b"HTTP/1.1 413")
    assert backend.calls == []


async def test_client_leaving_mid_body_is_not_a_server_error(
    url: str, backend: FakeBackend, requests_seen: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A browser closing its tab while the body is on its way: no answer is possible, no
    ERROR is logged, and the hook sees 499 (client closed request), not 500."""
    host, port = url.removeprefix("http://").split(":")
    with caplog.at_level(logging.DEBUG, logger="mephisto.server.app"):
        for path, content_type, start in [
            ("/submit_task", "application/json", b'{"USED_AGENT_ID": "'),
            ("/submit_task", "multipart/form-data; boundary=b",
             b'--b\r\nContent-Disposition: form-data; name="USED_AGENT_ID"\r\n\r\nab'),
            ("/request_agent", "application/json", b'{"provider_data": {'),
        ]:
            _reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
                         "Content-Length: 1000\r\n\r\n".encode() + start)
            await writer.drain()
            writer.close()
            await writer.wait_closed()
        await eventually(lambda: len(requests_seen) == 3)
    assert [status for _, _, status in requests_seen] == [499, 499, 499]
    ours = [r for r in caplog.records if r.name == "mephisto.server.app"]
    assert ours and all(r.levelno == logging.DEBUG for r in ours), caplog.text
    assert all("disconnected" in r.getMessage() for r in ours)
    assert backend.calls == []


async def test_oversize_multipart_is_413(url: str, backend: FakeBackend) -> None:
    async with SimulatedWorker(url, "w1") as worker:
        await worker.request_agent()
        with pytest.raises(SimulatedWorkerError) as info:
            await worker.submit_multipart({"a": 1}, {"f": ("big.bin", b"\0" * 100_000)})
    assert info.value.status == 413 and "65536 bytes" in (info.value.error or "")
    assert backend.submissions == [] and [c for c, _ in backend.calls] == ["request_agent"]


async def test_malformed_multipart_is_400(
    url: str, session: aiohttp.ClientSession, backend: FakeBackend
) -> None:
    async with SimulatedWorker(url, "w1") as worker:
        agent_id = (await worker.request_agent())["agent_id"]
    cases: list[tuple[dict[str, str], str]] = [
        ({"final_string_data": "{}"}, "missing field 'USED_AGENT_ID'"),
        ({"USED_AGENT_ID": agent_id}, "missing field 'final_string_data'"),
        ({"USED_AGENT_ID": agent_id, "final_string_data": "{oops"},
         "'final_string_data' is not valid JSON"),
        ({"USED_AGENT_ID": "", "final_string_data": "{}"}, "'USED_AGENT_ID' must be a non"),
    ]
    for fields, message in cases:
        form = aiohttp.FormData()
        for key, value in fields.items():
            form.add_field(key, value)
        form.add_field("file", b"data", filename="f.txt")
        status, body = await call(session, "POST", url + "/submit_task", data=form)
        assert status == 400 and message in body["error"], (fields, body)
    # the agent was checked before its files were read; nothing was submitted
    assert {name for name, _args in backend.calls} == {"request_agent", "check_submit"}
    assert backend.submissions == [] and list(UPLOADS.iterdir()) == []


async def test_broken_multipart_is_400(
    url: str, session: aiohttp.ClientSession, backend: FakeBackend
) -> None:
    status, body = await call(
        session, "POST", url + "/submit_task", data=b"--x\r\ngarbage",
        headers={"Content-Type": "multipart/form-data"},  # no boundary
    )
    assert status == 400 and "multipart" in body["error"]
    assert backend.calls == []


async def test_wrong_method_is_405(
    url: str, session: aiohttp.ClientSession, backend: FakeBackend
) -> None:
    for method, path in [
        ("GET", "/submit_task"), ("GET", "/request_agent"), ("PUT", "/log_error"),
        ("POST", "/task_config.json"), ("POST", "/"), ("DELETE", "/hello.txt"),
        ("POST", "/wrap_crowd_source.js"), ("PATCH", "/healthz"),
    ]:
        async with session.request(method, url + path, data=b"{}") as response:
            assert response.status == 405, (method, path)
            assert "not allowed" in (await response.json())["error"]
            assert response.headers["Allow"]
    assert backend.calls == []


# -- errors the backend raises pass through with their status ----------------------------


async def test_unknown_agent_is_404(url: str, backend: FakeBackend) -> None:
    async with SimulatedWorker(url, "w1") as worker:
        worker.agent_id = "made-up-agent-id"
        with pytest.raises(SimulatedWorkerError) as info:
            await worker.submit({"a": 1})
        assert info.value.status == 404 and "made-up-agent-id" in (info.value.error or "")
        with pytest.raises(SimulatedWorkerError) as info:
            await worker.submit_metadata({"x": {}})
        assert info.value.status == 404
    assert backend.submissions == [] and backend.agents == {}


async def test_double_submit_is_409_and_keeps_the_first(url: str, backend: FakeBackend) -> None:
    async with SimulatedWorker(url, "w1") as worker:
        await worker.request_agent()
        await worker.submit({"first": True})
        with pytest.raises(SimulatedWorkerError) as info:
            await worker.submit({"second": True})
    assert info.value.status == 409 and "already submitted" in (info.value.error or "")
    assert backend.submissions == [(worker.agent_id, {"first": True}, [])]


async def test_submitting_for_an_agent_that_ended_gets_the_backends_error(
    url: str, backend: FakeBackend
) -> None:
    async with SimulatedWorker(url, "owner") as owner:
        await owner.request_agent()
        assert owner.agent_id is not None
        backend.agents[owner.agent_id].status = "returned"
        with pytest.raises(SimulatedWorkerError) as info:
            await owner.submit({"late": True})
    assert info.value.status == 403 and "returned" in (info.value.error or "")
    assert backend.submissions == []
    assert backend.agents[owner.agent_id].final_data is None


async def test_the_callers_identity_reaches_the_backend(url: str, backend: FakeBackend) -> None:
    async with SimulatedWorker(url, "owner") as owner, SimulatedWorker(url, "other") as other:
        await owner.request_agent()
        other.agent_id = owner.agent_id
        for action in (other.submit({"stolen": True}), other.submit_metadata({"x": {}})):
            with pytest.raises(SimulatedWorkerError) as info:
                await action
            assert info.value.status == 403 and "another worker" in (info.value.error or "")
    assert backend.submissions == [] and backend.agents[owner.agent_id].metadata == {}


async def test_ids_longer_than_the_limit_are_400(url: str, backend: FakeBackend) -> None:
    async with SimulatedWorker(url, "w1") as worker:
        worker.agent_id = "a" * 129
        for action in (worker.submit({}), worker.submit_metadata({}), worker.log_error("x")):
            with pytest.raises(SimulatedWorkerError) as info:
                await action
            assert info.value.status == 400 and "longer than 128" in (info.value.error or "")
        worker.worker_id = "w" * 129
        with pytest.raises(SimulatedWorkerError) as info:
            await worker.request_agent()
        assert info.value.status == 400 and "provider_data.worker_name" in (info.value.error or "")
    assert backend.calls == []


async def test_ids_that_cannot_be_ours_never_reach_the_backend(
    url: str, backend: FakeBackend
) -> None:
    async with SimulatedWorker(url, "w1") as worker:
        for odd in ("a b", "a\x00b", "é", "a/b", "a\nb"):
            worker.agent_id = odd
            for action in (worker.submit({}), worker.submit_metadata({})):
                with pytest.raises(SimulatedWorkerError) as info:
                    await action
                assert info.value.status == 404, odd
        worker.worker_id = "w\x00nul"  # PostgreSQL text cannot hold NUL: refused first
        with pytest.raises(SimulatedWorkerError) as info:
            await worker.request_agent()
        assert info.value.status == 400 and "control character" in (info.value.error or "")
    assert backend.calls == []


async def test_the_same_submit_again_is_answered_and_changes_nothing(
    url: str, backend: FakeBackend
) -> None:
    async with SimulatedWorker(url, "w1") as worker:
        await worker.request_agent()
        await worker.submit({"answer": 1})
        assert await worker.submit({"answer": 1}) == {"status": "Submitted!"}
    assert backend.submissions == [(worker.agent_id, {"answer": 1}, [])]


# -- static files ---------------------------------------------------------------------


async def test_static_files_are_served(url: str, session: aiohttp.ClientSession) -> None:
    for path, content in [("/hello.txt", "hello static"), ("/sub/inner.txt", "inner file"),
                          ("/link-in.txt", "hello static")]:
        status, body = await call(session, "GET", url + path)
        assert (status, body) == (200, content)
    async with session.head(url + "/hello.txt") as response:
        assert response.status == 200
    status, body = await call(session, "GET", url + "/missing.txt")
    assert status == 404 and body == {"error": "not found"}


TRAVERSALS = [
    "/../secret.txt", "/%2e%2e/secret.txt", "/%2E%2E/secret.txt", "/sub/../../secret.txt",
    "/sub/%2e%2e/%2e%2e/secret.txt", "/..%2fsecret.txt", "/sub%2f..%2f..%2fsecret.txt",
    "/%2e%2e%2fsecret.txt", "/..%5csecret.txt", "//etc/passwd", "/%2fetc%2fpasswd",
    f"/{'%2e%2e/' * 12}etc/passwd", "/link-out.txt", "/dir-out/secret.txt", "/.hidden",
    "/hello.txt%00.png", "/sub/", "/sub", "/./hello.txt", "/sub//inner.txt",
    "/" + "a" * 5000,
]


async def test_static_traversal_is_404(url: str) -> None:
    for path in TRAVERSALS:
        status, body = await raw_http(url, path)
        assert status == 404, (path, body)
        assert b"TOP SECRET" not in body and b"root:" not in body, path


async def test_no_static_dir_is_404(session: aiohttp.ClientSession) -> None:
    async with running_server(create_app(FakeBackend(static_dir=None))) as url:
        status, body = await call(session, "GET", url + "/hello.txt")
    assert status == 404 and body == {"error": "not found"}


async def test_metrics_endpoint(session: aiohttp.ClientSession) -> None:
    from prometheus_client import CollectorRegistry, Counter

    registry = CollectorRegistry()
    Counter("fake_total", "a counter", registry=registry).inc()
    settings = ServerSettings(metrics_token="s3cret")
    app = create_app(FakeBackend(), settings, metrics_registry=registry)
    async with running_server(app) as url:
        good = {"Authorization": "Bearer s3cret"}
        async with session.get(url + "/metrics", headers=good) as response:
            assert response.status == 200 and "fake_total 1.0" in await response.text()
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            async with session.get(url + "/metrics", headers=headers) as response:
                assert response.status == 401 and response.headers["WWW-Authenticate"]
                assert "fake_total" not in await response.text()
    # without a token, workers' port does not serve metrics at all
    async with running_server(create_app(FakeBackend(), metrics_registry=registry)) as url:
        status, _body = await call(session, "GET", url + "/metrics")
    assert status == 404


# -- websocket ----------------------------------------------------------------------------


async def test_alive_and_heartbeat(url: str, backend: FakeBackend) -> None:
    async with SimulatedWorker(url, "w1") as worker:
        worker.heartbeat_interval = 0.05
        await worker.request_agent()
        assert worker.agent_id is not None
        before = time.time()
        await worker.connect()
        beat = await worker.wait_for_packet("heartbeat")
        assert set(beat) == {"packet_type", "data"}
        ping = beat["data"]["last_mephisto_ping"]
        assert isinstance(ping, int) and before * 1000 - 1 <= ping <= time.time() * 1000 + 1
        assert worker.agent_id in backend.sockets
        # the reply echoes the heartbeat's own client_timestamp, in milliseconds
        await worker.send_raw(json.dumps({"packet_type": "heartbeat", "subject_id":
                                          worker.agent_id, "client_timestamp": 1234.5678}))
        beat = await worker.wait_for_packet(
            "heartbeat", predicate=lambda p: p["data"]["last_mephisto_ping"] == 1234568)
        # no client_timestamp: server time
        since = len(worker.received)
        await worker.send_raw(json.dumps({"packet_type": "heartbeat", "client_timestamp": "x"}))
        beat = await worker.wait_for_packet("heartbeat", since=since)
        assert abs(beat["data"]["last_mephisto_ping"] - time.time() * 1000) < 5000
        send = backend.sockets[worker.agent_id]
        await worker.disconnect()
        await eventually(lambda: bool(backend.closed_sockets))
    assert backend.closed_sockets == [(worker.agent_id, send)]
    assert worker.agent_id not in backend.sockets


async def test_heartbeat_with_an_out_of_range_timestamp_gets_server_time(
    url: str, backend: FakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    """1e306 * 1000 is inf, and round(inf) raised: the socket died with a traceback."""
    async with SimulatedWorker(url, "w1") as worker:
        worker.heartbeat_interval = 60.0  # only the heartbeats sent here get answers
        await worker.request_agent()
        await worker.connect()
        with caplog.at_level(logging.WARNING):
            for ts in ["1e306", "-1e306", "1.7976931348623157e308", "1" + "0" * 400,
                       "8.65e12", "-8.65e12"]:
                since = len(worker.received)
                await worker.send_raw(f'{{"packet_type": "heartbeat", "client_timestamp": {ts}}}')
                beat = await worker.wait_for_packet("heartbeat", since=since)
                assert abs(beat["data"]["last_mephisto_ping"] - time.time() * 1000) < 5000, ts
        # the edge of a JavaScript Date is still echoed
        since = len(worker.received)
        await worker.send_raw('{"packet_type": "heartbeat", "client_timestamp": 8.64e12}')
        beat = await worker.wait_for_packet("heartbeat", since=since)
        assert beat["data"]["last_mephisto_ping"] == 8_640_000_000_000_000
        assert worker.ws is not None and not worker.ws.closed
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_live_updates_are_delivered_and_deduplicated(
    url: str, backend: FakeBackend
) -> None:
    async with SimulatedWorker(url, "w1") as worker:
        await worker.request_agent()
        await worker.connect()
        sent = await worker.send_live_update({"text": "hello"})
        echo = await worker.wait_for_packet("client_bound_live_update")
        assert echo["data"]["echo"] == sent
        # the same update again (a client retry) is dropped; a new one goes through
        await worker.send_packet("mephisto_bound_live_update", sent)
        second = await worker.send_live_update({"text": "again"})
        await worker.wait_for_packet("client_bound_live_update",
                                     predicate=lambda p: p["data"]["echo"] == second)
    assert [packet["data"] for _, packet in backend.packets] == [sent, second]
    agent_id, packet = backend.packets[0]
    assert agent_id == worker.agent_id
    assert packet["packet_type"] == "mephisto_bound_live_update"
    assert packet["subject_id"] == worker.agent_id


async def test_live_update_for_an_agent_the_socket_is_not_bound_to_is_ignored(
    url: str, backend: FakeBackend
) -> None:
    async with SimulatedWorker(url, "a") as a, SimulatedWorker(url, "b") as b:
        await a.request_agent()
        await b.request_agent()
        await a.connect()
        # a's socket speaks for b's agent: ignored
        await a.send_raw(json.dumps({"packet_type": "mephisto_bound_live_update",
                                     "subject_id": b.agent_id, "data": {"update_id": "u1"},
                                     "client_timestamp": time.time()}))
        # an unbound socket sends a live update without ever saying alive: ignored too
        b.ws = await b.session.ws_connect(url + "/")
        await b.send_live_update({"x": 1})
        await b.ws.close()
        b.ws = None
        await a.send_packet("heartbeat")
        await a.wait_for_packet("heartbeat")
    assert backend.packets == []


async def test_unknown_agent_socket_is_closed_with_4004(url: str, backend: FakeBackend) -> None:
    async with SimulatedWorker(url, "w1") as worker:
        worker.agent_id = "no-such-agent"
        await worker.connect()
        assert await worker.wait_closed() == 4004
    assert backend.sockets == {}


async def test_malformed_websocket_messages_are_ignored(
    url: str, backend: FakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    async with SimulatedWorker(url, "w1") as worker:
        await worker.request_agent()
        await worker.connect()
        with caplog.at_level(logging.WARNING, logger="mephisto.server.app"):
            for message in ["{not json", "[1, 2]", "null", '{"packet_type": "nonsense"}',
                            '{"packet_type": "alive"}',
                            '{"packet_type": "mephisto_bound_live_update"}',
                            json.dumps({"packet_type": "mephisto_bound_live_update",
                                        "subject_id": worker.agent_id, "data": [1]}),
                            json.dumps({"packet_type": "mephisto_bound_live_update",
                                        "subject_id": worker.agent_id,
                                        "data": {"big": "x" * 5000}})]:
                await worker.send_raw(message)
            await worker.send_raw(b"\xff\xfe")
            await worker.send_packet("heartbeat")
            await worker.wait_for_packet("heartbeat")  # the socket survived
        assert worker.ws is not None and not worker.ws.closed
        assert "over the limit" in caplog.text and "not valid JSON" in caplog.text
        sent = await worker.send_live_update({"ok": True})
        await worker.wait_for_packet("client_bound_live_update")
    assert [packet["data"] for _, packet in backend.packets] == [sent]
