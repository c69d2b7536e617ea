"""Imports point down one stack: no module may import a layer above its own.

Every .py under mephisto/ is parsed with `ast`; every Import and ImportFrom node counts,
including those inside functions and `if TYPE_CHECKING:` blocks, and relative imports
are resolved against the importing module's package.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

# Layer rank of each module prefix. The longest matching prefix wins (a prefix matches
# the module itself and everything below it); a module may import only modules of the
# same or a lower rank. "mephisto" matches the package __init__ only, so a new
# top-level module must be given a rank here before it can exist.
RANKS: dict[str, int] = {
    # 0: foundations that everything may use.
    "mephisto": 0,
    "mephisto.errors": 0,
    "mephisto.utils.dirs": 0,
    "mephisto.utils.config_handler": 0,
    "mephisto.utils.files": 0,
    "mephisto.utils.logger_core": 0,
    # Exception: Mephisto's public path for config_handler is a re-export of a rank 0
    # module, so importing it from any layer is allowed.
    "mephisto.operations.config_handler": 0,
    # 1: the data model, and the other utils (e.g. qualifications).
    "mephisto.data_model": 1,
    "mephisto.utils": 1,
    # Exception: Mephisto's path for its test-entity helpers re-exports mephisto.testing,
    # so it ranks with it; nothing below the edges imports it.
    "mephisto.utils.testing": 7,
    # 2: the database.
    "mephisto.db": 2,
    # 3: the contracts (abstractions/blueprint.py, architect.py, crowd_provider.py).
    "mephisto.abstractions": 3,
    # 4: the ASGI server browsers talk to, and the task router that serves it elsewhere.
    "mephisto.server": 4,
    "mephisto.router": 4,
    # 5: the plugins.
    "mephisto.abstractions.blueprints": 5,
    "mephisto.abstractions.architects": 5,
    "mephisto.abstractions.providers": 5,
    # Mephisto's path for database classes, re-exporting mephisto.db (a plugin folder
    # in Mephisto, so it ranks with the other plugin folders).
    "mephisto.abstractions.databases": 5,
    # 6: operations (operator, launcher, registry, hydra config, ...).
    "mephisto.operations": 6,
    # 7: the edges.
    "mephisto.tools": 7,
    "mephisto.review": 7,
    "mephisto.testing": 7,
    "mephisto.cli": 7,
    # `mephisto db` (backup, restore, export, import): an edge beside the database
    "mephisto.db.command": 7,
    # `mephisto router`: an edge beside the router
    "mephisto.router.command": 7,
}
EXACT_ONLY = {"mephisto"}

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "mephisto"


def rank_of(module: str, ranks: Mapping[str, int] = RANKS) -> int | None:
    """Rank of the longest prefix of `module` in `ranks`; None if none matches."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in ranks and (prefix not in EXACT_ONLY or end == len(parts)):
            return ranks[prefix]
    return None


def imported_modules(source: str, module: str, is_package: bool) -> list[str]:
    """Every module name `source` (the code of `module`) imports, relative ones resolved.

    For `from a.b import c` the target is `a.b.c`: when `c` is a submodule that is
    what is imported, and when it is a name defined in `a.b` the longest-prefix rule
    still ranks it as `a.b`.
    """
    package = module if is_package else module.rpartition(".")[0]
    targets: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                drop = node.level - 1
                if drop >= len(base_parts):
                    raise ValueError(f"{module}: relative import beyond the top package")
                base = ".".join(base_parts[: len(base_parts) - drop])
                from_module = f"{base}.{node.module}" if node.module else base
            else:
                from_module = node.module or ""
            for alias in node.names:
                if alias.name == "*":
                    targets.append(from_module)
                else:
                    targets.append(f"{from_module}.{alias.name}")
    return targets


def violations(
    sources: Iterable[tuple[str, bool, str]], ranks: Mapping[str, int] = RANKS
) -> list[str]:
    """Offences in (module, is_package, source) triples, as readable lines."""
    found: list[str] = []
    for module, is_package, source in sources:
        own = rank_of(module, ranks)
        if own is None:
            found.append(f"{module} has no rank in the layering table")
            continue
        for target in imported_modules(source, module, is_package):
            if target != "mephisto" and not target.startswith("mephisto."):
                continue
            target_rank = rank_of(target, ranks)
            if target_rank is None:
                target_rank = rank_of(target.rpartition(".")[0], ranks)
            if target_rank is None:
                found.append(f"{module} (rank {own}) imports {target} (no rank)")
            elif target_rank > own:
                found.append(f"{module} (rank {own}) imports {target} (rank {target_rank})")
    return sorted(set(found))


