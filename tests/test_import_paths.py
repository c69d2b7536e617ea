"""Mephisto 1.x's public import paths resolve to our objects.

`PINNED` lists every name that Mephisto's documentation and examples (docs/, examples/,
the READMEs, across tags v1.0.0 to v1.5.2 and the main branch) import from a
`mephisto...` path whose feature exists here, plus the paths Mephisto's own database
contract tester imports (tests/test_mephisto_db_tester.py runs it). Each row names where
the object really lives; the test asserts the Mephisto path hands out that very object.
A compatibility module is a thin re-export: it defines no class or function of its own
and its docstring names the real home.

`PENDING` lists the names whose feature has not landed. Nothing fakes them: the test
asserts they do not resolve yet, so the change that lands a feature must move its rows
to `PINNED`.
"""

from __future__ import annotations

import importlib
import types

import pytest

Row = tuple[str, str, str, str]  # (Mephisto path, name, our real module, name there)


def here(path: str, *names: str) -> list[Row]:
    """Names whose real home is Mephisto's path itself."""
    return [(path, name, path, name) for name in names]


def moved(path: str, home: str, *names: str) -> list[Row]:
    """Names re-exported at Mephisto's path from `home`, under the same name."""
    return [(path, name, home, name) for name in names]


_BP = "mephisto.abstractions.blueprints"
_MTURK = "mephisto.abstractions.providers.mturk"

