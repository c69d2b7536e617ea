"""React tasks in real Chromium: the example's page (preview, task, onboarding) served
by our server, and THE COMPATIBILITY TEST: a task front-end built on the PUBLIC
mephisto-task@2.0.4 from the npm registry works unchanged against our server.

The compatibility app's npm install happens once per session in a temporary folder
(npm's own cache makes it a few seconds). Browser tests stay in this module: the
Playwright browser must not be open while other tests call asyncio.run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mephisto.abstractions.blueprints.static_task import SharedStaticTaskState
from mephisto.operations.hydra_config import build_default_task_config, compose_run_config
from mephisto.operations.worker_pool import FAILED_ONBOARDING
from mephisto.testing.fixtures import LaunchedRun, static_run_config
from mephisto.tools.data_browser import DataBrowser
from mephisto.tools.scripts import build_custom_bundle

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_DIR = REPO / "examples" / "static_react_task"
ONBOARDING_QUAL = "react-static-task-onboarding"


def launch_example(
    operator: Any, data: list[dict[str, Any]], *overrides: str,
    validate: Callable[[Any], bool] | None = None,
) -> LaunchedRun:
    """A run of the example's own config (example.yaml) on a free port, in this process."""
    cfg = compose_run_config(
        build_default_task_config("example"), EXAMPLE_DIR / "hydra_configs",
        ["mephisto.architect.port=0", "mephisto.architect.hostname=127.0.0.1", *overrides],
        task_dir=EXAMPLE_DIR,
    )
    state = SharedStaticTaskState(static_task_data=data, validate_onboarding=validate)
    return LaunchedRun(operator, operator.launch_task_run(cfg.mephisto, state))


def test_example_page_in_chromium(
    react_example_bundle: Path, operator: Any, mephisto_db: Any, page: Any
) -> None:
    run = launch_example(operator, [{"text": "Chromium reads <this> sentence."}])
    bundles: list[dict[str, str]] = []
    page.on("response", lambda r: bundles.append(r.headers) if r.url.endswith(".js")
            and "bundle" in r.url else None)
    page.goto(run.url)  # preview first: no worker, no agent
    page.get_by_text("Accept the task to start.").wait_for()
    # the React bundle reaches the browser gzipped (and the page ran it)
    assert bundles and bundles[0].get("content-encoding") == "gzip", bundles
    assert "you'll be given a sentence" in page.locator("#task-description").inner_text()
    assert mephisto_db.find_agents() == []

    page.goto(f"{run.url}?worker_id=chrome-worker&assignment_id=hit-1")
    text = page.locator("#task-text")
    text.wait_for()
    assert text.inner_text() == "Chromium reads <this> sentence."
    page.get_by_role("button", name="Bad").click()
    page.locator("#submitted").wait_for()
    assert run.wait(10)
    (result,) = DataBrowser(mephisto_db).load_results(task_run_id=run.task_run_id)
    assert result["worker_name"] == "chrome-worker"
    assert result["data"]["outputs"] == {"rating": "bad"}
    assert page.js_errors == []


def test_example_onboarding_in_chromium(
    react_example_bundle: Path, operator: Any, mephisto_db: Any, browser: Any, page: Any
) -> None:
    run = launch_example(
        operator, [{"text": "One sentence."}],
        f"mephisto.blueprint.onboarding_qualification={ONBOARDING_QUAL}",
        validate=lambda data: data["outputs"] == {"answer": "bad"},
    )
    other = browser.new_context()
    try:
        wrong = other.new_page()
        wrong.goto(f"{run.url}?worker_id=hasty&assignment_id=hit-1")
        wrong.locator("#onboarding-question").wait_for()
        wrong.get_by_role("button", name="Good").click()
        assert wrong.locator("#blocked").inner_text() == FAILED_ONBOARDING
    finally:
        other.close()

    page.goto(f"{run.url}?worker_id=careful&assignment_id=hit-2")
    page.locator("#onboarding-question").wait_for()
    page.get_by_role("button", name="Bad").click()
    page.locator("#task-text").wait_for()  # passed: the same page goes on to the task
    assert page.locator("#task-text").inner_text() == "One sentence."
    page.get_by_role("button", name="Good").click()
    assert run.wait(10)
    (result,) = DataBrowser(mephisto_db).load_results(task_run_id=run.task_run_id)
    assert (result["worker_name"], result["data"]["outputs"]) == ("careful", {"rating": "good"})
    assert page.js_errors == []


