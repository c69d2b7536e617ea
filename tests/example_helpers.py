"""What the tests of the example folders share: loading a run script as a module,
running its main() in a thread, building an example's front-end, composing its config,
and running simulated workers on a loop of their own, and keeping AWS credentials of
the machine out of a test."""

from __future__ import annotations

import asyncio
import importlib.util
import threading
from collections.abc import Coroutine
from pathlib import Path
from types import ModuleType
from typing import Any


def load_module(path: Path, name: str) -> ModuleType:
    """The Python file `path` as a module named `name` (a run script's `main` runs only
    as a script, so importing it starts nothing)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def built_bundle(example_dir: Path) -> Path:
    """`example_dir/webapp` built where its users build it (npm install only when its
    node_modules is missing or stale); always rebuilt, as the mephisto-task it links
    from packages/ may have changed. The bundle's path."""
    from mephisto.tools.scripts import build_custom_bundle

    build_custom_bundle(example_dir, force_rebuild=True)
    bundle = example_dir / "webapp" / "build" / "bundle.js"
    assert bundle.is_file()
    return bundle


def example_config(example_dir: Path, *overrides: str) -> Any:
    """The example's `example.yaml` composed as its run script would."""
    from mephisto.operations.hydra_config import build_default_task_config, compose_run_config

    return compose_run_config(build_default_task_config("example"),
                              example_dir / "hydra_configs", list(overrides),
                              task_dir=example_dir)


def run_in_thread(coro: Coroutine[Any, Any, Any], timeout: float = 120.0) -> Any:
    """asyncio.run(coro) in a fresh thread; its result, or its exception re-raised."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = asyncio.run(coro)
        except Exception as exc:  # noqa: BLE001 -- re-raised in the test's thread
            box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"simulated workers did not finish in {timeout:.0f} s"
    if "error" in box:
        raise box["error"]
    return box.get("result")


def start_main(script: ModuleType, name: str) -> tuple[threading.Thread, dict[str, Any]]:
    """Start a run script's `main()` in a daemon thread named `name`. The dict it returns
    gets "exit" (0 when main returns, else its SystemExit code) or "error" (what else it
    raised) once main ends; while it is empty, the script is still running."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            script.main()
            outcome["exit"] = 0
        except SystemExit as exc:
            outcome["exit"] = exc.code
        except BaseException as exc:  # noqa: BLE001 - for the test to report
            outcome["error"] = exc

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread, outcome


def isolate_aws(tmp_path: Path, monkeypatch: Any) -> None:
    """boto3 sees no credentials of this machine: its files under `tmp_path`, its
    environment variables unset (a run registers its requester's own)."""
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws" / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws" / "config"))
    for name in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
