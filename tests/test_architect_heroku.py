"""The `heroku` architect against a stateful fake of Heroku's Platform API (respx,
tests/heroku_fake.py): the contract suite, what it sends (the tarball, the config vars),
a refused key, a failed build, a taken name, and where the API key comes from. The
fake's dyno is a real `mephisto router` started with the secret the config vars carry."""

from __future__ import annotations

import io
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from heroku_fake import GOOD_KEY, FakeHeroku, fake_heroku

from mephisto.abstractions.architects.heroku import api_key, router_source_tarball
from mephisto.abstractions.architects.provisioned import ledgers
from mephisto.errors import ConfigError, ProviderError
from mephisto.testing.architect_contract import ArchitectContract, ArchitectHarness

pytest.importorskip("respx")


class HerokuHarness(ArchitectHarness):
    remote = True
    provisions = True

    def __init__(self, fake: FakeHeroku) -> None:
        self.fake = fake

    def architect_config(self, **extra: Any) -> dict[str, Any]:
        return {"_architect_type": "heroku", "connect_timeout": 20, **extra}

    def broken_configs(self) -> list[dict[str, Any]]:
        return [self.architect_config(app_name="Not_A_Heroku_Name"),
                self.architect_config(app_name="ab"),
                self.architect_config(build_timeout="soon"),
                self.architect_config(token_ttl="forever")]

    def provisioned(self) -> list[str]:
        return sorted(self.fake.apps)


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHeroku]:
    from mephisto.abstractions.architects.heroku import HerokuArchitect

    monkeypatch.setenv("HEROKU_API_KEY", GOOD_KEY)
    monkeypatch.setattr(HerokuArchitect, "poll_interval", 0.01)
    with fake_heroku(tmp_path) as stub:
        yield stub
    assert stub.unknown == []


class TestHerokuArchitect(ArchitectContract):
    @pytest.fixture
    def harness(self, fake: FakeHeroku) -> ArchitectHarness:
        return HerokuHarness(fake)


def _launch(operator: Any, task_html: Path, **arch: Any) -> Any:
    from mephisto.abstractions.blueprints.static_task import SharedStaticTaskState
    from mephisto.testing.fixtures import static_run_config

    config = static_run_config(task_html)
    config["architect"] = {"_architect_type": "heroku", "connect_timeout": 20, **arch}
    state = SharedStaticTaskState(static_task_data=[{"text": "a"}])
    return operator._runs[operator.launch_task_run(config, state)]


def test_the_router_is_built_from_an_uploaded_tarball(
        operator: Any, fake: FakeHeroku, task_html: Path, tmp_path: Path) -> None:
    live = _launch(operator, task_html, app_name="router-app", region="eu")
    assert live.url == fake.routers["router-app"].url
    assert fake.routers["router-app"].status()["operator"] is True
    assert [c for c in fake.calls if "/builds/" not in c[1]] == [
        ("POST", "/apps"), ("PATCH", "/apps/router-app/config-vars"), ("POST", "/sources"),
        ("POST", "/apps/router-app/builds"), ("GET", "/apps/router-app")]
    assert fake.apps["router-app"]["region"] == {"name": "eu"}
    secret = fake.config_vars["router-app"]["MEPHISTO_ROUTER_SECRET"]
    assert list(fake.config_vars["router-app"]) == ["MEPHISTO_ROUTER_SECRET"]
    names = fake.tarball_names()
    for needed in ("Procfile", "pyproject.toml", "requirements.txt", ".python-version",
                   "mephisto/__init__.py", "mephisto/cli.py", "mephisto/router/app.py"):
        assert needed in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert fake.tarball_text("Procfile") == "web: mephisto router --port $PORT\n"
    assert "starlette" in fake.tarball_text("pyproject.toml")
    # the secret and the key are nowhere on disk
    ledger = live.architect.ledger
    assert ledger.path.stat().st_mode & 0o777 == 0o600
    for path in [*ledger.path.parent.parent.rglob("*"), tmp_path / "mephisto.db"]:
        if path.is_file():
            content = path.read_bytes()
            assert secret.encode() not in content and GOOD_KEY.encode() not in content, path
    operator.shutdown()
    assert fake.apps == {} and fake.deleted == ["router-app"]


