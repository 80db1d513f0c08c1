"""Dispatch: the daemon's frame parser fed arbitrary and mangled request frames."""

import asyncio
import json
import os
import posix
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from modules.optimization import wire
from modules.optimization.daemon import Daemon, ensure_runtime_dir
from modules.optimization.installer import install
from modules.optimization.integrated_optimizer import load_settings
from modules.optimization.protocol import ProtocolError
from tests.conftest import EXAMPLE_PROJECT
from tests.daemon_helpers import post_event
from tests.fuzz_strategies import event_like, json_values, mangled


@pytest.fixture
def inproc_daemon(tmp_path, monkeypatch):
    """A Daemon object in this process with a private runtime dir (not serving sockets)."""
    runtime = Path(tempfile.mkdtemp(prefix="hz", dir="/tmp"))
    monkeypatch.setitem(posix.environ, b"HOOKOPT_RUNTIME_DIR", str(runtime).encode())
    monkeypatch.setenv("CLAUDE_PROJECT_DIR", str(tmp_path))
    ensure_runtime_dir()
    daemon = Daemon(tmp_path, load_settings(tmp_path))
    yield daemon
    daemon.journal.close()
    daemon.observers.close()
    daemon.engine.close()
    subprocess.run(["rm", "-rf", str(runtime)], check=False)


@st.composite
def request_frames(draw, project):
    """Request frames as a client builds them, with drawn ops and sections, often mangled."""
    op = draw(st.sampled_from(["event", "status", "stack", "legacy", "bogus"]) | st.text(max_size=8))
    body = draw(st.binary(max_size=200) | mangled(event_like) | mangled(st.just(post_event(project, tool_use_id="toolu_fuzz"))))
    sections = {
        "project": draw(st.just(str(project).encode()) | st.binary(max_size=20)),
        "env": draw(st.binary(max_size=60)),
        "cwd": draw(st.just(b"") | st.binary(max_size=20)),
        "script": draw(st.binary(max_size=20)),
        "argv": draw(st.binary(max_size=20)),
        "body": body,
    }
    frame = wire.encode_request(op, **sections)
    how = draw(st.sampled_from(["as is", "cut", "splice", "header"]))
    if how == "cut":
        frame = frame[: draw(st.integers(0, len(frame)))]
    elif how == "splice":
        at = draw(st.integers(0, len(frame)))
        frame = frame[:at] + draw(st.binary(min_size=1, max_size=8)) + frame[at:]
    elif how == "header":  # a drawn header of the declared size
        header = draw(st.binary(max_size=64) | mangled(json_values))
        frame = len(header).to_bytes(4, "big") + header + frame[4 + int.from_bytes(frame[:4], "big") :]
    return frame


def test_fuzz_daemon_frame_parser_raises_only_what_the_connection_handler_catches(inproc_daemon):
    """Daemon.answer_frame fed arbitrary and mangled frames: it answers with a well-formed
    reply or raises ProtocolError, which the unix server catches (log, close) before
    serving the next connection."""
    daemon = inproc_daemon
    loop = asyncio.new_event_loop()

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.binary(max_size=400) | request_frames(daemon.project))
    @example(b"\x00\x00\x00\x02[]")
    @example(b"\x00\x00\x00\x011")
    @example(b"\x00\x00\x00\x02\xff\xfe")
    @example(b"\x00\x00\x10\x00" + b"[" * 4096)
    @example(b"\xff\xff\xff\xff")
    # Found by this fuzzer: a NUL in a path section reached os.path.realpath as a ValueError.
    @example(wire.encode_request("legacy", project=str(daemon.project).encode(), script=b"hook.py\0"))
    @example(wire.encode_request("stack", project=str(daemon.project).encode(), cwd=b"/tmp\0x", body=b"{}"))
    def fuzz(data):
        try:
            reply = loop.run_until_complete(daemon.answer_frame(data))
        except ProtocolError:
            return
        size = int.from_bytes(reply[:4], "big")
        parsed = wire.parse_reply_header(reply[4 : 4 + size])
        if parsed is None:
            assert "error" in json.loads(reply[4 : 4 + size])
        else:
            assert len(reply) == 4 + size + parsed[1] + parsed[2]

    try:
        fuzz()
    finally:
        loop.close()


def test_a_stack_event_hands_out_every_run_before_it_is_journaled(tmp_path, monkeypatch):
    """The observer journal is written while the hooks run, not ahead of them: on the daemon's
    one thread a write first would hold every run back. The real runner and journal, each
    call noted in order."""
    runtime = Path(tempfile.mkdtemp(prefix="hz", dir="/tmp"))
    monkeypatch.setitem(posix.environ, b"HOOKOPT_RUNTIME_DIR", str(runtime).encode())
    project = tmp_path / "p"
    shutil.copytree(EXAMPLE_PROJECT, project, ignore=shutil.ignore_patterns("hookopt", "logs"))
    monkeypatch.setenv("CLAUDE_PROJECT_DIR", str(project))
    ensure_runtime_dir()
    install(project, consolidate_hooks=True, say=lambda _: None)
    daemon = Daemon(project, load_settings(project))
    calls = []
    run, record = daemon.runner.run, daemon.journal.record

    async def noted_run(command, **kwargs):
        calls.append("run " + command.rsplit("/", 1)[-1].strip('"'))
        return await run(command, **kwargs)

    async def noted_record(event):
        calls.append("journal")
        return await record(event)

    monkeypatch.setattr(daemon.runner, "run", noted_run)
    monkeypatch.setattr(daemon.journal, "record", noted_record)
    event = post_event(project, tool_use_id="toolu_order")
    event.update(tool_name="Edit", tool_input={"file_path": str(project / "src" / "app.py"), "old_string": "a", "new_string": "b"})
    env = {**os.environ, "CLAUDE_PROJECT_DIR": str(project)}

    async def go():
        try:
            return await daemon.dispatch_stack(json.dumps(event).encode(), env, str(project))
        finally:
            await daemon.runner.close()

    loop = asyncio.new_event_loop()
    try:
        result = loop.run_until_complete(go())
    finally:
        loop.close()
        daemon.journal.close()
        daemon.observers.close()
        daemon.engine.close()
        subprocess.run(["rm", "-rf", str(runtime)], check=False)
    assert result.exit_code == 0, result
    assert calls == ["run log_tools.py", "run sqlite_logger.py", "run change_notes.py", "journal"], calls
    assert (project / ".claude" / "logs" / "tools.db").exists()  # the hooks did run
