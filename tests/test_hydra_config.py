"""Run-script configuration: Hydra config groups, composition, checks, `task_script`,
and `build_custom_bundle`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from mephisto.abstractions.blueprint import Blueprint, BlueprintArgs
from mephisto.errors import BuildError, ConfigError, UnknownAbstractionError
from mephisto.operations import registry
from mephisto.operations.hydra_config import (
    MephistoConfig,
    RunScriptConfig,
    build_default_task_config,
    check_run_config,
    compose_run_config,
    initialize_named_configs,
    register_script_config,
)
from mephisto.tools import scripts
from mephisto.tools.scripts import (
    build_and_return_custom_bundle,
    build_custom_bundle,
    task_script,
)

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_DIR = REPO / "examples" / "simple_static_task"

EXAMPLE_YAML = """\
#@package _global_
defaults:
  - /mephisto/blueprint: {blueprint}
  - /mephisto/architect: local
  - /mephisto/provider: mock
mephisto:
  blueprint:
    task_source: ${{task_dir}}/server_files/task.html
  task:
    task_name: hydra-test-task
{task}
num_tasks: 2
"""
FULL_TASK = """\
    task_title: "Rate a sentence"
    task_description: "Read it and rate it."
    task_reward: 0.25
    task_tags: "rating,test"
"""


def write_script_dir(
    root: Path,
    *,
    blueprint: str = "static_task",
    task: str = FULL_TASK,
    extra: str = "",
    name: str = "example",
) -> Path:
    """A run script's folder: hydra_configs/conf/<name>.yaml and server_files/task.html."""
    conf = root / "hydra_configs" / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / f"{name}.yaml").write_text(EXAMPLE_YAML.format(blueprint=blueprint, task=task) + extra)
    (root / "server_files").mkdir(exist_ok=True)
    (root / "server_files" / "task.html").write_text("<p>${text}</p><input name='x'>")
    return root


def compose(
    root: Path, overrides: list[str] | None = None, config: type | None = None
) -> DictConfig:
    return compose_run_config(
        config or build_default_task_config("example"),
        root / "hydra_configs",
        overrides or [],
        task_dir=root,
    )


def config_error(root: Path, overrides: list[str] | None = None, **kw: Any) -> ConfigError:
    """The ConfigError that composing and checking raises."""
    with pytest.raises(ConfigError) as info:
        check_run_config(compose(root, overrides, **kw))
    assert "\n" not in str(info.value)
    return info.value


# -- config groups ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("group", "name", "type_key"),
    [
        ("blueprint", "static_task", "_blueprint_type"),
        ("blueprint", "static_react_task", "_blueprint_type"),
        ("blueprint", "remote_procedure", "_blueprint_type"),
        ("blueprint", "chat", "_blueprint_type"),
        ("blueprint", "mock", "_blueprint_type"),
        ("architect", "local", "_architect_type"),
        ("architect", "mock", "_architect_type"),
        ("architect", "remote", "_architect_type"),
        ("architect", "ec2", "_architect_type"),
        ("architect", "heroku", "_architect_type"),
        ("provider", "mock", "_provider_type"),
    ],
)
def test_builtin_plugins_are_config_groups(group: str, name: str, type_key: str) -> None:
    initialize_named_configs()
    node = ConfigStore.instance().load(f"mephisto/{group}/{name}.yaml")
    assert node.package == f"mephisto.{group}"
    assert node.node[type_key] == name


def test_unloadable_plugin_is_not_stored_and_gives_the_registry_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(registry.BUILTIN_BLUEPRINTS, "broken_bp", "no_such_module_xyz:Nothing")
    initialize_named_configs()
    assert "broken_bp.yaml" not in ConfigStore.instance().repo["mephisto"]["blueprint"]
    err = config_error(write_script_dir(tmp_path, blueprint="broken_bp"))
    assert err.key == "mephisto.blueprint"
    assert "broken_bp" in str(err) and "no_such_module_xyz" in str(err)


@dataclass
class LateArgs(BlueprintArgs):
    _blueprint_type: str = "late_bp"
    task_source: str = ""
    colour: str = "blue"


class LateBlueprint(Blueprint):
    BLUEPRINT_TYPE: ClassVar[str] = "late_bp"
    ArgsClass = LateArgs


