"""Observers off the critical path: real daemon, sockets, forked hooks, files.

Each hook here is a Python script the daemon runs warm; a "gate" file holds an observer
back, so a test can see the answer arrive before the observer ran, and kill the daemon
while observers are pending.
"""

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from modules.optimization import cli, observers
from modules.optimization.installer import InstallError, install, uninstall
from modules.optimization.observers import ObserverHook, ObserverRuns, load_ledger, marks, refusal
from modules.optimization.protocol import HookResult
from modules.optimization.stack import left_reason, load_stacks
from tests.daemon_helpers import post_event, pre_event, wait_for

GATED_LOGGER = """\
import json, os, sys, time
event = json.load(sys.stdin)
root = os.environ["CLAUDE_PROJECT_DIR"]
while not os.path.exists(os.path.join(root, "gate")):
    time.sleep(0.005)
with open(os.path.join(root, "observed.log"), "a") as f:
    f.write(sys.argv[1] + " " + event["tool_use_id"] + "\\n")
"""
NOISY = """\
import sys
sys.stdin.read()
print('{"decision": "block", "reason": "noisy objects"}')
sys.stderr.write("noisy stderr\\n")
sys.exit(3)
"""
GUARD = """\
import json, sys
event = json.load(sys.stdin)
if "rm" in event["tool_input"]["command"]:
    sys.stderr.write("guard blocks rm")
    sys.exit(2)
"""


def command(script: str, *args: str) -> str:
    return f'{sys.executable} "$CLAUDE_PROJECT_DIR"/.claude/hooks/{script}' + "".join(f" {a}" for a in args)


def project_with(project: Path, hooks: dict, scripts: dict[str, str], optimization: dict | None = None) -> None:
    hooks_dir = project / ".claude" / "hooks"
    hooks_dir.mkdir(parents=True, exist_ok=True)
    for name, text in scripts.items():
        (hooks_dir / name).write_text(text)
    settings = {"hooks": hooks, **({"optimization": optimization} if optimization else {})}
    (project / ".claude" / "settings.json").write_text(json.dumps(settings))


def post_hooks(*commands: str, **fields) -> dict:
    return {"PostToolUse": [{"matcher": "*", "hooks": [{"type": "command", "command": c, **fields} for c in commands]}]}


def observed(project: Path) -> list[str]:
    path = project / "observed.log"
    return path.read_text().splitlines() if path.exists() else []


# -- what may be an observer ---------------------------------------------------


def test_globs_match_the_command_a_script_path_or_a_script_name():
    cmd = 'python3 "$CLAUDE_PROJECT_DIR"/.claude/hooks/log_tools.py --fast'
    assert marks(cmd, ["log_*.py"]) and marks(cmd, [".claude/hooks/log_tools.py"]) and marks(cmd, ["python3 *"])
    assert marks(cmd, ["*/hooks/log_tools.py"])
    assert not marks(cmd, ["guard*.py"]) and not marks(cmd, [])


def test_a_synchronous_pretooluse_hook_is_refused_an_async_one_is_not():
    assert refusal("PreToolUse", {"type": "command", "command": "x"}) is not None
    assert refusal("PreToolUse", {"type": "command", "command": "x", "async": True}) is None
    assert refusal("PostToolUse", {"type": "command", "command": "x"}) is None


def test_install_refuses_to_mark_a_guard_and_changes_nothing(tmp_path):
    hooks = {"PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": command("guard.py")}]}]}
    project_with(tmp_path, hooks, {"guard.py": GUARD})
    before = (tmp_path / ".claude" / "settings.json").read_bytes()
    with pytest.raises(InstallError, match="synchronous PreToolUse hook decides"):
        install(tmp_path, observers=["guard.py"], say=lambda _: None)
    assert (tmp_path / ".claude" / "settings.json").read_bytes() == before
    assert not (tmp_path / ".claude" / "hookopt" / "install.json").exists()


def test_install_refuses_a_glob_that_marks_nothing(tmp_path):
    project_with(tmp_path, post_hooks(command("log.py", "A")), {"log.py": GATED_LOGGER})
    with pytest.raises(InstallError, match="marks no command hook"):
        install(tmp_path, observers=["nothing*.py"], say=lambda _: None)


def test_async_hooks_stay_with_claude_code_unless_marked(tmp_path):
    hook = {"type": "command", "command": command("log.py", "A"), "async": True}
    assert "additionalContext and systemMessage" in (left_reason("PostToolUse", hook) or "")
    assert left_reason("PostToolUse", hook, ["log.py"]) is None
    assert left_reason("PostToolUse", {**hook, "asyncRewake": True}, ["log.py"]) == "it sets asyncRewake"
    project_with(tmp_path, {"PostToolUse": [{"matcher": "*", "hooks": [hook]}]}, {"log.py": GATED_LOGGER})
    said: list[str] = []
    install(tmp_path, consolidate_hooks=True, say=said.append)
    settings = json.loads((tmp_path / ".claude" / "settings.json").read_text())
    assert settings["hooks"]["PostToolUse"] == [{"matcher": "*", "hooks": [hook]}]  # left, byte for byte
    assert any("left to Claude Code" in s and "async" in s for s in said)
    uninstall(tmp_path, say=lambda _: None)


