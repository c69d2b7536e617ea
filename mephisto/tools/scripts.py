"""Run-script helpers: the `task_script` decorator, the front-end bundle builder, and
`load_db_and_process_config` for scripts that make their own Operator.

`task_script` is an edge (like the CLI): it reads the configuration with Hydra, checks
it, builds the Operator, calls the script's function, and is the one place a run script
turns errors into messages and exit codes:

    config error (ConfigError)        "Config error: <msg>" on stderr, exit 2, before
                                      anything is created (no database is opened)
    other MephistoError               "Error: <msg>" on stderr, exit 1
    Ctrl-C (KeyboardInterrupt)        operator.shutdown(), exit 0

Hydra runs through its compose API, not `@hydra.main`: it never changes the working
directory, writes no `outputs/` folder or `.hydra/` logs into the user's directory, and
leaves logging alone (we configure mephisto's loggers from `mephisto.log_level`). The
configuration of every run is stored with the run in the database instead. The price:
Hydra's own flags (`--multirun`, `--info`, tab completion) are not available; `--help`
and `--cfg` (print the composed config and exit) are.

`MEPHISTO_SIMULATED_WORKERS=N` in the environment makes every run the script launches
be worked by N simulated workers (`mephisto.testing.worker`) over its real server: a
way to try a run script end to end without opening a browser (`make demo` uses it).
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mephisto.errors import BuildError, ConfigError, MephistoError
from mephisto.operations.hydra_config import (
    RunScriptConfig,
    build_default_task_config,
    check_run_config,
    compose_run_config,
)

if TYPE_CHECKING:
    from mephisto.db import MephistoDB

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CONFIG_ERROR = 2

# The composed config of the run script being run, for build_custom_bundle's defaults.
_script_config: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "mephisto_script_config", default=None
)

TaskFunction = Callable[[Any, Any], Any]

_USAGE = """\
usage: python {script} [--cfg] [key=value ...]

Runs this task script. Arguments are Hydra overrides of its config, e.g.
  mephisto.architect.port=3001  mephisto.provider.requester_name=me  num_tasks=3
  mephisto/architect=local      (choose another config group entry)
  +my_new_key=1                 (add a top-level key the config does not declare)

  --cfg        print the composed config and exit without launching anything
  -h, --help   show this message