def package_sources() -> list[tuple[str, bool, str]]:
    triples = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        relative = path.relative_to(PACKAGE_DIR.parent).with_suffix("")
        parts = list(relative.parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        triples.append((".".join(parts), is_package, path.read_text(encoding="utf-8")))
    return triples


def test_no_module_imports_a_higher_layer() -> None:
    sources = package_sources()
    assert sources, f"no modules found under {PACKAGE_DIR}"
    offences = violations(sources)
    assert not offences, "Layering violations:\n  " + "\n  ".join(offences)


@pytest.mark.parametrize(
    ("module", "rank"),
    [
        ("mephisto", 0),
        ("mephisto.errors", 0),
        ("mephisto.utils.dirs", 0),
        ("mephisto.utils.qualifications", 1),
        ("mephisto.utils", 1),
        ("mephisto.data_model.unit", 1),
        ("mephisto.db.schema", 2),
        ("mephisto.abstractions.blueprint", 3),
        ("mephisto.server.app", 4),
        ("mephisto.abstractions.blueprints.abstract.static_task.static_blueprint", 5),
        ("mephisto.abstractions.providers.mock", 5),
        ("mephisto.abstractions.providers.mock.provider_type", 5),
        ("mephisto.abstractions.databases.local_database", 5),
        ("mephisto.abstractions.database", 3),
        ("mephisto.utils.testing", 7),
        ("mephisto.utils.db", 1),
        ("mephisto.operations.operator", 6),
        ("mephisto.operations.config_handler", 0),
        ("mephisto.cli", 7),
        ("mephisto.testing.worker", 7),
        ("mephisto.unknown_thing", None),
        ("json", None),
    ],
)
def test_rank_of(module: str, rank: int | None) -> None:
    assert rank_of(module) == rank


def test_checker_catches_violations() -> None:
    db_source = """
import json
import mephisto.errors
from mephisto.data_model.unit import Unit
from . import schema
from ..utils import dirs

def later():
    from mephisto.operations.registry import get_blueprint_from_type
    from ..server import app
    import mephisto.cli
"""
    offences = violations([("mephisto.db.store", False, db_source)])
    assert offences == [
        "mephisto.db.store (rank 2) imports mephisto.cli (rank 7)",
        (
            "mephisto.db.store (rank 2) imports"
            " mephisto.operations.registry.get_blueprint_from_type (rank 6)"
        ),
        "mephisto.db.store (rank 2) imports mephisto.server.app (rank 4)",
    ]


def test_checker_resolves_relative_imports_in_packages() -> None:
    # In a package __init__, "." is the package itself.
    source = "from .blueprints import mock\nfrom . import blueprint\n"
    offences = violations([("mephisto.abstractions", True, source)])
    assert offences == [
        "mephisto.abstractions (rank 3) imports mephisto.abstractions.blueprints.mock (rank 5)"
    ]
    assert violations([("mephisto.abstractions.blueprints", True, source)]) == []


def test_checker_allows_same_and_lower_layers_and_the_reexport() -> None:
    source = (
        "from mephisto.operations.config_handler import get_config\n"
        "from mephisto import errors\n"
        "from mephisto.abstractions.blueprint import Blueprint\n"
    )
    assert violations([("mephisto.abstractions.architect", False, source)]) == []


def test_checker_flags_unranked_modules() -> None:
    assert violations([("mephisto.mystery", False, "")]) == [
        "mephisto.mystery has no rank in the layering table"
    ]


# -- no import circles among the modules of a package -------------------------------------

CIRCLE_FREE = (
    "mephisto.operations", "mephisto.db", "mephisto.utils", "mephisto.server",
    "mephisto.abstractions", "mephisto.tools", "mephisto.testing",
)


def import_graph(
    sources: Iterable[tuple[str, bool, str]], within: str
) -> dict[str, set[str]]:
    """Which modules under `within` import which others under it (every import counts,
    as above; `from a import name` counts as importing module `a`)."""
    triples = [t for t in sources if t[0] == within or t[0].startswith(within + ".")]
    modules = {module for module, _p, _s in triples}
    graph: dict[str, set[str]] = {module: set() for module in modules}
    for module, is_package, source in triples:
        for target in imported_modules(source, module, is_package):
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != module:
                graph[module].add(target)
    return graph


def circles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Import circles in `graph`, each as the modules around it (first repeated last)."""
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                found.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return found


@pytest.mark.parametrize("package", CIRCLE_FREE)
def test_no_import_circles(package: str) -> None:
    found = circles(import_graph(package_sources(), package))
    assert not found, "Import circles:\n  " + "\n  ".join(" -> ".join(c) for c in found)


def test_circle_checker_finds_circles() -> None:
    sources = [
        ("mephisto.operations.a", False, "from mephisto.operations.b import thing\n"),
        ("mephisto.operations.b", False,
         "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
         "    from mephisto.operations import a\n"),
        ("mephisto.operations.c", False, "import mephisto.operations.a\n"),
    ]
    assert circles(import_graph(sources, "mephisto.operations")) == [
        ["mephisto.operations.a", "mephisto.operations.b", "mephisto.operations.a"]
    ]
