"""`mephisto config`, `wut` and `metrics` through click's CliRunner.

conftest points MEPHISTO_HOME and MEPHISTO_DATA_DIR at the test's tmp_path, so the
config file written here is never the user's. Metrics are read from a real run served
on a free port of 127.0.0.1 (the `launch_static_run` fixture) and worked by simulated
workers over real sockets.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_helpers import flat, rows, wide  # noqa: F401  (wide: an autouse fixture)
from click.testing import CliRunner, Result
from prometheus_client.parser import text_string_to_metric_families

import mephisto.cli as cli_module
from mephisto.abstractions.architect import Architect, ArchitectArgs
from mephisto.abstractions.blueprints.static_task import StaticHTMLBlueprintArgs
from mephisto.cli import cli
from mephisto.data_model.task_run import TaskRunArgs
from mephisto.operations import registry
from mephisto.operations.live_record import read_live_record, record_path, write_live_record
from mephisto.tools.run_metrics import histogram_quantile
from mephisto.utils import config_handler


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


# -- config ------------------------------------------------------------------------------


def test_config_never_touches_the_real_home(tmp_path: Path) -> None:
    assert config_handler.get_config_path().is_relative_to(tmp_path)
    assert not config_handler.get_config_path().is_relative_to(Path.home() / ".mephisto")


def test_config_shows_each_setting_and_where_it_comes_from(tmp_path: Path) -> None:
    result = run("config")
    assert result.exit_code == 0, result.output
    table = rows(result.output)
    assert table["home"][:2] == [str(tmp_path / "mephisto_home"), "env MEPHISTO_HOME"]
    assert table["config file"][0] == str(tmp_path / "mephisto_home" / "config.yml")
    assert table["config file"][2] == "not created yet"
    assert table["core.main_data_directory"][:2] == [str(tmp_path / "mephisto_data"),
                                                     "env MEPHISTO_DATA_DIR"]
    db_path = tmp_path / "mephisto_data" / "database.db"
    assert table["core.database_url"][:2] == [f"sqlite:///{db_path}", "default"]
    assert table["MEPHISTO_DATABASE_URL"][0] == "not set"
    assert not (tmp_path / "mephisto_home").exists()  # showing creates nothing


def test_config_sets_a_value_and_never_shows_its_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "postgresql://me:s3cr3t-pw@db.example.org/study"
    result = run("config", "core.database_url", url)
    assert result.exit_code == 0, result.output
    written = yaml.safe_load((tmp_path / "mephisto_home" / "config.yml").read_text())
    assert written == {"core": {"database_url": url}}
    shown = run("config")
    assert rows(shown.output)["core.database_url"][:2] == [
        "postgresql://me:***@db.example.org/study", "config file"]
    read = run("config", "core.database_url")
    assert read.exit_code == 0 and read.output.strip() == "postgresql://me:***@db.example.org/study"
    assert "s3cr3t" not in shown.output + read.output + result.output

    # an environment variable overrides the file: said when setting, shown with both
    monkeypatch.setenv("MEPHISTO_DATABASE_URL", "postgresql://env:envpw@other/db")
    again = run("config", "core.database_url", url)
    assert again.exit_code == 0
    assert "MEPHISTO_DATABASE_URL is set in the environment and overrides it" in flat(again)
    row = rows(run("config").output)["core.database_url"]
    assert row[:2] == ["postgresql://env:***@other/db", "env MEPHISTO_DATABASE_URL"]
    assert "overrides the config file's postgresql://me:***@db.example.org/study" in row[2]


def test_config_data_directory_is_stored_absolute_and_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mephisto.utils.dirs import get_data_dir

    monkeypatch.delenv("MEPHISTO_DATA_DIR")
    monkeypatch.chdir(tmp_path)
    result = run("config", "core.main_data_directory", "studies/data")
    assert result.exit_code == 0, result.output
    assert config_handler.get_config_arg("core", "main_data_directory") == \
        str(tmp_path / "studies" / "data")
    monkeypatch.chdir("/")
    assert get_data_dir() == tmp_path / "studies" / "data"
    assert rows(run("config").output)["core.main_data_directory"][1] == "config file"


def test_config_unset_brings_the_default_back(tmp_path: Path) -> None:
    assert run("config", "core.database_url", "sqlite:////tmp/x.db").exit_code == 0
    config_handler.add_config_arg("mephisto", "legacy_key", "kept")  # Mephisto's own
    result = run("config", "core.database_url", "--unset")
    assert result.exit_code == 0, result.output
    assert "in effect: sqlite:///" in flat(result) and "(default)" in flat(result)
    assert config_handler.get_config() == {"mephisto": {"legacy_key": "kept"}}
    table = rows(run("config").output)
    assert table["mephisto.legacy_key"][:3] == ["kept", "config file", "not read by this version"]


@pytest.mark.parametrize(("args", "message"), [
    (["core.nope", "1"], ("unknown setting 'core.nope'; known settings: "
                          "core.main_data_directory, core.database_url")),
    (["database_url", "x"], "'database_url' is not of the form <section>.<key>"),
    (["core.database_url.x", "x"], "is not of the form <section>.<key>"),
    (["core.database_url", "mysql://me@db/x"], "unsupported database 'mysql'"),
    (["core.database_url", "sqlite://"], "an in-memory SQLite database cannot be shared"),
    (["core.database_url", "not a url"], "not a database URL"),
    (["core.main_data_directory", " "], "core.main_data_directory needs a folder path"),
    (["core.nope", "--unset"], "unknown setting 'core.nope'"),
    (["--unset"], "--unset needs the setting to remove"),
])
def test_config_refuses_bad_keys_and_values_and_writes_nothing(
    tmp_path: Path, args: list[str], message: str
) -> None:
    config_handler.add_config_arg("core", "database_url", "sqlite:////tmp/before.db")
    path = config_handler.get_config_path()
    before = path.read_bytes()
    result = run("config", *args)
    assert result.exit_code == 2, result.output
    assert "Config error:" in result.output and message in flat(result)
    assert "Traceback" not in result.output
    assert path.read_bytes() == before


def test_config_refuses_a_data_directory_that_is_a_file(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    result = run("config", "core.main_data_directory", str(a_file))
    assert result.exit_code == 2
    assert "exists and is not a folder" in flat(result)
    assert not config_handler.get_config_path().exists()


# -- wut -----------------------------------------------------------------------------------


def test_wut_lists_the_kinds_with_their_registered_types() -> None:
    result = run("wut")
    assert result.exit_code == 0, result.output
    table = rows(result.output)
    for kind in ("blueprint", "architect", "provider"):
        listed = table[kind][1].split(", ")
        assert listed == registry.valid_plugin_types(kind)  # type: ignore[arg-type]
    assert "task" in table
    kind_only = run("wut", "provider")
    assert kind_only.exit_code == 0
    assert set(registry.get_valid_provider_types()) <= set(rows(kind_only.output))


def _arg_names(output: str, title: str) -> list[str]:
    """The first column of the table whose title line contains `title`."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if title in line)
    names = []
    for line in lines[start + 1:]:
        if line.startswith("└"):
            break
        if line.startswith("│"):
            names.append(line.strip("│").split("│")[0].strip())
    return names