config folder: {config_dir}
"""


def task_script(
    config: type | None = None,
    default_config_file: str | None = None,
    config_path: str = "hydra_configs",
) -> Callable[[TaskFunction], Callable[[], None]]:
    """Decorate `main(operator, cfg)` of a run script; the result is a `main()` taking
    no arguments that reads its overrides from the command line.

    `config` is the script's config dataclass (a `RunScriptConfig` subclass, e.g. from
    `build_default_task_config(...)`); or `default_config_file` names
    `<config_path>/conf/<name>.yaml` next to the script. `cfg.task_dir` is set to the
    script's directory, so YAML may say `${task_dir}/server_files/task.html`.
    """
    if config is not None and default_config_file is not None:
        raise ConfigError("task_script takes config or default_config_file, not both")
    if config is not None:
        config_class = config
    elif default_config_file is not None:
        config_class = build_default_task_config(default_config_file)
    else:
        config_class = RunScriptConfig

    def decorator(fn: TaskFunction) -> Callable[[], None]:
        task_dir = Path(inspect.getfile(fn)).resolve().parent

        @functools.wraps(fn)
        def main() -> None:
            code = run_task_script(
                fn, config_class, task_dir / config_path, task_dir, sys.argv[1:]
            )
            if code != EXIT_OK:
                raise SystemExit(code)

        return main

    return decorator


def _fail(prefix: str, error: BaseException) -> None:
    message = " ".join(str(error).split()) or type(error).__name__
    print(f"{prefix}: {message}", file=sys.stderr)


def run_task_script(
    fn: TaskFunction,
    config_class: type,
    config_dir: Path,
    task_dir: Path,
    argv: Sequence[str],
) -> int:
    """What a `task_script` main() does, returning the exit code (see the module doc)."""
    overrides: list[str] = []
    print_config = False
    for arg in argv:
        if arg in ("-h", "--help"):
            print(_USAGE.format(script=Path(sys.argv[0]).name, config_dir=config_dir))
            return EXIT_OK
        if arg in ("--cfg", "-c"):
            print_config = True
        elif arg.startswith("-") and "=" not in arg:
            _fail("Config error", ConfigError(f"unknown option {arg} (see --help)"))
            return EXIT_CONFIG_ERROR
        else:
            overrides.append(arg)
    try:
        cfg = compose_run_config(config_class, config_dir, overrides, task_dir=task_dir)
        if print_config:
            from omegaconf import OmegaConf

            print(OmegaConf.to_yaml(cfg), end="")
            return EXIT_OK
        check_run_config(cfg)
    except ConfigError as exc:
        _fail("Config error", exc)
        return EXIT_CONFIG_ERROR
    _configure_logging(str(cfg.mephisto.log_level))
    return _run_with_operator(fn, cfg)


def _run_with_operator(fn: TaskFunction, cfg: Any) -> int:
    from mephisto.db import MephistoDB
    from mephisto.operations.operator import Operator

    operator = None
    db = None
    try:
        db = MephistoDB()
        operator = Operator(db)
        _simulate_if_asked(operator)
        token = _script_config.set(cfg)
        try:
            fn(operator, cfg)
        finally:
            _script_config.reset(token)
        return EXIT_OK
    except KeyboardInterrupt:
        print(
            "Interrupted: shutting down (open units are expired; rerun with "
            "mephisto.task.resume_incomplete_run=true to resume)",
            file=sys.stderr,
        )
        return EXIT_OK
    except ConfigError as exc:
        _fail("Config error", exc)
        return EXIT_CONFIG_ERROR
    except MephistoError as exc:
        _fail("Error", exc)
        return EXIT_ERROR
    finally:
        if operator is not None:
            try:
                operator.shutdown()
            except KeyboardInterrupt:  # a second Ctrl-C while shutting down
                pass
        if db is not None:
            db.shutdown()


def _simulate_if_asked(operator: Any) -> None:
    """With MEPHISTO_SIMULATED_WORKERS=N, have N simulated workers work each run
    this operator launches (in a background thread, over the run's real server)."""
    raw = os.environ.get("MEPHISTO_SIMULATED_WORKERS", "").strip()
    if not raw or raw == "0":
        return
    try:
        count = int(raw)
    except ValueError:
        raise ConfigError(
            f"MEPHISTO_SIMULATED_WORKERS must be a number, got {raw!r}",
            key="MEPHISTO_SIMULATED_WORKERS",
        ) from None
    import threading

    from mephisto.testing.worker import run_simulated_workers_sync

    launch = operator.launch_task_run

    def launch_and_simulate(*args: Any, **kwargs: Any) -> str:
        task_run_id = launch(*args, **kwargs)
        url = operator.get_running_task_runs()[task_run_id].url
        logging.getLogger("mephisto").info("%d simulated workers are working on %s", count, url)
        threading.Thread(
            target=lambda: run_simulated_workers_sync(url, count),
            name="mephisto-simulated-workers",
            daemon=True,
        ).start()
        return task_run_id

    operator.launch_task_run = launch_and_simulate


def _configure_logging(level: str) -> None:
    """Log mephisto's messages at `level` to stderr; other libraries at warning."""
    logging.basicConfig(
        level=logging.WARNING,
        format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s",
    )
    logging.getLogger("mephisto").setLevel(level.upper())


def load_db_and_process_config(cfg: Any, print_config: bool = False) -> tuple[MephistoDB, Any]:
    """For a script that makes its own `Operator` (Mephisto's style before `task_script`):
    check a composed run config, then open the configured database.

    Returns `(db, cfg)`, `cfg` unchanged. Raises `ConfigError` naming the offending key
    before any database is opened; `print_config` prints the config as YAML first.
    The database is the configured default (`MEPHISTO_DATABASE_URL`, the config file,
    or SQLite in the data directory); the caller shuts it down.
    """
    if print_config:
        from omegaconf import OmegaConf

        print(OmegaConf.to_yaml(cfg), end="")
    check_run_config(cfg)
    from mephisto.db import MephistoDB

    return MephistoDB(), cfg


# -- front-end bundles ---------------------------------------------------------------------

_SKIP_DIRS = {"node_modules", "build", ".git", ".cache"}
_OUTPUT_TAIL_LINES = 40


def _newest_mtime(root: Path, skip: set[str]) -> float:
    newest = 0.0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in skip]
        for name in filenames:
            try:
                newest = max(newest, os.stat(os.path.join(dirpath, name)).st_mtime)
            except OSError:
                continue
    return newest


def _needs_install(webapp: Path) -> bool:
    modules = webapp / "node_modules"
    if not modules.is_dir():
        return True
    marker = modules / ".package-lock.json"  # rewritten by every npm install
    installed = (marker if marker.exists() else modules).stat().st_mtime
    sources = [webapp / "package.json", webapp / "package-lock.json"]
    return any(p.exists() and p.stat().st_mtime > installed for p in sources)


