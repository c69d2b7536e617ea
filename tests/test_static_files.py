"""Files a task page loads, from memory with validators (`server/static_files.py`):
ETags and 304s for a returning browser, a changed file served anew, large files still
streamed from disk, and paths checked once but never let out of the directory."""

from __future__ import annotations

import os
import time
from pathlib import Path

import aiohttp
import pytest

from mephisto.server import static_files
from mephisto.server.app import create_app
from mephisto.testing.fake_backend import FakeBackend
from mephisto.testing.server import running_server


@pytest.fixture
def static_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "static"
    folder.mkdir()
    (folder / "bundle.js").write_text("console.log('v1');\n")
    (folder / "style.css").write_text("body { color: red; }\n")
    (tmp_path / "secret.txt").write_text("not for workers")
    return folder


async def _get(session: aiohttp.ClientSession, url: str,
               etag: str | None = None) -> tuple[int, bytes, dict[str, str]]:
    headers = {"If-None-Match": etag} if etag else {}
    async with session.get(url, headers=headers) as response:
        return response.status, await response.read(), response.headers.copy()  # type: ignore[return-value]


async def test_a_returning_browser_gets_304_and_a_changed_file_anew(static_dir: Path) -> None:
    async with running_server(create_app(FakeBackend(static_dir=static_dir))) as url, \
            aiohttp.ClientSession() as session:
        status, body, headers = await _get(session, url + "/bundle.js")
        assert (status, body) == (200, b"console.log('v1');\n")
        assert headers["Cache-Control"] == "no-cache"
        assert headers["Content-Type"].startswith("text/javascript") or \
            headers["Content-Type"].startswith("application/javascript")
        etag = headers["ETag"]
        status, body, again = await _get(session, url + "/bundle.js", etag)
        assert (status, body, again["ETag"]) == (304, b"", etag)
        assert (await _get(session, url + "/bundle.js", '"other", ' + etag))[0] == 304
        assert (await _get(session, url + "/bundle.js", '"stale"'))[0] == 200

        time.sleep(0.01)  # a rebuilt bundle (new mtime and size) is served at once
        (static_dir / "bundle.js").write_text("console.log('version 2');\n")
        status, body, changed = await _get(session, url + "/bundle.js", etag)
        assert (status, body) == (200, b"console.log('version 2');\n")
        assert changed["ETag"] != etag
        css = await _get(session, url + "/style.css")
        assert css[0] == 200 and css[2]["Content-Type"].startswith("text/css")


@pytest.mark.parametrize("page", ["/", "/wrap_crowd_source.js", "/_mephisto/static-task.js"])
async def test_the_page_and_its_scripts_have_validators(static_dir: Path, page: str) -> None:
    async with running_server(create_app(FakeBackend(static_dir=static_dir))) as url, \
            aiohttp.ClientSession() as session:
        status, body, headers = await _get(session, url + page)
        assert status == 200 and body and headers["ETag"].startswith('"')
        assert (await _get(session, url + page, headers["ETag"]))[0] == 304


async def test_large_files_are_streamed_and_paths_stay_inside(
    static_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(static_files, "MAX_CACHED_FILE", 1000)
    (static_dir / "big.bin").write_bytes(os.urandom(5000))
    (static_dir / "escape.txt").symlink_to(static_dir.parent / "secret.txt")
    async with running_server(create_app(FakeBackend(static_dir=static_dir))) as url, \
            aiohttp.ClientSession() as session:
        status, body, _headers = await _get(session, url + "/big.bin")  # from disk
        assert status == 200 and body == (static_dir / "big.bin").read_bytes()
        for path in ("/escape.txt", "/../secret.txt", "/.hidden", "/missing.js", "/sub//x"):
            assert (await _get(session, url + path))[0] == 404, path
        # a file that appears later is found; one that is removed is gone
        (static_dir / "late.js").write_text("late")
        assert (await _get(session, url + "/late.js"))[1] == b"late"
        (static_dir / "late.js").unlink()
        assert (await _get(session, url + "/late.js"))[0] == 404


def test_lookups_are_remembered_and_memory_is_bounded(
    static_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = static_files.StaticFiles()
    first = files.lookup(static_dir, "bundle.js")
    assert first == (static_dir / "bundle.js").resolve()
    calls: list[Path] = []
    real_resolve = Path.resolve

    def counting(self: Path, strict: bool = False) -> Path:
        calls.append(self)
        return real_resolve(self, strict)

    monkeypatch.setattr(Path, "resolve", counting)
    for _ in range(50):
        assert files.lookup(static_dir, "bundle.js") == first
    assert calls == []  # no path resolution per request
    monkeypatch.setattr(static_files, "MAX_CACHED_TOTAL", 50)
    for name in ("a.js", "b.js", "c.js"):
        (static_dir / name).write_text("x" * 20)
        path = files.lookup(static_dir, name)
        assert path is not None and files.get(path) is not None
    assert files._bytes <= 50
