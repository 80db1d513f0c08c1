"""Claude Code's settings scopes, and where hookopt keeps an install of each.

Claude Code reads hooks from every scope and runs them together (managed >
``--settings`` > local > project > user; hook arrays concatenate; a command string
that several matching hooks share runs once, whichever scopes they come from:
checked with 2.1.329 by tests/test_scopes_claude.py). hookopt installs over the
three a user edits, like ``claude config --scope``:

- project: ``PROJECT/.claude/settings.json`` (the default);
- local: ``PROJECT/.claude/settings.local.json``;
- user: ``~/.claude/settings.json``, scripts under ``~/.claude``, applying to every project.

Each scope has its own manifest and settings backup, so installs of several scopes
coexist and each uninstalls on its own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, get_args

from .paths import STATE_DIRNAME

__all__ = ["PRECEDENCE", "SCOPE_NAMES", "Scope", "ScopeName", "home_dir", "scope"]

ScopeName = Literal["project", "local", "user"]
SCOPE_NAMES: Final[tuple[ScopeName, ...]] = get_args(ScopeName)
PRECEDENCE: Final[tuple[ScopeName, ...]] = ("local", "project", "user")  # Claude Code's order, highest first


def home_dir() -> Path:
    """The user's home as Claude Code sees it: $HOME, else the password database."""
    return Path(os.path.expanduser("~"))


@dataclass(frozen=True, slots=True)
class Scope:
    """One settings scope: its settings file, the root its scripts live under, its install state."""

    name: ScopeName
    base: Path  # the directory holding .claude: the project, or the home directory
    settings_path: Path
    manifest_name: str
    backup_name: str

    @property
    def root(self) -> Path:
        """Scripts inside it may be replaced by stubs (the project, or ~/.claude for the user scope)."""
        return self.base / ".claude" if self.name == "user" else self.base

    @property
    def claude_dir(self) -> Path:
        return self.base / ".claude"

    @property
    def state(self) -> Path:
        return self.claude_dir / STATE_DIRNAME

    @property
    def manifest_path(self) -> Path:
        return self.state / self.manifest_name

    @property
    def backup_path(self) -> Path:
        return self.state / self.backup_name

    @property
    def root_label(self) -> str:
        return "the project" if self.name != "user" else f"{self.root} (the user scope's root)"

    @property
    def label(self) -> str:
        return f"the {self.name} scope ({self.settings_path})"


def scope(name: str, project: Path, home: Path | None = None) -> Scope:
    """The scope called name, for a project (the user scope is the same for every project)."""
    if name == "project":
        return Scope("project", project, project / ".claude" / "settings.json", "install.json", "settings.json.backup")
    if name == "local":
        return Scope("local", project, project / ".claude" / "settings.local.json", "install.local.json", "settings.local.json.backup")
    if name == "user":
        base = home if home is not None else home_dir()
        return Scope("user", base, base / ".claude" / "settings.json", "install.json", "settings.json.backup")
    raise ValueError(f"unknown scope {name!r}; choose one of {', '.join(SCOPE_NAMES)}")
