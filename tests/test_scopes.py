"""Install over every settings scope (project, local, user): each round-trips byte for byte,
installs of several scopes coexist, and the daemon's selection runs every hook of every
scope exactly once, as Claude Code does (the real CLI: tests/test_scopes_claude.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modules.optimization.installer import InstallError, install, uninstall
from modules.optimization.manifest import STUB_MARKER
from modules.optimization.protocol import parse_event
from modules.optimization.stack import load_stacks

ROOT = Path(__file__).resolve().parents[1]
USER_HOOK = "python3 ~/.claude/hooks/guard.py"
PROJECT_HOOK = 'python3 "$CLAUDE_PROJECT_DIR"/.claude/hooks/check.py'
SCRIPT = b"import sys\nsys.stderr.write('no')\nsys.exit(2)\n"


def quiet(_):
    pass


def tree(*roots):
    """Every file under each root, bytes and modes (hookopt's state dirs included: they must go too)."""
    out = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            key = str(path)
            if path.is_symlink():
                out[key] = ("link", os.readlink(path))
            elif path.is_file():
                out[key] = (path.stat().st_mode, path.read_bytes())
            else:
                out[key] = ("dir", path.stat().st_mode)
    return out


def settings(*groups):
    return {"hooks": {"PreToolUse": [{"matcher": m, "hooks": [{"type": "command", "command": c}]} for m, c in groups]}}


@pytest.fixture
def home(tmp_path):
    home = tmp_path / "home"
    (home / ".claude" / "hooks").mkdir(parents=True)
    (home / ".claude" / "hooks" / "guard.py").write_bytes(SCRIPT)
    (home / ".claude" / "settings.json").write_text(json.dumps({"model": "x", **settings(("Bash", USER_HOOK), ("Bash", PROJECT_HOOK))}, indent=4))
    return home


@pytest.fixture
def project(tmp_path, home, monkeypatch):
    monkeypatch.setenv("HOME", str(home))  # Claude Code's ~ and ours
    project = tmp_path / "project"
    (project / ".claude" / "hooks").mkdir(parents=True)
    (project / ".claude" / "hooks" / "check.py").write_bytes(SCRIPT)
    (project / ".claude" / "settings.json").write_text(json.dumps(settings(("Bash", PROJECT_HOOK))))
    (project / ".claude" / "settings.local.json").write_bytes(json.dumps(settings(("Write", PROJECT_HOOK), ("Bash", "python3 .claude/hooks/check.py"))).encode() + b"  \n")
    return project


@pytest.mark.parametrize("consolidate", [False, True], ids=["stubs", "consolidate"])
@pytest.mark.parametrize("scope", ["local", "user"])
def test_each_scope_round_trips_byte_for_byte(project, home, scope, consolidate):
    before = tree(project, home)
    install(project, scope_name=scope, consolidate_hooks=consolidate, say=quiet)
    assert tree(project, home) != before
    assert install(project, scope_name=scope, consolidate_hooks=consolidate, say=quiet) is False  # twice: nothing changes
    uninstall(project, scope_name=scope, say=quiet)
    assert tree(project, home) == before


def test_user_scope_into_a_home_without_claude_dir_round_trips(tmp_path, monkeypatch):
    home = tmp_path / "empty-home"
    home.mkdir()
    project = tmp_path / "p"
    project.mkdir()
    monkeypatch.setenv("HOME", str(home))
    install(project, scope_name="user", consolidate_hooks=True, say=quiet)
    assert json.loads((home / ".claude" / "hookopt" / "install.json").read_text())["scope"] == "user"
    uninstall(project, scope_name="user", say=quiet)
    assert tree(home) == {} and tree(project) == {}


def test_local_scope_creates_and_removes_a_settings_file_that_did_not_exist(tmp_path):
    project = tmp_path / "p"
    (project / ".claude").mkdir(parents=True)
    (project / ".claude" / "settings.json").write_text("{}")
    before = tree(project)
    install(project, scope_name="local", consolidate_hooks=True, say=quiet)
    assert (project / ".claude" / "settings.local.json").exists()
    uninstall(project, scope_name="local", say=quiet)
    # Only hookopt's state dir stays (as in the project scope: install did not create .claude).
    assert {k: v for k, v in tree(project).items() if "/.claude/hookopt" not in k} == before
    assert not (project / ".claude" / "settings.local.json").exists()


@pytest.mark.parametrize("order", [("project", "local"), ("local", "project")])
def test_project_and_local_installs_coexist_and_uninstall_in_any_order(project, home, order):
    (project / ".claude" / "hookopt").mkdir()  # state a daemon may have left: not ours to remove
    before = tree(project, home)
    install(project, scope_name="project", say=quiet)
    install(project, scope_name="local", consolidate_hooks=True, say=quiet)
    state = project / ".claude" / "hookopt"
    assert {p.name for p in state.glob("install*.json")} == {"install.json", "install.local.json"}
    assert STUB_MARKER in (project / ".claude" / "hooks" / "check.py").read_bytes()[:512]
    for name in order:
        uninstall(project, scope_name=name, say=quiet)
    after = tree(project, home)
    assert {k: v for k, v in after.items() if "/.claude/hookopt/" not in k} == {k: v for k, v in before.items() if "/.claude/hookopt/" not in k}


def test_a_project_made_claude_dir_goes_only_with_the_last_install(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    project = tmp_path / "bare"
    project.mkdir()
    install(project, scope_name="project", consolidate_hooks=True, say=quiet)
    install(project, scope_name="local", consolidate_hooks=True, say=quiet)
    uninstall(project, scope_name="project", say=quiet)
    assert (project / ".claude" / "hookopt" / "install.local.json").exists()  # the local install keeps its state
    uninstall(project, scope_name="local", say=quiet)
    assert tree(project) == {}


def test_user_scope_stubs_scripts_under_home_and_leaves_project_relative_ones(project, home):
    install(project, scope_name="user", say=quiet)
    guard = home / ".claude" / "hooks" / "guard.py"
    assert STUB_MARKER in guard.read_bytes()[:512]
    assert (home / ".claude" / "hooks" / "guard.py.original").read_bytes() == SCRIPT
    # $CLAUDE_PROJECT_DIR names a different script in every project: never replaced.
    assert (project / ".claude" / "hooks" / "check.py").read_bytes() == SCRIPT
    # A command another project may repeat verbatim keeps its string, so Claude Code still runs it once.
    groups = json.loads((home / ".claude" / "settings.json").read_text())["hooks"]["PreToolUse"]
    assert [g["hooks"][0]["command"] for g in groups] == [USER_HOOK, PROJECT_HOOK]
    assert json.loads((home / ".claude" / "hookopt" / "install.json").read_text())["root"] == str(home / ".claude")


def test_project_scope_does_not_rewrite_a_command_the_local_scope_repeats(project):
    install(project, scope_name="project", say=quiet)
    commands = [g["hooks"][0]["command"] for g in json.loads((project / ".claude" / "settings.json").read_text())["hooks"]["PreToolUse"]]
    assert commands == [PROJECT_HOOK]  # shared with settings.local.json: Claude Code dedups it only if it stays equal


def test_user_script_symlinked_out_of_home_claude_is_refused(project, home, tmp_path):
    outside = tmp_path / "elsewhere.py"
    outside.write_bytes(SCRIPT)
    guard = home / ".claude" / "hooks" / "guard.py"
    guard.unlink()
    guard.symlink_to(outside)
    before = tree(project, home)
    with pytest.raises(InstallError, match="symlink leading out of .*user scope's root"):
        install(project, scope_name="user", say=quiet)
    assert tree(project, home) == before


def test_http_transport_is_refused_for_the_user_scope(project, home):
    before = tree(project, home)
    with pytest.raises(InstallError, match="--transport http cannot serve the user scope"):
        install(project, scope_name="user", transport="http", say=quiet)
    assert tree(project, home) == before


def test_profile_only_in_the_project_scope(project, home):
    before = tree(project, home)
    with pytest.raises(InstallError, match="--profile"):
        install(project, scope_name="local", profile="latency", say=quiet)
    assert tree(project, home) == before


def test_consolidated_clients_name_their_scope(project, home):
    install(project, scope_name="user", consolidate_hooks=True, say=quiet)
    install(project, scope_name="local", consolidate_hooks=True, say=quiet)
    user = json.loads((home / ".claude" / "settings.json").read_text())["hooks"]["PreToolUse"][0]["hooks"][0]["command"]
    local = json.loads((project / ".claude" / "settings.local.json").read_text())["hooks"]["PreToolUse"][0]["hooks"][0]["command"]
    assert user.endswith("stack.py user") and local.endswith("stack.py local") and user != local


def bash_event(project, command="ls", tool="Bash"):
    key = "command" if tool == "Bash" else "file_path"
    return parse_event(json.dumps({
        "session_id": "s", "transcript_path": "/t", "cwd": str(project), "hook_event_name": "PreToolUse",
        "tool_name": tool, "tool_input": {key: command}, "tool_use_id": "toolu_1",
    }).encode())


def commands(stacks, scope, event):
    return [h.command for h in stacks.select(scope, event)]


def test_select_runs_a_command_shared_by_scopes_once(project, home):
    # PROJECT_HOOK is in the user, project and local scopes; Claude Code runs it once.
    event = bash_event(project)
    install(project, scope_name="user", consolidate_hooks=True, say=quiet)
    stacks = load_stacks(project)
    # Project and local scopes are native: Claude Code runs PROJECT_HOOK; the user client must not.
    assert commands(stacks, "user", event) == [USER_HOOK]
    install(project, scope_name="project", consolidate_hooks=True, say=quiet)
    install(project, scope_name="local", consolidate_hooks=True, say=quiet)
    stacks = load_stacks(project)
    # Every scope consolidated: the highest-ranked client (local) runs it, no other.
    assert commands(stacks, "local", event) == ["python3 .claude/hooks/check.py"]  # PROJECT_HOOK matches Write only there
    assert commands(stacks, "project", event) == [PROJECT_HOOK]
    assert commands(stacks, "user", event) == [USER_HOOK]
    write = bash_event(project, "/x", tool="Write")
    assert commands(stacks, "local", write) == [PROJECT_HOOK]
    assert commands(stacks, "project", write) == [] and commands(stacks, "user", write) == []


def test_select_leaves_a_command_to_a_stubbed_scope(project, home):
    install(project, scope_name="project", say=quiet)  # stubs: Claude Code runs the project's command itself
    install(project, scope_name="user", consolidate_hooks=True, say=quiet)
    assert commands(load_stacks(project), "user", bash_event(project)) == [USER_HOOK]
    assert commands(load_stacks(project), "project", bash_event(project)) == []  # no client of its own


def run_cli(*args, home):
    env = {**os.environ, "HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "modules.optimization.cli", *args], capture_output=True, text=True, env=env, cwd=ROOT)


def test_cli_scope_help_bad_value_and_status(project, home):
    for command in ("install", "uninstall", "status"):
        helptext = run_cli(command, "--help", home=home).stdout
        assert "--scope" in helptext and "settings.local.json" in helptext and "~/.claude/settings.json" in helptext
    before = tree(project, home)
    bad = run_cli("install", "--project", str(project), "--scope", "global", home=home)
    assert bad.returncode == 2 and "invalid choice: 'global'" in bad.stderr and "'project', 'local', 'user'" in bad.stderr
    assert tree(project, home) == before
    assert run_cli("install", "--project", str(project), "--scope", "user", "--consolidate", home=home).returncode == 0
    status = run_cli("status", "--project", str(project), home=home)
    assert f"installed (user, {home}/.claude/settings.json): yes (one native client per event" in status.stdout
    assert "installed (local, " in status.stdout and "): no" in status.stdout
    only = json.loads(run_cli("status", "--project", str(project), "--scope", "local", "--json", home=home).stdout)
    assert only["installed"] is False and only["scopes"] == {"local": False}
    assert run_cli("uninstall", "--project", str(project), "--scope", "user", home=home).returncode == 0
    assert tree(project, home) == before
