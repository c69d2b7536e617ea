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


BUNDLE = "".join(f"export function part{i}() {{ return 'piece number {i}'; }}\n"
                 for i in range(400)).encode()


async def _fetch(session: aiohttp.ClientSession, url: str, accept: str | None,
                 etag: str | None = None) -> tuple[int, bytes, dict[str, str]]:
    """A GET with exactly this Accept-Encoding (none when None), body as sent."""
    headers = {"Accept-Encoding": accept if accept is not None else "identity"}
    if etag:
        headers["If-None-Match"] = etag
    async with session.get(url, headers=headers) as response:
        return response.status, await response.read(), response.headers.copy()  # type: ignore[return-value]


async def test_text_assets_are_gzipped_for_browsers_that_accept_it(static_dir: Path) -> None:
    import gzip

    (static_dir / "app.js").write_bytes(BUNDLE)
    (static_dir / "tiny.js").write_text("let x = 1;\n")
    (static_dir / "photo.png").write_bytes(b"\x89PNG" + b"\0" * 5000)
    page = "<html><body>" + "<p>instructions for the task</p>" * 200 + "</body></html>"
    app = create_app(FakeBackend(static_dir=static_dir, page=page))
    async with running_server(app) as url, \
            aiohttp.ClientSession(auto_decompress=False) as session:
        status, packed, zipped = await _fetch(session, url + "/app.js", "gzip, deflate, br")
        assert status == 200 and zipped["Content-Encoding"] == "gzip"
        assert gzip.decompress(packed) == BUNDLE and len(packed) < len(BUNDLE) / 3
        assert zipped["Vary"] == "Accept-Encoding"
        assert int(zipped["Content-Length"]) == len(packed)
        # the gzipped form is a representation of its own: its own ETag, and a 304
        status, body, again = await _fetch(session, url + "/app.js", "gzip", zipped["ETag"])
        assert (status, body, again["ETag"]) == (304, b"", zipped["ETag"])
        assert "Content-Encoding" not in again

        for accept in (None, "gzip;q=0", "br", "*;q=0, deflate"):
            status, body, plain = await _fetch(session, url + "/app.js", accept)
            assert (status, body) == (200, BUNDLE), accept
            assert "Content-Encoding" not in plain and plain["Vary"] == "Accept-Encoding"
            assert plain["ETag"] != zipped["ETag"]
            # a browser holding the gzipped form that no longer accepts gzip gets bytes
            assert (await _fetch(session, url + "/app.js", accept, zipped["ETag"]))[0] == 200
        assert (await _fetch(session, url + "/app.js", "*"))[2]["Content-Encoding"] == "gzip"

        for small in ("/tiny.js", "/photo.png"):  # too small to gain, or not text
            status, body, plain = await _fetch(session, url + small, "gzip")
            assert status == 200 and body == (static_dir / small[1:]).read_bytes()
            assert "Content-Encoding" not in plain and "Vary" not in plain

        status, packed, headers = await _fetch(session, url + "/", "gzip")
        assert headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(packed).decode() == page

    # what aiohttp does by default (as a browser: accepts gzip, decompresses)
    async with running_server(app) as url, aiohttp.ClientSession() as session:
        status, body, headers = await _get(session, url + "/app.js")
        assert (status, body, headers["Content-Encoding"]) == (200, BUNDLE, "gzip")


@pytest.mark.parametrize(("header", "accepted"), [
    ("gzip", True), ("GZIP", True), ("deflate, gzip;q=0.5", True), ("x-gzip", True),
    ("*", True), ("gzip;q=0", False), ("gzip; q=0.0", False), ("*;q=0", False),
    ("br, deflate", False), ("", False), (None, False), ("identity", False),
    ("gzip;q=0, *", False), ("*;q=0, gzip", True), ("gzip;q=nonsense", False),
])
def test_accept_encoding_is_read_as_browsers_mean_it(header: str | None, accepted: bool) -> None:
    assert static_files.accepts_gzip(header) is accepted
