"""Idle exit is right for every op: whatever answers an event restarts the idle clock;
status and stop do not. A real Daemon serves its real unix socket and http port in this
process; its clock is fake, so the idle timeout is ticked, never slept out."""

import asyncio
import json
import posix
import shutil
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest

from modules.optimization import client, wire
from modules.optimization.daemon import Daemon, ensure_runtime_dir
from modules.optimization.installer import install
from modules.optimization.integrated_optimizer import load_settings
from tests.clock import FakeClock
from tests.daemon_helpers import pre_event

HOOK = "import sys; sys.stdin.read()\n"


@pytest.fixture
def project(tmp_path, monkeypatch):
    project = tmp_path / "project"
    hooks = project / ".claude" / "hooks"
    hooks.mkdir(parents=True)
    (hooks / "guard.py").write_text(HOOK)
    command = f'{sys.executable} "$CLAUDE_PROJECT_DIR"/.claude/hooks/guard.py'
    (project / ".claude" / "settings.json").write_text(
        json.dumps({"hooks": {"PreToolUse": [{"matcher": "*", "hooks": [{"type": "command", "command": command}]}]}})
    )
    install(project, say=lambda _: None)  # stubs: the legacy op serves guard.py
    runtime = Path(tempfile.mkdtemp(prefix="hi", dir="/tmp"))
    monkeypatch.setitem(posix.environ, b"HOOKOPT_RUNTIME_DIR", str(runtime).encode())
    monkeypatch.setenv("CLAUDE_PROJECT_DIR", str(project))
    ensure_runtime_dir()
    yield project.resolve()
    shutil.rmtree(runtime, ignore_errors=True)


def frame(project, op, **sections):
    return wire.encode_request(op, project=str(project).encode(), cwd=str(project).encode(), **sections)


def http(daemon, path, body):
    request = urllib.request.Request(
        f"http://127.0.0.1:{daemon.endpoint['port']}{path}", data=body, method="POST",
        headers={"X-Hookopt-Token": daemon.endpoint["token"], "Connection": "close"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status


def send(daemon, op):
    """Make one request of kind op over the daemon's real socket or port; return once answered."""
    project = daemon.project
    body = json.dumps(pre_event(project, "ls")).encode()
    if op.startswith("http"):
        assert http(daemon, "/hook/stack" if op == "http stack" else "/hook", body) == 200
        return
    sections = {"body": body, "env": b"CLAUDE_PROJECT_DIR=" + str(project).encode()}
    if op == "legacy":
        sections.update(script=b".claude/hooks/guard.py")
    reply = client.ask_daemon(str(project), frame(project, op, **sections), 30.0)
    assert reply is not None and reply[0] == 0, (op, reply)


def run_with_daemon(project, scenario):
    clock = FakeClock()
    settings = load_settings(project)

    async def main():
        daemon = Daemon(project, settings, clock=clock)
        served = asyncio.create_task(daemon.serve())
        while not daemon._servers or not daemon.endpoint.get("port"):
            await asyncio.sleep(0)
        try:
            await scenario(daemon, clock, lambda op: asyncio.get_running_loop().run_in_executor(None, send, daemon, op))
        finally:
            daemon.stop_event.set()
            await served

    asyncio.run(main())


@pytest.mark.parametrize("op", ["event", "stack", "legacy", "http", "http stack"])
def test_every_event_op_restarts_the_idle_clock(project, op):
    async def scenario(daemon, clock, request):
        timeout = daemon.settings.profile.idle_timeout_s
        clock.tick(timeout - 1)
        await request(op)
        clock.tick(timeout - 1)  # 2 x timeout - 2 since the start, timeout - 1 since the request
        assert not daemon.idle(), f"{op} did not count as activity"
        clock.tick(1)
        assert daemon.idle()

    run_with_daemon(project, scenario)


def test_status_requests_are_not_activity(project):
    async def scenario(daemon, clock, request):
        clock.tick(daemon.settings.profile.idle_timeout_s - 1)
        await request("status")  # a `hookopt status --watch` must not keep a daemon alive forever
        clock.tick(1)
        assert daemon.idle()

    run_with_daemon(project, scenario)