def test_settings_observers_are_read_at_install_and_marked_hooks_selected_as_observers(tmp_path):
    project_with(
        tmp_path, post_hooks(command("log.py", "A"), command("noisy.py")), {"log.py": GATED_LOGGER, "noisy.py": NOISY},
        optimization={"observers": ["log.py"]},
    )
    said: list[str] = []
    install(tmp_path, say=said.append)  # observers imply --consolidate
    manifest = json.loads((tmp_path / ".claude" / "hookopt" / "install.json").read_text())
    assert manifest["consolidate"] is True and manifest["observers"] == ["log.py"]
    assert any(s.startswith("observer (runs after the answer") and "log.py" in s for s in said)
    picked = load_stacks(tmp_path, home=tmp_path / "home").select("project", post_event(tmp_path))
    assert [(h.command.rsplit("/", 1)[1], h.observer) for h in picked] == [("log.py A", True), ("noisy.py", False)]
    uninstall(tmp_path, say=lambda _: None)


# -- the real daemon -------------------------------------------------------------


def test_the_answer_comes_before_the_observers_which_then_run_in_order(rt):
    project_with(rt.project, post_hooks(command("log.py", "A"), command("log.py", "B")), {"log.py": GATED_LOGGER})
    install(rt.project, observers=["log.py"], say=lambda _: None)
    rt.start()
    for i in range(5):
        proc = rt.hook(post_event(rt.project, tool_use_id=f"toolu_{i}"), script="stack", timeout=20)
        assert proc.returncode == 0 and proc.stdout == b"" and b"Traceback" not in proc.stderr, proc.stderr
    # Every event answered while its observers are still held at the gate.
    assert observed(rt.project) == []
    assert rt.status()["observer_hooks"]["pending"] == 5
    (rt.project / "gate").touch()
    wait_for(lambda: len(observed(rt.project)) == 10, what="the observers to run")
    assert observed(rt.project) == [f"{name} toolu_{i}" for i in range(5) for name in "AB"]
    wait_for(lambda: rt.status()["observer_hooks"]["pending"] == 0, what="the queue to empty")
    assert rt.status()["observer_hooks"]["ran"] == 10


def test_observers_journaled_before_a_sigkill_run_after_the_restart(rt):
    """The worker is SIGKILLed with 6 events' observers queued (the first one's running, held
    at the gate); the supervisor starts a new worker, which runs them from the journal. Every
    hook runs once, in order, except the one in flight at the kill: at least once."""
    project_with(rt.project, post_hooks(command("log.py", "A"), command("log.py", "B")), {"log.py": GATED_LOGGER})
    install(rt.project, observers=["log.py"], say=lambda _: None)
    rt.start()
    for i in range(6):
        assert rt.hook(post_event(rt.project, tool_use_id=f"toolu_{i}"), script="stack", timeout=20).returncode == 0
    first = rt.status()
    assert first["observer_hooks"]["pending"] == 6 and observed(rt.project) == []
    os.kill(first["pid"], signal.SIGKILL)
    second = wait_for(lambda: (s := rt.status()) and s["pid"] != first["pid"] and s, what="the supervisor's new worker")
    assert second["observer_hooks"]["replayed"] == 6
    (rt.project / "gate").touch()
    expected = [f"{name} toolu_{i}" for i in range(6) for name in "AB"]
    wait_for(lambda: rt.status()["observer_hooks"]["pending"] == 0, what="the replayed observers to run")
    lines = observed(rt.project)
    # The hook held at the gate when the worker died may have lived on (its own session) and
    # written its line too: "A toolu_0" at most twice, everything else exactly once, in order.
    dedup = [line for k, line in enumerate(lines) if not (line == "A toolu_0" and "A toolu_0" in lines[:k])]
    assert dedup == expected and lines.count("A toolu_0") <= 2, lines
    # A graceful restart after that runs nothing again: the watermark is past every hook.
    rt.stop()
    rt.start()
    assert rt.status()["observer_hooks"]["replayed"] == 0
    assert observed(rt.project) == lines


