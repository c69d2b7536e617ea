"""Files a task page loads, served from memory with validators.

Every worker is a new browser: the task page, the provider shim, the task's script or
bundle and its small assets are fetched once per unit, by a different person each time.
So they are answered from memory, without a thread per read (Starlette's `FileResponse`
reads through a worker thread) and without resolving the path again on every request:

- `StaticFiles.lookup(directory, relative)` checks a requested path once (no hidden or
  `..` parts, no private part (`is_private`: databases, `node_modules`, caches),
  nothing outside the directory once symlinks are followed, a regular file) and
  remembers the result;
- `StaticFiles.get(path)` keeps the bytes of files up to `MAX_CACHED_FILE` (a `stat` per
  request notices a file that changed, e.g. a rebuilt bundle) with an `ETag`;
- `conditional(...)` answers `304 Not Modified` to a browser that sends the `ETag` it
  has (`If-None-Match`), else the bytes, with `Cache-Control: no-cache` (the browser
  keeps the file and asks whether it changed: a page reload costs a 304);
- text, scripts, JSON and SVG of at least `GZIP_MIN` bytes are also kept gzipped,
  compressed once per version of the file (`encode`), and sent so to a browser that
  accepts gzip (`Content-Encoding: gzip`, `Vary: Accept-Encoding`, an ETag of its own):
  a React bundle is a third of its size on a worker's network.

Larger files go through `FileResponse` as before.
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response

__all__ = [
    "MAX_CACHED_FILE", "CachedFile", "Encoded", "StaticFiles", "accepts_gzip", "conditional",
    "encode", "etag_of", "is_private",
]

MAX_CACHED_FILE = 1 << 20  # bytes: larger files are streamed from disk
MAX_CACHED_TOTAL = 64 << 20  # bytes of file contents kept in memory at most
MAX_PATHS = 4096  # remembered path lookups
CACHE_CONTROL = "no-cache"  # keep it, but ask whether it changed before using it
GZIP_MIN = 1024  # bytes: below this, gzip saves less than its header costs
GZIP_LEVEL = 6  # once per version of a file: zlib's default trade-off
_COMPRESSIBLE = ("text/", "application/javascript", "application/json", "application/xml",
                 "image/svg+xml", "application/wasm", "application/manifest+json")


# Never served from a static directory (a static task serves its HTML file's folder,
# which may also hold the run's database or a front-end's dependencies).
PRIVATE_DIRS = frozenset({"node_modules", "__pycache__"})
PRIVATE_SUFFIXES = (".db", ".db-wal", ".db-shm", ".db-journal", ".sqlite", ".sqlite3",
                    ".pyc")


def is_private(part: str) -> bool:
    """Whether a path segment names something never served: hidden, a database file, a
    dependency or cache folder."""
    return part[0] == "." or part in PRIVATE_DIRS or part.endswith(PRIVATE_SUFFIXES)


@dataclass(frozen=True, slots=True)
class Encoded:
    """An answer's body kept in memory, with its ETag and, when gzip makes it smaller,
    its gzipped bytes (with an ETag of their own: another representation)."""

    body: bytes
    etag: str
    content_type: str
    gzipped: bytes | None = None
    gzip_etag: str | None = None


@dataclass(frozen=True, slots=True)
class CachedFile:
    encoded: Encoded
    stamp: tuple[int, int, int]  # (mtime_ns, size, inode) of what was read

    @property
    def size(self) -> int:
        """Bytes kept in memory for this file (both representations)."""
        return len(self.encoded.body) + len(self.encoded.gzipped or b"")


def etag_of(body: bytes) -> str:
    """A strong validator for `body`."""
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


def encode(body: bytes, content_type: str) -> Encoded:
    """`body` ready to answer with: its ETag, and its gzipped form when it is text-like,
    at least GZIP_MIN bytes, and gzip saves at least a tenth (deterministic: no
    timestamp in the gzip header, so the same bytes always give the same ETag)."""
    etag = etag_of(body)
    if len(body) >= GZIP_MIN and content_type.startswith(_COMPRESSIBLE):
        packed = gzip.compress(body, GZIP_LEVEL, mtime=0)
        if len(packed) <= len(body) * 0.9:
            return Encoded(body, etag, content_type, packed, etag[:-1] + '-gzip"')
    return Encoded(body, etag, content_type)


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an `Accept-Encoding` header admits gzip (named, or `*`, with q > 0)."""
    if not accept_encoding:
        return False
    star = False
    for item in accept_encoding.lower().split(","):
        coding, _sep, params = item.partition(";")
        coding = coding.strip()
        if coding not in ("gzip", "x-gzip", "*"):
            continue
        q = 1.0
        for param in params.split(";"):
            name, _eq, value = param.partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if coding == "*":
            star = q > 0
        else:
            return q > 0  # gzip named: its own q decides, whatever `*` says
    return star


