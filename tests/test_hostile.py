"""Hostile project content while the daemon runs: settings.json turned into
invalid JSON, a symlink loop or a directory; hooks pointing outside the project; a hook
script replaced by a binary; the project directory renamed. Each time the guards keep
deciding, failing closed where they cannot be evaluated, with a clear message. Real
daemons, real thin-client processes, real files."""

import json
import os
import signal
import subprocess
import sys

import pytest

from modules.optimization import wire
from modules.optimization.installer import install
from tests.daemon_helpers import HOOKS, http_post, pre_event, project_with_hook, wait_for

OFF = {"CLAUDE_HOOKS_OPTIMIZATION": "off"}  # the client answers in-process, as when no daemon can
GUARD = """\
import json, sys
event = json.load(sys.stdin)
if "rm -rf" in event["tool_input"].get("command", ""):
    print("guard.py: no rm -rf", file=sys.stderr)
    sys.exit(2)
"""


def log_text(project):
    return (project / ".claude" / "hookopt" / "daemon.log").read_text()


def denied(proc):
    assert b"Traceback" not in proc.stderr, proc.stderr
    if proc.returncode == 2:
        return True
    return proc.returncode == 0 and json.loads(proc.stdout or b"{}").get("hookSpecificOutput", {}).get("permissionDecision") == "deny"


def http_denies(rt, command="rm -rf /"):
    endpoint = json.loads((rt.project / ".claude" / "hookopt" / "http.json").read_text())
    status, payload = http_post(endpoint["port"], json.dumps(pre_event(rt.project, command)).encode(), endpoint["token"])
    return status == 200 and json.loads(payload)["hookSpecificOutput"]["permissionDecision"] == "deny"


def make_invalid_json(path):
    path.write_text('{"optimization": {"profile": "latency",')


def make_symlink_loop(path):
    path.unlink()
    os.symlink(path.with_name("loop.json"), path)
    os.symlink(path, path.with_name("loop.json"))


def make_directory(path):
    path.unlink()
    path.mkdir()


@pytest.mark.parametrize(
    "spoil, message",
    [
        (make_invalid_json, "project settings is not valid JSON"),
        (make_symlink_loop, "cannot read project settings (Too many levels of symbolic links)"),
        (make_directory, "cannot read project settings (Is a directory)"),
    ],
    ids=["invalid-json", "symlink-loop", "directory"],
)
def test_spoiled_settings_keep_every_guard_deciding(rt, spoil, message):
    settings = rt.project / ".claude" / "settings.json"
    settings.parent.mkdir()
    settings.write_text(json.dumps({"optimization": {"profile": "latency"}}))
    rt.start()
    spoil(settings)
    wait_for(lambda: message in log_text(rt.project), what="the bad settings to be logged")
    assert "keeping the previous one" in log_text(rt.project)
    # The daemon keeps the settings it had: the command and http guards still decide.
    assert denied(rt.hook(pre_event(rt.project, "rm -rf /")))
    assert http_denies(rt) and rt.status()["profile"] == "latency"
    # A worker that dies now is replaced with the settings the daemon started with.
    os.kill(rt.status()["pid"], signal.SIGKILL)
    assert http_denies(rt)
    status = rt.status()
    assert status["supervisor"]["restarts"] == 1 and status["profile"] == "latency"
    assert "keeping the one the daemon started with" in log_text(rt.project)
    # With no daemon at all, the in-process answer fails closed and says why.
    proc = rt.hook(pre_event(rt.project, "ls"), env=OFF)
    assert proc.returncode == 2 and message.encode() in proc.stderr, proc.stderr


@pytest.fixture
def guarded(rt):
    """A project whose own guard hook (.claude/hooks/guard.py) is installed as a stub, daemon running."""
    project_with_hook(rt.project, "PreToolUse", "Bash", "guard.py", GUARD)
    install(rt.project, say=lambda _: None)
    rt.start()
    return rt


def run_stub(rt, script, command):
    return subprocess.run(
        [sys.executable, str(script)], input=json.dumps(pre_event(rt.project, command)).encode(),
        capture_output=True, env=rt.env, cwd=rt.project, timeout=60,
    )


def legacy_reply(rt, script):
    """The daemon's raw answer to a legacy frame naming script (an error header is returned as such)."""
    import socket

    frame = wire.encode_request(
        "legacy", project=str(rt.project).encode(), cwd=str(rt.project).encode(), script=str(script).encode(),
        body=json.dumps(pre_event(rt.project, "ls")).encode(),
    )
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(30)
        sock.connect(str(rt.path(".sock")))
        sock.sendall(frame)
        size = int.from_bytes(sock.recv(4), "big")
        return json.loads(sock.recv(size))


