"""`heroku`: start a router as a Heroku app for the run, delete the app afterwards.

    export HEROKU_API_KEY=...   # or `heroku login`, which writes ~/.netrc

Through the Platform API (https://api.heroku.com, version 3): create the app, set its
config var `MEPHISTO_ROUTER_SECRET` to a fresh secret, upload a tarball of this
package with a `Procfile` (`web: mephisto router --port $PORT`) to a new source, build
it, wait for the build, and give workers the app's `web_url`. The operator's token is
minted locally from the secret. Teardown deletes the app (with its config and builds).

The API key is read from the environment or ~/.netrc (where the Heroku CLI keeps it),
never from the run config; neither it nor the secret is logged or stored by us.
"""

from __future__ import annotations

import gzip
import io
import logging
import netrc
import os
import re
import secrets
import tarfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from mephisto.abstractions.architects.provisioned import (
    Ledger,
    ProvisionedArchitect,
    ProvisionedArchitectArgs,
)
from mephisto.errors import ConfigError, ProviderError

logger = logging.getLogger(__name__)

__all__ = ["HerokuArchitect", "HerokuArchitectArgs", "api_key", "router_source_tarball"]

API = "https://api.heroku.com"
API_KEY_ENV = "HEROKU_API_KEY"
INSTALL_HINT = "pip install 'mephisto[heroku]' (httpx)"
_APP_NAME = re.compile(r"[a-z][a-z0-9-]{2,29}")
# what `mephisto router` needs when the installed distribution's metadata is missing
_FALLBACK_REQUIREMENTS = [
    "sqlalchemy>=2.0.30", "alembic>=1.13", "starlette>=0.40", "uvicorn[standard]>=0.30",
    "websockets>=13", "hydra-core>=1.3.2", "omegaconf>=2.3,<2.4", "click>=8.1", "rich>=13",
    "prometheus-client>=0.20", "pyyaml>=6", "aiohttp>=3.9", "python-multipart>=0.0.9",
    "psycopg[binary]>=3.2",
]


@dataclass
class HerokuArchitectArgs(ProvisionedArchitectArgs):
    _architect_type: str = "heroku"
    app_name: str = field(default="", metadata={
        "help": "Heroku app to create (default: `name`, else mephisto-<random>)."})
    region: str = field(default="us", metadata={"help": "Heroku region (us, eu)."})
    team: str = field(default="", metadata={"help": "Heroku team owning the app (optional)."})
    build_timeout: float = field(default=900.0, metadata={
        "help": "Seconds to wait for the router's build."})


def api_key() -> str:
    """The Heroku API key: `$HEROKU_API_KEY`, else the ~/.netrc entry for api.heroku.com."""
    key = os.environ.get(API_KEY_ENV, "").strip()
    if key:
        return key
    try:
        entry = netrc.netrc().authenticators("api.heroku.com")
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        entry = None
    if entry and entry[2]:
        return entry[2]
    raise ConfigError(f"the heroku architect needs a Heroku API key: set {API_KEY_ENV} "
                      "(`heroku auth:token` prints one) or run `heroku login`",
                      key="mephisto.architect")


def _requirements() -> list[str]:
    try:
        found = metadata.requires("mephisto") or []
    except metadata.PackageNotFoundError:
        return list(_FALLBACK_REQUIREMENTS)
    return [req for req in found if "extra ==" not in req] or list(_FALLBACK_REQUIREMENTS)


def _version() -> str:
    try:
        return metadata.version("mephisto")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def router_source_tarball() -> bytes:
    """A gzipped tarball Heroku's Python buildpack builds into `mephisto router`: this
    package's sources, a pyproject naming its dependencies, requirements.txt installing
    it, the Python version and the Procfile."""
    import mephisto

    package = Path(mephisto.__file__).resolve().parent
    deps = ", ".join(f'"{d}"' for d in _requirements())
    files = {
        "Procfile": "web: mephisto router --port $PORT\n",
        "requirements.txt": ".\n",
        ".python-version": "3.11\n",
        "pyproject.toml": (
            '[build-system]\nrequires = ["setuptools>=68"]\n'
            'build-backend = "setuptools.build_meta"\n\n'
            f'[project]\nname = "mephisto"\nversion = "{_version()}"\n'
            f'requires-python = ">=3.11"\ndependencies = [{deps}]\n\n'
            '[project.scripts]\nmephisto = "mephisto.cli:cli"\n\n'
            '[tool.setuptools.packages.find]\ninclude = ["mephisto*"]\n\n'
            '[tool.setuptools.package-data]\n'
            '"*" = ["*.js", "*.html", "*.css", "*.yaml", "*.ini", "*.mako", "py.typed"]\n'),
    }
    buffer = io.BytesIO()
    # mtime 0 and sorted names: the same sources make the same bytes
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as zipped, \
            tarfile.open(fileobj=zipped, mode="w") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
        for path in sorted(package.rglob("*")):
            if not path.is_file() or "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            arcname = f"mephisto/{path.relative_to(package).as_posix()}"
            if "/node_modules/" in arcname:
                continue
            info = tar.gettarinfo(str(path), arcname)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            with path.open("rb") as handle:
                tar.addfile(info, handle)
    return buffer.getvalue()


def _httpx() -> Any:
    try:
        import httpx
    except ImportError:
        raise ConfigError(f"the heroku architect needs httpx: {INSTALL_HINT}",
                          key="mephisto.architect._architect_type") from None
    return httpx