def _content_type(path: Path) -> str:
    guessed, _encoding = mimetypes.guess_type(path.name)
    kind = guessed or "application/octet-stream"
    if kind.startswith("text/") or kind in ("application/javascript", "application/json"):
        kind += "; charset=utf-8"
    return kind


def conditional(request: Request, encoded: Encoded, headers: dict[str, str]) -> Response:
    """The body (gzipped if it has a gzipped form and the browser accepts gzip), or 304
    when the browser already has that representation (`If-None-Match`)."""
    body, etag = encoded.body, encoded.etag
    out = {**headers, "Cache-Control": CACHE_CONTROL}
    if encoded.gzipped is not None:
        out["Vary"] = "Accept-Encoding"
        if accepts_gzip(request.headers.get("accept-encoding")):
            body, etag = encoded.gzipped, encoded.gzip_etag or etag
            out["Content-Encoding"] = "gzip"
    out["ETag"] = etag
    given = request.headers.get("if-none-match")
    if given is not None and (given.strip() == "*" or etag in
                              (tag.strip().removeprefix("W/") for tag in given.split(","))):
        out.pop("Content-Encoding", None)
        return Response(None, 304, out)
    return Response(body, 200, out, encoded.content_type)


class StaticFiles:
    """The static directory's files: lookups remembered, small files kept in memory."""

    def __init__(self) -> None:
        self._paths: OrderedDict[tuple[str, str], Path] = OrderedDict()
        self._bases: dict[str, Path] = {}
        self._files: OrderedDict[Path, CachedFile] = OrderedDict()
        self._bytes = 0

    def lookup(self, directory: Path, relative: str) -> Path | None:
        """The file `relative` names inside `directory`, or None.

        Refused: NUL bytes, backslashes, empty, `.` and `..` segments, hidden (dot)
        names, absolute paths, and anything that resolves (symlinks followed) outside
        the directory or to something other than a regular file."""
        key = (str(directory), relative)
        found = self._paths.get(key)
        if found is not None:
            return found
        if not relative or "\x00" in relative or "\\" in relative:
            return None
        for part in relative.split("/"):
            if not part or is_private(part):
                return None
        try:
            base = self._bases.get(key[0])
            if base is None:
                base = self._bases[key[0]] = Path(directory).resolve()
            candidate = (base / relative).resolve()
            if not (candidate.is_relative_to(base) and candidate.is_file()):
                return None
        except (OSError, ValueError):
            return None
        self._paths[key] = candidate
        if len(self._paths) > MAX_PATHS:
            self._paths.popitem(last=False)
        return candidate

    def get(self, path: Path) -> CachedFile | None:
        """The file's bytes and validator, read again only when it changed; None for a
        file too large to keep (or gone)."""
        try:
            st = os.stat(path)
        except OSError:  # removed: forget it, and the lookups that led to it
            self._forget(path)
            for key in [k for k, v in self._paths.items() if v == path]:
                del self._paths[key]
            return None
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        cached = self._files.get(path)
        if cached is not None and cached.stamp == stamp:
            self._files.move_to_end(path)
            return cached
        self._forget(path)
        if st.st_size > MAX_CACHED_FILE:
            return None
        try:
            body = path.read_bytes()
        except OSError:
            return None
        cached = CachedFile(encode(body, _content_type(path)), stamp)
        self._files[path] = cached
        self._bytes += cached.size
        while self._bytes > MAX_CACHED_TOTAL and self._files:
            _old, dropped = self._files.popitem(last=False)
            self._bytes -= dropped.size
        return cached

    def _forget(self, path: Path) -> None:
        dropped = self._files.pop(path, None)
        if dropped is not None:
            self._bytes -= dropped.size
