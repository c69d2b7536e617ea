"""The router's `TaskBackend`: every call goes to the operator over the channel.

The router (`mephisto router`) runs the same task server as the `local` architect; its
backend is this class, which forwards each call to the operator connected at
`OPERATOR_PATH` and raises what the operator's backend raised. The task page, the
provider script, the task config and the static files come with the operator's `hello`
and are kept, so pages and assets are served without asking the operator.

While no operator is connected (none yet, or the link dropped), calls wait up to
`connect_grace` seconds for one, then raise `OperatorUnavailable` (503, `Retry-After`).
A call in flight when the link drops raises it too: the browser retries, and since
submits are idempotent on the operator, nothing acknowledged is lost nor stored twice.
Browser sockets bound through this router are announced again to an operator that
(re)connects, so live tasks keep their sockets across a reconnect.

With a `storage` naming the same `s3://bucket/prefix` as the operator's hello, static
files are downloaded from the bucket rather than asked for, and a submit's files are put
in the bucket and sent as keys; otherwise (or for a file the bucket fails to give) they
travel over the channel as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from mephisto.errors import (
    OperatorUnavailable,
    RouterError,
    ShutdownError,
    StorageError,
    TokenRefused,
    UnknownAgent,
)
from mephisto.router import channel
from mephisto.router.auth import verify_token
from mephisto.router.storage import S3Storage, file_sha256
from mephisto.server.backend import AgentResponse, Caller, SendPacket, UploadedFile
from mephisto.server.static_files import is_private

logger = logging.getLogger(__name__)

_SAFE_RUN = re.compile(r"[^A-Za-z0-9_.-]+")
MAX_STATIC_FILES = 10_000
RUN_OVER = "the run is over"  # a ShutdownError's message: answered as a blocked agent
TIMINGS_EVERY = 1.0  # seconds: how often the requests' timings go to the operator
MAX_TIMINGS = 10_000  # timings kept while no operator is connected (the newest)
MAX_STATIC_FILE_BYTES = 512 * 1024 * 1024


class _Link:
    """One connected operator: calls out, answers back."""

    def __init__(self, websocket: WebSocket, run_id: str, call_timeout: float) -> None:
        self.websocket = websocket
        self.run_id = run_id
        self.call_timeout = call_timeout
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.ids = itertools.count(1)
        self.lock = asyncio.Lock()
        self.closed = False

    async def call(self, method: str, args: dict[str, Any],
                   files: list[UploadedFile] | None = None) -> Any:
        if self.closed:
            raise OperatorUnavailable("the operator's link is down")
        call_id = next(self.ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[call_id] = future
        try:
            async with self.lock:
                for index, f in enumerate(files or ()):
                    for frame in channel.file_chunks(
                            f.path, {"k": "upload", "call": call_id, "i": index}):
                        await self.websocket.send_bytes(frame)
                await self.websocket.send_text(
                    channel.dumps({"t": "call", "id": call_id, "m": method, "a": args}))
        except (RuntimeError, OSError, WebSocketDisconnect):
            self.pending.pop(call_id, None)
            raise OperatorUnavailable("the operator's link dropped") from None
        try:
            return await asyncio.wait_for(future, self.call_timeout)
        except TimeoutError:
            raise OperatorUnavailable(
                f"the operator did not answer within {self.call_timeout:g} s") from None
        finally:
            self.pending.pop(call_id, None)

    async def tell(self, message: dict[str, Any]) -> None:
        """Send a message that wants no answer; nothing happens if the link is down."""
        if self.closed:
            return
        with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
            async with self.lock:
                await self.websocket.send_text(channel.dumps(message))

    def answer(self, message: dict[str, Any]) -> None:
        future = self.pending.get(message.get("id"))  # type: ignore[arg-type]
        if future is None or future.done():
            return  # a call that timed out meanwhile
        if message["t"] == "ret":
            future.set_result(message.get("r"))
        else:
            future.set_exception(channel.decode_error(message.get("e")))

    def drop(self, finished: bool = False) -> None:
        """The link is gone: calls still waiting get 503 (the browser retries), or, once
        the run is over (`finished`), what a run that ended answers."""
        self.closed = True
        for future in self.pending.values():
            if not future.done():
                future.set_exception(
                    ShutdownError(RUN_OVER) if finished
                    else OperatorUnavailable("the operator's link dropped"))
        self.pending.clear()


class RemoteBackend:
    """`TaskBackend` for a router: forwards to the operator that dialled in."""

    def __init__(self, secret: str, cache_dir: Path, *, call_timeout: float = 60.0,
                 connect_grace: float = 1.0, storage: S3Storage | None = None) -> None:
        self.secret = secret
        self.cache_dir = cache_dir
        self.call_timeout = call_timeout
        self.connect_grace = connect_grace
        self.link: _Link | None = None
        self.ready = asyncio.Event()
        self.run_id: str | None = None
        self.finished = False
        self.page: str | None = None
        self.script: str | None = None
        self.config: dict[str, Any] = {}
        self._static: Path | None = None
        self._have: dict[str, str] = {}  # static path -> sha256 of what is on disk
        # browser sockets bound through this router: id -> (send, {agent_id: caller})
        self._sockets: dict[int, tuple[SendPacket, dict[str, Caller]]] = {}
        self._socket_ids: dict[int, int] = {}  # id(send) -> socket id
        self._next_socket = itertools.count(1)
        self.storage = storage
        self._shared = False  # the operator named the same storage in its hello
        # (endpoint, seconds, status) of requests answered here, for the operator's
        # metrics: sent every TIMINGS_EVERY seconds as one `obs` message
        self._timings: list[tuple[str, float, int]] = []
        self._timings_due: asyncio.TimerHandle | None = None
        self._telling: set[asyncio.Task[None]] = set()

    def record_request(self, endpoint: str, seconds: float, status: int) -> None:
        """The task server's `on_request`: keep the timing for the operator."""
        self._timings.append((endpoint, round(seconds, 6), status))
        if len(self._timings) > MAX_TIMINGS:
            del self._timings[:len(self._timings) - MAX_TIMINGS]
        if self._timings_due is None:
            self._timings_due = asyncio.get_running_loop().call_later(
                TIMINGS_EVERY, self._send_timings)

    def _send_timings(self) -> None:
        self._timings_due = None
        link = self.link
        if link is None or link.closed:  # kept (the newest) until an operator is back
            if self._timings:
                self._timings_due = asyncio.get_running_loop().call_later(
                    TIMINGS_EVERY, self._send_timings)
            return
        timings, self._timings = self._timings, []
        task = asyncio.get_running_loop().create_task(
            link.tell({"t": "obs", "r": timings}))  # tuples go as JSON arrays
        self._telling.add(task)
        task.add_done_callback(self._telling.discard)

    # -- what the task server asks --------------------------------------------------

    def _require(self, value: str | None) -> str:
        if value is None:
            raise OperatorUnavailable("no operator has connected to this router yet")
        return value

    def task_page(self) -> str:
        return self._require(self.page)

    def provider_script(self) -> str:
        return self._require(self.script)

    def static_dir(self) -> Path | None:
        return self._static

    async def task_config(self) -> dict[str, Any]:
        self._require(self.page)
        return dict(self.config)

    async def _call(self, method: str, args: dict[str, Any],
                    files: list[UploadedFile] | None = None) -> Any:
        link = self.link
        if link is None or link.closed:
            if self.finished:
                raise ShutdownError(RUN_OVER)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.ready.wait(), self.connect_grace)
            link = self.link
            if link is None or link.closed:
                raise OperatorUnavailable("the router cannot reach its operator right now")
        try:
            return await link.call(method, args, files)
        except OperatorUnavailable:
            if self.finished:  # the link closed because the run is over
                raise ShutdownError(RUN_OVER) from None
            raise

    async def metrics(self, authorization: str) -> tuple[int, bytes, str]:
        """The operator's `GET /metrics` for this `Authorization` header (the operator
        checks the run's token): (status, body, content type)."""
        answer = await self._call("metrics", {"authorization": authorization})
        if not isinstance(answer, dict):
            raise RouterError("the operator answered /metrics with something else")
        return (int(answer.get("status", 502)), str(answer.get("body", "")).encode(),
                str(answer.get("type") or "text/plain; charset=utf-8"))

    async def request_agent(self, provider_data: dict[str, Any], caller: Caller) -> AgentResponse:
        if self.finished:
            raise ShutdownError(RUN_OVER)
        answer: AgentResponse = await self._call(
            "request_agent", {"provider_data": provider_data, "caller": dict(caller)})
        return answer

    async def submit_onboarding(self, agent_id: str, onboarding_data: Any, caller: Caller
                                ) -> AgentResponse:
        answer: AgentResponse = await self._call("submit_onboarding", {
            "agent_id": agent_id, "onboarding_data": onboarding_data, "caller": dict(caller)})
        return answer

    async def check_submit(self, agent_id: str, caller: Caller) -> None:
        await self._call("check_submit", {"agent_id": agent_id, "caller": dict(caller)})

    async def submit_task(self, agent_id: str, final_data: Any, files: list[UploadedFile],
                          caller: Caller) -> None:
        meta: list[dict[str, Any]] = [
            {"field_name": f.field_name, "filename": f.filename,
             "content_type": f.content_type, "size": f.size} for f in files]
        keys = await self._put_uploads(files) if files and self._shared else []
        for info, key in zip(meta, keys, strict=False):
            info["key"] = key
        try:
            await self._call("submit_task", {"agent_id": agent_id, "final_data": final_data,
                                             "files": meta, "caller": dict(caller)},
                             [] if keys else files)
        except Exception:
            await self._delete_uploads(keys)  # the operator deletes them once answered
            raise

    async def submit_metadata(self, agent_id: str, metadata: dict[str, Any], caller: Caller
                              ) -> dict[str, Any]:
        answer: dict[str, Any] = await self._call("submit_metadata", {
            "agent_id": agent_id, "metadata": metadata, "caller": dict(caller)})
        return answer

    async def log_error(self, agent_id: str | None, error_data: Any) -> None:
        await self._call("log_error", {"agent_id": agent_id, "error_data": error_data})

    async def agent_alive(self, agent_id: str, send: SendPacket, caller: Caller) -> None:
        socket_id = self._socket_ids.get(id(send))
        if socket_id is None:
            socket_id = next(self._next_socket)
        await self._call("agent_alive", {"agent_id": agent_id, "socket": socket_id,
                                         "caller": dict(caller)})
        self._socket_ids[id(send)] = socket_id
        self._sockets.setdefault(socket_id, (send, {}))[1][agent_id] = dict(caller)

    async def agent_packet(self, agent_id: str, packet: dict[str, Any]) -> None:
        await self._call("agent_packet", {"agent_id": agent_id, "packet": packet})

    async def agent_socket_closed(self, agent_id: str, send: SendPacket) -> None:
        socket_id = self._socket_ids.get(id(send))
        if socket_id is None:
            return
        _send, agents = self._sockets[socket_id]
        agents.pop(agent_id, None)
        if not agents:
            del self._sockets[socket_id]
            del self._socket_ids[id(send)]
        with contextlib.suppress(OperatorUnavailable, ShutdownError):
            await self._call("agent_socket_closed", {"agent_id": agent_id, "socket": socket_id})

    # -- the operator's side --------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {"run": self.run_id, "operator": self.link is not None and not self.link.closed,
                "finished": self.finished, "sockets": len(self._sockets)}

    async def operator_endpoint(self, websocket: WebSocket) -> None:
        """The channel: authenticate, take the hello and its files, then serve calls."""
        await websocket.accept()
        given = websocket.headers.get("authorization", "")
        try:
            if not given.startswith("Bearer "):
                raise TokenRefused("missing (send Authorization: Bearer <token>)")
            verify_token(self.secret, given.removeprefix("Bearer ").strip())
        except TokenRefused as exc:
            logger.warning("refused an operator from %s: %s",
                           websocket.client.host if websocket.client else "?", exc.reason)
            await websocket.close(channel.CLOSE_TOKEN_REFUSED, exc.reason[:120])
            return
        link: _Link | None = None
        try:
            hello = await self._receive_json(websocket)
            link = await self._take_hello(websocket, hello)
            if link is None:
                return
            await self._serve(link)
        except WebSocketDisconnect:
            pass
        except RouterError as exc:
            logger.warning("operator link: %s", exc)
            with contextlib.suppress(Exception):
                await websocket.close(channel.CLOSE_PROTOCOL, str(exc)[:120])
        finally:
            if link is not None:
                link.drop(self.finished and self.link is link)
                if self.link is link:
                    self.link = None
                    self.ready.clear()
                    logger.warning("the operator of run %s disconnected", link.run_id)

    @staticmethod
    async def _receive(websocket: WebSocket) -> Any:
        """The next ASGI message of the channel (`WebSocketDisconnect` when it closed)."""
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        return message

    async def _receive_json(self, websocket: WebSocket) -> dict[str, Any]:
        text = (await self._receive(websocket)).get("text")
        if text is None:
            raise RouterError("channel: expected a JSON message")
        try:
            value = channel.json.loads(text)
        except ValueError:
            raise RouterError("channel: a message that is not JSON") from None
        if not isinstance(value, dict):
            raise RouterError("channel: a message that is not a JSON object")
        return value

    async def _take_hello(self, websocket: WebSocket, hello: dict[str, Any]) -> _Link | None:
        run_id = hello.get("run")
        files = hello.get("files", [])
        if (hello.get("t") != "hello" or not isinstance(run_id, str) or not run_id
                or not isinstance(hello.get("page"), str)
                or not isinstance(hello.get("script"), str)
                or not isinstance(hello.get("config"), dict) or not isinstance(files, list)
                or len(files) > MAX_STATIC_FILES):
            raise RouterError("channel: the first message must be a valid hello")
        current = self.link
        if (current is not None and not current.closed and current.run_id != run_id):
            await websocket.close(channel.CLOSE_OTHER_RUN,
                                  f"this router serves run {current.run_id}")
            return None
        if run_id != self.run_id:
            self._start_run(run_id)
        self._shared = self._shares_storage(hello.get("storage"))
        await self._sync_static(websocket, files)
        link = _Link(websocket, run_id, self.call_timeout)
        if current is not None and not current.closed:
            current.drop()
            with contextlib.suppress(Exception):
                await current.websocket.close(channel.CLOSE_REPLACED, "replaced")
        self.page, self.script, self.config = hello["page"], hello["script"], hello["config"]
        self.link = link
        self.finished = False
        await websocket.send_text(channel.dumps({"t": "ready"}))
        self.ready.set()
        logger.info("operator of run %s connected", run_id)
        for socket_id, (_send, agents) in list(self._sockets.items()):
            for agent_id, caller in list(agents.items()):
                asyncio.get_running_loop().create_task(
                    self._announce(link, agent_id, socket_id, caller))
        return link

    async def _announce(self, link: _Link, agent_id: str, socket_id: int, caller: Caller
                        ) -> None:
        """Tell a (re)connected operator about a browser socket bound here before."""
        try:
            await link.call("agent_alive", {"agent_id": agent_id, "socket": socket_id,
                                            "caller": dict(caller)})
        except UnknownAgent:
            entry = self._sockets.get(socket_id)
            if entry is not None:
                entry[1].pop(agent_id, None)
        except Exception:
            logger.debug("announcing socket %d of agent %s failed", socket_id, agent_id,
                         exc_info=True)

    def _start_run(self, run_id: str) -> None:
        """A new run: forget the last one's files and sockets."""
        self.run_id = run_id
        self._sockets.clear()
        self._socket_ids.clear()
        self._have.clear()
        static = self.cache_dir / (_SAFE_RUN.sub("_", run_id) or "run") / "static"
        if static.exists():
            shutil.rmtree(static)
        static.mkdir(parents=True)
        self._static = static

    async def _sync_static(self, websocket: WebSocket, files: list[Any]) -> None:
        """Ask for the static files the router lacks and write them as they come."""
        static = self._static
        if static is None:
            raise RouterError("channel: no run to write static files for")
        wanted: dict[str, tuple[str, int]] = {}
        listed: set[str] = set()
        for entry in files:
            if not isinstance(entry, dict):
                raise RouterError("channel: a static file entry that is not an object")
            path, sha, size = entry.get("path"), entry.get("sha"), entry.get("size")
            if (not isinstance(path, str) or not _safe_relative(path)
                    or not isinstance(sha, str) or not isinstance(size, int) or size < 0):
                raise RouterError(f"channel: a bad static file entry {str(path)[:80]!r}")
            listed.add(path)
            if self._have.get(path) != sha:
                wanted[path] = (sha, size)
        for path in set(self._have) - listed:  # gone on the operator's side
            self._have.pop(path)
            with contextlib.suppress(OSError):
                (static / path).unlink()
        if self._shared and wanted:
            await self._fetch_static(static, files, wanted)
        await websocket.send_text(channel.dumps({"t": "want", "paths": sorted(wanted),
                                                 "storage": self._shared}))
        partial: dict[str, tuple[Any, Any, str]] = {}
        try:
            await self._receive_static(websocket, static, wanted, partial)
        finally:  # a link that dropped mid-file leaves no partial file behind
            for out, _digest, tmp_name in partial.values():
                out.close()
                with contextlib.suppress(OSError):
                    os.unlink(tmp_name)

    async def _receive_static(self, websocket: WebSocket, static: Path,
                              wanted: dict[str, tuple[str, int]],
                              partial: dict[str, tuple[Any, Any, str]]) -> None:
        while wanted:
            frame = (await self._receive(websocket)).get("bytes")
            if frame is None:
                raise RouterError("channel: expected the static files asked for")
            header, data = channel.parse_chunk(frame)
            path = header.get("path")
            if header.get("k") != "static" or path not in wanted:
                raise RouterError("channel: a static file that was not asked for")
            if path not in partial:
                fd, tmp = tempfile.mkstemp(dir=static, prefix=".part-")
                partial[path] = (os.fdopen(fd, "wb"), hashlib.sha256(), tmp)
            out, digest, tmp_name = partial[path]
            out.write(data)
            digest.update(data)
            if out.tell() > MAX_STATIC_FILE_BYTES:
                raise RouterError(f"channel: static file {path} is too large")
            if header.get("last"):
                out.close()
                wanted.pop(path)
                del partial[path]
                sha = digest.hexdigest()
                if header.get("sha") != sha:
                    os.unlink(tmp_name)
                    raise RouterError(f"channel: static file {path} arrived damaged")
                target = static / path
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp_name, target)
                self._have[path] = sha

    async def _serve(self, link: _Link) -> None:
        websocket = link.websocket
        while True:
            message = await self._receive_json(websocket)
            kind = message.get("t")
            if kind in ("ret", "err"):
                link.answer(message)
            elif kind == "push":
                entry = self._sockets.get(message.get("s"))  # type: ignore[arg-type]
                packet = message.get("p")
                if entry is not None and isinstance(packet, dict):
                    await entry[0](packet)  # type: ignore[arg-type]
            elif kind == "bye":
                self.finished = True
                logger.info("run %s is over", link.run_id)
            else:
                logger.warning("operator link: ignored a message of type %r", kind)

    # -- storage (see mephisto.router.storage) ------------------------------------------

    def _shares_storage(self, theirs: Any) -> bool:
        """Whether files go through the bucket: only when both sides name the same one."""
        ours = self.storage.url if self.storage is not None else None
        if ours is not None and theirs == ours:
            return True
        if ours is not None or theirs:
            logger.warning("the operator's storage is %s and this router's is %s: static "
                           "files and uploads go over the channel", str(theirs or "none")[:200],
                           ours or "none")
        return False

    async def _fetch_static(self, static: Path, files: list[Any],
                            wanted: dict[str, tuple[str, int]]) -> None:
        """Download the wanted files the hello gave keys for; what the bucket cannot give
        (missing, or other bytes than announced) stays wanted, for the channel."""
        storage = self.storage
        if storage is None:
            return
        keyed = {e["path"]: e["key"] for e in files
                 if e["path"] in wanted and isinstance(e.get("key"), str)
                 and storage.owns(e["key"])}

        def fetch(path: str) -> bool:
            sha, size = wanted[path]
            fd, tmp = tempfile.mkstemp(dir=static, prefix=".part-")
            os.close(fd)
            try:
                storage.download(keyed[path], Path(tmp))
                if os.path.getsize(tmp) != size or file_sha256(Path(tmp)) != sha:
                    logger.warning("storage: %s is not the file announced; asking for it",
                                   keyed[path])
                    return False
                target = static / path
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, target)
                return True
            except StorageError as exc:
                logger.warning("%s; asking the operator for %s instead", exc, path)
                return False
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        fetched = await asyncio.to_thread(storage.map, fetch, list(keyed))
        for path, ok in zip(keyed, fetched, strict=True):
            if ok:
                self._have[path] = wanted.pop(path)[0]
        logger.info("storage %s: %d static file(s) fetched, %d asked for", storage.url,
                    sum(fetched), len(wanted))

    async def _put_uploads(self, files: list[UploadedFile]) -> list[str]:
        """Put a submit's files in the bucket; their keys, or [] (then they go over the
        channel) if the bucket fails."""
        storage, run_id = self.storage, self.run_id
        if storage is None or run_id is None:
            return []
        keys = [storage.new_upload_key(run_id) for _ in files]
        try:
            await asyncio.to_thread(storage.map, lambda i: storage.put(files[i].path, keys[i]),
                                    range(len(files)))
        except StorageError as exc:
            logger.warning("%s; sending the submit's files over the channel", exc)
            await self._delete_uploads(keys)
            return []
        return keys

    async def _delete_uploads(self, keys: list[str]) -> None:
        if keys and self.storage is not None:
            with contextlib.suppress(StorageError):
                await asyncio.to_thread(self.storage.map, self.storage.delete, keys)


def _safe_relative(path: str) -> bool:
    """A relative path of plain segments (nothing hidden or private, no `.` or `..`)."""
    if not path or len(path) > 1024 or "\\" in path or "\x00" in path:
        return False
    return all(part and not is_private(part) for part in path.split("/"))


__all__ = ["RemoteBackend"]
