"""Architects that start a router themselves (`ec2`, `heroku`) and what they leave behind.

`ProvisionedArchitect` is the contract. A subclass implements:

- `start_router(ledger, secret) -> str` (async): create what serves `mephisto router`
  with `MEPHISTO_ROUTER_SECRET=secret`, recording every resource in `ledger` as (or
  before) it is made; return the router's base URL once it exists.
- `destroy(ledger)` (async classmethod): delete everything `ledger` records, in the
  right order, forgetting each entry as it goes; idempotent, and it must work from the
  ledger alone (after a crash there is no architect object).
- `check_args(arch)` (classmethod): raise `ConfigError` for settings that cannot work.

The base class makes a fresh router secret per run (`new_router_secret`, the one seam
tests replace), mints the operator token from it locally, waits for the router and
dials it (`RemoteArchitect.deploy`), and on shutdown or a failed launch calls `destroy`.

The secret is a credential: it is handed to the router (user data, config vars) and held
in memory, never logged, never written to the ledger or the database.

A ledger is a JSON file `<data dir>/architects/<type>-<name>.json` (owner-only) naming
the process that made it. A run that dies without shutting down leaves its ledger;
`cleanup_leftovers()` (or `mephisto architect cleanup`, in tools/architect_command.py) destroys what the ledgers of
dead processes record.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from mephisto.abstractions.architect import ArchitectArgs
from mephisto.abstractions.architects.remote import RemoteArchitect, RouterEndpoint
from mephisto.errors import ConfigError, RouterError

logger = logging.getLogger(__name__)

__all__ = ["Ledger", "ProvisionedArchitect", "ProvisionedArchitectArgs", "cleanup_ledgers",
           "ledgers", "wait_for_router"]

LEDGER_FOLDER = "architects"
_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,30}[A-Za-z0-9])?")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass
class ProvisionedArchitectArgs(ArchitectArgs):
    name: str = field(default="", metadata={
        "help": "Name of what is created (default: mephisto-<random>)."})
    token_ttl: str = field(default="7d", metadata={
        "help": "How long the operator's token is valid (s/m/h/d); cover the run."})
    connect_timeout: float = field(default=600.0, metadata={
        "help": "Seconds to wait for the new router to answer before the launch fails."})


def _ttl_seconds(text: str) -> float:
    text = str(text).strip()
    unit = _DURATION_UNITS.get(text[-1:], 0)
    try:
        return float(text[:-1]) * unit if unit else float(text)
    except ValueError:
        raise ConfigError(f"mephisto.architect.token_ttl must be a duration like 7d or "
                          f"3600, got {text!r}", key="mephisto.architect.token_ttl") from None


class Ledger:
    """What one architect run created, on disk (see the module docstring)."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data

    @staticmethod
    def folder() -> Path:
        from mephisto.utils.dirs import get_data_dir

        return get_data_dir() / LEDGER_FOLDER

    @classmethod
    def create(cls, architect_type: str, name: str, **settings: Any) -> Ledger:
        path = cls.folder() / f"{architect_type}-{name}.json"
        if path.exists():
            raise ConfigError(f"{path} exists: a run named {name!r} is live or left "
                              "resources behind (`mephisto architect cleanup`)",
                              key="mephisto.architect.name")
        ledger = cls(path, {"type": architect_type, "name": name, "pid": os.getpid(),
                            "host": socket.gethostname(), "created": time.time(),
                            "settings": settings, "resources": {}})
        ledger._write()
        return ledger

    @classmethod
    def load(cls, path: Path) -> Ledger:
        return cls(path, json.loads(path.read_text()))

    @property
    def name(self) -> str:
        return str(self.data["name"])

    @property
    def settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = self.data.get("settings", {})
        return settings

    @property
    def resources(self) -> dict[str, Any]:
        resources: dict[str, Any] = self.data["resources"]
        return resources

    def record(self, key: str, value: Any) -> None:
        self.resources[key] = value
        self._write()

    def forget(self, key: str) -> None:
        if self.resources.pop(key, None) is not None:
            self._write()

    def delete(self) -> None:
        self.path.unlink(missing_ok=True)

    def is_live(self) -> bool:
        """Whether the process that made it still runs (on this host)."""
        if self.data.get("host") != socket.gethostname():
            return False
        pid = int(self.data.get("pid", 0))
        if pid <= 0:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def _write(self) -> None:
        from mephisto.utils.files import write_private_file

        write_private_file(self.path, json.dumps(self.data, indent=1, sort_keys=True) + "\n")


def ledgers(architect_type: str | None = None) -> list[Ledger]:
    """The ledgers on disk, of one architect type or all."""
    folder = Ledger.folder()
    found = []
    for path in sorted(folder.glob("*.json")):
        try:
            ledger = Ledger.load(path)
        except (OSError, ValueError):
            logger.warning("skipping unreadable architect ledger %s", path)
            continue
        if architect_type is None or ledger.data.get("type") == architect_type:
            found.append(ledger)
    return found