def test_abstraction_registered_later_becomes_a_config_group(tmp_path: Path) -> None:
    initialize_named_configs()
    try:
        registry.register_mephisto_abstraction()(LateBlueprint)
        node = ConfigStore.instance().load("mephisto/blueprint/late_bp.yaml")
        assert node.node.colour == "blue"
        root = write_script_dir(tmp_path)
        cfg = compose(root, ["mephisto/blueprint=late_bp", "mephisto.blueprint.colour=red"])
        check_run_config(cfg)
        assert cfg.mephisto.blueprint._blueprint_type == "late_bp"
        assert cfg.mephisto.blueprint.colour == "red"
    finally:
        registry._registered["blueprint"].pop("late_bp", None)
        ConfigStore.instance().repo["mephisto"]["blueprint"].pop("late_bp.yaml", None)


# -- composing ----------------------------------------------------------------------------


def test_default_config_file_composes_with_task_dir_interpolation(tmp_path: Path) -> None:
    root = write_script_dir(tmp_path / "my task")  # a space in the path is fine
    cfg = compose(root)
    check_run_config(cfg)
    assert cfg.task_dir == str(root)
    assert cfg.mephisto.blueprint.task_source == f"{root}/server_files/task.html"
    assert cfg.mephisto.blueprint._blueprint_type == "static_task"
    assert cfg.mephisto.architect.port == "3000"
    assert cfg.mephisto.provider.requester_name == "MOCK_REQUESTER"
    assert cfg.mephisto.task.task_reward == 0.25
    assert cfg.mephisto.task.task_lifetime_in_seconds == 2678400  # TaskRunArgs default
    assert cfg.mephisto.log_level == "info"
    assert cfg.num_tasks == 2  # the YAML wins over the dataclass default (5)
    assert "defaults" not in cfg


def test_command_line_overrides(tmp_path: Path) -> None:
    root = write_script_dir(tmp_path)
    cfg = compose(
        root,
        [
            "mephisto.architect.port=3001",
            "mephisto.provider.requester_name=x",
            "num_tasks=3",
            "mephisto.task.task_reward=1.5",
            "mephisto.log_level=debug",
        ],
    )
    check_run_config(cfg)
    assert cfg.mephisto.architect.port == "3001"
    assert cfg.mephisto.provider.requester_name == "x"
    assert cfg.num_tasks == 3
    assert cfg.mephisto.task.task_reward == 1.5


def test_group_override_switches_the_plugin(tmp_path: Path) -> None:
    cfg = compose(write_script_dir(tmp_path), ["mephisto/architect=mock"])
    check_run_config(cfg)
    assert cfg.mephisto.architect._architect_type == "mock"
    assert cfg.mephisto.architect.should_run_server is False


def test_task_dir_override_wins(tmp_path: Path) -> None:
    root = write_script_dir(tmp_path)
    cfg = compose(root, ["task_dir=/elsewhere"])
    assert cfg.mephisto.blueprint.task_source == "/elsewhere/server_files/task.html"


def test_seed_subclass_form_with_extra_fields_and_yaml_keys(tmp_path: Path) -> None:
    root = write_script_dir(
        tmp_path, name="onboarding_example", extra="correct_answer: 7\n"
    )

    @dataclass
    class MyTaskConfig(build_default_task_config("onboarding_example")):  # type: ignore
        am_qualifiying_new_workers: bool = False
        allowlist_qualification: str = "my-allowlist-qual"

    cfg = compose(root, ["am_qualifiying_new_workers=true"], config=MyTaskConfig)
    check_run_config(cfg)
    assert cfg.correct_answer == 7  # declared only in the YAML
    assert cfg.am_qualifiying_new_workers is True
    assert cfg.allowlist_qualification == "my-allowlist-qual"
    assert cfg.mephisto.task.task_title == "Rate a sentence"