PINNED: list[Row] = [
    # -- run scripts (the seeds, the tutorials, examples/) --------------------------------
    *here("mephisto.operations.operator", "Operator"),
    *here(
        "mephisto.operations.hydra_config",
        "RunScriptConfig", "MephistoConfig", "build_default_task_config",
        "register_script_config",
    ),
    *here(
        "mephisto.tools.scripts",
        "task_script", "build_custom_bundle", "load_db_and_process_config",
    ),
    ("mephisto.tools.scripts", "build_and_return_custom_bundle",
     "mephisto.tools.scripts", "build_custom_bundle"),
    *here(
        "mephisto.operations.registry",
        "register_mephisto_abstraction", "get_blueprint_from_type", "get_architect_from_type",
        "get_crowd_provider_from_type", "get_valid_blueprint_types",
        "get_valid_architect_types", "get_valid_provider_types",
    ),
    *moved(
        "mephisto.operations.config_handler", "mephisto.utils.config_handler",
        "get_config_arg", "add_config_arg",
    ),
    # -- blueprints ---------------------------------------------------------------------
    *here("mephisto.abstractions.blueprint", "Blueprint", "BlueprintArgs", "SharedTaskState"),
    ("mephisto.abstractions.blueprint", "AgentState", "mephisto.data_model.status", "AgentState"),
    *moved(
        f"{_BP}.abstract.static_task.static_blueprint", f"{_BP}.static_task",
        "SharedStaticTaskState", "StaticBlueprint", "StaticBlueprintArgs",
    ),
    # Mephisto's StaticHTMLBlueprint registers "static_task": our StaticTaskBlueprint.
    (f"{_BP}.static_html_task.static_html_blueprint", "BLUEPRINT_TYPE_STATIC_HTML",
     f"{_BP}.static_task", "BLUEPRINT_TYPE_STATIC"),
    (f"{_BP}.static_html_task.static_html_blueprint", "StaticHTMLBlueprint",
     f"{_BP}.static_task", "StaticTaskBlueprint"),
    *moved(
        f"{_BP}.static_html_task.static_html_blueprint", f"{_BP}.static_task",
        "StaticHTMLBlueprintArgs",
    ),
    *moved(
        f"{_BP}.static_react_task.static_react_blueprint", f"{_BP}.static_react_task",
        "BLUEPRINT_TYPE_STATIC_REACT", "StaticReactBlueprintArgs",
    ),
    (f"{_BP}.static_react_task.static_react_blueprint", "StaticReactBlueprint",
     f"{_BP}.static_react_task", "StaticReactTaskBlueprint"),
    *moved(f"{_BP}.mock.mock_blueprint", f"{_BP}.mock", "MockBlueprint", "MockBlueprintArgs"),
    # -- architects and providers ---------------------------------------------------------
    *moved(
        "mephisto.abstractions.architects.local_architect",
        "mephisto.abstractions.architects.local", "LocalArchitect", "LocalArchitectArgs",
    ),
    *moved(
        "mephisto.abstractions.architects.mock_architect",
        "mephisto.abstractions.architects.mock", "MockArchitect", "MockArchitectArgs",
    ),
    *moved(
        "mephisto.abstractions.providers.mock.mock_provider",
        "mephisto.abstractions.providers.mock", "MockProvider", "MockProviderArgs",
    ),
    *moved(
        "mephisto.abstractions.providers.mock.provider_type",
        "mephisto.abstractions.providers.mock", "PROVIDER_TYPE",
    ),
    *moved(
        "mephisto.abstractions.providers.prolific.prolific_provider",
        "mephisto.abstractions.providers.prolific.provider",
        "ProlificProvider", "ProlificProviderArgs",
    ),
    *moved(
        "mephisto.abstractions.providers.prolific.provider_type",
        "mephisto.abstractions.providers.prolific.client", "PROVIDER_TYPE",
    ),
    # -- the database and its errors --------------------------------------------------------
    *moved(
        "mephisto.abstractions.databases.local_database", "mephisto.db.database",
        "LocalMephistoDB",
    ),
    *moved("mephisto.abstractions.database", "mephisto.db.database", "MephistoDB"),
    *[
        (path, name, "mephisto.errors", home_name)
        for path in ("mephisto.abstractions.database", "mephisto.utils.db")
        for name, home_name in (
            ("MephistoDBException", "DatabaseError"),
            ("EntryAlreadyExistsException", "EntryAlreadyExists"),
            ("EntryDoesNotExistException", "EntryDoesNotExist"),
        )
    ],
    # -- the data model ----------------------------------------------------------------------
    *here("mephisto.data_model.agent", "Agent", "OnboardingAgent"),
    *here("mephisto.data_model.assignment", "Assignment"),
    *here("mephisto.data_model.project", "Project"),
    *here("mephisto.data_model.requester", "Requester"),
    *here("mephisto.data_model.task", "Task"),
    *here("mephisto.data_model.task_run", "TaskRun", "TaskRunArgs"),
    *here("mephisto.data_model.unit", "Unit"),
    *here("mephisto.data_model.worker", "Worker"),
    *here(
        "mephisto.data_model.qualification",
        "Qualification", "QUAL_GREATER", "QUAL_GREATER_EQUAL", "QUAL_LESS",
        "QUAL_LESS_EQUAL", "QUAL_EQUAL", "QUAL_NOT_EQUAL", "QUAL_IN_LIST", "QUAL_NOT_IN_LIST",
        "QUAL_EXISTS", "QUAL_NOT_EXIST",
    ),
    *moved("mephisto.data_model.constants", "mephisto.data_model.project", "NO_PROJECT_NAME"),
    *moved(
        "mephisto.data_model.constants.assignment_state", "mephisto.data_model.status",
        "AssignmentState",
    ),
    # -- review scripts and utilities --------------------------------------------------------
    *here("mephisto.tools.data_browser", "DataBrowser"),
    *here(
        "mephisto.tools.examine_utils",
        "print_results", "run_examine_or_review", "run_examine_by_worker",
        "prompt_for_options", "get_worker_stats", "format_worker_stats",
    ),
    *here(
        "mephisto.utils.qualifications",
        "make_qualification_dict", "find_or_create_qualification",
    ),
    *here("mephisto.utils.logger_core", "get_logger"),
    # -- crowd providers (docs: how_to_use/providers/mturk) ---------------------------------
    *here(f"{_MTURK}.mturk_provider", "MTurkProvider", "MTurkProviderArgs"),
    *moved(
        f"{_MTURK}_sandbox.sandbox_mturk_provider", f"{_MTURK}.mturk_provider",
        "SandboxMTurkProvider", "SandboxMTurkProviderArgs",
    ),
    *here("mephisto.utils.console_writer", "ConsoleWriter"),
    # -- blueprint mixins (docs: how_to_use/worker_quality) --------------------------------
    *here(f"{_BP}.mixins.onboarding_required", "OnboardingRequired",
          "OnboardingRequiredArgs", "OnboardingSharedState"),
    *here(f"{_BP}.mixins.screen_task_required", "ScreenTaskRequired",
          "ScreenTaskRequiredArgs", "ScreenTaskSharedState", "blank_generator"),
    *here(f"{_BP}.mixins.use_gold_unit", "UseGoldUnit", "UseGoldUnitArgs",
          "GoldUnitSharedState", "get_gold_factory", "worker_needs_gold", "worker_qualifies"),
    *here("mephisto.abstractions.blueprint", "BlueprintMixin"),
    # -- live tasks (docs: how_to_use/remote_procedure) -------------------------------------
    *moved(f"{_BP}.remote_procedure.remote_procedure_blueprint", f"{_BP}.remote_procedure",
           "BLUEPRINT_TYPE_REMOTE_PROCEDURE", "RemoteProcedureAgentState",
           "RemoteProcedureBlueprint", "RemoteProcedureBlueprintArgs",
           "SharedRemoteProcedureTaskState"),
    *here("mephisto.abstractions._subcomponents.task_runner", "TaskRunner"),
    *here("mephisto.abstractions._subcomponents.task_builder", "TaskBuilder"),
    *moved("mephisto.data_model.exceptions", "mephisto.errors", "AgentReturnedError",
           "AgentDisconnectedError", "AgentTimeoutError", "AgentShutdownError"),
    *here("mephisto.data_model.unit", "SCREENING_UNIT_INDEX", "GOLD_UNIT_INDEX"),
    *moved(
        "mephisto.utils.testing", "mephisto.testing.entities",
        "get_test_project", "get_test_worker", "get_test_requester", "get_mock_requester",
        "get_test_task", "get_test_task_run", "get_test_assignment", "get_test_unit",
        "get_test_agent", "make_completed_unit",
    ),
]

