"""Idle exit is right for every op: whatever answers an event restarts the idle clock;
status and stop do not; quiet past the timeout the daemon exits, unless a Claude Code
session it served still lives. A real Daemon serves its real unix socket and http port in
this process; its clock is fake, so the idle timeout is ticked, never slept out (the one
real end-to-end idle exit, with a 1 s timeout, is the supervisor's in test_supervisor.py)."""

import asyncio
import json
import logging
import posix
import shutil
import subprocess
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
        while not daemon._streams or not daemon.endpoint.get("port"):
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


def ask(project, env):
    """Answer one PreToolUse event over the daemon's socket, with the environment section env."""
    reply = client.ask_daemon(str(project), frame(project, "event", body=json.dumps(pre_event(project, "ls")).encode(), env=env), 30.0)
    assert reply is not None and reply[0] == 0, reply


def test_daemon_exits_when_idle(project, caplog):
    """Quiet past its timeout, the daemon's own tick stops it and it removes its socket and pid files."""
    caplog.set_level(logging.INFO, logger="hookopt.daemon")

    async def scenario(daemon, clock, request):
        clock.tick(daemon.settings.profile.idle_timeout_s)
        await asyncio.wait_for(daemon.stop_event.wait(), 30)  # set by the daemon's tick, not by the test

    run_with_daemon(project, scenario)
    assert not Path(wire.runtime_path(str(project), ".sock")).exists()
    assert not Path(wire.runtime_path(str(project), ".pid")).exists()
    timeout = load_settings(project).profile.idle_timeout_s
    assert f"idle for {timeout}s, exiting" in caplog.messages


def test_daemon_stays_while_a_claude_code_session_lives(project):
    session = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)

    async def scenario(daemon, clock, request):
        env = b"CLAUDE_PROJECT_DIR=" + str(project).encode() + b"\0CLAUDE_PID=" + str(session.pid).encode()
        try:
            await asyncio.get_running_loop().run_in_executor(None, ask, project, env)
            clock.tick(3 * daemon.settings.profile.idle_timeout_s)
            assert not daemon.idle() and not daemon.stop_event.is_set()  # outlived its idle timeout
        finally:
            session.communicate(b"")
        await asyncio.wait_for(daemon.stop_event.wait(), 30)  # the daemon leaves once the session ended

    run_with_daemon(project, scenario)