def test_script_config_without_yaml_takes_everything_from_overrides(tmp_path: Path) -> None:
    (tmp_path / "t.html").write_text("<p>hi</p>")
    cfg = compose_run_config(
        RunScriptConfig,
        tmp_path / "no_such_folder",
        [
            "+mephisto/blueprint=static_task",
            "+mephisto/architect=mock",
            "+mephisto/provider=mock",
            "mephisto.blueprint.task_source=${task_dir}/t.html",
            "mephisto.task.task_title=T",
            "mephisto.task.task_description=D",
            "mephisto.task.task_reward=0",
            "mephisto.task.task_tags=t",
        ],
        task_dir=tmp_path,
    )
    check_run_config(cfg)
    assert cfg.mephisto.blueprint.task_source == f"{tmp_path}/t.html"


def test_registered_script_config_works_with_hydras_compose_api(tmp_path: Path) -> None:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    root = write_script_dir(tmp_path)

    @dataclass
    class ScriptConfig(build_default_task_config("example")):  # type: ignore
        task_dir: str = str(root)

    initialize_named_configs()
    register_script_config("hydra_test_script", ScriptConfig)
    with initialize_config_dir(config_dir=str(root / "hydra_configs"), version_base=None):
        cfg = hydra_compose("hydra_test_script", overrides=["mephisto.architect.port=4000"])
    check_run_config(cfg)
    assert cfg.mephisto.architect.port == "4000"
    assert cfg.mephisto.blueprint.task_source == f"{root}/server_files/task.html"


def test_run_config_for_the_operator_is_the_mephisto_section(tmp_path: Path) -> None:
    root = write_script_dir(tmp_path)
    cfg = compose(root)
    run_config = cfg.mephisto
    assert isinstance(run_config, DictConfig)
    # interpolations into the root (${task_dir}) still resolve from the section alone
    plain = OmegaConf.to_container(run_config, resolve=True)
    assert isinstance(plain, dict)
    assert set(plain) == {"blueprint", "architect", "provider", "task", "log_level"}
    assert plain["blueprint"]["task_source"] == f"{root}/server_files/task.html"
    check_run_config(run_config)  # the section alone is checked the same way


def test_the_resolver_gives_plain_args_and_the_plugin_classes(tmp_path: Path) -> None:
    from mephisto.operations.hydra_config import resolve_run_config
    from mephisto.utils.args import Args

    cfg = compose(write_script_dir(tmp_path))
    resolved = resolve_run_config(cfg.mephisto)
    assert isinstance(resolved.args, Args) and isinstance(resolved.args.task, Args)
    assert not isinstance(resolved.args.blueprint, DictConfig)
    assert resolved.args.blueprint.task_source == f"{tmp_path}/server_files/task.html"
    assert resolved.args.blueprint._blueprint_type == "static_task"
    assert resolved.args.task.task_reward == 0.25
    assert resolved.blueprint.BLUEPRINT_TYPE == "static_task"
    assert resolved.architect.ARCHITECT_TYPE == "local"
    assert resolved.provider.PROVIDER_TYPE == "mock"


def test_mephisto_config_defaults() -> None:
    cfg = OmegaConf.structured(RunScriptConfig)
    assert cfg.num_tasks == 5
    assert OmegaConf.is_missing(cfg.mephisto, "blueprint")
    assert OmegaConf.is_missing(cfg, "task_dir")
    assert OmegaConf.structured(MephistoConfig).log_level == "info"


# -- config errors ------------------------------------------------------------------------


def test_unknown_blueprint_in_yaml_lists_valid_types(tmp_path: Path) -> None:
    err = config_error(write_script_dir(tmp_path, blueprint="nope"))
    assert isinstance(err, UnknownAbstractionError)
    assert err.key == "mephisto.blueprint"
    assert "'nope'" in str(err) and "static_task" in str(err) and "mock" in str(err)


def test_unknown_architect_on_the_command_line(tmp_path: Path) -> None:
    err = config_error(write_script_dir(tmp_path), ["mephisto/architect=gcp"])
    assert isinstance(err, UnknownAbstractionError)
    assert err.key == "mephisto.architect"
    assert "local" in str(err)


def test_unknown_blueprint_type_in_a_plain_config() -> None:
    with pytest.raises(UnknownAbstractionError) as info:
        check_run_config({"blueprint": {"_blueprint_type": "nope"}})
    assert info.value.key == "mephisto.blueprint"
    assert "static_task" in str(info.value)


