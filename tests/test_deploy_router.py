"""The router's Dockerfile (deploy/router): what it builds and runs. Not built here (no
network for the base image); its contents are checked against the repository."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "deploy" / "router" / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1])
            for line in lines if line and not line.startswith("#")]


def test_the_image_runs_mephisto_router_as_an_unprivileged_user_on_port() -> None:
    steps = _instructions()
    assert steps[0] == ("FROM", "python:3.11-slim")
    cmd = [arg for op, arg in steps if op == "CMD"]
    assert cmd == ["exec mephisto router --port ${PORT:-8080}"]
    assert ("EXPOSE", "8080") in steps
    users = [arg for op, arg in steps if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert [op for op, _ in steps].index("USER") < [op for op, _ in steps].index("CMD")
    assert any(op == "RUN" and "pip install ." in arg for op, arg in steps)


def test_what_it_copies_exists_and_installs_the_command() -> None:
    for op, arg in _instructions():
        if op == "COPY":
            for source in arg.split()[:-1]:
                assert (REPO / source).exists(), source
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(r'^mephisto = "mephisto\.cli:cli"$', pyproject, re.MULTILINE)


def test_the_readme_gives_the_one_line_way_to_run_it() -> None:
    readme = (DOCKERFILE.parent / "README.md").read_text()
    assert "docker build -t mephisto-router -f deploy/router/Dockerfile . && docker run " \
           "-p 8080:8080 -e MEPHISTO_ROUTER_SECRET=" in readme
