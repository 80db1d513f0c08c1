"""Shared fixtures: a project with a private daemon runtime, and the real Claude Code CLI (see tests/claude_harness.py)."""
from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.claude_harness import (
    ClaudeInstallError,
    SessionResult,
    ToolCall,
    find_or_install_claude,
    run_session,
)
from tests.daemon_helpers import Runtime, private_runtime

EXAMPLE_PROJECT = Path(__file__).resolve().parents[1] / "examples" / "project"


@pytest.fixture(scope="session")
def claude_cli() -> Path:
    """The pinned Claude Code CLI binary, installed into the user cache on first use."""
    try:
        return find_or_install_claude()
    except ClaudeInstallError as exc:
        # CI installs the CLI, so a missing one is a failure, not a skip.
        pytest.fail(f"Claude Code CLI unavailable: {exc}", pytrace=False)


@pytest.fixture
def claude_home(tmp_path: Path) -> Path:
    """A private HOME for the CLI, kept under tmp_path for inspection (transcripts, .claude.json)."""
    home = tmp_path / "claude-home"
    home.mkdir()
    return home


@pytest.fixture
def example_project(tmp_path: Path) -> Path:
    """A fresh copy of examples/project with its native hooks."""
    project = tmp_path / "project"
    shutil.copytree(EXAMPLE_PROJECT, project, ignore=shutil.ignore_patterns("hookopt", "logs"))
    return project


@pytest.fixture
def claude_session(claude_cli: Path, claude_home: Path) -> Callable[..., SessionResult]:
    """run_session bound to the CLI and this test's private HOME: claude_session(project, calls, **kw)."""

    def run(project_dir: Path, calls: Iterable[ToolCall], **kwargs: Any) -> SessionResult:
        kwargs.setdefault("home", claude_home)
        return run_session(claude_cli, project_dir, calls, **kwargs)

    return run


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    """An empty project and a private runtime dir for its daemon (stopped afterwards).

    Test modules that need a different project override this fixture.
    """
    project = tmp_path / "project"
    project.mkdir()
    with private_runtime(project) as runtime:
        yield runtime


@pytest.fixture
def example_rt(example_project: Path) -> Iterator[Runtime]:
    """A fresh copy of examples/project with a private runtime dir for its daemon (stopped afterwards)."""
    with private_runtime(example_project) as runtime:
        yield runtime
