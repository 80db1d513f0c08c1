"""Install and uninstall over a real project tree: reversible, repeatable, refusing what it
does not understand (the pre-commit install/uninstall habits)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modules.optimization.installer import InstallError, consolidate, install, uninstall, union_matcher
from modules.optimization.manifest import STUB_MARKER
from modules.optimization.protocol import matcher_matches

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "project"
IGNORED = shutil.ignore_patterns("hookopt", "logs")  # state a local demo run may have left
SCRIPTS = ["audit_bash.py", "block_dangerous.py", "change_notes.py", "check_paths.py", "log_tools.py", "protect_secrets.py", "sqlite_logger.py"]


def snapshot(project):
    """Every file's bytes and mode (links as their target), leaving out hookopt's own state dir."""
    tree = {}
    for path in sorted(project.rglob("*")):
        rel = path.relative_to(project)
        if rel.parts[:2] == (".claude", "hookopt"):
            continue
        if path.is_symlink():
            tree[str(rel)] = ("link", os.readlink(path))
        elif path.is_file():
            tree[str(rel)] = (path.stat().st_mode, path.read_bytes())
        else:
            tree[str(rel)] = ("dir", path.stat().st_mode)
    return tree


@pytest.fixture
def project(tmp_path):
    target = tmp_path / "project"
    shutil.copytree(EXAMPLE, target, symlinks=True, ignore=IGNORED)
    (target / ".claude" / "hooks" / "block_dangerous.py").chmod(0o700)  # an unusual mode must survive
    return target


def quiet(_):
    pass


def test_install_keeps_originals_and_rewrites_only_commands(project):
    before = snapshot(project)
    settings_before = json.loads((project / ".claude" / "settings.json").read_text())
    assert install(project, say=quiet) is True
    hooks = project / ".claude" / "hooks"
    for name in SCRIPTS:
        original = hooks / f"{name}.original"
        assert original.read_bytes() == before[f".claude/hooks/{name}"][1]
        assert original.stat().st_mode == before[f".claude/hooks/{name}"][0]
        stub = (hooks / name).read_bytes()
        assert STUB_MARKER in stub[:512] and stub.startswith(f"#!{sys.executable} -S".encode())
    settings = json.loads((project / ".claude" / "settings.json").read_text())
    assert settings["permissions"] == settings_before["permissions"]
    for event, groups in settings_before["hooks"].items():
        assert [g["matcher"] for g in settings["hooks"][event]] == [g["matcher"] for g in groups]
        for new, old in zip(settings["hooks"][event], groups, strict=True):
            for new_hook, old_hook in zip(new["hooks"], old["hooks"], strict=True):
                python_form = old_hook["command"].replace("python3 ", f"{sys.executable} -S ", 1)
                client = project / ".claude" / "hookopt" / "hookopt-client"  # the native client first, then the stub
                assert new_hook["command"] == f"[ -x {client} ] && exec {client} legacy - {python_form}; exec {python_form}"
                assert {k: v for k, v in new_hook.items() if k != "command"} == {k: v for k, v in old_hook.items() if k != "command"}
    backup = project / ".claude" / "hookopt" / "settings.json.backup"
    assert backup.read_bytes() == before[".claude/settings.json"][1]


def test_second_install_changes_nothing(project):
    install(project, say=quiet)
    after_first = snapshot(project)
    manifest = (project / ".claude/hookopt/install.json").read_bytes()
    messages = []
    assert install(project, say=messages.append) is False
    assert snapshot(project) == after_first
    assert (project / ".claude/hookopt/install.json").read_bytes() == manifest
    assert "already installed" in messages[0]


def test_install_with_other_options_refuses(project):
    install(project, say=quiet)
    after = snapshot(project)
    with pytest.raises(InstallError, match="already installed .* run `hookopt uninstall` first"):
        install(project, consolidate_hooks=True, say=quiet)
    assert snapshot(project) == after


def test_uninstall_restores_every_byte(project):
    before = snapshot(project)
    install(project, profile="latency", say=quiet)
    assert snapshot(project) != before
    uninstall(project, say=quiet)
    assert snapshot(project) == before
    assert not (project / ".claude/hookopt/install.json").exists()


def test_consolidated_install_round_trip(project):
    before = snapshot(project)
    install(project, consolidate_hooks=True, say=quiet)
    settings = json.loads((project / ".claude" / "settings.json").read_text())
    pre = settings["hooks"]["PreToolUse"]
    assert len(pre) == 1 and pre[0]["matcher"] == "Bash|Read|Edit|Write"
    assert pre[0]["hooks"][0]["command"].endswith("hooks/stack.py") and " -S " in pre[0]["hooks"][0]["command"]
    assert settings["hooks"]["PostToolUse"][0]["matcher"] == "*"
    uninstall(project, say=quiet)
    assert snapshot(project) == before


def test_non_utf8_and_executable_scripts_survive(project):
    odd = project / ".claude" / "hooks" / "odd.py"
    odd.write_bytes(b"#!/usr/bin/env python3\n# caf\xe9 \xff\xfe\nimport sys\n")
    odd.chmod(0o751)
    settings = json.loads((project / ".claude" / "settings.json").read_text())
    settings["hooks"]["Stop"] = [{"hooks": [{"type": "command", "command": '"$CLAUDE_PROJECT_DIR"/.claude/hooks/odd.py'}]}]
    (project / ".claude" / "settings.json").write_text(json.dumps(settings))
    before = snapshot(project)
    install(project, client="python", say=quiet)
    assert (project / ".claude/hooks/odd.py.original").read_bytes() == before[".claude/hooks/odd.py"][1]
    new = json.loads((project / ".claude" / "settings.json").read_text())
    assert new["hooks"]["Stop"][0]["hooks"][0]["command"] == f'{sys.executable} -S "$CLAUDE_PROJECT_DIR"/.claude/hooks/odd.py'
    uninstall(project, say=quiet)
    assert snapshot(project) == before


def test_foreign_original_is_refused_and_nothing_changes(project):
    (project / ".claude" / "hooks" / "log_tools.py.original").write_text("someone else's")
    before = snapshot(project)
    with pytest.raises(InstallError, match=r"log_tools.py.original already exists and is not hookopt's"):
        install(project, say=quiet)
    assert snapshot(project) == before
    assert not (project / ".claude/hookopt/install.json").exists()


def test_invalid_settings_json_is_refused(project):
    (project / ".claude" / "settings.json").write_text('{"hooks": {')
    before = snapshot(project)
    with pytest.raises(InstallError, match="is not valid JSON"):
        install(project, say=quiet)
    assert snapshot(project) == before


def test_symlink_out_of_the_project_is_refused(project, tmp_path):
    outside = tmp_path / "outside.py"
    outside.write_text("print('outside')\n")
    link = project / ".claude" / "hooks" / "log_tools.py"
    link.unlink()
    link.symlink_to(outside)
    before = snapshot(project)
    with pytest.raises(InstallError, match="symlink leading out of the project"):
        install(project, say=quiet)
    assert snapshot(project) == before and outside.read_text() == "print('outside')\n"


def test_claude_dir_symlinked_out_is_refused(tmp_path):
    real = tmp_path / "elsewhere"
    shutil.copytree(EXAMPLE / ".claude", real, ignore=IGNORED)
    project = tmp_path / "project"
    project.mkdir()
    (project / ".claude").symlink_to(real)
    with pytest.raises(InstallError, match="symlink leading out of the project"):
        install(project, say=quiet)
    assert not (real / "hookopt").exists()


def test_dead_symlink_hook_is_left_alone(project):
    dead = project / ".claude" / "hooks" / "gone.py"
    dead.symlink_to(project / "nowhere.py")
    settings = json.loads((project / ".claude" / "settings.json").read_text())
    settings["hooks"]["Stop"] = [{"hooks": [{"type": "command", "command": "python3 .claude/hooks/gone.py"}]}]
    (project / ".claude" / "settings.json").write_text(json.dumps(settings))
    before = snapshot(project)
    install(project, say=quiet)
    assert dead.is_symlink() and not (project / ".claude/hooks/gone.py.original").exists()
    uninstall(project, say=quiet)
    assert snapshot(project) == before


def test_uninstall_refuses_an_edited_stub_unless_forced(project):
    before = snapshot(project)
    install(project, say=quiet)
    stub = project / ".claude" / "hooks" / "log_tools.py"
    stub.write_text(stub.read_text() + "# edited\n")
    edited = snapshot(project)
    with pytest.raises(InstallError, match="log_tools.py is no longer hookopt's stub"):
        uninstall(project, say=quiet)
    assert snapshot(project) == edited
    uninstall(project, force=True, say=quiet)
    assert snapshot(project) == before


def test_uninstall_without_install_is_a_clear_error(project):
    with pytest.raises(InstallError, match="hookopt is not installed"):
        uninstall(project, say=quiet)


def test_project_without_settings_round_trips(tmp_path):
    before = snapshot(tmp_path)
    install(tmp_path, profile="throughput", say=quiet)
    assert json.loads((tmp_path / ".claude/settings.json").read_text())["optimization"] == {"profile": "throughput"}
    uninstall(tmp_path, say=quiet)
    assert snapshot(tmp_path) == before


def test_consolidate_keeps_non_command_and_async_hooks():
    hooks = {
        "PreToolUse": [
            {"matcher": "Bash", "hooks": [{"type": "command", "command": "a"}, {"type": "prompt", "prompt": "p"}]},
            {"matcher": "mcp__.*", "hooks": [{"type": "command", "command": "b", "timeout": 30}]},
        ],
        "PostToolUse": [{"matcher": "*", "hooks": [{"type": "command", "command": "c", "async": True}]}],
        "Stop": [{"hooks": [{"type": "command", "command": "d"}]}],
    }
    new = consolidate(hooks, "command", "/py", {})
    assert new["PreToolUse"][0]["matcher"] == "^(?:Bash)$|(?:mcp__.*)"
    assert new["PreToolUse"][0]["hooks"][0]["timeout"] == 605
    assert new["PreToolUse"][1] == {"matcher": "Bash", "hooks": [{"type": "prompt", "prompt": "p"}]}
    assert new["PostToolUse"] == hooks["PostToolUse"]  # async hooks stay with Claude Code
    assert "matcher" not in new["Stop"][0]


def test_http_consolidation_adds_a_session_start_command():
    new = consolidate({"PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "a"}]}]}, "http", "/py", {"port": 4242, "token": "t"})
    assert new["PreToolUse"][0]["hooks"][0]["url"] == "http://127.0.0.1:4242/hook/stack"
    assert new["PreToolUse"][0]["hooks"][0]["headers"] == {"X-Hookopt-Token": "t"}
    assert new["SessionStart"][0]["hooks"][0]["type"] == "command"


tools = st.sampled_from(["Bash", "Read", "Write", "Edit", "MultiEdit", "Grep", "mcp__gh__issue", "NotebookEdit", "WebFetch"])
matchers = st.one_of(
    st.none(),
    st.just("*"),
    st.lists(tools, min_size=1, max_size=3).map("|".join),
    st.sampled_from(["mcp__.*", ".*Edit", "^Re", "Web.*", "Note"]),
)


@given(st.lists(matchers, min_size=1, max_size=5), tools)
def test_union_matcher_matches_what_any_matcher_matches(ms, tool):
    assert matcher_matches(union_matcher(ms), tool) == any(matcher_matches(m, tool) for m in ms)


def test_cli_refusal_is_one_line_exit_1(project):
    (project / ".claude" / "settings.json").write_text("nope")
    proc = subprocess.run([sys.executable, "-m", "modules.optimization.cli", "install", "--project", str(project)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 1
    assert proc.stderr.startswith("hookopt: error: ") and "is not valid JSON" in proc.stderr and proc.stderr.count("\n") == 1
