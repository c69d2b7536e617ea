"""The plugin registry: registered classes, entry points, the built-in table."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from importlib.metadata import EntryPoint

import pytest

from mephisto.errors import ConfigError, UnknownAbstractionError
from mephisto.operations import registry
from mephisto.operations.registry import (
    get_architect_from_type,
    get_blueprint_from_type,
    get_crowd_provider_from_type,
    get_valid_architect_types,
    get_valid_blueprint_types,
    get_valid_provider_types,
    register_mephisto_abstraction,
)

FAKE_MODULE = "fake_mephisto_plugins_for_tests"
# The real loader, kept before the autouse fixture replaces it in each test.
REAL_LOADER = registry._load_entry_points


class EntryBlueprint:
    BLUEPRINT_TYPE = "from_entry_point"


class EntryMock:
    BLUEPRINT_TYPE = "mock"


class EntryProvider:
    PROVIDER_TYPE = "ep_provider"


@pytest.fixture(autouse=True)
def clean_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, list[EntryPoint]]]:
    """Empty registrations and entry points for each test; restored afterwards.

    Tests put EntryPoint objects into the returned dict (group -> entry points).
    """
    saved = {kind: dict(classes) for kind, classes in registry._registered.items()}
    for classes in registry._registered.values():
        classes.clear()
    fake_groups: dict[str, list[EntryPoint]] = {}
    monkeypatch.setattr(registry, "_load_entry_points", lambda g: list(fake_groups.get(g, [])))
    registry._clear_entry_point_cache()

    module = types.ModuleType(FAKE_MODULE)
    module.EntryBlueprint = EntryBlueprint  # type: ignore[attr-defined]
    module.EntryMock = EntryMock  # type: ignore[attr-defined]
    module.EntryProvider = EntryProvider  # type: ignore[attr-defined]
    module.not_a_class = 42  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, FAKE_MODULE, module)

    yield fake_groups

    for kind, classes in registry._registered.items():
        classes.clear()
        classes.update(saved[kind])
    registry._clear_entry_point_cache()


def ep(name: str, attr: str, group: str) -> EntryPoint:
    return EntryPoint(name=name, value=f"{FAKE_MODULE}:{attr}", group=group)


def test_builtin_table_is_exactly_the_shipped_plugins() -> None:
    assert registry.BUILTIN_BLUEPRINTS == {
        "static_task": "mephisto.abstractions.blueprints.static_task:StaticTaskBlueprint",
        "remote_procedure": (
            "mephisto.abstractions.blueprints.remote_procedure:RemoteProcedureBlueprint"
        ),
        "chat": "mephisto.abstractions.blueprints.chat:ChatBlueprint",
        "static_react_task": (
            "mephisto.abstractions.blueprints.static_react_task:StaticReactTaskBlueprint"
        ),
        "mock": "mephisto.abstractions.blueprints.mock:MockBlueprint",
    }
    assert registry.BUILTIN_ARCHITECTS == {
        "ec2": "mephisto.abstractions.architects.ec2:EC2Architect",
        "heroku": "mephisto.abstractions.architects.heroku:HerokuArchitect",
        "local": "mephisto.abstractions.architects.local:LocalArchitect",
        "mock": "mephisto.abstractions.architects.mock:MockArchitect",
        "remote": "mephisto.abstractions.architects.remote:RemoteArchitect",
    }
    assert registry.BUILTIN_PROVIDERS == {
        "inhouse": "mephisto.abstractions.providers.inhouse:InhouseProvider",
        "mock": "mephisto.abstractions.providers.mock:MockProvider",
        "mturk": "mephisto.abstractions.providers.mturk.mturk_provider:MTurkProvider",
        "mturk_sandbox": (
            "mephisto.abstractions.providers.mturk.mturk_provider:SandboxMTurkProvider"
        ),
        "prolific": "mephisto.abstractions.providers.prolific:ProlificProvider",
    }


def test_listing_builtins_sorted() -> None:
    assert get_valid_blueprint_types() == ["chat", "mock", "remote_procedure", "static_react_task", "static_task"]
    assert get_valid_architect_types() == ["ec2", "heroku", "local", "mock", "remote"]
    assert get_valid_provider_types() == ["inhouse", "mock", "mturk", "mturk_sandbox", "prolific"]


def test_register_each_kind() -> None:
    @register_mephisto_abstraction()
    class MyBlueprint:
        BLUEPRINT_TYPE = "my_blueprint"

    @register_mephisto_abstraction()
    class MyArchitect:
        ARCHITECT_TYPE = "my_architect"

    @register_mephisto_abstraction()
    class MyProvider:
        PROVIDER_TYPE = "my_provider"

    assert MyBlueprint.BLUEPRINT_TYPE == "my_blueprint"  # decorator returns the class
    assert get_blueprint_from_type("my_blueprint") is MyBlueprint
    assert get_architect_from_type("my_architect") is MyArchitect
    assert get_crowd_provider_from_type("my_provider") is MyProvider
    assert get_valid_blueprint_types() == [
        "chat", "mock", "my_blueprint", "remote_procedure", "static_react_task", "static_task"
    ]
    assert get_valid_architect_types() == [
        "ec2", "heroku", "local", "mock", "my_architect", "remote"]
    assert get_valid_provider_types() == [
        "inhouse", "mock", "mturk", "mturk_sandbox", "my_provider", "prolific"
    ]
    # Kinds do not leak into each other.
    with pytest.raises(UnknownAbstractionError):
        get_architect_from_type("my_blueprint")


def test_registration_is_undone_between_tests() -> None:
    assert "my_blueprint" not in get_valid_blueprint_types()


def test_inherited_type_attribute_counts() -> None:
    class Base:
        ARCHITECT_TYPE = "base_arch"

    @register_mephisto_abstraction()
    class Child(Base):
        ARCHITECT_TYPE = "child_arch"

    assert get_architect_from_type("child_arch") is Child
    assert "base_arch" not in get_valid_architect_types()


def test_registering_again_replaces() -> None:
    @register_mephisto_abstraction()
    class First:
        PROVIDER_TYPE = "dup"

    @register_mephisto_abstraction()
    class Second:
        PROVIDER_TYPE = "dup"

    assert get_crowd_provider_from_type("dup") is Second


def test_decorator_without_type_attribute_raises() -> None:
    class Nothing:
        pass

    with pytest.raises(ConfigError) as info:
        register_mephisto_abstraction()(Nothing)
    message = str(info.value)
    assert "Nothing" in message
    assert "BLUEPRINT_TYPE" in message and "PROVIDER_TYPE" in message
    assert not isinstance(info.value, UnknownAbstractionError)


def test_decorator_with_two_type_attributes_raises() -> None:
    class Both:
        BLUEPRINT_TYPE = "x"
        PROVIDER_TYPE = "y"

    with pytest.raises(ConfigError, match="more than one"):
        register_mephisto_abstraction()(Both)
    assert "x" not in get_valid_blueprint_types()


def test_decorator_with_non_string_type_raises() -> None:
    class Annotated:
        BLUEPRINT_TYPE = None

    with pytest.raises(ConfigError):
        register_mephisto_abstraction()(Annotated)


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(UnknownAbstractionError) as info:
        get_blueprint_from_type("foo")
    assert (
        str(info.value)
        == "Unknown blueprint type 'foo'. Valid blueprint types: chat, mock, remote_procedure, static_react_task, static_task"
    )
    assert isinstance(info.value, ConfigError)

    with pytest.raises(UnknownAbstractionError) as info:
        get_architect_from_type("gcp")
    assert str(info.value) == (
        "Unknown architect type 'gcp'. Valid architect types: ec2, heroku, local, mock, remote")

    with pytest.raises(UnknownAbstractionError) as info:
        get_crowd_provider_from_type("mturk_typo")
    assert str(info.value) == (
        "Unknown provider type 'mturk_typo'. "
        "Valid provider types: inhouse, mock, mturk, mturk_sandbox, prolific"
    )


def test_unknown_name_lists_registered_and_entry_point_names(
    clean_registry: dict[str, list[EntryPoint]],
) -> None:
    clean_registry["mephisto.blueprints"] = [
        ep("from_entry_point", "EntryBlueprint", "mephisto.blueprints")
    ]

    @register_mephisto_abstraction()
    class Scripted:
        BLUEPRINT_TYPE = "scripted"

    with pytest.raises(
        UnknownAbstractionError, match="chat, from_entry_point, mock, remote_procedure, scripted, static_react_task, static_task"
    ):
        get_blueprint_from_type("nope")


def test_entry_points_are_found(clean_registry: dict[str, list[EntryPoint]]) -> None:
    clean_registry["mephisto.blueprints"] = [
        ep("from_entry_point", "EntryBlueprint", "mephisto.blueprints")
    ]
    clean_registry["mephisto.providers"] = [
        ep("ep_provider", "EntryProvider", "mephisto.providers")
    ]
    assert get_blueprint_from_type("from_entry_point") is EntryBlueprint
    assert get_crowd_provider_from_type("ep_provider") is EntryProvider
    assert get_valid_blueprint_types() == [
        "chat", "from_entry_point", "mock", "remote_procedure", "static_react_task", "static_task"
    ]
    assert get_valid_provider_types() == [
        "ep_provider", "inhouse", "mock", "mturk", "mturk_sandbox", "prolific"
    ]
    assert get_valid_architect_types() == ["ec2", "heroku", "local", "mock", "remote"]


def test_entry_points_are_read_once(
    clean_registry: dict[str, list[EntryPoint]], monkeypatch: pytest.MonkeyPatch
) -> None:
    groups_read: list[str] = []

    def loader(group: str) -> list[EntryPoint]:
        groups_read.append(group)
        return []

    monkeypatch.setattr(registry, "_load_entry_points", loader)
    registry._clear_entry_point_cache()
    assert groups_read == []  # lazily: nothing read before the first lookup
    get_valid_blueprint_types()
    get_valid_architect_types()
    with pytest.raises(UnknownAbstractionError):
        get_crowd_provider_from_type("nope")
    assert sorted(groups_read) == [
        "mephisto.architects",
        "mephisto.blueprints",
        "mephisto.providers",
    ]


def test_precedence_registered_then_entry_point_then_builtin(
    clean_registry: dict[str, list[EntryPoint]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A built-in named "mock" that would load a known class.
    monkeypatch.setitem(registry.BUILTIN_PROVIDERS, "mock", f"{FAKE_MODULE}:EntryProvider")
    assert get_crowd_provider_from_type("mock") is EntryProvider

    clean_registry["mephisto.blueprints"] = [ep("mock", "EntryMock", "mephisto.blueprints")]
    registry._clear_entry_point_cache()
    assert get_blueprint_from_type("mock") is EntryMock  # entry point beats built-in

    @register_mephisto_abstraction()
    class ScriptMock:
        BLUEPRINT_TYPE = "mock"

    assert get_blueprint_from_type("mock") is ScriptMock  # registered beats entry point
    assert get_valid_blueprint_types() == ["chat", "mock", "remote_procedure", "static_react_task", "static_task"]  # no duplicates


def test_builtin_is_imported_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.BUILTIN_ARCHITECTS, "lazy", "mephisto_test_not_imported_yet:Cls")
    monkeypatch.delitem(sys.modules, "mephisto_test_not_imported_yet", raising=False)
    assert "lazy" in get_valid_architect_types()  # listing imports nothing
    assert "mephisto_test_not_imported_yet" not in sys.modules


def test_builtin_import_failure_is_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.BUILTIN_ARCHITECTS, "broken", "mephisto_no_such_module:X")
    with pytest.raises(ConfigError) as info:
        get_architect_from_type("broken")
    message = str(info.value)
    assert not isinstance(info.value, UnknownAbstractionError)
    assert "broken" in message
    assert "mephisto_no_such_module" in message
    assert "ModuleNotFoundError" in message


def test_builtin_missing_class_is_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.BUILTIN_ARCHITECTS, "noclass", f"{FAKE_MODULE}:Missing")
    with pytest.raises(ConfigError, match="noclass.*AttributeError"):
        get_architect_from_type("noclass")


def test_entry_point_import_failure_is_config_error(
    clean_registry: dict[str, list[EntryPoint]],
) -> None:
    clean_registry["mephisto.architects"] = [
        EntryPoint(
            name="gone", value="mephisto_missing_plugin_pkg:Arch", group="mephisto.architects"
        )
    ]
    with pytest.raises(ConfigError) as info:
        get_architect_from_type("gone")
    assert "gone" in str(info.value)
    assert "mephisto_missing_plugin_pkg" in str(info.value)
    assert "ModuleNotFoundError" in str(info.value)


def test_entry_point_that_is_not_a_class(clean_registry: dict[str, list[EntryPoint]]) -> None:
    clean_registry["mephisto.providers"] = [ep("weird", "not_a_class", "mephisto.providers")]
    with pytest.raises(ConfigError, match="not a class"):
        get_crowd_provider_from_type("weird")


def test_default_loader_asks_importlib_metadata_by_group(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []
    fake = EntryPoint(name="x", value=f"{FAKE_MODULE}:EntryBlueprint", group="mephisto.blueprints")

    def fake_entry_points(*, group: str) -> list[EntryPoint]:
        asked.append(group)
        return [fake] if group == "mephisto.blueprints" else []

    monkeypatch.setattr(registry, "entry_points", fake_entry_points)
    assert REAL_LOADER("mephisto.blueprints") == [fake]
    assert REAL_LOADER("mephisto.providers") == []
    assert asked == ["mephisto.blueprints", "mephisto.providers"]