def _is_built(webapp: Path, build_dir: Path) -> bool:
    if not build_dir.is_dir():
        return False
    built = _newest_mtime(build_dir, set())
    return built > 0 and built >= _newest_mtime(webapp, _SKIP_DIRS)


def _run(command: list[str], webapp: Path, what: str) -> None:
    logger.info("%s in %s", what, webapp)
    try:
        result = subprocess.run(
            command,
            cwd=webapp,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            check=False,
        )
    except OSError as exc:
        raise BuildError(f"cannot run `{what}` in {webapp}: {exc}") from None
    if result.returncode != 0:
        tail = "\n".join(result.stdout.rstrip().splitlines()[-_OUTPUT_TAIL_LINES:])
        raise BuildError(
            f"`{what}` failed in {webapp} (exit code {result.returncode}). "
            f"Last lines of its output:\n{tail}"
        )


def _build_script(package_json: Path) -> str:
    try:
        scripts = json.loads(package_json.read_text(encoding="utf-8")).get("scripts") or {}
    except (OSError, ValueError, AttributeError) as exc:
        raise BuildError(f"cannot read {package_json}: {exc}") from None
    for name in ("build", "dev"):
        if name in scripts:
            return name
    raise BuildError(
        f"{package_json} has no \"build\" (or \"dev\") script: add one that writes the "
        "bundle to webapp/build/"
    )


def _task_arg(name: str, default: Any) -> Any:
    """`mephisto.task.<name>` of the run script's config, when called under task_script."""
    cfg = _script_config.get()
    if cfg is None:
        return default
    from omegaconf import OmegaConf

    value = OmegaConf.select(cfg, f"mephisto.task.{name}", default=None)
    return default if value is None else value


def build_custom_bundle(
    task_dir: str | os.PathLike[str],
    force_rebuild: bool | None = None,
    post_install_script: str | None = None,
) -> str:
    """Build the React front-end in `<task_dir>/webapp` with npm; return `webapp/build`.

    `npm install` runs when `node_modules/` is missing or older than `package.json`;
    then `post_install_script` (a shell script in `webapp/`, run by bash), if given, on
    every build; then
    `npm run build` (or `npm run dev` when there is no build script). The build is
    skipped when `webapp/build/` is newer than every source file, unless
    `force_rebuild`. Raises `BuildError` (with the tail of npm's output) on failure.

    `force_rebuild` and `post_install_script` left at None take
    `mephisto.task.force_rebuild` / `mephisto.task.post_install_script` from the config
    of the `task_script` being run, when called from the script's thread (so
    `build_custom_bundle(cfg.task_dir)` honours them), else False / no script.
    """
    if force_rebuild is None:
        force_rebuild = bool(_task_arg("force_rebuild", False))
    if post_install_script is None:
        post_install_script = str(_task_arg("post_install_script", "") or "")
    webapp = Path(task_dir).resolve() / "webapp"
    package_json = webapp / "package.json"
    if not package_json.is_file():
        raise BuildError(
            f"no front-end to build: expected {package_json} (a webapp/ folder whose npm "
            "build writes webapp/build/). Static HTML tasks need no build: use the "
            "static_task blueprint."
        )
    build_dir = webapp / "build"
    if not force_rebuild and _is_built(webapp, build_dir):
        logger.info("front-end bundle is up to date: %s", build_dir)
        return str(build_dir)
    npm = shutil.which("npm")
    if npm is None:
        raise BuildError(
            f"npm is not installed (or not on PATH); it is needed to build {webapp}. "
            "Install Node.js 18 or newer, which includes npm."
        )
    script = (webapp / post_install_script).resolve() if post_install_script else None
    if script is not None and not script.is_file():
        raise BuildError(
            f"post_install_script not found: {script} (mephisto.task.post_install_script "
            f"names a shell script in {webapp})"
        )
    script_name = _build_script(package_json)
    if _needs_install(webapp):
        _run([npm, "install"], webapp, "npm install")
    if script is not None:
        shell = shutil.which("bash") or "sh"
        _run([shell, str(script)], webapp, f"{Path(shell).name} {post_install_script}")
    _run([npm, "run", script_name], webapp, f"npm run {script_name}")
    if not build_dir.is_dir():
        raise BuildError(f"`npm run {script_name}` succeeded but did not create {build_dir}")
    return str(build_dir)


# Mephisto's name for the same function.
build_and_return_custom_bundle = build_custom_bundle