async def cleanup_ledgers(architect: type[ProvisionedArchitect], force: bool = False
                          ) -> list[str]:
    """Destroy what the ledgers of `architect`'s type record, for runs whose process is
    dead (with `force`, live ones too); returns the `<type>:<name>`s cleaned up."""
    cleaned = []
    for ledger in ledgers(architect.ARCHITECT_TYPE):
        if ledger.is_live() and not force:
            logger.info("%s is in use by the live process %s; skipped", ledger.path,
                        ledger.data.get("pid"))
            continue
        await architect.destroy(ledger)
        ledger.delete()
        cleaned.append(f"{ledger.data['type']}:{ledger.name}")
    return cleaned


async def wait_for_router(url: str, timeout: float, interval: float = 2.0) -> None:
    """Poll `GET <url>_mephisto/router` until it answers 200; `RouterError` on timeout."""
    status_url = url.rstrip("/") + "/_mephisto/router"

    def probe() -> str | None:
        try:
            with urllib.request.urlopen(status_url, timeout=10) as answer:
                return None if answer.status == 200 else f"HTTP {answer.status}"
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code}"
        except OSError as exc:
            return str(exc)

    deadline = time.monotonic() + timeout
    while True:
        error = await asyncio.to_thread(probe)
        if error is None:
            return
        if time.monotonic() >= deadline:
            raise RouterError(f"the router at {url} did not answer within {timeout:g} s "
                              f"(last error: {error})")
        await asyncio.sleep(interval)


class ProvisionedArchitect(RemoteArchitect):
    """A remote architect that creates its router (see the module docstring)."""

    ArgsClass: ClassVar[type[Any]] = ProvisionedArchitectArgs
    #: seconds between polls of a remote API or of the new router
    poll_interval: ClassVar[float] = 5.0

    def __init__(self, args: Any) -> None:
        super().__init__(args)
        self.ledger: Ledger | None = None

    @classmethod
    def assert_task_args(cls, args: Any, shared_state: Any) -> None:
        arch = args.architect
        _ttl_seconds(str(arch.get("token_ttl") or "7d"))
        name = str(arch.get("name") or "")
        if name and not _NAME.fullmatch(name):
            raise ConfigError(f"mephisto.architect.name: {name!r} must be 1-32 letters, "
                              "digits and dashes (it names cloud resources)",
                              key="mephisto.architect.name")
        cls.check_args(arch)

    @classmethod
    def check_args(cls, arch: Any) -> None:
        """Raise `ConfigError` for settings that cannot work (no network calls)."""

    def new_router_secret(self) -> str:
        """A fresh secret for the router this run starts."""
        from mephisto.router.auth import new_secret

        return new_secret()

    def resource_name(self) -> str:
        return str(self.arch.get("name") or "") or f"mephisto-{secrets.token_hex(4)}"

    def ledger_settings(self) -> dict[str, Any]:
        """What `destroy` needs besides resource ids (a region, ...); no credentials."""
        return {}

    async def start_router(self, ledger: Ledger, secret: str) -> str:
        raise NotImplementedError

    @classmethod
    async def destroy(cls, ledger: Ledger) -> None:
        raise NotImplementedError

    async def provision(self) -> RouterEndpoint:
        from mephisto.router.auth import mint_token

        if self.ARCHITECT_TYPE is None:
            raise NotImplementedError("a ProvisionedArchitect needs an ARCHITECT_TYPE")
        ttl = _ttl_seconds(str(self.arch.get("token_ttl") or "7d"))
        secret = self.new_router_secret()
        self.ledger = Ledger.create(self.ARCHITECT_TYPE, self.resource_name(),
                                    **self.ledger_settings())
        url = await self.start_router(self.ledger, secret)
        url = url if url.endswith("/") else url + "/"
        await wait_for_router(url, float(self.arch.get("connect_timeout", 600.0)),
                              self.poll_interval)
        return RouterEndpoint(url, [self.operator_url(url)], mint_token(secret, ttl))

    def operator_url(self, public_url: str) -> str:
        """The URL the operator dials (default: the public one)."""
        return public_url

    async def teardown(self) -> None:
        ledger, self.ledger = self.ledger, None
        if ledger is None:
            return
        await self.destroy(ledger)
        ledger.delete()
        logger.info("%s %s: everything it created is deleted", self.ARCHITECT_TYPE,
                    ledger.name)

    @classmethod
    def cleanup_leftovers(cls, force: bool = False) -> list[str]:
        """Destroy what crashed runs of this architect type left (blocking)."""
        return asyncio.run(cleanup_ledgers(cls, force))