def test_blueprint_not_chosen(tmp_path: Path) -> None:
    err = config_error(tmp_path, config=RunScriptConfig)
    assert err.key == "mephisto.blueprint"
    assert "/mephisto/blueprint" in str(err) and "static_task" in str(err)


@pytest.mark.parametrize("missing", ["task_title", "task_description", "task_reward", "task_tags"])
def test_missing_required_task_arg(tmp_path: Path, missing: str) -> None:
    task = "".join(line + "\n" for line in FULL_TASK.splitlines() if missing not in line)
    err = config_error(write_script_dir(tmp_path, task=task))
    assert err.key == f"mephisto.task.{missing}"
    assert "required" in str(err)


def test_missing_required_blueprint_arg(tmp_path: Path) -> None:
    root = write_script_dir(tmp_path)
    yaml_file = root / "hydra_configs" / "conf" / "example.yaml"
    yaml_file.write_text(yaml_file.read_text().replace("    task_source:", "    data_json:"))
    err = config_error(root)
    assert err.key == "mephisto.blueprint.task_source"


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("mephisto.task.task_reward=abc", "mephisto.task.task_reward"),
        ("mephisto.task.task_lifetime_in_seconds=soon", "mephisto.task.task_lifetime_in_seconds"),
        ("mephisto.task.allowed_concurrent=-1", "mephisto.task.allowed_concurrent"),
        ("mephisto.task.task_reward=-1", "mephisto.task.task_reward"),
        ("mephisto.architect.port=abc", "mephisto.architect.port"),
        ("mephisto.architect.port=70000", "mephisto.architect.port"),
        ("mephisto.architect.port=[1,2]", "mephisto.architect.port"),
        ("num_tasks=many", "num_tasks"),
        ("mephisto.log_level=loud", "mephisto.log_level"),
        ("mephisto.task=3", "mephisto.task"),
    ],
)
def test_wrong_type_or_value(tmp_path: Path, override: str, key: str) -> None:
    err = config_error(write_script_dir(tmp_path), [override])
    assert err.key == key
    assert key in str(err)


def test_wrong_type_in_yaml(tmp_path: Path) -> None:
    task = FULL_TASK.replace("task_reward: 0.25", "task_reward: lots")
    err = config_error(write_script_dir(tmp_path, task=task))
    assert err.key == "mephisto.task.task_reward"
    assert "lots" in str(err)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("mephisto.architect.prot=1", "mephisto.architect.prot"),
        ("+mephisto.task.task_titel=x", "mephisto.task.task_titel"),
        ("+mephisto.blueprint.colour=red", "mephisto.blueprint.colour"),
        ("mephisto.nothing=1", "mephisto.nothing"),
        ("num_taks=3", "num_taks"),
    ],
)
def test_unknown_key_on_the_command_line(tmp_path: Path, override: str, key: str) -> None:
    err = config_error(write_script_dir(tmp_path), [override])
    assert err.key == key
    assert f"unknown key {key}" in str(err)


def test_unknown_key_in_yaml_names_the_valid_keys(tmp_path: Path) -> None:
    task = FULL_TASK + "    task_titel: typo\n"
    err = config_error(write_script_dir(tmp_path, task=task))
    assert err.key == "mephisto.task.task_titel"
    assert "task_title" in str(err)


def test_missing_config_file_names_the_available_ones(tmp_path: Path) -> None:
    root = write_script_dir(tmp_path)
    err = config_error(root, config=build_default_task_config("nope"))
    assert "nope.yaml" in str(err) and "example" in str(err)


def test_unparsable_override_and_bad_yaml(tmp_path: Path) -> None:
    root = write_script_dir(tmp_path)
    assert config_error(root, ["a=b=c="]).key == "a"
    err = config_error(root, ["mephisto.task.task_tags=a,b"])  # Hydra reads a,b as a sweep
    assert err.key == "mephisto.task.task_tags" and "quote the value" in str(err)
    (root / "hydra_configs" / "conf" / "example.yaml").write_text("mephisto: [\n")
    assert "YAML" in str(config_error(root))


