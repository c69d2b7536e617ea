"""A task router in a child process, for tests and benchmarks: `router_process()` starts
`mephisto router` on a free port of 127.0.0.1 with a fresh secret and yields a handle
that mints tokens, reads the router's status, and kills or restarts it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from mephisto.router.auth import mint_token, new_secret

_READY = re.compile(r"serving on http://[^:]+:(\d+)/")


class RouterProcess:
    """A `mephisto router` child process."""

    def __init__(self, cache_dir: Path, secret: str | None = None, port: int = 0,
                 extra_args: Sequence[str] = ()) -> None:
        self.cache_dir = cache_dir
        self.extra_args = list(extra_args)  # more options of `mephisto router`
        self.secret = secret or new_secret()
        self.port = port
        self.proc: subprocess.Popen[str] | None = None
        self.log = cache_dir / "router.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def token(self, ttl: float = 3600) -> str:
        return mint_token(self.secret, ttl)

    def start(self, timeout: float = 20.0) -> RouterProcess:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "MEPHISTO_ROUTER_SECRET": self.secret}
        env.pop("PORT", None)
        seen = self.log.stat().st_size if self.log.exists() else 0  # earlier starts' lines
        log = self.log.open("a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mephisto.cli", "router", "--host", "127.0.0.1",
             "--port", str(self.port), "--cache-dir", str(self.cache_dir / "cache"),
             *self.extra_args],
            env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = _READY.search(self.log.read_text()[seen:])
            if match and (self.port == 0 or int(match.group(1)) == self.port):
                self.port = int(match.group(1))
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"the router exited: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)
        raise RuntimeError(f"the router did not start: {self.log.read_text()[-2000:]}")

    def status(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "_mephisto/router", timeout=5) as answer:
            result: dict[str, Any] = json.loads(answer.read())
            return result

    def wait_for_operator(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if self.status()["operator"]:
                    return
            time.sleep(0.05)
        raise RuntimeError("no operator connected to the router in time")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self) -> RouterProcess:
        """Kill it and start it again on the same port (a crash and a restart)."""
        self.kill()
        return self.start()


@contextlib.contextmanager
def router_process(cache_dir: Path, secret: str | None = None,
                   extra_args: Sequence[str] = ()) -> Iterator[RouterProcess]:
    router = RouterProcess(cache_dir, secret, extra_args=extra_args).start()
    try:
        yield router
    finally:
        router.kill()


__all__ = ["RouterProcess", "router_process"]
