"""The transcript the model sees is the same natively and under every install.

For every case in cases.py, the real Claude Code CLI runs the same scripted session
in the same project directory: natively, then installed with stubs, with
--consolidate and with --transport http (each uninstalled afterwards). Everything the
model receives (tool results, hook context, stop feedback, denials, the final result)
is compared, normalised only for the hook command or URL Claude Code names in its
messages and the session's tool_use id prefix.
"""
from __future__ import annotations

import difflib
import json
import os
import posix
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from modules.optimization.installer import install, uninstall
from tests.claude_harness import _python_first_path
from tests.conformance.cases import CASES, Case
from tests.daemon_helpers import private_runtime

pytestmark = pytest.mark.claude

HERE = Path(__file__).resolve().parent
MODES: dict[str, dict[str, Any]] = {
    "stubs": {},
    "consolidate": {"consolidate_hooks": True},
    "http": {"transport": "http"},
}


def make_project(root: Path, case: Case) -> Path:
    project = root / case.name
    hooks_dir = project / ".claude" / "hooks"
    hooks_dir.mkdir(parents=True)
    shutil.copy(HERE / "behave.py", hooks_dir / "behave.py")
    shutil.copy(HERE / "behave.sh", hooks_dir / "behave.sh")
    (hooks_dir / "behaviours.json").write_text(json.dumps(case.behaviours, indent=1))
    (project / ".claude" / "settings.json").write_text(json.dumps({"hooks": case.hooks}, indent=2))
    for rel, text in case.files.items():
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_text(text)
    return project


def _names(settings_path: Path) -> set[str]:
    """Every hook command and URL of a settings file: what Claude Code may name in a message."""
    names: set[str] = set()
    for groups in (json.loads(settings_path.read_text()).get("hooks") or {}).values():
        for group in groups:
            for hook in group.get("hooks", []):
                names.update(str(hook[k]) for k in ("command", "url") if k in hook)
    return names


# A part Claude Code renders for one hook: "<Event>[:<subject>] hook <what>: <text>".
_HOOK_PART = re.compile(r"^[A-Z][A-Za-z]+(?::\S+)? hook ")
_PRE_CONTEXT = re.compile(r"^(PreToolUse:\S+ hook additional context: )(.*)$", re.S)


def _unordered(text: str) -> str:
    """Sort what parallel hooks add in the order they finish, which varies natively.

    Claude Code joins the parts of several hooks with a blank line (PreToolUse
    contexts with a newline under one prefix), in completion order.
    """
    parts = text.split("\n\n")
    out: list[str] = []
    run: list[str] = []
    for part in [*parts, None]:
        if part is not None and _HOOK_PART.match(part):
            if m := _PRE_CONTEXT.match(part):
                part = m.group(1) + "\n".join(sorted(m.group(2).split("\n")))
            run.append(part)
            continue
        out += sorted(run)
        run = []
        if part is not None:
            out.append(part)
    return "\n\n".join(out)


