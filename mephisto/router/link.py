"""The operator's end of the channel: dial the router, answer its calls.

`OperatorLink` opens one websocket to a router (so it works from behind NAT: only the
router needs to be reachable), authenticates with an operator token, sends the run's
page, scripts, config and static files, then answers each call by calling the run's
`TaskBackend` (the same `ClientIOHandler` the in-process server uses, so a submit is
answered only once it is committed). When the link drops it dials again, backing off
from `backoff_min` to `backoff_max` seconds with jitter, for as long as the run lasts;
a token the router refuses stops it (`TokenRefused`), since trying again cannot help.

With a `storage` (`mephisto.router.storage`), static files are put in the bucket before
the first hello and the hello names their keys; a submit's files may then come as keys
in the bucket instead of chunks, and are deleted once the submit is answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mephisto.errors import MalformedRequest, RouterError, StorageError, TokenRefused
from mephisto.router import channel
from mephisto.router.storage import S3Storage, file_sha256
from mephisto.server.app import TIMED_ENDPOINTS
from mephisto.server.backend import TaskBackend, UploadedFile
from mephisto.server.static_files import is_private

if TYPE_CHECKING:
    from mephisto.server.app import MetricsText, OnRequest

logger = logging.getLogger(__name__)

CLIENT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
DRAIN_SECONDS = 5.0  # at most this long answering calls in flight when a run ends


def operator_url(router_url: str) -> str:
    """The channel's websocket URL for a router's base URL (http->ws, https->wss)."""
    base = router_url.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base.removeprefix("https://")
    elif base.startswith("http://"):
        base = "ws://" + base.removeprefix("http://")
    return base + channel.OPERATOR_PATH


def static_manifest(directory: Path | None) -> dict[str, Path]:
    """The files a router may serve: what the local server would serve from `directory`
    (regular files, nothing hidden or private)."""
    found: dict[str, Path] = {}
    if directory is None or not directory.is_dir():
        return found
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not is_private(d))
        for name in sorted(files):
            if is_private(name):
                continue
            path = Path(root) / name
            if path.is_file():
                found[path.relative_to(directory).as_posix()] = path
    return found


@dataclass
class RunStatic:
    """A run's static files as the links send them: `{path: (file, sha256, size)}`, and
    each one's key in the storage when there is one. Made once per run
    (`prepare_static`), however many routers the run has."""

    files: dict[str, tuple[Path, str, int]] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)


async def prepare_static(backend: TaskBackend, storage: S3Storage | None = None,
                         storage_task: str = "run") -> RunStatic:
    """Hash the run's static files and, with a storage, put them there (unchanged ones
    are skipped)."""
    files = await asyncio.to_thread(
        lambda: {rel: (path, file_sha256(path), path.stat().st_size)
                 for rel, path in static_manifest(backend.static_dir()).items()})
    static = RunStatic(files)
    if storage is not None:
        static.keys, sent = await asyncio.to_thread(storage.upload_static, storage_task, files)
        logger.info("storage %s: %d static file(s) uploaded, %d unchanged", storage.url,
                    sent, len(files) - sent)
    return static


class _RemoteSocket:
    """`send(packet)` for a browser socket held by the router: a `push` message. The
    same object for an agent's `alive` and `socket_closed`, as the contract asks."""

    __slots__ = ("link", "socket_id", "websocket")

    def __init__(self, link: OperatorLink, websocket: Any, socket_id: int) -> None:
        self.link = link
        self.websocket = websocket
        self.socket_id = socket_id

    async def __call__(self, packet: Any) -> None:
        if self.link.websocket is not self.websocket:
            return  # the link this socket came through is gone
        with contextlib.suppress(Exception):
            await self.websocket.send(channel.dumps({"t": "push", "s": self.socket_id,
                                                     "p": packet}))