def test_wut_describes_a_blueprint_from_its_args_class() -> None:
    result = run("wut", "blueprint=static_task")
    assert result.exit_code == 0, result.output
    expected = [f.name for f in dataclasses.fields(StaticHTMLBlueprintArgs)
                if not f.name.startswith("_")]
    assert _arg_names(result.output, "arguments (set as mephisto.blueprint.NAME") == expected
    table = rows(result.output)
    assert table["task_source"][:3] == ["str", "", "yes"]
    assert table["task_source"][3] == "Path to the task's HTML file."
    assert table["units_per_assignment"][:3] == ["int", "1", "no"]
    assert "SharedStaticTaskState fields" in result.output
    assert table["static_task_data"][:3] == ["Iterable[Any]", "[]", "no"]


def test_wut_task_lists_the_task_run_arguments() -> None:
    result = run("wut", "task")
    assert result.exit_code == 0, result.output
    expected = [f.name for f in dataclasses.fields(TaskRunArgs)]
    assert _arg_names(result.output, "mephisto.task arguments") == expected
    table = rows(result.output)
    assert table["task_reward"][:3] == ["float", "", "yes"]
    assert table["budget"][:3] == ["float | None", "None", "no"]
    assert table["submission_timeout"][:3] == ["int", "600", "no"]
    only = run("wut", "task", "budget", "task_reward")
    assert only.exit_code == 0
    assert _arg_names(only.output, "mephisto.task arguments") == ["task_reward", "budget"]


