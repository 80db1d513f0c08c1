"""Helpers for tests that run real daemons and thin clients as separate processes."""

import contextlib
import json
import os
import posix
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from modules.optimization import client, wire
from modules.optimization.hugepages import startup_env

ROOT = Path(__file__).resolve().parents[1]
HOOKS = ROOT / "hooks"


def wait_for(predicate, timeout=30.0, what="condition"):
    """Poll a subprocess-side condition, bounded; fail with what was awaited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def pre_event(project, command="echo hi", tool="Bash", **extra):
    tool_input = {"command": command} if tool == "Bash" else {"file_path": command}
    return {
        "session_id": "sess-1",
        "transcript_path": "/tmp/t.jsonl",
        "cwd": str(project),
        "hook_event_name": "PreToolUse",
        "tool_name": tool,
        "tool_input": tool_input,
        "tool_use_id": extra.pop("tool_use_id", "toolu_1"),
        **extra,
    }


def post_event(project, command="echo hi", tool_use_id="toolu_1"):
    event = pre_event(project, command, tool_use_id=tool_use_id)
    event.update(hook_event_name="PostToolUse", tool_response={"stdout": "hi", "stderr": "", "interrupted": False})
    return event


class Runtime:
    """A private runtime directory and the environment clients and daemons see."""

    def __init__(self, root: Path, project: Path):
        self.root = root
        self.project = project
        self.env = {**os.environ, "HOOKOPT_RUNTIME_DIR": str(root), "CLAUDE_PROJECT_DIR": str(project)}
        self.env.pop("CLAUDE_HOOKS_PROFILE", None)

    def path(self, suffix):
        return Path(self.root, f"hookopt-{os.getuid()}", wire.project_key(str(self.project)) + suffix)

    def hook(self, event, script="pre_tool_use", raw=None, env=None, timeout=60):
        """Run a thin client exactly as Claude Code would: a fresh process, event on stdin."""
        data = raw if raw is not None else json.dumps(event).encode()
        return subprocess.run(
            [sys.executable, "-S", str(HOOKS / f"{script}.py")],
            input=data,
            capture_output=True,
            env={**self.env, **(env or {})},
            cwd=self.project,
            timeout=timeout,
        )

    def request(self, op, body=b""):
        frame = wire.encode_request(op, project=str(self.project).encode(), body=body)
        saved = posix.environ.get(b"HOOKOPT_RUNTIME_DIR")
        posix.environ[b"HOOKOPT_RUNTIME_DIR"] = str(self.root).encode()
        try:
            return client.ask_daemon(str(self.project), frame, 10.0)
        finally:
            if saved is None:
                posix.environ.pop(b"HOOKOPT_RUNTIME_DIR", None)
            else:
                posix.environ[b"HOOKOPT_RUNTIME_DIR"] = saved

    def status(self):
        reply = self.request("status")
        return json.loads(reply[1]) if reply else None

    def pid(self):
        try:
            return int(self.path(".pid").read_text())
        except (OSError, ValueError):
            return None

    def start(self):
        """Start a daemon the way a client would and wait until it answers."""
        subprocess.Popen(
            [sys.executable, "-m", "modules.optimization.daemon", "--project", str(self.project)],
            env={**self.env, **startup_env(self.env)}, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        return wait_for(self.status, what="the daemon to answer status")

    def daemons(self):
        """Pids of daemon processes serving this project."""
        out = subprocess.run(["pgrep", "-f", f"modules.optimization.daemon --project {self.project}$"], capture_output=True, text=True)
        return sorted(int(p) for p in out.stdout.split())

    def supervisors(self):
        """Pids of the supervising daemon processes (a worker's parent is its supervisor)."""
        pids = self.daemons()
        return [pid for pid in pids if ppid(pid) not in pids]

    def stop(self):
        for pid in self.daemons():
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        wait_for(lambda: not self.daemons(), what="daemons to exit")


def ppid(pid):
    """The parent of pid (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


@contextlib.contextmanager
def private_runtime(project: Path):
    """A Runtime in a fresh, short /tmp root; its daemons stopped and the root removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="ho", dir="/tmp"))  # short: unix socket paths stay under 108 bytes
    runtime = Runtime(root, project)
    try:
        yield runtime
    finally:
        runtime.stop()
        shutil.rmtree(root, ignore_errors=True)


OFF = {"CLAUDE_HOOKS_OPTIMIZATION": "off"}  # the client answers in-process, as when no daemon can answer


def state(rt):
    return rt.project / ".claude" / "hookopt"


def decision(proc):
    assert proc.returncode == 0, proc.stderr
    assert b"Traceback" not in proc.stderr, proc.stderr
    return json.loads(proc.stdout)["hookSpecificOutput"]["permissionDecision"] if proc.stdout else None


def http_post(port, body, token, path="/hook"):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST", headers={"Content-Type": "application/json", "X-Hookopt-Token": token})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def project_with_hook(project, event, matcher, name, source):
    """Write .claude/hooks/NAME with source and a settings.json running it for event/matcher; return its command."""
    hooks_dir = project / ".claude" / "hooks"
    hooks_dir.mkdir(parents=True, exist_ok=True)
    (hooks_dir / name).write_text(source)
    command = f'{sys.executable} "$CLAUDE_PROJECT_DIR"/.claude/hooks/{name}'
    (project / ".claude" / "settings.json").write_text(
        json.dumps({"hooks": {event: [{"matcher": matcher, "hooks": [{"type": "command", "command": command}]}]}})
    )
    return command
