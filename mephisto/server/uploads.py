"""A multipart `/submit_task` read as a stream: fields in memory, files straight to disk.

The static HTML task posts its submit as multipart/form-data when the worker attached
files: `USED_AGENT_ID`, `final_string_data` (the form as a JSON string) and one part per
file. Nothing of a file is held in memory: each file part is written to a temporary
file of the upload directory as its bytes arrive, under the limit for the whole body.
The agent is checked as soon as its `USED_AGENT_ID` field is complete (the clients send
it first), so a submit for an unknown or foreign agent is refused before a file byte is
written; if a file comes first, it is still bounded by the body limit and removed on
refusal. Whatever ends the read early, no temporary file is left behind.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from mephisto.errors import MalformedRequest, PayloadTooLarge, UnknownAgent
from mephisto.server.backend import AGENT_ID, UploadedFile

__all__ = ["MultipartSubmit"]

AGENT_FIELD = "USED_AGENT_ID"
MAX_FILENAME = 255  # characters of a file name kept as given by the browser


@dataclass
class _Part:
    name: str = ""
    filename: str | None = None
    content_type: str = "application/octet-stream"
    data: bytearray = field(default_factory=bytearray)
    path: Path | None = None
    file: IO[bytes] | None = None
    size: int = 0


class MultipartSubmit:
    """Reads one multipart submit. `check_agent(agent_id)` is awaited once the agent id
    is known and raises to refuse the submit. After `read()`, `fields` holds the text
    fields and `files` the saved files; `discard()` removes files nobody took."""

    def __init__(
        self,
        content_type: str,
        upload_dir: Path,
        check_agent: Callable[[str], Awaitable[None]],
        *,
        max_field_bytes: int,
        max_files: int,
        max_fields: int,
    ) -> None:
        _ctype, options = parse_options_header(content_type)
        boundary = options.get(b"boundary")
        if not boundary:
            raise MalformedRequest("multipart/form-data without a boundary")
        self.upload_dir = upload_dir
        self.check_agent = check_agent
        self.max_field_bytes = max_field_bytes
        self.max_files = max_files
        self.max_fields = max_fields
        self.fields: dict[str, str] = {}
        self.files: list[UploadedFile] = []
        self.agent_checked = False
        self._parts: list[_Part] = []  # completed or current
        self._current: _Part | None = None
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[bytes, bytes] = {}
        # what the parser saw since the last chunk: ("part", headers) / ("data", bytes) /
        # ("end", None), handled (with awaits) once the chunk is parsed
        self._events: list[tuple[str, Any]] = []
        self._ended = False
        try:
            self._parser = MultipartParser(boundary, {
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_end": self._on_end,
            })
        except (MultipartParseError, ValueError) as exc:
            raise MalformedRequest(f"request body is not valid multipart/form-data: {exc}") \
                from None

    # -- parser callbacks (synchronous: they only record what happened) -------------------

    def _on_part_begin(self) -> None:
        self._headers = {}

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        self._headers[bytes(self._header_field).lower()] = bytes(self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        self._events.append(("part", self._headers))

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        self._events.append(("data", data[start:end]))

    def _on_part_end(self) -> None:
        self._events.append(("end", None))

    def _on_end(self) -> None:
        self._ended = True

    # -- reading ------------------------------------------------------------------------

    async def read(self, stream: AsyncIterator[bytes]) -> None:
        """Parse the whole body. Raises `MalformedRequest`, `PayloadTooLarge` or whatever
        `check_agent` raises; on any error every temporary file is removed."""
        try:
            async for chunk in stream:
                try:
                    self._parser.write(chunk)
                except MultipartParseError as exc:
                    raise MalformedRequest(
                        f"request body is not valid multipart/form-data: {exc}"
                    ) from None
                await self._handle_events()
            self._parser.finalize()
            await self._handle_events()
            if not self._ended:
                raise MalformedRequest("request body is not valid multipart/form-data: "
                                       "it ends before its closing boundary")
            if not self.agent_checked:
                raise MalformedRequest(f"missing field '{AGENT_FIELD}'")
        except BaseException:
            self._close_current()
            self.discard()
            raise

    async def _handle_events(self) -> None:
        events, self._events = self._events, []
        for kind, data in events:
            if kind == "part":
                self._begin_part(data)
            elif kind == "data":
                self._part_data(data)
            else:
                await self._end_part()

    def _begin_part(self, headers: dict[bytes, bytes]) -> None:
        disposition, options = parse_options_header(headers.get(b"content-disposition"))
        if disposition != b"form-data" or b"name" not in options:
            raise MalformedRequest("a multipart part without a form-data name")
        part = _Part(name=options[b"name"].decode("utf-8", "replace"))
        if b"filename" in options:
            if sum(1 for p in self._parts if p.filename is not None) >= self.max_files:
                raise MalformedRequest(f"too many files: at most {self.max_files}")
            part.filename = options[b"filename"].decode("utf-8", "replace")[:MAX_FILENAME]
            ctype = headers.get(b"content-type", b"").decode("latin-1").strip()
            if ctype:
                part.content_type = ctype[:200]
        elif len(self._parts) - len(self.files) >= self.max_fields:
            raise MalformedRequest(f"too many form fields: at most {self.max_fields}")
        self._parts.append(part)
        self._current = part

    def _part_data(self, data: bytes) -> None:
        part = self._current
        if part is None or not data:
            return
        if part.filename is None:
            if len(part.data) + len(data) > self.max_field_bytes:
                raise PayloadTooLarge(
                    f"form field '{part.name}' is larger than {self.max_field_bytes} bytes"
                )
            part.data += data
            return
        if part.file is None:
            self.upload_dir.mkdir(parents=True, exist_ok=True)
            part.path = self.upload_dir / f"{secrets.token_hex(12)}.part"
            part.file = open(part.path, "xb")  # noqa: SIM115 - closed at the part's end
        part.file.write(data)
        part.size += len(data)

    async def _end_part(self) -> None:
        part, self._current = self._current, None
        if part is None:
            return
        if part.filename is None:
            try:
                value = part.data.decode("utf-8")
            except UnicodeDecodeError:
                raise MalformedRequest(f"form field '{part.name}' is not UTF-8 text") from None
            if part.name in self.fields:
                raise MalformedRequest(f"form field '{part.name}' is given twice")
            self.fields[part.name] = value
            if part.name == AGENT_FIELD:
                if not value or len(value) > 128:
                    raise MalformedRequest(f"field '{AGENT_FIELD}' must be a non-empty string "
                                           "of at most 128 characters")
                if not AGENT_ID.fullmatch(value):
                    raise UnknownAgent("unknown agent id: request an agent first")
                await self.check_agent(value)
                self.agent_checked = True
            return
        if part.file is not None:
            part.file.close()
            part.file = None
        if part.path is None and not part.filename:
            return  # a file input left empty: browsers still send a part
        if part.path is None:  # an empty file with a name
            self.upload_dir.mkdir(parents=True, exist_ok=True)
            part.path = self.upload_dir / f"{secrets.token_hex(12)}.part"
            part.path.touch(exist_ok=False)
        self.files.append(UploadedFile(
            field_name=part.name, filename=part.filename or "",
            content_type=part.content_type, path=part.path, size=part.size,
        ))

    def _close_current(self) -> None:
        part = self._current
        if part is not None and part.file is not None:
            part.file.close()
            part.file = None
            if part.path is not None and all(f.path != part.path for f in self.files):
                with contextlib.suppress(OSError):
                    os.unlink(part.path)

    def discard(self) -> None:
        """Remove the temporary files still in the upload directory (those the backend
        did not move away)."""
        for f in self.files:
            with contextlib.suppress(OSError):
                os.unlink(f.path)
