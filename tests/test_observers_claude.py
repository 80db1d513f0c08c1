"""What the model sees from async hooks and observers, with the real Claude Code CLI.

Natively (2.1.329), an ``"async": true`` hook's decisions are ignored (a PreToolUse deny,
an exit 2, a PostToolUse block, an exit 1 reach nobody), but its additionalContext and
systemMessage reach the model as a system message on a later turn. So hookopt leaves async
hooks to Claude Code unless the user marks them as observers (observers.py), and a marked
async hook whose only output is a decision gives the model the same transcript.
"""
from __future__ import annotations

import json
import os
import posix
from pathlib import Path

import pytest

from modules.optimization.installer import install, uninstall
from tests.claude_harness import _python_first_path
from tests.conformance.cases import Case, bash, ctx, pre, py
from tests.conformance.test_conformance import _names, _session, diff, make_project, transcript
from tests.daemon_helpers import private_runtime

pytestmark = pytest.mark.claude

DECISIONS = Case(
    "async-decisions",
    {
        "PreToolUse": [{"matcher": "Bash", "hooks": [py("Y", **{"async": True})]}],
        "PostToolUse": [{"matcher": "Bash", "hooks": [py("Z", **{"async": True}), py("L")]}],
    },
    {
        "PreToolUse:deny": {"Y": {"out": pre("deny", "async says no")}},
        "PreToolUse:exit2": {"Y": {"exit": 2, "err": "async pre exit2"}},
        "PostToolUse:block": {"Z": {"out": json.dumps({"decision": "block", "reason": "async post block"})}},
        "PostToolUse:exit2": {"Z": {"exit": 2, "err": "async post exit2"}},
        "PostToolUse:exit1": {"Z": {"exit": 1, "err": "async post exit1"}},
        "PostToolUse:sync": {"L": {"out": ctx("PostToolUse", "sync logger context")}},
    },
    [bash(t) for t in ("deny", "exit2", "block", "exit2", "exit1", "sync", "none")],
)
# The async hook's output comes at a turn after it finished: a synchronous W, sleeping on
# the calls after it, gives it that time on a loaded machine.
CONTEXT = Case(
    "async-context",
    {"PostToolUse": [{"matcher": "Bash", "hooks": [py("Z", **{"async": True}), py("W")]}]},
    {"PostToolUse:ctx": {"Z": {"out": ctx("PostToolUse", "async post ctx")}}, "PostToolUse:wait": {"W": {"sleep": 1}}},
    [bash("ctx"), bash("wait"), bash("wait"), bash("wait")],
)


def _run(case: Case, root: Path, claude_cli: Path, monkeypatch: pytest.MonkeyPatch, observers: list[str] | None) -> dict:
    project = root / case.name
    if not project.exists():
        make_project(root, case)
    home = root / f"{case.name}-home"
    home.mkdir(exist_ok=True)
    names = _names(project / ".claude" / "settings.json")
    with private_runtime(project) as rt:
        if observers is None:
            result = _session(claude_cli, project, home, case, rt.root)
        else:
            monkeypatch.setitem(posix.environ, b"HOOKOPT_RUNTIME_DIR", str(rt.root).encode())
            monkeypatch.setitem(posix.environ, b"PATH", _python_first_path(home, os.environ["PATH"]).encode())
            install(project, observers=observers, say=lambda _: None)
            try:
                names |= _names(project / ".claude" / "settings.json")
                result = _session(claude_cli, project, home, case, rt.root)
            finally:
                uninstall(project, say=lambda _: None, force=True)
    return transcript(result, names)


def test_async_hooks_marked_as_observers_leave_the_transcript_unchanged(tmp_path, claude_cli, monkeypatch):
    native = _run(DECISIONS, tmp_path, claude_cli, monkeypatch, None)
    seen = json.dumps(native)
    assert "sync logger context" in seen  # the hooks ran
    for ignored in ("async says no", "async pre exit2", "async post block", "async post exit2", "async post exit1"):
        assert ignored not in seen, ignored
    installed = _run(DECISIONS, tmp_path, claude_cli, monkeypatch, ["*behave.py Y", "*behave.py Z"])
    assert installed == native, diff(native, installed)


def test_claude_code_shows_an_async_hooks_context_later_so_unmarked_ones_stay_native(tmp_path, claude_cli, monkeypatch):
    native = _run(CONTEXT, tmp_path, claude_cli, monkeypatch, None)
    shown = [m for m in native["messages"] if m.get("role") == "system" and "async post ctx" in json.dumps(m)]
    assert shown, "Claude Code no longer shows an async hook's additionalContext: left_reason can relax"
