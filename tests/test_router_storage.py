"""Static files and uploads through S3-compatible storage when the router is remote:
a real `mephisto router` child process and moto's S3 server over HTTP, the operator
dialling in with the `remote` architect and a `storage_url`."""

from __future__ import annotations

import os
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mephisto.abstractions.blueprints.static_task import SharedStaticTaskState
from mephisto.db import MephistoDB
from mephisto.errors import ConfigError, StorageError
from mephisto.operations.operator import Operator
from mephisto.router.storage import S3Storage, file_sha256, parse_storage_url
from mephisto.testing.fixtures import DEFAULT_HTML, static_run_config
from mephisto.testing.router import RouterProcess, router_process
from mephisto.testing.worker import SimulatedWorker, run_simulated_workers_sync
from mephisto.utils.dirs import get_run_dir

pytest.importorskip("moto.server")

STYLE = b"body { color: #123456; }\n" * 100


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> S3Storage:
    """A fresh bucket; dummy credentials in this process's environment (and so in the
    router child's, which inherits it)."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE",
                 "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    storage = S3Storage(f"test-{uuid.uuid4().hex[:12]}", "mephisto", endpoint_url=s3_endpoint)
    storage.client.create_bucket(Bucket=storage.bucket)
    return storage


@pytest.fixture
def task_html(tmp_path: Path) -> Path:
    """The task page in a folder of its own, beside one static file (`style.css`)."""
    folder = tmp_path / "task"
    folder.mkdir()
    (folder / "style.css").write_bytes(STYLE)
    path = folder / "task.html"
    path.write_text(DEFAULT_HTML)
    return path


def _storage_args(storage: S3Storage) -> list[str]:
    return ["--storage", storage.url, "--storage-endpoint-url", str(storage.endpoint_url)]


def _start_router(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                  extra_args: list[str]) -> RouterProcess:
    router = RouterProcess(tmp_path / "router", extra_args=extra_args).start()
    monkeypatch.setenv("MEPHISTO_ROUTER_TOKEN", router.token())
    return router


@pytest.fixture
def router(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bucket: S3Storage
           ) -> Iterator[RouterProcess]:
    """A router taking files through the bucket."""
    proc = _start_router(tmp_path, monkeypatch, _storage_args(bucket))
    try:
        yield proc
    finally:
        proc.kill()


def remote_config(task_html: Path, router: RouterProcess, storage: S3Storage | None,
                  ) -> dict[str, Any]:
    config = static_run_config(task_html)
    config["architect"] = {"_architect_type": "remote", "router_url": router.url,
                           "connect_timeout": 20}
    if storage is not None:
        config["architect"].update(storage_url=storage.url,
                                   storage_endpoint_url=storage.endpoint_url)
    return config


def _launch(operator: Operator, config: dict[str, Any], units: int = 2) -> str:
    data = [{"text": f"item-{i}"} for i in range(units)]
    return operator.launch_task_run(config, SharedStaticTaskState(static_task_data=data))


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as answer:
        body: bytes = answer.read()
        return body


def _record(monkeypatch: pytest.MonkeyPatch, method: str) -> list[tuple[Any, ...]]:
    """Calls of an `S3Storage` method in this process (the operator's side), with
    what each returned last."""
    calls: list[tuple[Any, ...]] = []
    original = getattr(S3Storage, method)

    def spy(self: S3Storage, *args: Any) -> Any:
        result = original(self, *args)
        calls.append((*args, result))
        return result
    monkeypatch.setattr(S3Storage, method, spy)
    return calls


def _eventually_empty(storage: S3Storage, prefix: str, timeout: float = 5.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while (keys := storage.list_keys(prefix)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return keys


async def _submit_with_file(url: str, worker_id: str, content: bytes) -> str:
    async with SimulatedWorker(url, worker_id) as worker:
        await worker.request_agent()
        answer = {"answer": worker.init_data["text"]}
        await worker.submit_multipart(answer, {"photo": ("photo.bin", content)})
        # a retry (the answer was lost, say) is answered again and keeps nothing more
        await worker.submit_multipart(answer, {"photo": ("photo.bin", content)})
        assert worker.agent_id is not None
        return worker.agent_id


def _check_upload(task_run_id: str, agent_id: str, content: bytes) -> None:
    folder = get_run_dir(task_run_id) / agent_id
    assert [p.name for p in folder.iterdir()] == ["0-photo.bin"]
    assert (folder / "0-photo.bin").read_bytes() == content


# -- the storage alone -------------------------------------------------------------------


def test_the_storage_puts_gets_and_deletes(bucket: S3Storage, tmp_path: Path) -> None:
    source = tmp_path / "a.txt"
    source.write_bytes(b"hello")
    key = bucket.static_key("my task/1", "css/a.txt")
    assert key == "mephisto/my_task_1/static/css/a.txt"
    assert bucket.upload(source, key) is True
    fresh = S3Storage(bucket.bucket, bucket.prefix, endpoint_url=bucket.endpoint_url)
    assert fresh.upload(source, key) is False  # the same sha256 is there already
    assert fresh.sha_of(key) == file_sha256(source)
    fresh.download(key, tmp_path / "b.txt")
    assert (tmp_path / "b.txt").read_bytes() == b"hello"
    bucket.put(source, bucket.new_upload_key("run.1"))
    assert len(bucket.list_keys()) == 2
    assert bucket.delete_prefix(bucket.uploads_prefix("run.1")) == 1
    bucket.delete(key)
    bucket.delete(key)  # a missing object is no error
    assert bucket.list_keys() == []
    with pytest.raises(StorageError, match="no such object"):
        bucket.download(key, tmp_path / "c.txt")
    assert parse_storage_url("s3://b-1/a//b/") == ("b-1", "a/b")
    assert S3Storage("b-1", endpoint_url="http://me:pw@minio:9000").__repr__() \
        == "S3Storage(s3://b-1 at http://minio:9000)"


# -- through the bucket ----------------------------------------------------------------------


async def test_assets_and_uploads_go_through_the_bucket(
        operator: Operator, task_html: Path, router: RouterProcess, bucket: S3Storage,
        monkeypatch: pytest.MonkeyPatch) -> None:
    downloads = _record(monkeypatch, "download")
    task_run_id = _launch(operator, remote_config(task_html, router, bucket))
    static = sorted(bucket.list_keys(bucket.key("test-task", "static") + "/"))
    assert static == ["mephisto/test-task/static/style.css",
                      "mephisto/test-task/static/task.html"]
    assert _get(router.url + "style.css") == STYLE
    assert f"storage {bucket.url}: 2 static file(s) fetched, 0 asked for" \
        in router.log.read_text()

    content = os.urandom(700_000)  # more than one channel chunk
    agent_id = await _submit_with_file(router.url, "w-upload", content)
    _check_upload(task_run_id, agent_id, content)
    run_prefix = operator._runs[task_run_id].architect.links[0].run_id
    fetched = [key for key, _target, _ in downloads]
    assert len(fetched) == 2  # the submit and its retry, each from the bucket
    assert all(key.startswith(bucket.uploads_prefix(run_prefix)) for key in fetched)
    assert _eventually_empty(bucket, bucket.uploads_prefix(run_prefix)) == []

    stats = await _complete(router.url)
    assert stats == 1
    assert operator._runs[task_run_id].done_sync.wait(30)
    assert operator.db.get_unit_status_counts(task_run_id) == {"completed": 2}


async def _complete(url: str) -> int:
    async with SimulatedWorker(url, "w-plain") as worker:
        await worker.request_agent()
        html = await worker.open_page()
        assert "mephisto-task-html" in html
        await worker.submit({"answer": worker.init_data["text"]})
        return worker.units_completed


def test_an_unchanged_static_file_is_not_uploaded_again(
        mephisto_db: MephistoDB, task_html: Path, router: RouterProcess, bucket: S3Storage,
        monkeypatch: pytest.MonkeyPatch) -> None:
    uploads = _record(monkeypatch, "upload")
    config = remote_config(task_html, router, bucket)
    sent: list[list[tuple[str, bool]]] = []
    for _run in range(2):  # one run after the other, each with its own operator
        with Operator(mephisto_db) as operator:
            task_run_id = _launch(operator, config, units=1)
            assert _get(router.url + "style.css") == STYLE
            assert run_simulated_workers_sync(router.url, 1).units_completed == 1
            assert operator._runs[task_run_id].done_sync.wait(30)
        sent.append(sorted((Path(path).name, done) for path, _key, _sha, done in uploads))
        uploads.clear()
        task_html.write_text(DEFAULT_HTML + "<!-- changed -->")
    assert sent == [[("style.css", True), ("task.html", True)],
                    [("style.css", False), ("task.html", True)]]


# -- falling back to the channel ---------------------------------------------------------


@pytest.mark.parametrize("side", ["operator", "router"])
async def test_storage_on_one_side_only_falls_back_to_the_channel(
        side: str, operator: Operator, task_html: Path, bucket: S3Storage, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    downloads = _record(monkeypatch, "download")
    router = _start_router(tmp_path, monkeypatch,
                           _storage_args(bucket) if side == "router" else [])
    try:
        config = remote_config(task_html, router, bucket if side == "operator" else None)
        task_run_id = _launch(operator, config, units=1)
        assert _get(router.url + "style.css") == STYLE
        content = b"over the channel"
        agent_id = await _submit_with_file(router.url, "w1", content)
        _check_upload(task_run_id, agent_id, content)
        assert downloads == []
        if side == "operator":
            assert "go over the channel" in caplog.text
        else:
            assert "go over the channel" in router.log.read_text()
            assert bucket.list_keys() == []
    finally:
        router.kill()


async def test_what_the_bucket_fails_to_give_goes_over_the_channel(
        operator: Operator, task_html: Path, router: RouterProcess, bucket: S3Storage,
        monkeypatch: pytest.MonkeyPatch) -> None:
    downloads = _record(monkeypatch, "download")
    task_run_id = _launch(operator, remote_config(task_html, router, bucket), units=1)
    # the static objects vanish, and a restarted router (empty cache) must ask for them
    bucket.delete_prefix(bucket.key("test-task", "static") + "/")
    router.restart()
    router.wait_for_operator()
    assert "0 static file(s) fetched, 2 asked for" in router.log.read_text()
    assert _get(router.url + "style.css") == STYLE
    # then the bucket itself: the router cannot put a submit's files, so sends them
    bucket.client.delete_bucket(Bucket=bucket.bucket)
    content = b"despite the bucket"
    agent_id = await _submit_with_file(router.url, "w1", content)
    _check_upload(task_run_id, agent_id, content)
    assert downloads == []
    assert "sending the submit's files over the channel" in router.log.read_text()


# -- clear errors ------------------------------------------------------------------------


def test_a_missing_bucket_or_endpoint_fails_the_launch_clearly(
        operator: Operator, task_html: Path, bucket: S3Storage,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # the storage is checked before the router is dialled: no router needed
    router = RouterProcess(Path("unused"), port=_closed_port())
    monkeypatch.setenv("MEPHISTO_ROUTER_TOKEN", router.token())
    missing = S3Storage("no-such-bucket-here", endpoint_url=bucket.endpoint_url)
    with pytest.raises(StorageError, match="bucket 'no-such-bucket-here' does not exist"):
        _launch(operator, remote_config(task_html, router, missing))
    closed = _closed_port()
    unreachable = S3Storage(bucket.bucket, endpoint_url=f"http://127.0.0.1:{closed}")
    with pytest.raises(StorageError, match="cannot reach the storage endpoint"):
        _launch(operator, remote_config(task_html, router, unreachable))
    for bad, why in (("https://a-bucket/p", "s3://bucket/prefix"),
                     ("s3://key:secret@a-bucket/p", "must not carry credentials")):
        config = remote_config(task_html, router, None)
        config["architect"]["storage_url"] = bad
        with pytest.raises(ConfigError, match=why) as info:
            _launch(operator, config)
        assert "secret" not in str(info.value)


def test_a_router_with_a_missing_bucket_does_not_start(tmp_path: Path, bucket: S3Storage
                                                       ) -> None:
    missing = S3Storage("no-such-bucket-here", endpoint_url=bucket.endpoint_url)
    with pytest.raises(RuntimeError, match=r"bucket\s+'no-such-bucket-here'\s+does not exist"), \
            router_process(tmp_path / "router", extra_args=_storage_args(missing)):
        pass


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