def _walk(value: Any, fn: Any) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, list):
        return [_walk(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: _walk(v, fn) for k, v in value.items()}
    return value


def transcript(result: Any, names: set[str], either: Sequence[Sequence[str]] = ()) -> dict[str, Any]:
    """What the model saw, normalised for hook names, the session's tool_use ids and
    the order of parts that parallel hooks add (which varies from run to run natively)."""
    last = result.main_requests[-1].body if result.main_requests else {}
    final = result.final or {}
    seen = {
        "system": last.get("system"),
        "messages": last.get("messages", []),
        "final": {k: final.get(k) for k in ("subtype", "is_error", "result", "num_turns", "permission_denials")},
        "main_requests": len(result.main_requests),
    }
    text = json.dumps(seen, indent=1, ensure_ascii=False)
    for name in sorted(names, key=len, reverse=True):
        text = text.replace(json.dumps(name, ensure_ascii=False)[1:-1], "<hook>")
    text = re.sub(r"toolu_[0-9a-f]{8}_", "toolu_", text)
    # Where several hooks block one call, Claude Code shows one of them (which one varies).
    same = {choice: choices[0] for choices in either for choice in choices}
    return _walk(json.loads(text), lambda s: _unordered(same.get(s, s)))


def diff(native: dict[str, Any], other: dict[str, Any]) -> str:
    """A readable account of where two transcripts differ, message by message."""
    a = [json.dumps(m, ensure_ascii=False)[:700] for m in native["messages"]]
    b = [json.dumps(m, ensure_ascii=False)[:700] for m in other["messages"]]
    lines = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag != "equal":
            lines += [f"  native    {i}: {a[i]}" for i in range(i1, i2)]
            lines += [f"  installed {j}: {b[j]}" for j in range(j1, j2)]
            lines.append("  --")
    if native["final"] != other["final"]:
        lines.append(f"final:\n  native:    {native['final']}\n  installed: {other['final']}")
    if native["main_requests"] != other["main_requests"]:
        lines.append(f"main requests: native {native['main_requests']}, installed {other['main_requests']}")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def projects(tmp_path_factory: pytest.TempPathFactory, claude_cli: Path) -> dict[str, Any]:
    """Each case's project and native transcript, made once per module."""
    return {"root": tmp_path_factory.mktemp("conformance"), "native": {}}


def _session(claude_cli: Path, project: Path, home: Path, case: Case, runtime_root: Path) -> Any:
    from tests.claude_harness import run_session

    for path in case.cleanup:
        Path(path).unlink(missing_ok=True)
    extra: list[str] = []
    if case.mcp:
        config = {"mcpServers": {"srv": {"command": sys.executable, "args": [str(HERE / "mcp_server.py")]}}}
        extra = ["--mcp-config", json.dumps(config), "--allowedTools", "mcp__srv__echo"]
    return run_session(
        claude_cli, project, case.calls, home=home, prompt=case.prompt,
        env={"HOOKOPT_RUNTIME_DIR": str(runtime_root)}, extra_args=extra,
    )


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_same_transcript(case: Case, mode: str, projects: dict[str, Any], claude_cli: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root: Path = projects["root"]
    project = root / case.name
    home = root / f"{case.name}-home"
    if case.name not in projects["native"]:
        make_project(root, case)
        home.mkdir()
        with private_runtime(project) as rt:
            native = _session(claude_cli, project, home, case, rt.root)
        assert native.returncode == 0 or native.final is not None, native.stderr
        projects["native"][case.name] = transcript(native, _names(project / ".claude" / "settings.json"), case.either)
        seen_natively = json.dumps(projects["native"][case.name], ensure_ascii=False)
        missing = [text for text in case.expect if json.dumps(text, ensure_ascii=False)[1:-1] not in seen_natively]
        assert not missing, f"{case.name}: natively, the hooks did not show {missing}"
        if case.requests is not None:
            assert len(native.main_requests) == case.requests, f"{case.name}: the hooks did not end the session"
    expected = projects["native"][case.name]
    before = _names(project / ".claude" / "settings.json")
    with private_runtime(project) as rt:
        monkeypatch.setitem(posix.environ, b"HOOKOPT_RUNTIME_DIR", str(rt.root).encode())
        # An http install's daemon runs hooks in its own environment (Claude Code sends none
        # over http): start it with the PATH the sessions give their hooks.
        monkeypatch.setitem(posix.environ, b"PATH", _python_first_path(home, os.environ["PATH"]).encode())
        install(project, say=lambda _: None, **MODES[mode])
        try:
            names = before | _names(project / ".claude" / "settings.json")
            result = _session(claude_cli, project, home, case, rt.root)
        finally:
            uninstall(project, say=lambda _: None, force=True)
    seen = transcript(result, names, case.either)
    assert seen == expected, f"{case.name} under {mode} differs from native:\n{diff(expected, seen)}"