class HerokuArchitect(ProvisionedArchitect):
    ARCHITECT_TYPE = "heroku"
    ArgsClass = HerokuArchitectArgs

    @classmethod
    def check_args(cls, arch: Any) -> None:
        _httpx()
        name = str(arch.get("app_name") or arch.get("name") or "")
        if name and not _APP_NAME.fullmatch(name):
            raise ConfigError(f"mephisto.architect.app_name: {name!r} is no Heroku app name "
                              "(3-30 lowercase letters, digits and dashes, starting with "
                              "a letter)", key="mephisto.architect.app_name")
        try:
            float(arch.get("build_timeout", 900))
        except (TypeError, ValueError):
            raise ConfigError("mephisto.architect.build_timeout must be a number of seconds",
                              key="mephisto.architect.build_timeout") from None
        api_key()

    def resource_name(self) -> str:
        return str(self.arch.get("app_name") or self.arch.get("name") or "") \
            or f"mephisto-{secrets.token_hex(4)}"

    async def start_router(self, ledger: Ledger, secret: str) -> str:
        import asyncio

        arch = self.arch
        async with _client() as api:
            body: dict[str, Any] = {"name": ledger.name, "region": str(arch.get("region"))}
            path = "/apps"
            if arch.get("team"):
                body["team"], path = str(arch.get("team")), "/teams/apps"
            # no id yet: a name alone is never deleted (it may be someone else's app)
            ledger.record("app", None)
            app = await _call(api, "POST", path, "creating the app", json=body)
            ledger.record("app", str(app.get("id") or app["name"]))
            await _call(api, "PATCH", f"/apps/{ledger.name}/config-vars",
                        "setting the router's secret", json={"MEPHISTO_ROUTER_SECRET": secret})
            source = await _call(api, "POST", "/sources", "creating a source")
            blob = source["source_blob"]
            tarball = await asyncio.to_thread(router_source_tarball)
            # a client of its own: the API key is for api.heroku.com, not the bucket
            async with _httpx().AsyncClient(timeout=300) as bucket:
                put = await bucket.put(blob["put_url"], content=tarball,
                                       headers={"Content-Type": ""})
            if put.status_code >= 300:
                raise ProviderError("heroku", f"uploading the router's source: HTTP "
                                    f"{put.status_code}", retryable=True)
            build = await _call(api, "POST", f"/apps/{ledger.name}/builds", "starting the build",
                                json={"source_blob": {"url": blob["get_url"],
                                                      "version": f"mephisto-{_version()}"}})
            await self._wait_for_build(api, ledger.name, str(build["id"]))
            app = await _call(api, "GET", f"/apps/{ledger.name}", "reading the app")
        url = str(app["web_url"])
        logger.info("heroku %s: router built, served at %s", ledger.name, url)
        return url

    async def _wait_for_build(self, api: Any, app: str, build_id: str) -> None:
        import asyncio

        timeout = float(self.arch.get("build_timeout", 900))
        deadline = time.monotonic() + timeout
        while True:
            build = await _call(api, "GET", f"/apps/{app}/builds/{build_id}", "reading the build")
            status = build.get("status")
            if status == "succeeded":
                return
            if status == "failed":
                raise ProviderError("heroku", f"the router's build {build_id} failed; its "
                                    f"log: {build.get('output_stream_url', '(none)')}")
            if time.monotonic() > deadline:
                raise ProviderError("heroku", f"the router's build {build_id} was still "
                                    f"{status} after {timeout:g} s "
                                    "(mephisto.architect.build_timeout)", retryable=True)
            await asyncio.sleep(self.poll_interval)

    @classmethod
    async def destroy(cls, ledger: Ledger) -> None:
        app = ledger.resources.get("app")
        if app is None:
            return
        httpx = _httpx()
        async with _client() as api:
            try:
                answer = await api.delete(f"/apps/{app}")
            except httpx.HTTPError as exc:
                raise ProviderError("heroku", f"deleting the app {ledger.name}: {exc}",
                                    retryable=True) from None
            if answer.status_code not in (200, 202, 204, 404):
                _raise_for(answer, f"deleting the app {ledger.name}")
        ledger.forget("app")


def _client() -> Any:
    return _httpx().AsyncClient(base_url=API, timeout=60, headers={
        "Accept": "application/vnd.heroku+json; version=3",
        "Authorization": f"Bearer {api_key()}",
        "User-Agent": "mephisto-heroku-architect"})


async def _call(api: Any, method: str, path: str, what: str, **kwargs: Any) -> dict[str, Any]:
    httpx = _httpx()
    try:
        answer = await api.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        raise ProviderError("heroku", f"{what}: {exc}", retryable=True) from None
    if answer.status_code >= 300:
        _raise_for(answer, what)
    result: dict[str, Any] = answer.json()
    return result


def _raise_for(answer: Any, what: str) -> None:
    try:
        message = answer.json().get("message") or answer.text
    except ValueError:
        message = answer.text
    status = answer.status_code
    if status == 401:
        raise ConfigError(f"heroku: {what}: the API key was refused (HTTP 401): check "
                          f"{API_KEY_ENV} or `heroku login`", key="mephisto.architect")
    if status in (403, 422):
        raise ProviderError("heroku", f"{what}: HTTP {status}: {message}")
    raise ProviderError("heroku", f"{what}: HTTP {status}: {message}",
                        retryable=status >= 500 or status == 429)
