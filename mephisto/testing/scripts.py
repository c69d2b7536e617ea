"""Run a run script as its users do (`python run_task.py key=value ...`) in a test.

    with running_script(EXAMPLE / "run_task.py", "num_tasks=2", cwd=tmp_path) as script:
        asyncio.run(run_simulated_workers(script.url, 2))
        assert script.wait() == 0, script.output

The script runs in a subprocess with `mephisto.architect.port=0` (a free port) added to
its overrides (unless they choose another architect: `mephisto/architect=remote`) and inherits the environment (so `MEPHISTO_DATA_DIR` and friends of the
test apply). `url` is the address of the first run it launches, read from its log.
The process is killed when it outlives `timeout` seconds or the `with` block.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

_LIVE = re.compile(r"is live at (http://\S+)")


class ScriptRun:
    """A run script running in a subprocess (see `running_script`)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: list[str] = []
        self.url: str | None = None

    @property
    def output(self) -> str:
        """Everything the script printed so far (stdout and stderr together)."""
        return "".join(self.lines)

    def _read_until_live(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            found = _LIVE.search(line)
            if found:
                self.url = found.group(1)
                return

    def wait(self) -> int:
        """Read the rest of the output and return the exit code."""
        assert self.process.stdout is not None
        self.lines.extend(self.process.stdout)
        return self.process.wait()


@contextlib.contextmanager
def running_script(
    script: str | os.PathLike[str],
    *overrides: str,
    cwd: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> Iterator[ScriptRun]:
    """Start `script` and wait until it has launched a run; yields a `ScriptRun`.

    Raises AssertionError with the script's output if it ends (or times out) before
    launching a run."""
    # a free port for the architects that serve one (not when another is chosen)
    port = [] if any(o.startswith("mephisto/architect=") for o in overrides) \
        else ["mephisto.architect.port=0"]
    process = subprocess.Popen(
        [sys.executable, str(Path(script)), *port, *overrides],
        cwd=cwd,
        env={**os.environ, **env} if env is not None else None,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    timer = threading.Timer(timeout, process.kill)  # never hang a test suite
    timer.start()
    run = ScriptRun(process)
    try:
        run._read_until_live()
        if run.url is None:
            process.wait()
            raise AssertionError(
                f"{Path(script).name} exited with code {process.returncode} before "
                f"launching a run:\n{run.output}"
            )
        yield run
    finally:
        timer.cancel()
        if process.poll() is None:
            process.kill()
        process.communicate()