# -- THE COMPATIBILITY TEST: a front-end built on the public mephisto-task 2.0.4 ----------

PUBLIC_APP_PACKAGE = {
    "name": "public-mephisto-task-app",
    "private": True,
    "scripts": {"build": "esbuild src/app.jsx --bundle --outfile=build/bundle.js"},
    "dependencies": {"mephisto-task": "2.0.4", "react": "^18.3.1", "react-dom": "^18.3.1"},
    "devDependencies": {"esbuild": "^0.28.2"},
}

# Written the way Mephisto's React task templates are: ReactDOM.render into #app.
PUBLIC_APP_JSX = """\
import React from "react";
import ReactDOM from "react-dom";
import { useMephistoTask, getBlockedExplanation } from "mephisto-task";

function MainApp() {
  const {
    blockedReason, taskConfig, isPreview, isLoading, isOnboarding,
    initialTaskData, handleSubmit, mephistoWorkerId,
  } = useMephistoTask();
  if (blockedReason !== null) {
    return <h1 id="blocked">{getBlockedExplanation(blockedReason)}</h1>;
  }
  if (taskConfig === null) return <div>Initializing...</div>;
  if (isPreview) return <p id="preview">{taskConfig.task_description}</p>;
  if (isLoading || initialTaskData === null) return <div>Loading...</div>;
  if (isOnboarding) {
    return (
      <div>
        <p id="question">{initialTaskData.question}</p>
        <button onClick={() => handleSubmit({ answer: "4" })}>Four</button>
      </div>
    );
  }
  return (
    <div>
      <p id="text">{initialTaskData.text}</p>
      <button onClick={() => handleSubmit({ rating: "good", worker: mephistoWorkerId })}>
        Good
      </button>
    </div>
  );
}

ReactDOM.render(<MainApp />, document.getElementById("app"));
"""


@pytest.fixture(scope="session")
def public_client_bundle(npm: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny task front-end on mephisto-task@2.0.4 from the npm registry, built once
    per session."""
    task_dir = tmp_path_factory.mktemp("public-client")
    webapp = task_dir / "webapp"
    (webapp / "src").mkdir(parents=True)
    (webapp / "package.json").write_text(json.dumps(PUBLIC_APP_PACKAGE, indent=2))
    (webapp / "src" / "app.jsx").write_text(PUBLIC_APP_JSX)
    build = Path(build_custom_bundle(task_dir))
    installed = json.loads((webapp / "node_modules" / "mephisto-task" / "package.json").read_text())
    assert installed["version"] == "2.0.4"
    return build / "bundle.js"


def test_public_mephisto_task_client_works_unchanged(
    public_client_bundle: Path, operator: Any, mephisto_db: Any, page: Any
) -> None:
    cfg = static_run_config(
        public_client_bundle, blueprint_type="static_react_task",
        blueprint__onboarding_qualification="public-client-onboarding",
        task_description="Rate one sentence.",
    )
    state = SharedStaticTaskState(
        static_task_data=[{"text": "Written for the public client."}],
        onboarding_data={"question": "What is 2 + 2?"},
        validate_onboarding=lambda data: data["outputs"] == {"answer": "4"},
    )
    run = LaunchedRun(operator, operator.launch_task_run(cfg, state))

    page.goto(run.url)
    assert page.locator("#preview").inner_text() == "Rate one sentence."

    page.goto(f"{run.url}?worker_id=public-worker&assignment_id=hit-1")
    assert page.locator("#question").inner_text() == "What is 2 + 2?"
    page.get_by_role("button", name="Four").click()
    assert page.locator("#text").inner_text() == "Written for the public client."
    page.get_by_role("button", name="Good").click()
    assert run.wait(10)

    (result,) = DataBrowser(mephisto_db).load_results(task_run_id=run.task_run_id)
    assert result["worker_name"] == "public-worker"
    assert result["data"]["inputs"] == {"text": "Written for the public client."}
    assert result["data"]["outputs"] == {"rating": "good", "worker": result["worker_id"]}
    (onboarding,) = mephisto_db.find_onboarding_agents(task_run_id=run.task_run_id)
    assert onboarding.state.get_data()["outputs"] == {"answer": "4"}
    assert page.js_errors == []
