"""Shared pytest fixtures.

Every test runs with its own Mephisto home and data directory under a temporary
folder, so no test reads or writes the user's `~/.mephisto`.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["mephisto.testing.fixtures"]


@pytest.fixture(autouse=True)
def _isolated_mephisto_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEPHISTO_HOME", str(tmp_path / "mephisto_home"))
    monkeypatch.setenv("MEPHISTO_DATA_DIR", str(tmp_path / "mephisto_data"))
    monkeypatch.delenv("MEPHISTO_DATABASE_URL", raising=False)


@pytest.fixture(autouse=True)
def _registered_abstractions_restored() -> Iterator[None]:
    """Abstractions a test registers (its own test providers) are forgotten after it, so
    the types other tests see listed do not depend on the order the tests ran in."""
    from mephisto.operations import registry

    saved = {kind: dict(types) for kind, types in registry._registered.items()}
    yield
    for kind, types in registry._registered.items():
        types.clear()
        types.update(saved[kind])


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A URL to an empty schema of the PostgreSQL server in MEPHISTO_TEST_POSTGRES_URL.

    Without that variable the test is skipped with a visible reason, unless
    MEPHISTO_REQUIRE_POSTGRES=1 (set by CI), which turns the skip into a failure.
    """
    base = os.environ.get("MEPHISTO_TEST_POSTGRES_URL")
    if not base:
        reason = "no PostgreSQL: set MEPHISTO_TEST_POSTGRES_URL to run the PostgreSQL suite"
        if os.environ.get("MEPHISTO_REQUIRE_POSTGRES") == "1":
            pytest.fail(reason + " (MEPHISTO_REQUIRE_POSTGRES=1)")
        pytest.skip(reason)
    import sqlalchemy as sa

    from mephisto.db.engine import normalize_url

    schema = "t_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(normalize_url(base), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        pytest.fail(f"PostgreSQL at {base} is not reachable: {exc}")
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


# -- real Chromium (tests marked `browser`) ----------------------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium (the Debian package) driven by Playwright, one per test module.

    Module scope, not session: Playwright's sync API keeps an event loop marked as
    running in this thread while it is open, so `asyncio.run` (simulated workers) fails
    until it closes. Keep browser tests in modules of their own.

    Without Chromium the test is skipped, unless MEPHISTO_REQUIRE_BROWSER=1 (set by CI),
    which turns the skip into a failure."""
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        reason = f"no Chromium at {CHROMIUM}: apt-get install chromium"
        if os.environ.get("MEPHISTO_REQUIRE_BROWSER") == "1":
            pytest.fail(reason + " (MEPHISTO_REQUIRE_BROWSER=1)")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A page in a fresh browser context; uncaught page errors collect in `page.js_errors`."""
    context = browser.new_context()
    pg = context.new_page()
    pg.set_default_timeout(15_000)  # fail in seconds, not Playwright's 30 s per wait
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.js_errors = errors  # type: ignore[attr-defined]
    yield pg
    context.close()


# -- npm and the React example (examples/static_react_task) -----------------------------

REACT_EXAMPLE_DIR = Path(__file__).resolve().parent.parent / "examples" / "static_react_task"


@pytest.fixture(scope="session")
def npm() -> str:
    """The npm executable. Without it the test is skipped, unless CI is set or
    MEPHISTO_REQUIRE_NPM=1, which turns the skip into a failure."""
    found = shutil.which("npm")
    if found is None:
        reason = "npm is not installed (apt-get install npm): cannot build React front-ends"
        if os.environ.get("MEPHISTO_REQUIRE_NPM") == "1" or os.environ.get("CI"):
            pytest.fail(reason + " (CI or MEPHISTO_REQUIRE_NPM=1)")
        pytest.skip(reason)
    return found


@pytest.fixture(scope="session")
def react_example_bundle(npm: str) -> Path:
    """examples/static_react_task/webapp built once per session, where its users build
    it (npm install only when its node_modules is missing or older than package.json).
    Always rebuilt (~0.1 s): the mephisto-task it links from packages/ may have changed."""
    from mephisto.tools.scripts import build_custom_bundle

    build_custom_bundle(REACT_EXAMPLE_DIR, force_rebuild=True)
    bundle = REACT_EXAMPLE_DIR / "webapp" / "build" / "bundle.js"
    assert bundle.is_file()
    return bundle
