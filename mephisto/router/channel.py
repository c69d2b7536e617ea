"""The channel between an operator and a router: one websocket, dialled by the operator.

Text messages are JSON objects with a type `t`:

    operator -> router   hello  {run, page, script, config, files: [{path, size, sha, key?}],
                                 storage?}
    router -> operator   want   {paths, storage}: static files the router does not have yet
    router -> operator   ready  the router serves the run
    router -> operator   call   {id, m, a}: a `TaskBackend` method and its arguments
    operator -> router   ret    {id, r} | err {id, e: {type, message, ...}}
    operator -> router   push   {s, p}: a packet for the browser socket `s` on the router
    operator -> router   bye    the run is over: the router stops offering work

Files travel as binary messages of at most `CHUNK_BYTES` after a header:
`<4-byte big-endian header length><header JSON><bytes>`; the header says what the bytes
are part of (`{"k": "static", "path", "last"}` or `{"k": "upload", "call", "i", "last"}`).
Upload chunks of a call come before the call itself.

Storage (`mephisto.router.storage`, opt-in): an operator with one names it in its hello
(`storage: "s3://bucket/prefix"`) and gives each static file the `key` it put it at; a
router with the same storage fetches those itself, asks with `want` only for what the
bucket could not give, and says `storage: true`. Then a `submit_task` call's file
entries may carry a `key` under `<prefix>/<run>/uploads/` instead of upload chunks; the
operator downloads them and deletes them once the call is answered. With different or
no storages on either side, everything travels as chunks.

The operator's token goes in the upgrade request (`Authorization: Bearer <token>`);
a router refusing it closes with `CLOSE_TOKEN_REFUSED` and the reason.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mephisto.errors import (
    AlreadySubmitted,
    DatabaseUnavailable,
    ForbiddenAction,
    MalformedRequest,
    NotEligible,
    PayloadTooLarge,
    ProviderError,
    RequestError,
    RouterError,
    ShutdownError,
    UnknownAgent,
)

OPERATOR_PATH = "/_mephisto/operator"
STATUS_PATH = "/_mephisto/router"
CHUNK_BYTES = 512 * 1024
MAX_MESSAGE_BYTES = CHUNK_BYTES + 64 * 1024
CLOSE_TOKEN_REFUSED = 4401
CLOSE_OTHER_RUN = 4409
CLOSE_REPLACED = 4000
CLOSE_PROTOCOL = 4400

_HEADER = struct.Struct(">I")

# Errors that cross the channel by name: what the operator's backend raised is raised
# again on the router, so the task server answers the browser as it would in-process.
_REQUEST_ERRORS: dict[str, type[RequestError]] = {
    cls.__name__: cls
    for cls in (MalformedRequest, ForbiddenAction, UnknownAgent, AlreadySubmitted,
                PayloadTooLarge)
}


def dumps(message: dict[str, Any]) -> str:
    return json.dumps(message, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def chunk_frame(header: dict[str, Any], data: bytes) -> bytes:
    head = json.dumps(header, separators=(",", ":")).encode()
    return _HEADER.pack(len(head)) + head + data


def parse_chunk(frame: bytes) -> tuple[dict[str, Any], bytes]:
    """The header and bytes of a binary message (`RouterError` if it is not one)."""
    if len(frame) < _HEADER.size:
        raise RouterError("channel: a binary message too short for its header")
    (size,) = _HEADER.unpack_from(frame)
    end = _HEADER.size + size
    try:
        header = json.loads(frame[_HEADER.size:end])
    except ValueError:
        raise RouterError("channel: a binary message whose header is not JSON") from None
    if not isinstance(header, dict):
        raise RouterError("channel: a binary message whose header is not an object")
    return header, frame[end:]


def file_chunks(path: Path, header: dict[str, Any]) -> Iterator[bytes]:
    """The binary messages carrying the file at `path` (at least one). The last is
    marked and carries the SHA-256 of the bytes sent (the file may have changed since
    it was listed)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        data = f.read(CHUNK_BYTES)
        while True:
            following = f.read(CHUNK_BYTES)
            digest.update(data)
            tail = {"last": True, "sha": digest.hexdigest()} if not following else {}
            yield chunk_frame({**header, **tail}, data)
            if not following:
                return
            data = following


def encode_error(exc: BaseException) -> dict[str, Any]:
    """An exception raised by the operator's backend, as an `err` message's `e`."""
    if isinstance(exc, RequestError):
        return {"type": type(exc).__name__, "message": exc.message}
    if isinstance(exc, NotEligible):
        return {"type": "NotEligible", "message": exc.reason}
    if isinstance(exc, ShutdownError):
        return {"type": "ShutdownError", "message": str(exc)}
    if isinstance(exc, DatabaseUnavailable):
        return {"type": "DatabaseUnavailable", "message": str(exc),
                "retry_after": exc.retry_after}
    if isinstance(exc, ProviderError):
        return {"type": "ProviderError",
                "message": str(exc).removeprefix(f"{exc.provider_type}: "),
                "provider": exc.provider_type}
    return {"type": "internal", "message": "the operator failed to answer"}


def decode_error(error: Any) -> Exception:
    """The exception to raise on the router for an `err` message's `e`."""
    if not isinstance(error, dict):
        return RouterError("channel: an error without its description")
    kind = error.get("type")
    message = str(error.get("message", ""))
    if isinstance(kind, str) and kind in _REQUEST_ERRORS:
        return _REQUEST_ERRORS[kind](message)
    if kind == "NotEligible":
        return NotEligible(message)
    if kind == "ShutdownError":
        return ShutdownError(message)
    if kind == "DatabaseUnavailable":
        exc = DatabaseUnavailable(message)
        retry = error.get("retry_after")
        if isinstance(retry, int) and 0 < retry <= 3600:
            exc.retry_after = retry
        return exc
    if kind == "ProviderError":
        return ProviderError(str(error.get("provider", "provider")), message, retryable=True)
    return RouterError(f"the operator failed: {message}")


__all__ = [
    "CHUNK_BYTES", "CLOSE_OTHER_RUN", "CLOSE_PROTOCOL", "CLOSE_REPLACED",
    "CLOSE_TOKEN_REFUSED", "MAX_MESSAGE_BYTES", "OPERATOR_PATH",
    "STATUS_PATH", "chunk_frame", "decode_error", "dumps", "encode_error", "file_chunks",
    "parse_chunk",
]
