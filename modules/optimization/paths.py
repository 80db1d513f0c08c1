"""Where a project's state lives."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["STATE_DIRNAME", "project_dir", "state_dir", "write_private"]

STATE_DIRNAME = "hookopt"


def project_dir(event: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> Path:
    """The project root: $CLAUDE_PROJECT_DIR, else the event's cwd, else the current directory."""
    env = os.environ if env is None else env
    if root := env.get("CLAUDE_PROJECT_DIR"):
        return Path(root)
    if event is not None and isinstance(cwd := event.get("cwd"), str) and cwd:
        return Path(cwd)
    return Path.cwd()


def state_dir(project: Path, *, create: bool = True) -> Path:
    """The project's private state directory (.claude/hookopt, mode 0700, git-ignored)."""
    path = project / ".claude" / STATE_DIRNAME
    if create:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        ignore = path / ".gitignore"
        if not ignore.exists():
            ignore.write_text("*\n", encoding="utf-8")
    return path


def write_private(path: Path, text: str) -> None:
    """Replace path atomically with text, readable by its owner only (0600)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
