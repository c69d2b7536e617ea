"""The `static_react_task` blueprint: its page, the files it serves, its checks.

These tests use a hand-written bundle (no npm); the example's real build, its run
scripts and real Chromium are in test_static_react_example.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from mephisto.abstractions.blueprints.static_react_task import StaticReactTaskBlueprint
from mephisto.abstractions.blueprints.static_task import (
    SharedStaticTaskState,
    StaticBlueprint,
    StaticTaskBlueprint,
)
from mephisto.errors import ConfigError
from mephisto.operations import registry
from mephisto.testing.fixtures import LaunchedRun, static_run_config
from mephisto.testing.worker import SimulatedWorker, complete_unit

BUNDLE_V1 = "document.getElementById('app').textContent = 'version one';\n"
BUNDLE_V2 = "document.getElementById('app').textContent = 'version two, rebuilt';\n"


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    path = tmp_path / "webapp" / "build" / "bundle.js"
    path.parent.mkdir(parents=True)
    path.write_text(BUNDLE_V1)
    return path


def react_config(bundle: Path, **task: Any) -> dict[str, Any]:
    return static_run_config(bundle, blueprint_type="static_react_task", **task)


def launch(operator: Any, bundle: Path, data: Any = None, **task: Any) -> LaunchedRun:
    state = SharedStaticTaskState(static_task_data=data or [{"text": "a sentence"}])
    return LaunchedRun(operator, operator.launch_task_run(react_config(bundle, **task), state))


def test_mephisto_import_path_and_registry() -> None:
    from mephisto.abstractions.blueprints.abstract.static_task import static_blueprint
    from mephisto.abstractions.blueprints.static_react_task.static_react_blueprint import (
        BLUEPRINT_TYPE_STATIC_REACT,
        StaticReactBlueprint,
        StaticReactBlueprintArgs,
    )

    assert BLUEPRINT_TYPE_STATIC_REACT == "static_react_task"
    assert registry.get_blueprint_from_type("static_react_task") is StaticReactBlueprint
    assert StaticReactBlueprint is StaticReactTaskBlueprint
    assert StaticReactBlueprint.ArgsClass is StaticReactBlueprintArgs
    # as in Mephisto, StaticBlueprint is the shared base of the static blueprints
    assert static_blueprint.StaticBlueprint is StaticBlueprint
    assert issubclass(StaticReactBlueprint, StaticBlueprint)
    assert issubclass(StaticTaskBlueprint, StaticBlueprint)
    assert OmegaConf.structured(StaticReactBlueprintArgs).link_task_source is False
    names = {f.name for f in dataclasses.fields(StaticReactBlueprintArgs)}
    assert names >= {"task_source", "link_task_source", "extra_source_dir",
                     "units_per_assignment", "data_json", "data_jsonl", "data_csv",
                     "onboarding_qualification", "block_qualification"}


def test_page_loads_the_shim_then_the_bundle_into_app(operator: Any, bundle: Path) -> None:
    run = launch(operator, bundle, task_title="Rate <this> & that")
    status, body = get(run.url)
    page = body.decode()
    assert status == 200
    assert '<div id="app"></div>' in page
    shim = page.index('<script src="/wrap_crowd_source.js"></script>')
    app = page.index('<script src="/bundle.js"></script>')
    assert page.index('<div id="app">') < shim < app
    assert "<title>Rate &lt;this&gt; &amp; that</title>" in page
    assert "static-task.js" not in page
    assert get(run.url + "bundle.js") == (200, BUNDLE_V1.encode())
    status, config = get(run.url + "task_config.json")
    assert json.loads(config)["task_title"] == "Rate <this> & that"


@pytest.mark.parametrize("linked", [False, True])
def test_bundle_is_fixed_at_launch_unless_linked(
    operator: Any, bundle: Path, linked: bool
) -> None:
    run = launch(operator, bundle, blueprint__link_task_source=linked)
    assert get(run.url + "bundle.js") == (200, BUNDLE_V1.encode())
    bundle.write_text(BUNDLE_V2)  # a rebuild while the run is live
    expected = BUNDLE_V2 if linked else BUNDLE_V1
    assert get(run.url + "bundle.js") == (200, expected.encode())
    assert get(run.url)[0] == 200
    bundle.unlink()  # mid-rebuild: the last good copy is still served
    assert get(run.url + "bundle.js") == (200, expected.encode())
    assert get(run.url + ".bundle.js.partial")[0] == 404


def test_extra_source_dir_is_served_and_its_index_html_is_the_page(
    operator: Any, bundle: Path, tmp_path: Path
) -> None:
    extra = tmp_path / "static"
    (extra / "img").mkdir(parents=True)
    (extra / "img" / "cat.txt").write_text("meow")
    (extra / "style.css").write_text("body { color: red }")
    (extra / "bundle.js").write_text("stale copy: the task_source wins")
    run = launch(operator, bundle, blueprint__extra_source_dir=str(extra))
    page = get(run.url)[1].decode()
    assert '<div id="app"></div>' in page  # no index.html: our page
    assert get(run.url + "img/cat.txt") == (200, b"meow")
    assert get(run.url + "style.css") == (200, b"body { color: red }")
    assert get(run.url + "bundle.js") == (200, BUNDLE_V1.encode())
    assert sorted(p.name for p in extra.rglob("*")) == ["bundle.js", "cat.txt", "img", "style.css"]

    custom = '<html><body><div id="app"></div><script src="wrap_crowd_source.js"></script>' \
             '<script src="bundle.js"></script></body></html>'
    (extra / "index.html").write_text(custom)
    run2 = launch(operator, bundle, blueprint__extra_source_dir=str(extra), task_name="other")
    assert get(run2.url)[1].decode() == custom  # Mephisto's override of the router's page


def test_missing_bundle_names_the_key_and_changes_nothing(
    operator: Any, tmp_path: Path, mephisto_db: Any
) -> None:
    missing = tmp_path / "webapp" / "build" / "bundle.js"
    with pytest.raises(ConfigError) as info:
        launch(operator, missing)
    assert info.value.key == "mephisto.blueprint.task_source"
    message = str(info.value)
    assert "mephisto.blueprint.task_source" in message and str(missing) in message
    assert "npm run build" in message and "build_custom_bundle" in message
    with pytest.raises(ConfigError, match="task_source is required") as info:
        launch(operator, Path("???"))
    assert info.value.key == "mephisto.blueprint.task_source"
    assert mephisto_db.find_task_runs() == [] and mephisto_db.find_tasks() == []


def test_bad_extra_source_dir_and_data_are_refused(
    operator: Any, bundle: Path, tmp_path: Path, mephisto_db: Any
) -> None:
    with pytest.raises(ConfigError) as info:
        launch(operator, bundle, blueprint__extra_source_dir=str(tmp_path / "nope"))
    assert info.value.key == "mephisto.blueprint.extra_source_dir"
    with pytest.raises(ConfigError) as info:
        operator.launch_task_run(react_config(bundle), SharedStaticTaskState())
    assert info.value.key == "mephisto.blueprint.data_json"
    missing = tmp_path / "missing.csv"
    with pytest.raises(ConfigError) as info:
        launch(operator, bundle, blueprint__data_csv=str(missing))
    assert info.value.key == "mephisto.blueprint.data_csv" and str(missing) in str(info.value)
    assert mephisto_db.find_task_runs() == [] and mephisto_db.find_tasks() == []


def test_link_task_source_needs_a_server_on_this_machine() -> None:
    state = SharedStaticTaskState(static_task_data=[{"text": "x"}])

    def args(architect: str) -> Any:
        return OmegaConf.create({
            "blueprint": {"_blueprint_type": "static_react_task", "task_source": __file__,
                          "link_task_source": True},
            "architect": {"_architect_type": architect},
            "task": {},
        })

    StaticReactTaskBlueprint.assert_task_args(args("local"), state)
    with pytest.raises(ConfigError) as info:
        StaticReactTaskBlueprint.assert_task_args(args("heroku"), state)
    assert info.value.key == "mephisto.blueprint.link_task_source"
    assert "'heroku'" in str(info.value)


@pytest.mark.parametrize("kind", ["data_json", "data_jsonl", "data_csv"])
def test_task_data_from_a_file(operator: Any, bundle: Path, tmp_path: Path, kind: str) -> None:
    rows = [{"text": "one"}, {"text": "two"}, {"text": "three"}]
    path = tmp_path / f"data.{kind.removeprefix('data_')}"
    if kind == "data_json":
        path.write_text(json.dumps(rows))
    elif kind == "data_jsonl":
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    else:
        path.write_text("text\n" + "\n".join(r["text"] for r in rows) + "\n")
    cfg = react_config(bundle, **{f"blueprint__{kind}": str(path)})
    run = LaunchedRun(operator, operator.launch_task_run(cfg, SharedStaticTaskState()))
    stats = run.simulate(workers=2, answer_fn=lambda w: {"rating": "good", "saw": w.init_data})
    assert stats.units_completed == 3, stats.errors
    assert run.wait(10)
    agents = operator.db.find_agents(task_run_id=run.task_run_id)
    assert sorted(a.state.get_data()["outputs"]["saw"]["text"] for a in agents) == [
        "one", "three", "two"]


def test_onboarding_is_rendered_by_the_bundle(operator: Any, bundle: Path, tmp_path: Path) -> None:
    """onboarding_qualification alone turns onboarding on; static_task still needs the
    HTML of its onboarding step."""
    seen: list[Any] = []

    def validate(data: Any) -> bool:
        seen.append(data)
        return data["outputs"] == {"answer": "bad"}

    state = SharedStaticTaskState(
        static_task_data=[{"text": "a"}, {"text": "b"}],
        onboarding_data={"question": "good or bad?"},
        validate_onboarding=validate,
    )
    cfg = react_config(bundle, blueprint__onboarding_qualification="react-onboarding")
    run = LaunchedRun(operator, operator.launch_task_run(cfg, state))

    async def work() -> tuple[Any, Any]:
        async with SimulatedWorker(run.url, "careful") as good, \
                SimulatedWorker(run.url, "careless") as bad:
            await good.request_agent()
            assert good.is_onboarding and good.init_data == {"question": "good or bad?"}
            await good.submit_onboarding({"answer": "bad"})
            assert good.agent_id is not None and not good.is_onboarding
            await good.submit({"rating": "good"})
            await bad.request_agent()
            assert bad.is_onboarding
            await bad.submit_onboarding({"answer": "good"})
            assert bad.agent_id is None and bad.failure_reason
            good.new_assignment()
            await complete_unit(good, {"rating": "bad"})
            return good, bad

    asyncio.run(work())
    assert run.wait(10)
    assert [d["outputs"] for d in seen] == [{"answer": "bad"}, {"answer": "good"}]
    db = operator.db
    (qual,) = db.find_qualifications(qualification_name="react-onboarding")
    grants = {db.get_worker(g.worker_id)["worker_name"]: g.value
              for g in db.check_granted_qualifications(qualification_id=qual.db_id)}
    assert grants == {"careful": 1, "careless": 0}

    html_cfg = static_run_config(bundle, blueprint__onboarding_qualification="q")
    with pytest.raises(ConfigError) as info:
        operator.launch_task_run(html_cfg, SharedStaticTaskState(static_task_data=[{}]))
    assert info.value.key == "mephisto.blueprint.onboarding_source"


def test_a_resumed_run_serves_the_bundle_as_it_is_now(
    operator: Any, bundle: Path, tmp_path: Path
) -> None:
    run = launch(operator, bundle, data=[{"text": "a"}, {"text": "b"}])
    served = Path(os.environ["MEPHISTO_DATA_DIR"]) / "runs" / run.task_run_id / "frontend"
    assert (served / "bundle.js").read_text() == BUNDLE_V1
    operator.shutdown()
    bundle.write_text(BUNDLE_V2)
    from mephisto.operations.operator import Operator

    again = Operator(operator.db)
    try:
        resumed = launch(again, bundle, data=[{"text": "a"}, {"text": "b"}],
                         resume_incomplete_run=True)
        assert resumed.task_run_id == run.task_run_id
        assert get(resumed.url + "bundle.js") == (200, BUNDLE_V2.encode())
    finally:
        again.shutdown()
