"""`remote`: workers open a router (`mephisto router`) that runs anywhere reachable; the
operator dials out to it, so the operator may sit behind NAT on a cluster node.

    mephisto.architect.router_url=https://tasks.example.org/
    export MEPHISTO_ROUTER_TOKEN=$(ssh router-host mephisto router token)

Several routers behind a load balancer serve one run: `router_url` is the balancer's
address (what workers open) and `operator_urls` lists each router's own address, which
the operator dials one by one. The token is read from the environment variable named by
`token_env` (credentials stay out of configs and the database).

Static files and uploads travel over the channel, or, with `storage_url`, through an
S3-compatible bucket (`mephisto.router.storage`) that the router names too
(`mephisto router --storage`); credentials come from boto3's chain, never the config:

    mephisto.architect.storage_url=s3://my-bucket/mephisto
    mephisto.architect.storage_endpoint_url=http://minio.internal:9000   # not AWS

Architects that start a router themselves (`ec2`, `heroku`) subclass this one and
override `provision()` (start it, return where it is and a token) and `teardown()`;
`provisioned.py` does that once for them. A launch that fails after `provision` began
calls `teardown()` before the error propagates.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from dataclasses import dataclass, field
from typing import Any

from mephisto.abstractions.architect import Architect, ArchitectArgs
from mephisto.errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass
class RemoteArchitectArgs(ArchitectArgs):
    _architect_type: str = "remote"
    router_url: str = field(default="", metadata={
        "help": "Public base URL of the router (what workers open)."})
    operator_urls: str = field(default="", metadata={
        "help": "Comma-separated base URLs of each router to dial (default: router_url)."})
    token_env: str = field(default="MEPHISTO_ROUTER_TOKEN", metadata={
        "help": "Environment variable holding the operator token."})
    connect_timeout: float = field(default=30.0, metadata={
        "help": "Seconds to wait for each router before the launch fails."})
    storage_url: str = field(default="", metadata={
        "help": "s3://bucket/prefix for static files and uploads (default: the channel)."})
    storage_endpoint_url: str = field(default="", metadata={
        "help": "Endpoint of an S3-compatible store (MinIO, ...); empty for AWS S3."})


@dataclass
class RouterEndpoint:
    """Where a run's routers are: `public_url` for workers, `operator_urls` to dial."""

    public_url: str
    operator_urls: list[str]
    token: str


def _check_url(url: str, key: str) -> None:
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"{key} must be an http(s):// URL, got {url!r}", key=key)


class RemoteArchitect(Architect):
    ARCHITECT_TYPE = "remote"
    ArgsClass = RemoteArchitectArgs

    def __init__(self, args: Any) -> None:
        super().__init__(args)
        self.links: list[Any] = []
        self.endpoint: RouterEndpoint | None = None

    @property
    def arch(self) -> Any:
        return self.args.architect

    @classmethod
    def assert_task_args(cls, args: Any, shared_state: Any) -> None:
        arch = args.architect
        url = str(arch.get("router_url") or "")
        if not url:
            raise ConfigError("the remote architect needs mephisto.architect.router_url "
                              "(the router's public URL)", key="mephisto.architect.router_url")
        _check_url(url, "mephisto.architect.router_url")
        for extra in _split(arch.get("operator_urls")):
            _check_url(extra, "mephisto.architect.operator_urls")
        if arch.get("storage_url"):
            from mephisto.router.storage import parse_storage_url

            try:
                parse_storage_url(str(arch.get("storage_url")))
            except ConfigError as exc:
                raise ConfigError(str(exc), key="mephisto.architect.storage_url") from None
        if arch.get("storage_endpoint_url"):
            _check_url(str(arch.get("storage_endpoint_url")),
                       "mephisto.architect.storage_endpoint_url")
        env = str(arch.get("token_env") or "MEPHISTO_ROUTER_TOKEN")
        if not os.environ.get(env):
            raise ConfigError(
                f"the remote architect needs the operator token in ${env} (print one on "
                "the router's host with `mephisto router token`)",
                key="mephisto.architect.token_env")

    async def provision(self) -> RouterEndpoint:
        """Where the routers are (subclasses start them here)."""
        arch = self.arch
        public = str(arch.get("router_url"))
        env = str(arch.get("token_env") or "MEPHISTO_ROUTER_TOKEN")
        return RouterEndpoint(public, _split(arch.get("operator_urls")) or [public],
                              os.environ.get(env, ""))

    async def teardown(self) -> None:
        """Stop what `provision` started (nothing here: the user runs the router)."""

    async def deploy(self, app: Any) -> str:
        from mephisto.router.link import OperatorLink, prepare_static

        backend, settings = app.backend, app.settings
        try:
            self.endpoint = endpoint = await self.provision()
        except BaseException:
            await self._teardown_after_failure()
            raise
        # the run's id and a nonce: runs of two databases may share an id
        ctx = getattr(backend, "ctx", None)
        run_id = f"{ctx.task_run_id if ctx is not None else 'run'}.{secrets.token_hex(4)}"
        timeout = float(self.arch.get("connect_timeout", 30.0))
        task = ctx.task_name if ctx is not None else "run"
        try:
            storage = await self._storage()
            static = await prepare_static(backend, storage, task)  # once for all routers
            self.links = [
                OperatorLink(backend, url, endpoint.token, run_id=run_id,
                             upload_dir=settings.upload_dir, storage=storage,
                             storage_task=task, static=static,
                             metrics=getattr(app, "metrics", None),
                             on_request=getattr(app, "on_request", None))
                for url in endpoint.operator_urls
            ]
            await asyncio.gather(*(link.start(timeout) for link in self.links))
        except BaseException:
            await self._close_links(bye=False)
            await self._teardown_after_failure()
            raise
        logger.info("run %s is served by %d router(s) at %s", run_id, len(self.links),
                    endpoint.public_url)
        return endpoint.public_url if endpoint.public_url.endswith("/") \
            else endpoint.public_url + "/"

    async def _storage(self) -> Any:
        """The run's `S3Storage`, checked (`StorageError` if unusable), or None."""
        url = str(self.arch.get("storage_url") or "")
        if not url:
            return None
        from mephisto.router.storage import S3Storage

        storage = S3Storage.from_url(url, str(self.arch.get("storage_endpoint_url") or ""))
        await asyncio.to_thread(storage.check)
        return storage

    async def _teardown_after_failure(self) -> None:
        """A launch failed: delete what `provision` created (the run never served)."""
        try:
            await self.teardown()
        except Exception:
            logger.exception("deleting what the failed launch created failed; "
                             "`mephisto architect cleanup` retries it")

    async def _close_links(self, bye: bool) -> None:
        links, self.links = self.links, []
        await asyncio.gather(*(link.close(bye=bye) for link in links), return_exceptions=True)

    async def shutdown(self) -> None:
        await self._close_links(bye=True)
        await self.teardown()


def _split(value: Any) -> list[str]:
    if not value:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return [str(part).strip() for part in value if str(part).strip()]


__all__ = ["RemoteArchitect", "RemoteArchitectArgs", "RouterEndpoint"]