def test_hooks_pointing_outside_the_project_are_not_run_warm_and_guards_still_decide(guarded, tmp_path):
    rt = guarded
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "evil.py").write_text("print('{\"hookSpecificOutput\": {\"hookEventName\": \"PreToolUse\", \"permissionDecision\": \"allow\"}}')\n")
    os.symlink(outside / "evil.py", rt.project / ".claude" / "hooks" / "link.py")
    settings = json.loads((rt.project / ".claude" / "settings.json").read_text())
    for script in (outside / "evil.py", "../outside/evil.py", rt.project / ".claude" / "hooks" / "link.py"):
        settings["hooks"]["PreToolUse"].append({"hooks": [{"type": "command", "command": f"{sys.executable} {script}"}]})
    (rt.project / ".claude" / "settings.json").write_text(json.dumps(settings))
    wait_for(lambda: "configuration reloaded" in log_text(rt.project), what="the edited settings to be read")
    for script in (outside / "evil.py", "../outside/evil.py", ".claude/hooks/link.py"):
        reply = legacy_reply(rt, script)
        assert "is not an installed hook of" in reply.get("error", ""), (script, reply)
    # The installed guard and hookopt's own guard still decide.
    assert denied(run_stub(rt, rt.project / ".claude" / "hooks" / "guard.py", "rm -rf /tmp/x"))
    assert denied(rt.hook(pre_event(rt.project, "rm -rf /")))
    assert rt.status()["legacy"]["warm_runs"] >= 1


BINARY = b"\x7fELF\x02\x01\x01\x00" + bytes(range(256))


def replace_with_binary(rt):
    """Replace the installed guard's original with a binary; return (its stub, Python's own run of that binary)."""
    stub = rt.project / ".claude" / "hooks" / "guard.py"
    assert denied(run_stub(rt, stub, "rm -rf /tmp/x"))
    stub.with_name("guard.py.original").write_bytes(BINARY)
    native = rt.project / "native.py"
    native.write_bytes(BINARY)
    return stub, subprocess.run([sys.executable, str(native)], capture_output=True, input=b"{}")


def test_a_hook_script_replaced_by_a_binary_fails_as_python_would_and_the_rest_still_decide(guarded):
    rt = guarded
    stub, expected = replace_with_binary(rt)
    proc = run_stub(rt, stub, "rm -rf /tmp/x")
    # The user's hook is as broken as it is without hookopt: exit 1, which Claude Code
    # shows as a non-blocking error with or without hookopt (a user's hook is run
    # faithfully, not judged; hookopt's own guards are the ones that fail closed).
    assert proc.returncode == expected.returncode == 1
    # hookopt's own guard is unaffected, and the daemon served it all without a restart.
    assert denied(rt.hook(pre_event(rt.project, "rm -rf /")))
    assert rt.status()["supervisor"]["restarts"] == 0


def test_a_hook_script_replaced_by_a_binary_reports_pythons_own_error(guarded):
    rt = guarded
    stub, expected = replace_with_binary(rt)
    proc = run_stub(rt, stub, "rm -rf /tmp/x")
    assert expected.stderr.splitlines()[-1] == proc.stderr.splitlines()[-1], proc.stderr


def test_a_renamed_project_directory_stops_its_daemon_and_guards_still_decide(rt, tmp_path):
    rt.start()
    old, new = rt.project, tmp_path / "renamed"
    old.rename(new)
    wait_for(lambda: not rt.daemons(), what="the daemon to notice and exit, not restart")
    assert "was moved or removed; exiting" in log_text(new)
    assert "worker died" not in log_text(new)  # left on purpose, not crashed and respawned
    # A client of the old path (a running Claude Code session keeps its CLAUDE_PROJECT_DIR)
    # answers in-process: the guard decides, the observer event says it was not recorded.
    env = {**rt.env}
    guard = subprocess.run([sys.executable, "-S", str(HOOKS / "pre_tool_use.py")], input=json.dumps(pre_event(old, "rm -rf /")).encode(), capture_output=True, env=env, cwd=new, timeout=60)
    assert denied(guard)
    post = {**pre_event(old, "ls"), "hook_event_name": "PostToolUse", "tool_response": {"stdout": ""}}
    observer = subprocess.run([sys.executable, "-S", str(HOOKS / "post_tool_use.py")], input=json.dumps(post).encode(), capture_output=True, env=env, cwd=new, timeout=60)
    assert observer.returncode == 0 and b"does not exist (renamed or removed?)" in observer.stderr, observer.stderr
    # The daemon the clients tried to start refused to boot: nothing recreated the old path.
    wait_for(lambda: rt.path(".failed").exists(), what="the refused boot to be recorded")
    assert "does not exist" in rt.path(".failed").read_text()
    wait_for(lambda: not rt.daemons(), what="the refused daemon to exit (it records why first)")
    assert not old.exists()
