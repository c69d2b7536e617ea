"""`static_react_task`: a task whose page is a JavaScript bundle, usually a React app
built from the run script's `webapp/` with the `mephisto-task` npm package.

`task_source` is the built bundle (`${task_dir}/webapp/build/bundle.js`). The page at
`/` loads the provider shim `/wrap_crowd_source.js`, then `/bundle.js`, which renders
into `<div id="app">`: the element Mephisto's React templates render into
(`ReactDOM.render(<App />, document.getElementById("app"))`), so existing task
front-ends need no change. If `extra_source_dir` holds an `index.html`, that file is the
page instead (as in Mephisto, where it overrides the router's page); it must load
`wrap_crowd_source.js` and `bundle.js` itself.

What the server may send by path is one folder per run, `<run dir>/frontend/`: a copy of
`extra_source_dir` (images, css) plus the bundle as `bundle.js`, made at launch, so a
rebuild during a run does not change what workers are sent. With `link_task_source`
the bundle is looked at again on every request for a file and copied anew when it
changed on disk: rebuild (e.g. `npm run build -- --watch`) and reload the page, no
restart. Only the bundle is linked, not `extra_source_dir`.

Onboarding is rendered by the same bundle (`isOnboarding` of `useMephistoTask`), so
`onboarding_qualification` alone turns it on; there is no `onboarding_source`.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mephisto.abstractions.blueprint import SharedTaskState
from mephisto.abstractions.blueprints.static_task import (
    StaticAgentState,
    StaticBlueprint,
    StaticBlueprintArgs,
    require_file,
    wrapper_page,
)
from mephisto.data_model.agent import register_agent_state_class
from mephisto.errors import ConfigError
from mephisto.utils.dirs import get_run_dir

logger = logging.getLogger(__name__)

BLUEPRINT_TYPE_STATIC_REACT = "static_react_task"
BUNDLE_NAME = "bundle.js"
BUNDLE_URL = "/" + BUNDLE_NAME
ROOT_ELEMENT_ID = "app"
CUSTOM_PAGE_NAME = "index.html"
SERVED_DIR_NAME = "frontend"  # under the run dir; agent ids (uploads) never take this name
# Architects that serve from this process, so a linked bundle can be read on each request.
LINKABLE_ARCHITECTS = frozenset({"local", "mock"})

_BUILD_HINT = (
    " (build the front-end first: build_custom_bundle(task_dir) in the run script, "
    "or `npm run build` in webapp/)"
)


@dataclass
class StaticReactBlueprintArgs(StaticBlueprintArgs):
    """Arguments of `static_react_task` (`mephisto.blueprint.*`)."""

    _blueprint_type: str = BLUEPRINT_TYPE_STATIC_REACT
    task_source: str = field(
        default="???",
        metadata={
            "help": "Path to the built JavaScript bundle of the task (webapp/build/bundle.js).",
            "required": True,
        },
    )
    link_task_source: bool = field(
        default=False,
        metadata={
            "help": "Serve the bundle as it is on disk now, not as it was at launch: "
            "rebuild and reload the page without restarting (local architect only)."
        },
    )


class StaticReactTaskBlueprint(StaticBlueprint):
    """Units of a data list, worked through a React (or any JavaScript) bundle."""

    BLUEPRINT_TYPE = BLUEPRINT_TYPE_STATIC_REACT
    ArgsClass = StaticReactBlueprintArgs
    TASK_SOURCE_HELP = "the path of the task's built JavaScript bundle (webapp/build/bundle.js)"

    def __init__(self, task_run: Any, args: Any, shared_state: SharedTaskState) -> None:
        super().__init__(task_run, args, shared_state)
        bp = args.blueprint
        self.bundle_source = Path(str(bp.task_source)).expanduser().resolve()
        extra = bp.get("extra_source_dir")
        self.extra_source_dir = Path(str(extra)).expanduser().resolve() if extra else None
        self.linked = bool(bp.get("link_task_source", False))
        self.served_dir = get_run_dir(task_run.db_id) / SERVED_DIR_NAME
        self._copied_stat: tuple[int, int, int] | None = None
        self._source_unreadable_logged = False
        self._prepare_served_dir()

    @classmethod
    def check_task_source(cls, source: str) -> Path:
        return require_file(source, "task_source", _BUILD_HINT)

    @classmethod
    def assert_task_args(cls, args: Any, shared_state: SharedTaskState) -> None:
        super().assert_task_args(args, shared_state)
        architect = args.get("architect") or {}
        architect_type = architect.get("_architect_type")
        if args.blueprint.get("link_task_source") and architect_type not in LINKABLE_ARCHITECTS:
            raise ConfigError(
                "mephisto.blueprint.link_task_source needs a task server running on this "
                f"machine (architect: {', '.join(sorted(LINKABLE_ARCHITECTS))}), not "
                f"{architect_type!r}; set it to false",
                key="mephisto.blueprint.link_task_source",
            )

    # -- the files the server may send ----------------------------------------------

    def _prepare_served_dir(self) -> None:
        """(Re)make `<run dir>/frontend/`: extra_source_dir's files, then the bundle."""
        if self.served_dir.exists():
            shutil.rmtree(self.served_dir)  # a resumed run: start from what is there now
        try:
            if self.extra_source_dir is not None:
                shutil.copytree(self.extra_source_dir, self.served_dir)
            else:
                self.served_dir.mkdir(parents=True)
        except (OSError, shutil.Error) as exc:
            raise ConfigError(
                f"cannot copy mephisto.blueprint.extra_source_dir {self.extra_source_dir} "
                f"to {self.served_dir}: {exc}",
                key="mephisto.blueprint.extra_source_dir",
            ) from None
        self._copy_bundle(at_launch=True)

    def _copy_bundle(self, at_launch: bool = False) -> None:
        """Copy the bundle into the served folder if it changed since the last copy.
        At launch a failure is a ConfigError; later (linked) the last copy stays."""
        try:
            stat = self.bundle_source.stat()
            key = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
            if key == self._copied_stat:
                return
            # copy beside, then rename: a request being answered keeps the file it opened;
            # a dot name is never served. copyfile (not copy2) so Last-Modified is the
            # copy time and browsers do not keep a heuristically "fresh" old bundle.
            partial = self.served_dir / f".{BUNDLE_NAME}.partial"
            shutil.copyfile(self.bundle_source, partial)
            os.replace(partial, self.served_dir / BUNDLE_NAME)
        except OSError as exc:
            if at_launch:
                raise ConfigError(
                    f"cannot copy mephisto.blueprint.task_source {self.bundle_source}: {exc}",
                    key="mephisto.blueprint.task_source",
                ) from None
            if not self._source_unreadable_logged:
                logger.warning("bundle %s cannot be read (%s); serving the last copy",
                               self.bundle_source, exc)
                self._source_unreadable_logged = True
            return
        self._source_unreadable_logged = False
        self._copied_stat = key
        if self.linked and not at_launch:
            logger.info("serving the rebuilt bundle %s", self.bundle_source)

    def static_dir(self) -> Path | None:
        if self.linked:
            self._copy_bundle()
        return self.served_dir

    def task_page(self) -> str:
        custom = self.served_dir / CUSTOM_PAGE_NAME
        if self.extra_source_dir is not None and custom.is_file():
            return custom.read_text(encoding="utf-8")
        return wrapper_page(self.page_title, "", root_id=ROOT_ELEMENT_ID, scripts=(BUNDLE_URL,))


register_agent_state_class(BLUEPRINT_TYPE_STATIC_REACT, StaticAgentState)