def test_wut_reads_a_plugin_registered_at_run_time(monkeypatch: pytest.MonkeyPatch) -> None:
    @dataclasses.dataclass
    class CloudArgs(ArchitectArgs):
        _architect_type: str = "cloud"
        region: str = dataclasses.field(default="eu-west-1",
                                        metadata={"help": "Where to run the server."})
        api_token: str = dataclasses.field(default="???", metadata={"help": "Your token."})

    class CloudArchitect(Architect):
        """Serves the task from a cloud machine."""

        ARCHITECT_TYPE = "cloud"
        ArgsClass = CloudArgs

    monkeypatch.setitem(registry._registered["architect"], "cloud", CloudArchitect)
    result = run("wut", "architect=cloud")
    assert result.exit_code == 0, result.output
    assert "Serves the task from a cloud machine." in result.output
    table = rows(result.output)
    assert table["region"] == ["str", "'eu-west-1'", "no", "Where to run the server."]
    assert table["api_token"] == ["str", "", "yes", "Your token."]
    assert "cloud" in rows(run("wut").output)["architect"][1]


@pytest.mark.parametrize(("args", "message"), [
    # (other tests may register more blueprint types in this process)
    (["blueprint=nope"], "Unknown blueprint type 'nope'. Valid blueprint types: "),
    (["provider="], ("name the provider type: mephisto wut provider=<type>; valid provider "
                     "types: inhouse, mock")),
    (["gadget=x"], "unknown kind 'gadget'; valid kinds: blueprint, architect, provider, task"),
    (["requester=mturk"], "a requester's arguments are its provider's credentials"),
    (["task=x"], "`task` has no types"),
    (["architect=local", "nosuch"], ("architect 'local' has no argument 'nosuch'; its "
                                     "arguments: bind_host, hostname, port")),
])
def test_wut_explains_what_is_unknown(args: list[str], message: str) -> None:
    result = run("wut", *args)
    assert result.exit_code == 2, result.output
    assert "Config error:" in result.output and message in flat(result)


# -- metrics -----------------------------------------------------------------------------