class OperatorLink:
    """One router's channel for one run."""

    def __init__(self, backend: TaskBackend, router_url: str, token: str, *, run_id: str,
                 upload_dir: Path, backoff_min: float = 0.2, backoff_max: float = 10.0,
                 storage: S3Storage | None = None, storage_task: str = "run",
                 static: RunStatic | None = None, metrics: MetricsText | None = None,
                 on_request: OnRequest | None = None) -> None:
        self.backend = backend
        self.metrics = metrics  # the run's `GET /metrics`, answered for the router
        self.on_request = on_request  # told of the requests the router answered
        self.router_url = router_url
        self.url = operator_url(router_url)
        self.token = token
        self.run_id = run_id
        self.upload_dir = upload_dir
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.websocket: Any = None
        self.connected = asyncio.Event()
        self.sessions = 0  # how many times the link came up
        self.fatal: BaseException | None = None
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.static = static  # None: made by `start`
        self._sockets: dict[int, _RemoteSocket] = {}
        self._calls: set[asyncio.Task[None]] = set()
        self.storage = storage
        self.storage_task = storage_task  # static keys are the task's, kept across runs

    # -- lifecycle ------------------------------------------------------------------

    async def start(self, timeout: float = 30.0) -> None:
        """Dial until the router serves the run; `RouterError`/`TokenRefused` if it
        cannot within `timeout` seconds (the link then stops trying)."""
        if self.static is None:
            self.static = await prepare_static(self.backend, self.storage, self.storage_task)
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"mephisto-router-link {self.router_url}")
        waiter = asyncio.ensure_future(self.connected.wait())
        try:
            await asyncio.wait({waiter, self._task}, timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if self.fatal is not None:
            await self.close(bye=False)
            raise self.fatal
        if not self.connected.is_set():
            await self.close(bye=False)
            raise RouterError(
                f"could not reach the router at {self.router_url} within {timeout:g} s"
                + (f" (last error: {self.last_error})" if self.last_error else "")
                + ". Is `mephisto router` running there, and is the URL right?")

    async def close(self, bye: bool = True) -> None:
        """Stop dialling; with `bye`, tell the router the run is over first (it stops
        offering work), then answer the calls already on their way (up to
        `DRAIN_SECONDS`), so no browser is left with a dropped call."""
        self._closing = True
        websocket = self.websocket
        if bye and websocket is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(websocket.send(channel.dumps({"t": "bye"})), 5)
            deadline = asyncio.get_running_loop().time() + DRAIN_SECONDS
            while self._calls and asyncio.get_running_loop().time() < deadline:
                await asyncio.wait(list(self._calls), timeout=0.1)
        if websocket is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(websocket.close(), 5)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        for call in list(self._calls):
            call.cancel()
        if bye and self.storage is not None:  # what calls that failed left behind
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.storage.delete_prefix,
                                        self.storage.uploads_prefix(self.run_id))

    # -- the connection ---------------------------------------------------------------

    async def _run(self) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

        delay = self.backoff_min
        while not self._closing:
            try:
                async with connect(
                    self.url, additional_headers={"Authorization": f"Bearer {self.token}"},
                    max_size=CLIENT_MAX_MESSAGE_BYTES, open_timeout=10, ping_interval=20,
                    compression=None,  # small JSON: deflate costs more CPU than it saves
                    ping_timeout=20, close_timeout=5,
                ) as websocket:
                    await self._session(websocket)
                    delay = self.backoff_min
            except TokenRefused as exc:
                self.fatal = exc
                logger.error("router %s: %s", self.router_url, exc)
                return
            except InvalidURI as exc:
                self.fatal = RouterError(f"bad router URL {self.router_url!r}: {exc}")
                return
            except (OSError, TimeoutError, ConnectionClosed, InvalidHandshake,
                    RouterError) as exc:
                self.last_error = str(exc) or type(exc).__name__
            finally:
                self.websocket = None
                self.connected.clear()
                self._sockets.clear()
            if self._closing:
                return
            if self.sessions:
                logger.warning("router %s: link down (%s); dialling again in %.1f s",
                               self.router_url, self.last_error, delay)
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(self.backoff_max, delay * 2)

    async def _session(self, websocket: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        static = self.static or RunStatic()
        try:
            await websocket.send(channel.dumps({
                "t": "hello", "run": self.run_id, "page": self.backend.task_page(),
                "script": self.backend.provider_script(),
                "config": await self.backend.task_config(),
                "files": [{"path": rel, "sha": sha, "size": size}
                          | ({"key": static.keys[rel]} if rel in static.keys else {})
                          for rel, (_path, sha, size) in static.files.items()],
                **({"storage": self.storage.url} if self.storage is not None else {}),
            }))
            want = await self._receive_json(websocket)
            if want.get("t") != "want" or not isinstance(want.get("paths"), list):
                raise RouterError("the router did not answer the hello")
            self._check_storage(want)
            for rel in want["paths"]:
                entry = static.files.get(rel) if isinstance(rel, str) else None
                if entry is None:
                    raise RouterError(f"the router asked for an unknown file {rel!r}")
                for frame in channel.file_chunks(entry[0], {"k": "static", "path": rel}):
                    await websocket.send(frame)
            ready = await self._receive_json(websocket)
            if ready.get("t") != "ready":
                raise RouterError("the router did not confirm the run")
            self.websocket = websocket
            self.sessions += 1
            self.connected.set()
            logger.info("router %s: serving run %s", self.router_url, self.run_id)
            uploads: dict[int, dict[int, Any]] = {}
            async for message in websocket:
                if isinstance(message, bytes):
                    self._upload_chunk(uploads, message)
                    continue
                call = json.loads(message)
                if isinstance(call, dict) and call.get("t") == "obs":
                    self._observed(call.get("r"))
                    continue
                if isinstance(call, dict) and call.get("t") == "call":
                    files = uploads.pop(call.get("id"), {})  # type: ignore[arg-type]
                    task = asyncio.get_running_loop().create_task(
                        self._answer(websocket, call, files))
                    self._calls.add(task)
                    task.add_done_callback(self._calls.discard)
        except ConnectionClosed as exc:
            self._raise_refusal(exc)
            raise

    def _observed(self, timings: Any) -> None:
        """The router's timings of the requests it answered, as if this process had
        answered them (the run's request metrics). Entries of the wrong shape, or
        naming an endpoint the task server does not have, are skipped."""
        if self.on_request is None or not isinstance(timings, list):
            return
        for entry in timings:
            if not (isinstance(entry, list) and len(entry) == 3):
                continue
            endpoint, seconds, status = entry
            if (endpoint in TIMED_ENDPOINTS and isinstance(seconds, int | float)
                    and not isinstance(seconds, bool) and 0 <= seconds < 3600
                    and isinstance(status, int) and 100 <= status < 600):
                try:
                    self.on_request(endpoint, float(seconds), status)
                except Exception:
                    logger.exception("on_request failed for a router's timing")

    @staticmethod
    def _raise_refusal(exc: Any) -> None:
        received = getattr(exc, "rcvd", None)
        code = getattr(received, "code", None)
        reason = getattr(received, "reason", "") or ""
        if code == channel.CLOSE_TOKEN_REFUSED:
            raise TokenRefused(reason or "refused")
        if code == channel.CLOSE_OTHER_RUN:
            raise RouterError(f"the router is busy: {reason}")

    async def _receive_json(self, websocket: Any) -> dict[str, Any]:
        from websockets.exceptions import ConnectionClosed

        try:
            text = await websocket.recv()
        except ConnectionClosed as exc:
            self._raise_refusal(exc)
            raise
        value = json.loads(text) if isinstance(text, str) else None
        if not isinstance(value, dict):
            raise RouterError("the router sent something that is not a JSON object")
        return value

    def _upload_chunk(self, uploads: dict[int, dict[int, Any]], frame: bytes) -> None:
        header, data = channel.parse_chunk(frame)
        call_id, index = header.get("call"), header.get("i")
        if header.get("k") != "upload" or not isinstance(call_id, int) \
                or not isinstance(index, int):
            raise RouterError("the router sent a binary message that is no upload")
        files = uploads.setdefault(call_id, {})
        entry = files.get(index)
        if entry is None:
            self.upload_dir.mkdir(parents=True, exist_ok=True)
            path = self.upload_dir / f"{secrets.token_hex(12)}.part"
            entry = files[index] = [path, path.open("wb")]
        entry[1].write(data)
        if header.get("last"):
            entry[1].close()

    # -- calls ------------------------------------------------------------------------

    async def _answer(self, websocket: Any, call: dict[str, Any],
                      files: dict[int, Any]) -> None:
        call_id = call.get("id")
        uploaded: list[UploadedFile] = []
        try:
            args = call.get("a")
            if not isinstance(args, dict):
                raise MalformedRequest("a call without arguments")
            await self._fetch_uploads(args, files)
            uploaded = self._uploaded(args, files)
            result = await self._dispatch(websocket, str(call.get("m")), args, uploaded)
            reply: dict[str, Any] = {"t": "ret", "id": call_id, "r": result}
        except Exception as exc:  # every error is answered; unexpected ones logged
            encoded = channel.encode_error(exc)
            if encoded["type"] == "internal":
                logger.exception("router call %s failed", call.get("m"))
            reply = {"t": "err", "id": call_id, "e": encoded}
        finally:
            for entry in files.values():
                with contextlib.suppress(OSError):
                    entry[1].close()
                    if entry[0].exists():
                        entry[0].unlink()  # what the backend did not keep
        with contextlib.suppress(Exception):
            await websocket.send(channel.dumps(reply))
        await self._delete_uploads(call.get("a"))

    @staticmethod
    def _uploaded(args: dict[str, Any], files: dict[int, Any]) -> list[UploadedFile]:
        meta = args.get("files") or []
        if not isinstance(meta, list) or len(meta) != len(files):
            raise MalformedRequest("the files of a submit did not all arrive")
        result = []
        for index, info in enumerate(meta):
            path = files[index][0] if index in files else None
            if path is None or not isinstance(info, dict):
                raise MalformedRequest("the files of a submit did not all arrive")
            files[index][1].close()
            size = path.stat().st_size
            if size != info.get("size"):
                raise MalformedRequest("a file of the submit arrived incomplete")
            result.append(UploadedFile(str(info.get("field_name", "")),
                                       str(info.get("filename", "")),
                                       str(info.get("content_type", "")), path, size))
        return result

    async def _dispatch(self, websocket: Any, method: str, a: dict[str, Any],
                        files: list[UploadedFile]) -> Any:
        backend = self.backend
        caller = a.get("caller") or {}
        if not isinstance(caller, dict):
            raise MalformedRequest("a call whose caller is not an object")
        if method == "request_agent":
            return await backend.request_agent(a["provider_data"], caller)
        if method == "submit_onboarding":
            return await backend.submit_onboarding(a["agent_id"], a.get("onboarding_data"),
                                                   caller)
        if method == "check_submit":
            return await backend.check_submit(a["agent_id"], caller)
        if method == "submit_task":
            return await backend.submit_task(a["agent_id"], a.get("final_data"), files, caller)
        if method == "submit_metadata":
            return await backend.submit_metadata(a["agent_id"], a["metadata"], caller)
        if method == "log_error":
            return await backend.log_error(a.get("agent_id"), a.get("error_data"))
        if method == "agent_alive":
            socket_id = int(a["socket"])
            sender = self._sockets.get(socket_id)
            if sender is None or sender.websocket is not websocket:
                sender = self._sockets[socket_id] = _RemoteSocket(self, websocket, socket_id)
            return await backend.agent_alive(a["agent_id"], sender, caller)
        if method == "agent_packet":
            return await backend.agent_packet(a["agent_id"], a["packet"])
        if method == "metrics":  # the token is checked here, by the run that made it
            if self.metrics is None:
                return {"status": 404, "body": "this run serves no metrics",
                        "type": "text/plain; charset=utf-8"}
            status, body, content_type = self.metrics(str(a.get("authorization") or ""))
            return {"status": status, "body": body.decode("utf-8"), "type": content_type}
        if method == "agent_socket_closed":
            sender = self._sockets.get(int(a["socket"]))
            if sender is not None:
                await backend.agent_socket_closed(a["agent_id"], sender)
            return None
        raise MalformedRequest(f"unknown call {method[:40]!r}")

    # -- storage (see mephisto.router.storage) ------------------------------------------

    def _check_storage(self, want: dict[str, Any]) -> None:
        if self.storage is not None and not want.get("storage"):
            logger.warning("router %s does not use storage %s: static files and uploads "
                           "go over the channel", self.router_url, self.storage.url)

    @staticmethod
    def _upload_keys(args: Any) -> dict[int, str]:
        """The keys of a submit's files the router put in the bucket, by file index."""
        meta = args.get("files") if isinstance(args, dict) else None
        if not isinstance(meta, list):
            return {}
        return {i: info["key"] for i, info in enumerate(meta)
                if isinstance(info, dict) and isinstance(info.get("key"), str)}

    async def _fetch_uploads(self, args: dict[str, Any], files: dict[int, Any]) -> None:
        """Download the files of a submit that came as keys in the bucket into the upload
        directory, as if they had come as chunks."""
        keyed = self._upload_keys(args)
        if not keyed:
            return
        storage = self.storage
        if storage is None:
            raise RouterError("the router sent a submit's files through a storage this "
                              "operator does not have")
        prefix = storage.uploads_prefix(self.run_id)
        if any(not key.startswith(prefix) for key in keyed.values()):
            raise MalformedRequest("a submit's file outside this run's uploads")
        self.upload_dir.mkdir(parents=True, exist_ok=True)
        for index in keyed:
            path = self.upload_dir / f"{secrets.token_hex(12)}.part"
            files[index] = [path, path.open("wb")]

        def fetch(index: int) -> None:
            with files[index][1] as out:
                storage.download(keyed[index], out)
        await asyncio.to_thread(storage.map, fetch, list(keyed))

    async def _delete_uploads(self, args: Any) -> None:
        """Delete a submit's objects once it is answered (a retry comes with its own)."""
        storage = self.storage
        if storage is None:
            return
        prefix = storage.uploads_prefix(self.run_id)
        keys = [key for key in self._upload_keys(args).values() if key.startswith(prefix)]
        if keys:
            try:
                await asyncio.to_thread(storage.map, storage.delete, keys)
            except StorageError as exc:  # the run's uploads prefix is cleared at its end
                logger.warning("could not delete a submit's uploads: %s", exc)


__all__ = ["OperatorLink", "RunStatic", "operator_url", "prepare_static", "static_manifest"]