def test_task_dir_not_set_is_a_config_error(tmp_path: Path) -> None:
    root = write_script_dir(tmp_path)
    cfg = compose_run_config(build_default_task_config("example"), root / "hydra_configs")
    with pytest.raises(ConfigError) as info:
        check_run_config(cfg)
    assert info.value.key == "mephisto.blueprint.task_source"
    assert "task_dir" in str(info.value)


def test_task_script_takes_one_kind_of_config() -> None:
    with pytest.raises(ConfigError):
        task_script(config=RunScriptConfig, default_config_file="example")


# -- task_script as a real process ----------------------------------------------------------

SCRIPT = '''\
import json, os, sys
from mephisto.errors import ConfigError, MephistoError
from mephisto.tools.scripts import task_script

@task_script(default_config_file="example")
def main(operator, cfg):
    open(os.environ["MARKER"], "w").write("called")
    mode = cfg.get("mode", "report")
    if mode == "fail":
        raise MephistoError("the crowd went home")
    if mode == "config":
        raise ConfigError("bad blueprint thing", key="mephisto.blueprint")
    if mode == "interrupt":
        raise KeyboardInterrupt
    print(json.dumps({
        "cwd": os.getcwd(),
        "task_dir": cfg.task_dir,
        "task_source": cfg.mephisto.blueprint.task_source,
        "port": cfg.mephisto.architect.port,
        "num_tasks": cfg.num_tasks,
        "operator": type(operator).__name__,
    }))

if __name__ == "__main__":
    main()
'''