def test_an_observer_that_writes_output_or_fails_is_reported_by_status_and_doctor(rt, capsys):
    project_with(rt.project, post_hooks(command("noisy.py"), command("log.py", "A")), {"noisy.py": NOISY, "log.py": GATED_LOGGER})
    (rt.project / "gate").touch()
    install(rt.project, observers=["noisy.py"], say=lambda _: None)
    rt.start()
    for i in range(3):
        proc = rt.hook(post_event(rt.project, tool_use_id=f"toolu_{i}"), script="stack", timeout=20)
        # What the noisy observer says never reaches Claude: the answer holds only the logger's (nothing).
        assert proc.returncode == 0 and b"noisy" not in proc.stdout + proc.stderr, proc
    wait_for(lambda: rt.status()["observer_hooks"]["ran"] == 3, what="the observers to run")
    ledger = load_ledger(rt.project / ".claude" / "hookopt")
    (cmd,) = ledger
    assert cmd.endswith("noisy.py") and ledger[cmd]["lost"] == 3 and ledger[cmd]["last_exit"] == 3
    assert ledger[cmd]["last_stdout"].startswith('{"decision": "block"') and ledger[cmd]["last_stderr"] == "noisy stderr\n"
    os.environ["HOOKOPT_RUNTIME_DIR"] = str(rt.root)
    try:
        capsys.readouterr()
        assert cli.main(["status", "--project", str(rt.project)]) == 0
        status_out = capsys.readouterr().out
        assert cli.main(["doctor", "--project", str(rt.project)]) == cli.EXIT_FINDINGS
        doctor_out = capsys.readouterr().out
    finally:
        del os.environ["HOOKOPT_RUNTIME_DIR"]
    for out in (status_out, doctor_out):
        assert "noisy.py" in out and "3 time(s)" in out and "last exit 3" in out and "noisy objects" in out, out
    assert "3 run after their answer" in status_out  # the silent logger ran too, and is not in the ledger (one key)


def test_pretooluse_guards_still_decide_next_to_an_async_observer(rt):
    hooks = {"PreToolUse": [{"matcher": "Bash", "hooks": [
        {"type": "command", "command": command("guard.py")},
        {"type": "command", "command": command("log.py", "P"), "async": True},
    ]}]}
    project_with(rt.project, hooks, {"guard.py": GUARD, "log.py": GATED_LOGGER})
    (rt.project / "gate").touch()
    install(rt.project, observers=["log.py"], say=lambda _: None)
    rt.start()
    proc = rt.hook(pre_event(rt.project, "rm -rf /tmp/x", tool_use_id="toolu_rm"), script="stack", timeout=20)
    out = json.loads(proc.stdout)["hookSpecificOutput"]
    assert out["permissionDecision"] == "deny" and "guard blocks rm" in out["permissionDecisionReason"]
    wait_for(lambda: observed(rt.project) == ["P toolu_rm"], what="the async observer to run")


NICENESS = """\
import os, sys
sys.stdin.read()
with open(os.path.join(os.environ["CLAUDE_PROJECT_DIR"], "nice-" + sys.argv[1]), "w") as f:
    f.write(str(os.nice(0)))
"""


def test_observers_run_at_the_lowest_cpu_priority_the_answer_at_ours(rt):
    """Warm (Python) and spawned (shell) observers run niced to 19, so Claude Code and the
    next event's guards get the processors first; a hook of the answer keeps our niceness."""
    shell = 'awk \'{print $19}\' /proc/$$/stat > "$CLAUDE_PROJECT_DIR"/nice-shell  # observer'
    hooks = post_hooks(command("nice.py", "warm"), command("nice.py", "answer"), shell)
    project_with(rt.project, hooks, {"nice.py": NICENESS})
    install(rt.project, observers=["*nice.py warm", "*# observer"], say=lambda _: None)
    rt.start()
    proc = rt.hook(post_event(rt.project), script="stack", timeout=20)
    assert proc.returncode == 0 and proc.stdout == b"", proc.stderr
    assert (rt.project / "nice-answer").read_text() == str(os.nice(0))

    def written(name):
        path = rt.project / name
        return path.exists() and path.read_text().strip()

    wait_for(lambda: written("nice-shell") and written("nice-warm"), what="the observers to write their niceness")
    assert (rt.project / "nice-warm").read_text() == "19"
    assert (rt.project / "nice-shell").read_text().strip() == "19"
    assert rt.status()["legacy"]["warm_runs"] >= 2  # the Python ones ran warm, through the fork server


def test_observers_wait_for_a_quiet_moment_but_never_longer_than_their_limit(tmp_path):
    """A burst of events is answered first: an observer runs once no event has come for
    QUIET_S, or when its event is MAX_DEFER_S old, whichever is first; in order either way.
    The clock and the daemon's idle time are the test's own, moved by hand."""
    now = {"t": 1000.0}
    idle = {"s": 0.0}  # an event just came
    ran = []

    async def run(hooks, raw, env, cwd):
        ran.append(raw.decode())
        return [HookResult(0, b"", b"")]

    async def scenario():
        runs = ObserverRuns(tmp_path, run, clock=lambda: now["t"], idle_for=lambda: idle["s"])
        runs.start()
        runs.submit("PostToolUse", [ObserverHook("log", 5.0)], b"first", {}, str(tmp_path))
        waited = not await runs.drain(0.5)  # busy, and younger than its limit: it must wait
        now["t"] += observers.MAX_DEFER_S  # still busy, but now as old as its limit
        first_ran = await runs.drain(10.0)
        runs.submit("PostToolUse", [ObserverHook("log", 5.0)], b"second", {}, str(tmp_path))
        second_waited = not await runs.drain(0.5)
        idle["s"] = observers.QUIET_S  # the session goes quiet
        second_ran = await runs.drain(10.0)
        await runs.close()
        return waited, first_ran, second_waited, second_ran

    assert asyncio.run(scenario()) == (True, True, True, True)
    assert ran == ["first", "second"]
