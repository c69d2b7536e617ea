"""The config file (`config_handler`) and the folders derived from it (`dirs`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mephisto.errors import ConfigError
from mephisto.operations import config_handler as public_config_handler
from mephisto.utils import config_handler, dirs
from mephisto.utils.config_handler import (
    CORE_SECTION,
    DATA_STORAGE_KEY,
    DATABASE_URL_KEY,
    add_config_arg,
    get_config,
    get_config_arg,
    init_config,
    write_config,
)

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "home"
    monkeypatch.setenv("MEPHISTO_HOME", str(path))
    return path


def test_constants_keep_mephisto_names() -> None:
    assert CORE_SECTION == "core"
    assert DATA_STORAGE_KEY == "main_data_directory"
    assert DATABASE_URL_KEY == "database_url"


def test_public_path_reexports_the_same_functions() -> None:
    for name in (
        "get_config",
        "write_config",
        "init_config",
        "add_config_arg",
        "get_config_arg",
        "CORE_SECTION",
        "DATA_STORAGE_KEY",
        "DATABASE_URL_KEY",
    ):
        assert getattr(public_config_handler, name) is getattr(config_handler, name)


def test_home_comes_from_env(home: Path) -> None:
    assert dirs.get_mephisto_home() == home
    assert dirs.get_config_path() == home / "config.yml"


def test_home_defaults_to_dot_mephisto(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEPHISTO_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert dirs.get_mephisto_home() == tmp_path / ".mephisto"
    assert dirs.get_config_path() == tmp_path / ".mephisto" / "config.yml"


def test_missing_file_is_empty_config(home: Path) -> None:
    assert get_config() == {}
    assert get_config_arg("core", "anything") is None
    assert get_config_arg("core", "anything", default=7) == 7
    assert not home.exists()


def test_write_then_read_round_trip(home: Path) -> None:
    config = {"core": {"main_data_directory": "/x/y", "n": 3}, "mturk": {"sandbox": True}}
    write_config(config)
    assert (home / "config.yml").is_file()
    assert get_config() == config
    assert yaml.safe_load((home / "config.yml").read_text()) == config


def test_add_config_arg_keeps_other_values(home: Path) -> None:
    write_config({"core": {"a": 1}, "other": {"b": 2}})
    add_config_arg("core", "c", "three")
    add_config_arg("new_section", "d", [1, 2])
    assert get_config() == {
        "core": {"a": 1, "c": "three"},
        "other": {"b": 2},
        "new_section": {"d": [1, 2]},
    }
    assert get_config_arg("core", "c") == "three"
    assert get_config_arg("other", "missing", default="dflt") == "dflt"
    add_config_arg("core", "a", 10)
    assert get_config_arg("core", "a") == 10


def test_init_config_creates_empty_file_once(home: Path) -> None:
    init_config()
    assert (home / "config.yml").is_file()
    assert get_config() == {}
    add_config_arg("core", "k", "v")
    init_config()  # must not clobber an existing file
    assert get_config() == {"core": {"k": "v"}}


def test_empty_section_reads_as_no_keys(home: Path) -> None:
    home.mkdir()
    (home / "config.yml").write_text("core:\n")
    assert get_config_arg("core", "k", default="d") == "d"
    add_config_arg("core", "k", "v")
    assert get_config() == {"core": {"k": "v"}}


def test_broken_yaml_names_the_file(home: Path) -> None:
    home.mkdir()
    path = home / "config.yml"
    path.write_text("core: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        get_config()
    assert str(path) in str(info.value)


def test_non_mapping_top_level_names_the_file(home: Path) -> None:
    home.mkdir()
    path = home / "config.yml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping") as info:
        get_config_arg("core", "x")
    assert str(path) in str(info.value)


def test_non_mapping_section_names_file_and_key(home: Path) -> None:
    home.mkdir()
    path = home / "config.yml"
    path.write_text("core: 5\n")
    with pytest.raises(ConfigError) as info:
        get_config()
    assert str(path) in str(info.value)
    assert info.value.key == "core"


def test_write_is_atomic_and_leaves_no_temp_files(home: Path) -> None:
    write_config({"core": {"a": 1}})
    for i in range(5):
        add_config_arg("core", f"k{i}", i)
    assert sorted(p.name for p in home.iterdir()) == ["config.yml"]


def test_failed_write_keeps_old_file_and_no_temp_files(home: Path) -> None:
    write_config({"core": {"a": 1}})
    with pytest.raises(ConfigError):
        write_config({"core": {"bad": object()}})
    assert get_config() == {"core": {"a": 1}}
    assert sorted(p.name for p in home.iterdir()) == ["config.yml"]


def test_write_uses_replace(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        calls.append((str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    write_config({"core": {"a": 1}})
    assert len(calls) == 1
    src, dst = calls[0]
    assert dst == str(home / "config.yml")
    assert Path(src).parent == home and src != dst


# --- data directory ---------------------------------------------------------------


def test_data_dir_env_wins(tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_dir = tmp_path / "from_env"
    monkeypatch.setenv("MEPHISTO_DATA_DIR", str(env_dir))
    add_config_arg(CORE_SECTION, DATA_STORAGE_KEY, str(tmp_path / "from_config"))
    assert dirs.get_data_dir() == env_dir
    assert env_dir.is_dir()
    assert not (tmp_path / "from_config").exists()


def test_data_dir_config_next(tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEPHISTO_DATA_DIR")
    add_config_arg(CORE_SECTION, DATA_STORAGE_KEY, str(tmp_path / "from_config"))
    assert dirs.get_data_dir() == tmp_path / "from_config"
    assert (tmp_path / "from_config").is_dir()


def test_data_dir_default_under_home(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEPHISTO_DATA_DIR")
    assert not home.exists()
    assert dirs.get_data_dir() == home / "data"
    assert (home / "data").is_dir()
    assert dirs.get_root_data_dir() == home / "data"


def test_db_path_and_run_dir(tmp_path: Path) -> None:
    data = tmp_path / "mephisto_data"  # set by the autouse fixture in conftest
    assert dirs.get_data_dir() == data
    assert dirs.get_db_path() == data / "database.db"
    assert dirs.get_run_dir("17") == data / "runs" / "17"
    assert dirs.get_run_dir(17) == data / "runs" / "17"


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "../x", "a\\b"])
def test_run_dir_rejects_escaping_ids(bad: str) -> None:
    with pytest.raises(ValueError):
        dirs.get_run_dir(bad)


# --- database URL -----------------------------------------------------------------


def test_database_url_env_wins(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    add_config_arg(CORE_SECTION, DATABASE_URL_KEY, "postgresql+psycopg://cfg/db")
    monkeypatch.setenv("MEPHISTO_DATABASE_URL", "postgresql+psycopg://env/db")
    assert dirs.get_database_url() == "postgresql+psycopg://env/db"


def test_database_url_config_next(home: Path) -> None:
    add_config_arg(CORE_SECTION, DATABASE_URL_KEY, "postgresql+psycopg://cfg/db")
    assert dirs.get_database_url() == "postgresql+psycopg://cfg/db"


def test_database_url_default_is_sqlite_file(home: Path) -> None:
    url = dirs.get_database_url()
    assert url == f"sqlite:///{dirs.get_db_path().as_posix()}"
    assert url.startswith("sqlite:////")  # an absolute path


def test_settings_are_read_per_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEPHISTO_DATA_DIR", str(tmp_path / "one"))
    assert dirs.get_data_dir() == tmp_path / "one"
    monkeypatch.setenv("MEPHISTO_DATA_DIR", str(tmp_path / "two"))
    assert dirs.get_data_dir() == tmp_path / "two"


# --- importing does no I/O --------------------------------------------------------


def test_import_creates_no_files(tmp_path: Path) -> None:
    fake_home = tmp_path / "home"
    mephisto_home = tmp_path / "mephisto_home"
    fake_home.mkdir()
    mephisto_home.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("MEPHISTO_") and key != "PYTHONPATH"
    }
    env.update(
        HOME=str(fake_home),
        MEPHISTO_HOME=str(mephisto_home),
        PYTHONPATH=str(REPO_ROOT),
        PYTHONDONTWRITEBYTECODE="1",
    )
    result = subprocess.run(
        [sys.executable, "-c", "import mephisto, mephisto.operations.config_handler"],
        check=False,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert list(fake_home.iterdir()) == []
    assert list(mephisto_home.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "mephisto_home"]