def test_a_refused_api_key_names_the_variable_and_leaves_nothing(
        operator: Any, fake: FakeHeroku, task_html: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEROKU_API_KEY", "expired-key")
    with pytest.raises(ConfigError) as info:
        _launch(operator, task_html)
    assert "HEROKU_API_KEY" in str(info.value) and "401" in str(info.value)
    assert "expired-key" not in str(info.value)
    assert fake.apps == {} and ledgers() == []


def test_a_failed_build_deletes_the_app(operator: Any, fake: FakeHeroku,
                                        task_html: Path) -> None:
    fake.fail_builds = True
    with pytest.raises(ProviderError) as info:
        _launch(operator, task_html, app_name="doomed-app")
    assert "build" in str(info.value) and "failed" in str(info.value)
    assert "https://build-output.heroku.com/streams/" in str(info.value)
    assert fake.apps == {} and fake.deleted == ["doomed-app"] and ledgers() == []


def test_a_build_that_never_ends_times_out_and_deletes_the_app(
        operator: Any, fake: FakeHeroku, task_html: Path) -> None:
    fake.builds_hang = True
    with pytest.raises(ProviderError) as info:
        _launch(operator, task_html, app_name="slow-app", build_timeout=0.2)
    assert "still pending" in str(info.value) and "build_timeout" in str(info.value)
    assert info.value.retryable
    assert fake.apps == {} and fake.deleted == ["slow-app"] and ledgers() == []


def test_a_taken_name_deletes_nobody_elses_app(operator: Any, fake: FakeHeroku,
                                               task_html: Path) -> None:
    fake.apps["taken-name"] = {"id": "someone-else", "name": "taken-name", "web_url": "x"}
    with pytest.raises(ProviderError) as info:
        _launch(operator, task_html, app_name="taken-name")
    assert "Name is already taken" in str(info.value)
    assert list(fake.apps) == ["taken-name"] and fake.deleted == [] and ledgers() == []


def test_the_api_key_comes_from_the_environment_or_netrc(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("HEROKU_API_KEY", raising=False)
    monkeypatch.delenv("NETRC", raising=False)
    with pytest.raises(ConfigError) as info:
        api_key()
    assert "HEROKU_API_KEY" in str(info.value) and "heroku login" in str(info.value)
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine api.heroku.com\n  login me@example.org\n  password from-netrc\n")
    netrc.chmod(0o600)
    assert api_key() == "from-netrc"
    monkeypatch.setenv("HEROKU_API_KEY", "from-env")
    assert api_key() == "from-env"


def test_no_api_key_is_a_config_error_before_anything_is_made(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, task_html: Path) -> None:
    from mephisto.operations.hydra_config import resolve_run_config
    from mephisto.testing.fixtures import static_run_config

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("HEROKU_API_KEY", raising=False)
    config = static_run_config(task_html)
    config["architect"] = {"_architect_type": "heroku"}
    with pytest.raises(ConfigError) as info:
        resolve_run_config(config)
    assert "HEROKU_API_KEY" in str(info.value)


def test_without_httpx_the_error_names_the_install_command(
        monkeypatch: pytest.MonkeyPatch, task_html: Path) -> None:
    from mephisto.operations.hydra_config import resolve_run_config
    from mephisto.testing.fixtures import static_run_config

    monkeypatch.setenv("HEROKU_API_KEY", GOOD_KEY)
    monkeypatch.setitem(sys.modules, "httpx", None)
    config = static_run_config(task_html)
    config["architect"] = {"_architect_type": "heroku"}
    with pytest.raises(ConfigError) as info:
        resolve_run_config(config)
    assert "pip install 'mephisto[heroku]'" in str(info.value)


def test_the_tarball_is_the_same_for_the_same_sources() -> None:
    first = router_source_tarball()
    assert first == router_source_tarball()
    with tarfile.open(fileobj=io.BytesIO(first), mode="r:gz") as tar:
        assert all(m.mtime == 0 and m.uid == 0 for m in tar.getmembers())


LIVE_BATCH_YAML = """\
#@package _global_
defaults:
  - /mephisto/blueprint: static_task
  - /mephisto/architect: heroku
  - /mephisto/provider: mturk
mephisto:
  blueprint:
    task_source: ${task_dir}/task.html
  task:
    task_name: react-static-task-example
    task_title: "Rate a sentence"
    task_description: "Read it and rate it."
    task_reward: 0.25
    task_tags: "rating"
    max_num_concurrent_units: 100
num_tasks: 2000
"""


def test_a_live_batch_config_with_the_heroku_architect_composes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The seed's `live_batch_1.yaml` (`- /mephisto/architect: heroku`) composes, and the
    architect's section has its defaults and the command line's overrides."""
    from mephisto.operations.hydra_config import (
        build_default_task_config,
        compose_run_config,
        resolve_run_config,
    )

    monkeypatch.setenv("HEROKU_API_KEY", GOOD_KEY)
    conf = tmp_path / "hydra_configs" / "conf"
    conf.mkdir(parents=True)
    (conf / "live_batch_1.yaml").write_text(LIVE_BATCH_YAML)
    (tmp_path / "task.html").write_text("<p>${text}</p>")
    cfg = compose_run_config(build_default_task_config("live_batch_1"),
                             tmp_path / "hydra_configs",
                             ["mephisto.architect.app_name=my-task-router",
                              "mephisto/provider=mock"], task_dir=tmp_path)
    architect = cfg.mephisto.architect
    assert architect._architect_type == "heroku"
    assert (architect.app_name, architect.region, architect.token_ttl) == (
        "my-task-router", "us", "7d")
    assert cfg.num_tasks == 2000
    as_written = compose_run_config(build_default_task_config("live_batch_1"),
                                    tmp_path / "hydra_configs", [], task_dir=tmp_path)
    assert as_written.mephisto.architect._architect_type == "heroku"
    assert as_written.mephisto.provider._provider_type == "mturk"
    resolved = resolve_run_config(cfg.mephisto)
    assert resolved.architect.ARCHITECT_TYPE == "heroku"  # type: ignore[attr-defined]


def test_mephisto_architect_cleanup_deletes_what_a_crash_left(
        operator: Any, fake: FakeHeroku, task_html: Path) -> None:
    from click.testing import CliRunner

    from mephisto.cli import cli

    live = _launch(operator, task_html, app_name="crashed-app")
    runner = CliRunner()
    # while its process lives, the run's app is left alone
    result = runner.invoke(cli, ["architect", "cleanup", "--type", "heroku"])
    assert result.exit_code == 0, result.output
    assert "in use by a live run" in result.output and list(fake.apps) == ["crashed-app"]
    ledger = live.architect.ledger
    live.architect.ledger = None  # the operator dies without tearing down
    ledger.data["pid"] = 0
    ledger._write()
    operator.shutdown()
    result = runner.invoke(cli, ["architect", "cleanup"])
    assert result.exit_code == 0, result.output
    assert "deleted heroku:crashed-app" in result.output
    assert fake.apps == {} and ledgers() == []
    result = runner.invoke(cli, ["architect", "cleanup"])
    assert "nothing to clean up" in result.output