def _scraped_counts(url: str, token: str, run_id: str) -> dict[str, float]:
    """Counts summed over a run's series, read with prometheus_client's own parser."""
    request = urllib.request.Request(url + "metrics", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        text = response.read().decode()
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("task_run_id") == run_id:
                sums[s.name] = sums.get(s.name, 0.0) + s.value
    return sums


def _answer(worker: Any) -> dict[str, str]:
    return {"answer": "fine"}


def test_metrics_shows_the_figures_of_a_live_run(launch_static_run: Any) -> None:
    launched = launch_static_run([{"text": f"s{i}"} for i in range(6)])
    rid = launched.task_run_id
    record = read_live_record(rid)
    assert record is not None and record.url == launched.url and record.pid == os.getpid()
    stats = launched.simulate(3, units_per_worker=1, answer_fn=_answer)
    assert stats.units_completed == 3 and stats.errors == []

    result = run("metrics")
    assert result.exit_code == 0, result.output
    assert f"run {rid} (test-task)" in result.output
    figures = {name: cells[0] for name, cells in rows(result.output).items()}
    assert figures["units"] == "3 launched, 3 completed"
    assert figures["active agents"] == "0" and figures["errors"] == "0"
    assert figures["submits"] == "3"
    counts = _scraped_counts(launched.url, launched.live.metrics_token, rid)
    assert int(figures["requests"]) == counts["mephisto_request_seconds_count"] >= 9
    req50, req95 = map(float, figures["request ms p50 / p95"].split(" / "))
    assert 0 < req50 <= req95 <= 5000
    c50, c95 = map(float, figures["submit commit ms p50 / p95"].split(" / "))
    assert 0 < c50 <= c95 <= 5000
    assert float(figures["submits/s"]) > 0 and float(figures["requests/s"]) > 0
    only = run("metrics", "--run", rid)
    assert only.exit_code == 0 and rows(only.output)["submits"] == ["3"]

    # a second run of the same operator: one column each, each with its own figures
    other = launch_static_run([{"text": "a"}, {"text": "b"}], task_name="other-task")
    other.simulate(1, units_per_worker=1, answer_fn=_answer, worker_prefix="other")
    both = run("metrics")
    assert both.exit_code == 0, both.output
    assert f"run {other.task_run_id} (other-task)" in both.output
    table = rows(both.output)
    assert table["submits"] == ["3", "1"]
    assert table["units"] == ["3 launched, 3 completed", "1 launched, 1 completed"]


def test_metrics_over_an_interval_count_what_happened_in_it(
    launch_static_run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    launched = launch_static_run([{"text": f"s{i}"} for i in range(5)])
    launched.simulate(1, units_per_worker=1, answer_fn=_answer)  # before the interval

    def work_during_the_interval(seconds: float, what: str) -> None:
        stats = launched.simulate(2, units_per_worker=1, answer_fn=_answer,
                                  worker_prefix="during")
        assert stats.units_completed == 2

    monkeypatch.setattr(cli_module, "_wait", work_during_the_interval)
    result = run("metrics", "--run", launched.task_run_id, "--interval", "0.5")
    assert result.exit_code == 0, result.output
    assert "rates and latencies over 0.5 s" in result.output
    figures = {name: cells[0] for name, cells in rows(result.output).items()}
    assert figures["units"] == "2 launched, 3 completed"  # as of now
    assert figures["submits"] == "2"  # in the interval, not the 3 since the start
    assert float(figures["submits/s"]) > 0


def test_metrics_reports_runs_that_are_not_live(
    launch_static_run: Any, tmp_path: Path
) -> None:
    launched = launch_static_run([{"text": "only"}])
    rid = launched.task_run_id
    assert record_path(rid).exists()
    launched.operator.shutdown()
    assert not record_path(rid).exists()  # removed when the run stops being served
    stopped = run("metrics", "--run", rid)
    assert stopped.exit_code == 1
    assert f"task run {rid}: not live: not served by an operator on this machine" \
        in flat(stopped)
    assert "Traceback" not in stopped.output
    assert run("metrics").output.startswith("No live runs")

    # a record left by an operator that died: its process is gone
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    token_file = tmp_path / "token"
    token_file.write_text("t\n")
    write_live_record("77", "crashed-task", "http://127.0.0.1:9/", token_file, "sqlite:///x")
    data = json.loads(record_path("77").read_text())
    data["pid"] = int(dead.stdout)
    record_path("77").write_text(json.dumps(data))
    gone = run("metrics")
    assert gone.exit_code == 0  # listing every run: a report, not a failure
    assert f"its operator (process {int(dead.stdout)}) is gone" in flat(gone)

    # a record whose process lives (this one) but whose server is not there
    write_live_record("78", "no-server", "http://127.0.0.1:9/", token_file, "sqlite:///x")
    absent = run("metrics", "--run", "78", "--run", "no/such")
    assert absent.exit_code == 1
    assert "task run 78: not live: nothing answers at http://127.0.0.1:9/metrics" in flat(absent)
    assert "task run no/such: not live" in flat(absent)


def test_metrics_refuses_a_wrong_token(launch_static_run: Any, tmp_path: Path) -> None:
    launched = launch_static_run([{"text": "x"}])
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-token\n")
    write_live_record(launched.task_run_id, "test-task", launched.url, wrong, "sqlite:///x")
    result = run("metrics", "--run", launched.task_run_id)
    assert result.exit_code == 1
    assert "its server refused the metrics token" in flat(result)


def test_metrics_explains_that_mephistos_grafana_commands_do_not_apply() -> None:
    for action in ("install", "view", "cleanup"):
        result = run("metrics", action)
        assert result.exit_code == 2
        assert f"`mephisto metrics {action}` is Mephisto's Grafana/Prometheus setup" in flat(result)
    assert "Grafana" in flat(run("metrics", "--help"))
    bad = run("metrics", "--interval", "-1")
    assert bad.exit_code == 2 and "--interval is seconds between 0 and 3600" in flat(bad)


def test_histogram_quantile_interpolates_within_a_bucket() -> None:
    inf = float("inf")
    buckets = {0.1: 50.0, 0.2: 100.0, 0.5: 100.0, inf: 100.0}
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.75, buckets) == pytest.approx(0.15)
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.05)
    assert histogram_quantile(0.95, {0.1: 0.0, 1.0: 10.0, inf: 20.0}) == 1.0  # in +Inf
    assert histogram_quantile(0.5, {0.1: 0.0, inf: 0.0}) is None
    assert histogram_quantile(0.5, {}) is None