def run_script(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    root = write_script_dir(tmp_path / "task")
    (root / "run_task.py").write_text(SCRIPT)
    workdir = tmp_path / "elsewhere"
    workdir.mkdir(exist_ok=True)
    marker = tmp_path / "called"
    env = {**os.environ, "MARKER": str(marker)}
    result = subprocess.run(
        [sys.executable, str(root / "run_task.py"), *args],
        cwd=workdir,
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result, marker


def test_task_script_bad_config_exits_2_before_anything_launches(tmp_path: Path) -> None:
    data_dir = Path(os.environ["MEPHISTO_DATA_DIR"])
    result, marker = run_script(tmp_path, "mephisto.task.task_reward=abc")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("Config error: mephisto.task.task_reward")
    assert not marker.exists()
    assert not data_dir.exists()  # no database was created


def test_task_script_unknown_blueprint_exits_2(tmp_path: Path) -> None:
    result, marker = run_script(tmp_path, "mephisto/blueprint=nope")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("Config error: Unknown blueprint type 'nope'")
    assert not marker.exists()


def test_task_script_runs_the_function_with_the_composed_config(tmp_path: Path) -> None:
    result, marker = run_script(tmp_path, "mephisto.architect.port=3001", "num_tasks=3")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    root = tmp_path / "task"
    assert report == {
        "cwd": str(tmp_path / "elsewhere"),  # Hydra did not change the directory
        "task_dir": str(root),
        "task_source": f"{root}/server_files/task.html",
        "port": "3001",
        "num_tasks": 3,
        "operator": "Operator",
    }
    assert marker.exists()
    assert not (tmp_path / "elsewhere" / "outputs").exists()
    assert not (root / "outputs").exists()
    assert sorted(p.name for p in (tmp_path / "elsewhere").iterdir()) == []


@pytest.mark.parametrize(
    ("mode", "code", "message"),
    [
        ("fail", 1, "Error: the crowd went home"),
        ("config", 2, "Config error: bad blueprint thing"),
        ("interrupt", 0, "Interrupted"),
    ],
)
def test_task_script_maps_errors_to_exit_codes(
    tmp_path: Path, mode: str, code: int, message: str
) -> None:
    result, marker = run_script(tmp_path, f"+mode={mode}")
    assert result.returncode == code, result.stderr
    assert result.stderr.strip().startswith(message)
    assert "Traceback" not in result.stderr
    assert marker.exists()


def test_task_script_cfg_flag_prints_the_config_without_launching(tmp_path: Path) -> None:
    result, marker = run_script(tmp_path, "--cfg", "num_tasks=4")
    assert result.returncode == 0, result.stderr
    printed = OmegaConf.create(result.stdout)
    assert printed.num_tasks == 4
    assert printed.mephisto.blueprint._blueprint_type == "static_task"
    assert not marker.exists()


def test_task_script_help_and_unknown_option(tmp_path: Path) -> None:
    result, _ = run_script(tmp_path, "--help")
    assert result.returncode == 0 and "usage:" in result.stdout
    result, marker = run_script(tmp_path, "--frobnicate")
    assert result.returncode == 2
    assert result.stderr.startswith("Config error: unknown option --frobnicate")
    assert not marker.exists()


def test_example_config_checks(tmp_path: Path) -> None:
    cfg = compose_run_config(
        build_default_task_config("example"),
        EXAMPLE_DIR / "hydra_configs",
        ["mephisto.architect.port=0"],
        task_dir=EXAMPLE_DIR,
    )
    check_run_config(cfg)
    assert Path(cfg.mephisto.blueprint.task_source).is_file()
    assert cfg.mephisto.task.task_name == "simple-static-task-example"
    html = Path(cfg.mephisto.blueprint.task_source).read_text()
    assert "${text}" in html and 'name="rating"' in html and 'name="comment"' in html


def test_simple_static_task_example_runs_to_completion(tmp_path: Path) -> None:
    """The example run script, run as written, completes with simulated workers."""
    import asyncio

    from mephisto.db import MephistoDB
    from mephisto.testing.scripts import running_script
    from mephisto.testing.worker import run_simulated_workers

    with running_script(EXAMPLE_DIR / "run_task.py", cwd=tmp_path) as script:
        assert script.url is not None
        stats = asyncio.run(run_simulated_workers(script.url, 3))
        assert stats.units_completed == 10, stats.errors
        assert script.wait() == 0, script.output
    db = MephistoDB()
    (run,) = db.find_task_runs()
    assert db.get_unit_status_counts(run.db_id) == {"completed": 10}
    assert run.get_task().task_name == "simple-static-task-example"
    db.shutdown()


def test_simulated_workers_env_completes_the_example(tmp_path: Path) -> None:
    """MEPHISTO_SIMULATED_WORKERS makes task_script drive each launched run (make demo)."""
    import os

    from mephisto.db import MephistoDB

    result = subprocess.run(
        [sys.executable, str(EXAMPLE_DIR / "run_task.py"), "mephisto.architect.port=0"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={**os.environ, "MEPHISTO_SIMULATED_WORKERS": "4"},
    )
    assert result.returncode == 0, result.stderr
    assert "4 simulated workers" in result.stderr + result.stdout
    db = MephistoDB()
    assert db.get_unit_status_counts(db.find_task_runs()[0].db_id) == {"completed": 10}
    db.shutdown()
    bad = subprocess.run(
        [sys.executable, str(EXAMPLE_DIR / "run_task.py"), "mephisto.architect.port=0"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={**os.environ, "MEPHISTO_SIMULATED_WORKERS": "many"},
    )
    assert bad.returncode == 2 and "MEPHISTO_SIMULATED_WORKERS" in bad.stderr


# -- build_custom_bundle --------------------------------------------------------------------

FAKE_NPM = """\
#!/bin/sh
echo "$PWD|$*" >> "$NPM_LOG"
case "$1" in
  install) mkdir -p node_modules && touch node_modules/.package-lock.json ;;
  run)
    if [ -n "$NPM_FAIL" ]; then
      i=0; while [ $i -lt 60 ]; do echo "noise $i"; i=$((i+1)); done
      echo "ERROR: cannot resolve ./App"; exit 3
    fi
    mkdir -p build && echo "bundle" > build/bundle.js ;;
esac
"""


@pytest.fixture
def fake_npm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake npm on PATH; returns the log file it appends `cwd|args` lines to."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    npm = bin_dir / "npm"
    npm.write_text(FAKE_NPM)
    npm.chmod(0o755)
    log = tmp_path / "npm.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("NPM_LOG", str(log))
    monkeypatch.delenv("NPM_FAIL", raising=False)
    return log


def make_webapp(task_dir: Path, scripts_json: dict[str, str] | None = None) -> Path:
    webapp = task_dir / "webapp"
    (webapp / "src").mkdir(parents=True)
    package = {"name": "t", "scripts": scripts_json if scripts_json is not None else {"dev": "x", "build": "y"}}
    (webapp / "package.json").write_text(json.dumps(package))
    (webapp / "src" / "main.js").write_text("console.log(1)")
    past = 1_000_000_000
    for p in (webapp / "package.json", webapp / "src" / "main.js"):
        os.utime(p, (past, past))
    return webapp


def npm_calls(log: Path) -> list[str]:
    return [line.split("|", 1)[1] for line in log.read_text().splitlines()] if log.exists() else []


def test_build_custom_bundle_installs_builds_and_skips_when_up_to_date(
    tmp_path: Path, fake_npm: Path
) -> None:
    task_dir = tmp_path / "task"
    webapp = make_webapp(task_dir)
    built = build_custom_bundle(str(task_dir))
    assert built == str(webapp / "build")
    assert (webapp / "build" / "bundle.js").is_file()
    assert npm_calls(fake_npm) == ["install", "run build"]
    assert {line.split("|")[0] for line in fake_npm.read_text().splitlines()} == {str(webapp)}

    assert build_and_return_custom_bundle(task_dir) == built  # up to date: nothing runs
    assert npm_calls(fake_npm) == ["install", "run build"]

    (webapp / "src" / "main.js").write_text("console.log(2)")  # a source changed
    build_custom_bundle(task_dir)
    assert npm_calls(fake_npm)[2:] == ["run build"]  # no second install

    build_custom_bundle(task_dir, force_rebuild=True)
    assert npm_calls(fake_npm)[3:] == ["run build"]


def test_build_custom_bundle_falls_back_to_dev_and_runs_post_install(
    tmp_path: Path, fake_npm: Path
) -> None:
    task_dir = tmp_path / "task"
    webapp = make_webapp(task_dir, {"dev": "webpack"})
    (webapp / "link.sh").write_text('echo "$PWD|post-install" >> "$NPM_LOG"\n')
    build_custom_bundle(task_dir, post_install_script="link.sh")
    assert npm_calls(fake_npm) == ["install", "post-install", "run dev"]
    with pytest.raises(BuildError, match="post_install_script not found"):
        build_custom_bundle(task_dir, force_rebuild=True, post_install_script="nope.sh")


def test_build_custom_bundle_takes_force_rebuild_and_post_install_from_the_run_config(
    tmp_path: Path, fake_npm: Path
) -> None:
    """A run script calling build_custom_bundle(cfg.task_dir) (as the seed's does) gets
    mephisto.task.force_rebuild / post_install_script of its config; explicit arguments
    still win, and outside the script the defaults apply again."""
    task_dir = write_script_dir(tmp_path / "task")
    webapp = make_webapp(task_dir)
    (webapp / "link.sh").write_text('echo "$PWD|post-install" >> "$NPM_LOG"\n')
    build_custom_bundle(task_dir)
    assert npm_calls(fake_npm) == ["install", "run build"]  # now up to date

    def run(argv: list[str], **kwargs: Any) -> None:
        def main(operator: Any, cfg: DictConfig) -> None:
            build_and_return_custom_bundle(cfg.task_dir, **kwargs)

        code = scripts.run_task_script(
            main, build_default_task_config("example"), task_dir / "hydra_configs", task_dir, argv
        )
        assert code == scripts.EXIT_OK

    run([])  # defaults of example.yaml: up to date, nothing runs
    assert npm_calls(fake_npm)[2:] == []
    run(["mephisto.task.force_rebuild=true", "mephisto.task.post_install_script=link.sh"])
    assert npm_calls(fake_npm)[2:] == ["post-install", "run build"]
    run(["mephisto.task.force_rebuild=true"], force_rebuild=False)  # the argument wins
    assert npm_calls(fake_npm)[4:] == []
    build_custom_bundle(task_dir)  # outside a script: defaults, up to date
    assert npm_calls(fake_npm)[4:] == []

    # a missing script is refused before npm runs at all, naming the setting
    with pytest.raises(BuildError, match="mephisto.task.post_install_script"):
        build_custom_bundle(task_dir, force_rebuild=True, post_install_script="nope.sh")
    assert npm_calls(fake_npm)[4:] == []


def test_str_field_with_a_bool_default_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The seed's `am_qualifiying_new_workers: str = False` composes to the string
    "False", which is truthy: say so, once per field, in one line."""

    @dataclass
    class SeedConfig(build_default_task_config("example")):  # type: ignore[misc]
        am_qualifiying_new_workers: str = False  # type: ignore[assignment]
        allowlist_qualification: str = "my-allowlist-qual"
        really_a_flag: bool = False

    root = write_script_dir(tmp_path)
    with caplog.at_level("WARNING", logger="mephisto.operations.hydra_config"):
        cfg = compose(root, config=SeedConfig)
    assert cfg.am_qualifiying_new_workers == "False"  # what the warning is about
    (record,) = [r for r in caplog.records if "annotated `str`" in r.getMessage()]
    message = record.getMessage()
    assert "\n" not in message and record.levelname == "WARNING"
    assert "am_qualifiying_new_workers" in message and "'False'" in message
    assert "annotate it `bool`" in message

    caplog.clear()
    with caplog.at_level("WARNING", logger="mephisto.operations.hydra_config"):
        compose(root, ["am_qualifiying_new_workers=''"], config=SeedConfig)
        compose(root)  # no such field: no warning
    assert len([r for r in caplog.records if "annotated `str`" in r.getMessage()]) == 1


def test_build_custom_bundle_failure_shows_the_output_tail(
    tmp_path: Path, fake_npm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    task_dir = tmp_path / "task"
    make_webapp(task_dir)
    monkeypatch.setenv("NPM_FAIL", "1")
    with pytest.raises(BuildError) as info:
        build_custom_bundle(task_dir)
    message = str(info.value)
    assert "npm run build" in message and "exit code 3" in message
    assert "ERROR: cannot resolve ./App" in message
    assert "noise 0\n" not in message  # only the tail


def test_build_custom_bundle_without_a_build_script(tmp_path: Path, fake_npm: Path) -> None:
    task_dir = tmp_path / "task"
    make_webapp(task_dir, {"test": "jest"})
    with pytest.raises(BuildError, match='no "build"'):
        build_custom_bundle(task_dir)


def test_build_custom_bundle_without_npm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    task_dir = tmp_path / "task"
    make_webapp(task_dir)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(BuildError, match="npm is not installed"):
        build_custom_bundle(task_dir)


def test_build_custom_bundle_without_webapp(tmp_path: Path) -> None:
    with pytest.raises(BuildError) as info:
        build_custom_bundle(tmp_path)
    assert "webapp" in str(info.value) and "package.json" in str(info.value)


def test_public_names() -> None:
    assert build_and_return_custom_bundle is build_custom_bundle
    assert scripts.task_script is task_script
    # seed form: a subclass of build_default_task_config(...) is a RunScriptConfig
    assert issubclass(build_default_task_config("x"), RunScriptConfig)


@pytest.mark.parametrize("conf", ["screening_example", "gold_example"])
def test_quality_checks_example_runs_to_completion(tmp_path: Path, conf: str) -> None:
    """The screening and gold example, run as written: workers who rate the plain
    sentences right complete every real unit."""
    import asyncio

    from mephisto.db import MephistoDB
    from mephisto.testing.scripts import running_script
    from mephisto.testing.worker import run_simulated_workers

    known = {"I love this wonderful, sunny day!": "5",
             "This is the best day of my whole life!": "5",
             "Everything went wrong and I am miserable.": "1",
             "The meeting is at three o'clock.": "3"}

    def answer(worker: Any) -> dict[str, str]:
        return {"rating": known.get(worker.init_data["text"], "4")}

    with running_script(EXAMPLE_DIR / "run_task_with_quality_checks.py", f"conf={conf}",
                        cwd=tmp_path) as script:
        assert script.url is not None
        stats = asyncio.run(run_simulated_workers(script.url, 2, answer_fn=answer))
        assert stats.errors == []
        assert script.wait() == 0, script.output
    db = MephistoDB()
    (run,) = db.find_task_runs()
    units = db.find_units(task_run_id=run.db_id)
    assert sorted(u.get_status() for u in units if u.unit_index >= 0) == ["completed"] * 6
    checks = [u for u in units if u.unit_index < 0]
    assert len(checks) >= 2 and all(u.get_status() == "completed" for u in checks)
    db.shutdown()