_PROLIFIC = "mephisto.abstractions.providers.prolific"
_FORM_COMPOSER_CONFIGS = (
    "FORM_COMPOSER__DATA_CONFIG_NAME", "FORM_COMPOSER__DATA_DIR_NAME",
    "FORM_COMPOSER__TOKEN_SETS_VALUES_CONFIG_NAME",
)

# Pending: (feature it lands with, Mephisto path, name). Not faked until then.
PENDING: list[tuple[str, str, str]] = [
    # pending, lands with a port of Mephisto's Prolific SDK (docs: how_to_use/providers/
    # prolific/prolific_python_sdk): our provider's client is not that SDK's object model
    ("prolific SDK", f"{_PROLIFIC}.prolific_utils", "get_authenticated_client"),
    ("prolific SDK", f"{_PROLIFIC}.api", "exceptions"),
    *[
        ("prolific SDK", f"{_PROLIFIC}.api.data_models", name)
        for name in (
            "BonusPayments", "EligibilityRequirement", "Message", "Participant",
            "ParticipantGroup", "Project", "Study", "Submission", "User", "Workspace",
            "WorkspaceBalance",
        )
    ],
    # pending, lands with the parlai_chat blueprint
    *[
        ("parlai_chat blueprint", f"{_BP}.parlai_chat.parlai_chat_blueprint", n)
        for n in ("BLUEPRINT_TYPE", "BLUEPRINT_TYPE_PARLAI_CHAT", "SharedParlAITaskState")
    ],
    # pending, lands with the form composer (paths of 1.5+, then of 1.2-1.4)
    ("form composer", "mephisto.tools.building_react_apps", "examples"),
    *[
        ("form composer", "mephisto.client.cli_form_composer_commands", n)
        for n in (
            *_FORM_COMPOSER_CONFIGS, "FORM_COMPOSER__UNIT_CONFIG_NAME",
            "set_form_composer_env_vars",
        )
    ],
    ("form composer", "mephisto.generators.generators_utils.config_validation.task_data_config",
     "create_extrapolated_config"),
    ("form composer", "mephisto.generators.generators_utils.config_validation.utils",
     "read_config_file"),
    ("form composer", "mephisto.generators.generators_utils.constants", "TOKEN_START_REGEX"),
    ("form composer", "mephisto.generators.generators_utils.constants", "TOKEN_END_REGEX"),
    ("form composer", "mephisto.generators.generators_utils.remote_procedures",
     "JS_NAME_FUNCTION_MAPPING"),
    *[
        ("form composer", "mephisto.client.cli", n)
        for n in (*_FORM_COMPOSER_CONFIGS, "FORM_COMPOSER__FORM_CONFIG_NAME")
    ],
    ("form composer", "mephisto.generators.form_composer.config_validation.task_data_config",
     "create_extrapolated_config"),
    *[
        ("form composer", "mephisto.generators.form_composer.config_validation.utils", n)
        for n in (
            "read_config_file", "set_custom_triggers_js_env_var",
            "set_custom_validators_js_env_var",
        )
    ],
    ("form composer", "mephisto.generators.form_composer.constants", "TOKEN_START_REGEX"),
    ("form composer", "mephisto.generators.form_composer.constants", "TOKEN_END_REGEX"),
    ("form composer", "mephisto.generators.form_composer.remote_procedures",
     "JS_NAME_FUNCTION_MAPPING"),
    # pending, lands with the video annotator
    *[
        ("video annotator", "mephisto.client.cli_video_annotator_commands", n)
        for n in (
            "VIDEO_ANNOTATOR__DATA_CONFIG_NAME", "VIDEO_ANNOTATOR__DATA_DIR_NAME",
            "VIDEO_ANNOTATOR__TOKEN_SETS_VALUES_CONFIG_NAME", "VIDEO_ANNOTATOR__UNIT_CONFIG_NAME",
            "set_video_annotator_env_vars",
        )
    ],
]

