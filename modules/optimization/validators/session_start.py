"""SessionStart context: git branch and status, recent commits, TODO count and the
optimizer's status, gathered in parallel and handed to Claude as additionalContext."""

from __future__ import annotations

import functools
import os
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from cachetools import TTLCache

from ..parallel import run_parallel
from ..paths import project_dir
from .base import Validator, Verdict

__all__ = ["SessionContext", "builtin_session"]

_GIT_TIMEOUT_S: Final = 2.0
_SHOWN_CHANGES: Final = 10


def _git(project: str, *args: str) -> str:
    proc = subprocess.run(
        ["git", "-C", project, *args], capture_output=True, text=True, timeout=_GIT_TIMEOUT_S, errors="replace"
    )
    if proc.returncode not in (0, 1):  # git grep exits 1 when nothing matches
        raise RuntimeError(proc.stderr.strip() or f"git {args[0]} exited {proc.returncode}")
    return proc.stdout.strip()


def _branch(project: str) -> str:
    return f"Git branch: {_git(project, 'rev-parse', '--abbrev-ref', 'HEAD')}"


def _status(project: str) -> str:
    lines = _git(project, "status", "--porcelain").splitlines()
    if not lines:
        return "Working tree: clean"
    shown = "\n".join(f"  {line}" for line in lines[:_SHOWN_CHANGES])
    more = f"\n  ... and {len(lines) - _SHOWN_CHANGES} more" if len(lines) > _SHOWN_CHANGES else ""
    return f"Uncommitted changes ({len(lines)} files):\n{shown}{more}"


def _commits(project: str) -> str:
    log = _git(project, "log", "-5", "--oneline", "--no-decorate")
    return "Recent commits:\n" + "\n".join(f"  {line}" for line in log.splitlines()) if log else "No commits yet"


def _todos(project: str) -> str:
    counts = _git(project, "grep", "-c", "-I", "-E", r"\b(TODO|FIXME)\b")
    total = sum(int(line.rpartition(":")[2]) for line in counts.splitlines() if line.rpartition(":")[2].isdigit())
    return f"TODO/FIXME markers in tracked files: {total}"


def _head_state(project: str) -> tuple[int, ...]:
    """Change stamps of what the context reads: HEAD, the index, the last commit."""
    stamps = []
    for name in ("HEAD", "index", "logs/HEAD"):
        try:
            stamps.append(os.stat(os.path.join(project, ".git", name)).st_mtime_ns)
        except OSError:
            stamps.append(0)
    return tuple(stamps)


class SessionContext:
    """Build the session's opening context; cached per project until git state changes or the TTL ends."""

    def __init__(
        self,
        status: Callable[[], str] | None = None,
        *,
        ttl_s: float = 30.0,
        deadline_s: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._status = status
        self._deadline_s = deadline_s
        self._cache: TTLCache[tuple[Any, ...], str] = TTLCache(maxsize=32, ttl=ttl_s, timer=clock)
        self._lock = threading.Lock()
        self.computed = 0

    def __call__(self, event: Mapping[str, Any]) -> Verdict:
        project = str(project_dir(event))
        key = (project, _head_state(project))
        with self._lock:
            cached = self._cache.get(key)
        if cached is None:
            cached = self._gather(project)
            with self._lock:
                cached = self._cache.setdefault(key, cached)
        status = self._status() if self._status else ""
        return Verdict(None, context="\n".join(part for part in (cached, status) if part))

    def _gather(self, project: str) -> str:
        if not os.path.isdir(os.path.join(project, ".git")):
            return "Not a git repository."
        tasks = {fn.__name__: functools.partial(fn, project) for fn in (_branch, _status, _commits, _todos)}
        results = run_parallel(tasks, self._deadline_s)
        self.computed += 1
        # A component that failed or timed out is left out rather than delaying the session.
        return "\n".join(results[name].value for name in tasks if results[name].ok)


def builtin_session(status: Callable[[], str] | None = None) -> tuple[Validator, ...]:
    """The SessionStart context validator (fail open: context is never worth blocking for)."""
    return (
        Validator(
            "session_context",
            SessionContext(status),
            events=frozenset({"SessionStart"}),
            policy="fail_open",
            cacheable=False,
            priority=10,
        ),
    )
