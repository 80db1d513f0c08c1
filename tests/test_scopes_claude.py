"""The real Claude Code CLI with hooks in every settings scope (user, project, local): the
same transcript natively and under installs of each scope (stubs and --consolidate),
in two projects sharing one user-scope install, each served by its own daemon.

The CLI's HOME is a temporary directory holding ~/.claude/settings.json and the user's
hook scripts. One command string sits in all three scopes: Claude Code runs it once
(checked natively below), and an install must not run it twice.
"""

import json
import os
import posix
import shutil

import pytest

from modules.optimization import client, wire
from modules.optimization.installer import install, uninstall
from tests.claude_harness import _python_first_path, run_session
from tests.conformance.cases import ctx, pre
from tests.conformance.test_conformance import HERE as CONFORMANCE
from tests.conformance.test_conformance import diff, transcript
from tests.daemon_helpers import private_runtime

pytestmark = pytest.mark.claude

USER = "python3 ~/.claude/hooks/behave.py {}"
PER_PROJECT = 'python3 "$CLAUDE_PROJECT_DIR"/.claude/hooks/behave.py {}'
SHARED = PER_PROJECT.format("S")  # in the user, project and local scopes: Claude Code runs it once


def hook(command):
    return {"type": "command", "command": command}


USER_SETTINGS = {
    "hooks": {
        "PreToolUse": [{"matcher": "Bash", "hooks": [hook(USER.format("U")), hook(PER_PROJECT.format("UP")), hook(SHARED)]}],
        "PostToolUse": [{"matcher": "*", "hooks": [hook(USER.format("U"))]}],
    }
}
PROJECT_SETTINGS = {"hooks": {"PreToolUse": [{"matcher": "Bash", "hooks": [hook(PER_PROJECT.format("P")), hook(SHARED)]}]}}
LOCAL_SETTINGS = {
    "hooks": {
        "PreToolUse": [{"matcher": "Bash|Write", "hooks": [hook(PER_PROJECT.format("L")), hook(SHARED)]}],
        "PostToolUse": [{"matcher": "Bash", "hooks": [hook(PER_PROJECT.format("L"))]}],
    }
}
USER_BEHAVIOURS = {
    "PreToolUse:*": {"U": {"out": ctx("PreToolUse", "user U saw it")}},
    "PreToolUse:user": {"U": {"err": "the user scope blocks this", "exit": 2}},
    "PostToolUse:*": {"U": {"out": ctx("PostToolUse", "user U after")}},
}


def project_behaviours(name):
    """Each project's own table: the user scope's UP hook runs the open project's script."""
    return {
        "PreToolUse:*": {
            "S": {"out": ctx("PreToolUse", f"shared S in {name}")},
            "UP": {"out": ctx("PreToolUse", f"user UP in {name}")},
        },
        "PreToolUse:project": {"P": {"out": pre("deny", f"project P denies in {name}")}},
        "PreToolUse:local": {"L": {"err": "local L blocks", "exit": 2}},
        "PreToolUse:up": {"UP": {"out": pre("deny", "only project a's UP denies")}} if name == "a" else {},
        "PostToolUse:*": {"L": {"out": ctx("PostToolUse", f"local L after in {name}")}},
    }


def calls(project):
    return [
        ("Bash", {"command": "echo plain #S=plain", "description": "plain"}),
        ("Bash", {"command": "echo u #S=user", "description": "user"}),
        ("Bash", {"command": "echo p #S=project", "description": "project"}),
        ("Bash", {"command": "echo l #S=local", "description": "local"}),
        ("Bash", {"command": "echo up #S=up", "description": "up"}),
        ("Write", {"file_path": str(project / "out.txt"), "content": "x #S=write"}),
    ]


def make_home(home):
    hooks = home / ".claude" / "hooks"
    hooks.mkdir(parents=True)
    shutil.copy(CONFORMANCE / "behave.py", hooks / "behave.py")
    (hooks / "behaviours.json").write_text(json.dumps(USER_BEHAVIOURS))
    (home / ".claude" / "settings.json").write_text(json.dumps(USER_SETTINGS, indent=2))


def make_project(root, name):
    project = root / name
    hooks = project / ".claude" / "hooks"
    hooks.mkdir(parents=True)
    shutil.copy(CONFORMANCE / "behave.py", hooks / "behave.py")
    (hooks / "behaviours.json").write_text(json.dumps(project_behaviours(name)))
    (project / ".claude" / "settings.json").write_text(json.dumps(PROJECT_SETTINGS, indent=2))
    (project / ".claude" / "settings.local.json").write_text(json.dumps(LOCAL_SETTINGS, indent=2))
    return project