# Not provided, on purpose: names imported only by the pre-1.0 ("before") code of
# Mephisto's legacy guide docs/legacy/hydra_migration.md, which 1.x scripts replaced:
#   mephisto.tools.scripts            MephistoRunScriptParser, str2bool  (argparse era)
#   mephisto.utils.dirs               get_root_dir  (the root of a Mephisto source checkout)


@pytest.mark.parametrize(
    ("path", "name", "home", "home_name"), PINNED, ids=[f"{r[0]}:{r[1]}" for r in PINNED]
)
def test_mephisto_path_gives_our_object(path: str, name: str, home: str, home_name: str) -> None:
    module = importlib.import_module(path)
    assert hasattr(module, name), f"{path} has no {name}"
    assert getattr(module, name) is getattr(importlib.import_module(home), home_name)


def _compat_modules() -> list[str]:
    """Paths at which every pinned name lives elsewhere: pure compatibility modules."""
    paths = {row[0] for row in PINNED}
    return sorted(p for p in paths if all(row[2] != p for row in PINNED if row[0] == p))


@pytest.mark.parametrize("path", _compat_modules())
def test_compat_module_is_a_thin_reexport(path: str) -> None:
    module = importlib.import_module(path)
    homes = {row[2] for row in PINNED if row[0] == path}
    doc = module.__doc__ or ""
    assert any(f"`{home}`" in doc for home in homes), f"{path}'s docstring names no real home"
    own = [
        name for name, value in vars(module).items()
        if isinstance(value, (type, types.FunctionType))
        and getattr(value, "__module__", None) == module.__name__
    ]
    assert not own, f"{path} defines {own}: compatibility modules only re-export"


@pytest.mark.parametrize(
    ("feature", "path", "name"), PENDING, ids=[f"{r[1]}:{r[2]}" for r in PENDING]
)
def test_pending_names_are_not_faked(feature: str, path: str, name: str) -> None:
    try:
        module = importlib.import_module(path)
    except ModuleNotFoundError:
        return
    assert not hasattr(module, name), (
        f"{path}.{name} resolves now: if the {feature} landed, move its rows to PINNED"
    )


def test_the_tables_do_not_overlap() -> None:
    pinned = {(row[0], row[1]) for row in PINNED}
    pending = {(path, name) for _feature, path, name in PENDING}
    assert len(pinned) == len(PINNED)
    assert len(pending) == len(PENDING)
    assert not pinned & pending