def names(home, *projects):
    """Every hook command of every scope: what Claude Code may name in a message."""
    files = [home / ".claude" / "settings.json"] + [p / ".claude" / n for p in projects for n in ("settings.json", "settings.local.json")]
    found = set()
    for path in files:
        for groups in (json.loads(path.read_text()).get("hooks") or {}).values():
            for group in groups:
                found.update(h["command"] for h in group["hooks"] if "command" in h)
    return found


def blocked_steps(result):
    return {i for i, tool_use_id in enumerate(result.ids) if result.blocked(tool_use_id)}


@pytest.fixture
def world(tmp_path, claude_cli, monkeypatch):
    home = tmp_path / "home"
    make_home(home)
    monkeypatch.setenv("HOME", str(home))  # install's ~ is the CLI's ~
    projects = {name: make_project(tmp_path, name) for name in ("a", "b")}
    with private_runtime(projects["a"]) as rt:  # one runtime dir; one daemon per project in it
        monkeypatch.setitem(posix.environ, b"HOOKOPT_RUNTIME_DIR", str(rt.root).encode())
        monkeypatch.setitem(posix.environ, b"PATH", _python_first_path(home, os.environ["PATH"]).encode())

        def session(name):
            project = projects[name]
            (project / "out.txt").unlink(missing_ok=True)
            result = run_session(claude_cli, project, calls(project), home=home, env={"HOOKOPT_RUNTIME_DIR": str(rt.root)})
            assert result.returncode == 0, result.stderr
            return result

        def status(name):
            frame = wire.encode_request("status", project=str(projects[name]).encode())
            reply = client.ask_daemon(str(projects[name]), frame, 10.0)
            return json.loads(reply[1]) if reply else None

        yield home, projects, session, status
        for project in projects.values():  # project b's daemon too (the runtime stops a's)
            client.ask_daemon(str(project), wire.encode_request("stop", project=str(project).encode()), 5.0)


def quiet(_):
    pass


def test_every_scope_installed_gives_the_native_transcript_in_two_projects(world):
    home, projects, session, status = world
    a, b = projects["a"], projects["b"]
    all_names = names(home, a, b)
    native = {name: session(name) for name in ("a", "b")}
    # Natively: U blocks #S=user, P #S=project, L #S=local, and UP only in project a.
    assert blocked_steps(native["a"]) == {1, 2, 3, 4}
    assert blocked_steps(native["b"]) == {1, 2, 3}
    # The shared command ran once per call though three scopes hold it: its context shows once
    # for the plain call (the five other Bash/Write calls add theirs too, hence the count).
    body = json.dumps(native["a"].main_requests[-1].body)
    assert body.count("user UP in a") == 2 and body.count("shared S in a") == 3, body  # plain, user, Write: once each
    expected = {name: transcript(result, all_names) for name, result in native.items()}

    def check(label, *which):
        seen_names = all_names | names(home, a, b)
        for name in which:
            seen = transcript(session(name), seen_names)
            assert seen == expected[name], f"{label}, project {name}:\n{diff(expected[name], seen)}"

    # 1. The user scope consolidated, one install serving both projects (each its own daemon).
    install(a, scope_name="user", consolidate_hooks=True, say=quiet)
    check("user consolidated", "a", "b")
    for name in ("a", "b"):
        st = status(name)
        assert st is not None and "user" in st["scopes"] and st["legacy"]["warm_runs"] > 0, (name, st)
    # 2. Every scope consolidated in project a: each client runs its scope's hooks, the shared one once.
    install(a, scope_name="project", consolidate_hooks=True, say=quiet)
    install(a, scope_name="local", consolidate_hooks=True, say=quiet)
    check("user, project and local consolidated", "a", "b")
    for scope in ("local", "project", "user"):
        uninstall(a, scope_name=scope, say=quiet)
    # 3. Stubs in the user and local scopes, the project scope consolidated.
    install(a, scope_name="user", say=quiet)
    install(a, scope_name="local", say=quiet)
    install(a, scope_name="project", consolidate_hooks=True, say=quiet)
    check("user and local stubs, project consolidated", "a", "b")
    st = status("a")
    assert st is not None and st["legacy"]["warm_runs"] > 0, st
    for scope in ("project", "local", "user"):
        uninstall(a, scope_name=scope, say=quiet)
    # Every scope's files are back as they were; the native transcript again.
    assert json.loads((home / ".claude" / "settings.json").read_text()) == USER_SETTINGS
    assert (home / ".claude" / "hooks" / "behave.py").read_bytes() == (CONFORMANCE / "behave.py").read_bytes()
    assert not list((home / ".claude" / "hooks").glob("*.original"))
    check("uninstalled", "a")
