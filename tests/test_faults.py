"""Reliability and security under faults, load and hostile input (issue 6).

What test_daemon, test_hook_integration and test_subprocess_coordinator already cover
(hung, crashing and greedy validators, a SIGKILLed pool worker, racing clients, stale
socket and pid files, bad JSON through the daemon) is not repeated here. This file
adds: the daemon SIGKILLed under streaming clients, a read-only and a full state
directory, hostile stdin and frames (with hypothesis fuzzing), hostile http requests,
built-in guards failing closed on their own errors, and many concurrent clients.

Real processes, sockets, files and mounts throughout. As root, file modes do not stop
writes, so "read-only" is a read-only bind mount and "full" is a tiny tmpfs; both
skip where mount(8) is not permitted.
"""

import ast
import asyncio
import contextlib
import dataclasses
import json
import os
import posix
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from modules.optimization import wire
from modules.optimization.async_db import Journal, ObserverLog, spool_event
from modules.optimization.daemon import Daemon, ensure_runtime_dir
from modules.optimization.dispatch import reply as _reply
from modules.optimization.dispatch import reply_error as _reply_error
from modules.optimization.hook_integration import Engine
from modules.optimization.installer import install
from modules.optimization.integrated_optimizer import load_settings
from modules.optimization.protocol import (
    EVENTS,
    MAX_EVENT_BYTES,
    TOOL_EVENTS,
    HookResult,
    ProtocolError,
    interpret,
    parse_event,
)
from modules.optimization.validators import pre_tool_use
from modules.optimization.validators.pre_tool_use import BUILTIN_PRE
from tests.daemon_helpers import ROOT, post_event, pre_event, wait_for

MODULES = ROOT / "modules" / "optimization"
OFF = {"CLAUDE_HOOKS_OPTIMIZATION": "off"}  # the client answers in-process, as when no daemon can answer
NOT_RECORDED = b"event not recorded for the observers"


def state(rt):
    return rt.project / ".claude" / "hookopt"


def decision(proc):
    assert proc.returncode == 0, proc.stderr
    assert b"Traceback" not in proc.stderr, proc.stderr
    return json.loads(proc.stdout)["hookSpecificOutput"]["permissionDecision"] if proc.stdout else None


def stored_ids(project):
    """How many rows the observer database holds per tool_use_id."""
    db = sqlite3.connect(project / ".claude" / "hookopt" / "observer.db")
    try:
        return Counter(r[0] for r in db.execute("SELECT json_extract(payload, '$.tool_use_id') FROM events"))
    finally:
        db.close()


def _mount(*args):
    proc = subprocess.run(["mount", *map(str, args)], capture_output=True, text=True, check=False)
    if proc.returncode:
        pytest.skip(f"mount {' '.join(map(str, args))} is not permitted here: {proc.stderr.strip()}")


@contextlib.contextmanager
def tiny_tmpfs(path, size):
    """Mount a tmpfs of size bytes on path, so the directory can be filled for real."""
    path.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", path)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@contextlib.contextmanager
def read_only(path):
    """Make path read-only with a read-only bind mount over itself (root ignores file modes).
    Files already open for writing keep working: the mount applies to new opens."""
    _mount("--bind", path, path)
    try:
        _mount("-o", "remount,bind,ro", path)
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory):
    """Take every free block of the filesystem holding directory; return the filler file."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 4096)
    return filler


# ---------------------------------------------------------------------------
# Faults


LOGGER = """\
import json, os, sys
event = json.load(sys.stdin)
fd = os.open(os.path.join(os.environ["CLAUDE_PROJECT_DIR"], "legacy-ids.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
os.write(fd, (event["tool_use_id"] + "\\n").encode())
"""


@pytest.mark.parametrize("clients, kills", [(4, 3), (2, 5)])
def test_daemon_sigkilled_while_clients_stream_loses_no_event(rt, clients, kills):
    """N clients stream PostToolUse events (each a real `hooks/stack.py` process, as a
    consolidated install runs them) while the daemon's worker is SIGKILLed K times (the
    supervisor replaces it each time). The
    project's own legacy logger hook writes every tool_use_id to its log; hookopt records
    each event in observer.db. Afterwards every event is in both, and duplicates are
    counted.

    The bound: an event is recorded twice only when a daemon journaled it (and ran the
    legacy logger, warm) and died before its reply reached the client. The client then
    evaluates the event in-process (spawning the logger, spooling the event), so that
    event is in each log twice. Each client has one event in flight, so one crash
    duplicates at most one event per client, each at most once. A kill between the
    daemon recording the clients' spool and truncating it would also duplicate those
    spooled lines once each; the killer here strikes after the new daemon's first spool
    ingest, so the figure checked is the in-flight bound.
    """
    hooks_dir = rt.project / ".claude" / "hooks"
    hooks_dir.mkdir(parents=True)
    (hooks_dir / "log_ids.py").write_text(LOGGER)
    command = f'{sys.executable} "$CLAUDE_PROJECT_DIR"/.claude/hooks/log_ids.py'
    (rt.project / ".claude" / "settings.json").write_text(
        json.dumps({"hooks": {"PostToolUse": [{"matcher": "*", "hooks": [{"type": "command", "command": command}]}]}})
    )
    install(rt.project, consolidate_hooks=True, say=lambda _: None)
    rt.start()

    sent: list[str] = []
    failures: list[bytes] = []
    lock = threading.Lock()
    streaming = threading.Event()
    streaming.set()

    def stream(k):
        i = 0
        while streaming.is_set():
            tool_use_id = f"toolu_{k}_{i}"
            proc = rt.hook(post_event(rt.project, f"echo {k} {i}", tool_use_id=tool_use_id), script="stack")
            with lock:
                sent.append(tool_use_id)
                if proc.returncode != 0 or b"Traceback" in proc.stderr:
                    failures.append(proc.stderr)
            i += 1

    spool = state(rt) / "spool.jsonl"
    killed: list[int] = []
    with ThreadPoolExecutor(clients) as pool:
        workers = [pool.submit(stream, k) for k in range(clients)]
        try:
            for _ in range(kills + 1):
                # A daemon that clients restarted, has served several events, and has had its
                # first tick (spool ingested: the file is empty).
                status = wait_for(
                    lambda: (s := rt.status()) and s["pid"] not in killed and s["events"] >= 2 * clients
                    and s["uptime_s"] > 1.5 and not (spool.exists() and spool.stat().st_size) and s,
                    what="a restarted daemon serving events",
                )
                if len(killed) < kills:
                    os.kill(status["pid"], signal.SIGKILL)
                    killed.append(status["pid"])
        finally:
            streaming.clear()
        for worker in workers:
            worker.result()
    assert not failures, failures[:3]
    assert len(killed) == kills
    rt.stop()
    rt.start()  # a last start ingests anything spooled after the final daemon's last tick
    rt.stop()

    stored = stored_ids(rt.project)
    legacy = Counter((rt.project / "legacy-ids.log").read_text().split())
    expected = set(sent)
    for name, counts in (("observer.db", stored), ("legacy log", legacy)):
        assert set(counts) == expected, f"{name}: lost {sorted(expected - set(counts))[:5]}, unknown {sorted(set(counts) - expected)[:5]}"
        assert max(counts.values()) <= 2, f"{name}: an event recorded more than twice"
        assert sum(counts.values()) - len(counts) <= kills * clients, f"{name}: more duplicates than events in flight"
    print(
        f"\n{len(sent)} events from {clients} clients, {kills} SIGKILLs: observer.db {sum(stored.values())} rows "
        f"({sum(stored.values()) - len(stored)} duplicates), legacy log {sum(legacy.values())} lines "
        f"({sum(legacy.values()) - len(legacy)} duplicates); bound N x K = {kills * clients}"
    )


def test_read_only_state_directory_keeps_guards_deciding_and_loses_nothing_journaled(rt):
    """Behaviour chosen for a state directory that turns read-only under a running daemon:
    the daemon keeps serving (its open journal still takes events; the spool it cannot
    ingest waits, said once in daemon.log); an in-process answer still decides and says on
    stderr that its event was not recorded, never with a traceback; a daemon cannot boot
    there and says why in its .failed file, so clients back off. Once the directory is
    writable again every journaled event reaches SQLite exactly once."""
    assert rt.hook(post_event(rt.project, tool_use_id="toolu_spooled"), script="post_tool_use", env=OFF).returncode == 0
    rt.start()  # ingests the spool (the file stays, empty, as after any fallback)
    pid = rt.pid()
    for i in range(3):
        assert rt.hook(post_event(rt.project, tool_use_id=f"toolu_before_{i}"), script="post_tool_use").returncode == 0
    log = state(rt) / "daemon.log"
    with read_only(state(rt)):
        wait_for(lambda: "cannot ingest the clients' spool yet" in log.read_text(), what="the failed ingest to be logged")
        assert rt.status()["pid"] == pid  # still serving after failed ticks
        assert decision(rt.hook(pre_event(rt.project, "rm -rf /"))) == "deny"
        assert decision(rt.hook(pre_event(rt.project, "ls -la"))) is None
        for i in range(3):
            proc = rt.hook(post_event(rt.project, tool_use_id=f"toolu_during_{i}"), script="post_tool_use")
            assert proc.returncode == 0 and NOT_RECORDED not in proc.stderr, proc.stderr
        # In-process answers: the guard still denies; the observer event is reported lost.
        assert decision(rt.hook(pre_event(rt.project, "rm -rf /"), env=OFF)) == "deny"
        lost = rt.hook(post_event(rt.project, tool_use_id="toolu_lost"), script="post_tool_use", env=OFF)
        assert lost.returncode == 0 and b"Traceback" not in lost.stderr, lost.stderr
        assert b"hookopt: PostToolUse " + NOT_RECORDED in lost.stderr and b"Read-only file system" in lost.stderr
        assert log.read_text().count("cannot ingest the clients' spool yet") == 1  # once, not every second

        rt.stop()  # a clean stop cannot compact the journal here: it says so, and keeps the entries
        assert "the journal keeps what SQLite lacks for the next start" in log.read_text()
        *_, worker_last, supervisor_last = log.read_text().splitlines()
        assert "stopped after" in worker_last and "worker stopped (exit code 0)" in supervisor_last
        assert decision(rt.hook(pre_event(rt.project, "rm -rf ~"))) == "deny"  # answered in-process
        wait_for(rt.path(".failed").exists, what="the daemon's refusal to boot")
        assert "cannot keep state in" in rt.path(".failed").read_text() and "Read-only file system" in rt.path(".failed").read_text()
        wait_for(lambda: not rt.daemons(), what="the refused daemon to exit")
    rt.path(".failed").unlink()  # what the clients' 30 s back-off would wait for
    rt.start()
    rt.stop()
    stored = stored_ids(rt.project)
    expected = {"toolu_spooled", *(f"toolu_{w}_{i}" for w in ("before", "during") for i in range(3))}
    assert set(stored) == expected and set(stored.values()) == {1}, stored


def test_full_state_directory_reports_each_unrecorded_event_and_keeps_the_rest(rt):
    """A tmpfs of 512 KiB as the state directory, filled to the last block while the daemon
    runs: guards keep deciding; each PostToolUse (built-in validators or a consolidated
    stack) either reaches SQLite or its client is told on stderr that it was not recorded
    (never both, never neither); after space is freed, events are recorded again and
    nothing journaled is lost."""
    with tiny_tmpfs(state(rt), 512 * 1024):
        install(rt.project, consolidate_hooks=True, say=lambda _: None)  # no hooks of its own: an empty stack
        rt.start()
        pid = rt.pid()
        sent, reported = [], []

        def post(tool_use_id, env=None, script="post_tool_use"):
            proc = rt.hook(post_event(rt.project, tool_use_id=tool_use_id), script=script, env=env)
            assert proc.returncode == 0 and b"Traceback" not in proc.stderr, proc.stderr
            sent.append(tool_use_id)
            if NOT_RECORDED in proc.stderr:
                assert b"No space left on device" in proc.stderr, proc.stderr
                reported.append(tool_use_id)
            return proc

        for i in range(5):
            post(f"toolu_a{i}")
        filler = fill(state(rt))
        for i in range(20):
            post(f"toolu_full{i}")
        assert decision(rt.hook(pre_event(rt.project, "rm -rf /"))) == "deny"
        assert decision(rt.hook(pre_event(rt.project, "ls -la"))) is None
        assert decision(rt.hook(pre_event(rt.project, "rm -rf /"), env=OFF)) == "deny"
        fallback = post("toolu_fallback", env=OFF)
        assert "toolu_fallback" in reported and b"cannot append it to " + bytes(state(rt) / "spool.jsonl") in fallback.stderr
        # The daemon answers a stack event itself: a fallback's message would name the spool.
        stack = post("toolu_stack", script="stack")
        assert "toolu_stack" in reported and b"cannot journal it in" in stack.stderr, stack.stderr
        assert set(reported) <= {"toolu_fallback", "toolu_stack", *(f"toolu_full{i}" for i in range(20))}
        assert rt.status()["pid"] == pid
        filler.unlink()
        for i in range(5):
            post(f"toolu_b{i}")
        rt.stop()
        stored = stored_ids(rt.project)
    assert set(stored) == set(sent) - set(reported) and set(stored.values()) == {1}, (stored, reported)
    print(f"\n{len(sent)} events, {len(reported)} reported not recorded while full, {len(stored)} stored")


def test_journal_on_a_full_disk_keeps_exactly_the_acknowledged_entries(tmp_path):
    """An append that fails for lack of space must leave no trace, even once space is back:
    a buffered writer would keep its bytes and write them later under a reused seq."""
    with tiny_tmpfs(tmp_path / "fs", 64 * 1024) as fs:
        journal = Journal(fs / "journal.jsonl", fsync=False)
        acked = {journal.append({"i": i, "pad": "x" * 300}): i for i in range(3)}
        filler = fill(fs)
        failed = 0
        for i in range(3, 40):
            try:
                acked[journal.append({"i": i, "pad": "x" * 300})] = i
            except OSError:
                failed += 1
        assert failed
        filler.unlink()
        for i in range(40, 45):
            acked[journal.append({"i": i, "pad": "x" * 300})] = i
        journal.close()
        reopened = Journal(fs / "journal.jsonl", fsync=False)
        entries = [(seq, record["i"]) for seq, record in reopened.entries_after(0)]
        reopened.close()
    assert entries == sorted(acked.items())


def test_spool_ingest_interrupted_by_a_full_disk_records_each_event_once(tmp_path):
    with tiny_tmpfs(tmp_path / "fs", 256 * 1024) as fs:
        for i in range(60):
            spool_event(fs, {"hook_event_name": "PostToolUse", "tool_use_id": f"t{i}", "pad": "x" * 200})
        log = ObserverLog(fs, background=False, fsync=False)
        log.record({"hook_event_name": "PostToolUse", "tool_use_id": "first"})  # the journal's page has room left
        filler = fill(fs)
        for _ in range(3):  # the daemon retries every tick
            with pytest.raises(OSError):
                log.ingest_spool()
        filler.unlink()
        log.ingest_spool()
        log.close()
        counts = stored_ids_in(fs / "observer.db")
    assert counts == Counter({"first": 1, **{f"t{i}": 1 for i in range(60)}})


def stored_ids_in(path):
    db = sqlite3.connect(path)
    try:
        return Counter(r[0] for r in db.execute("SELECT json_extract(payload, '$.tool_use_id') FROM events"))
    finally:
        db.close()


# ---------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(("event_name", "script", "code"), [("PreToolUse", "pre_tool_use", 2), ("PostToolUse", "post_tool_use", 1)])
def test_fifty_megabytes_on_stdin_is_refused_clearly_and_the_daemon_keeps_serving(rt, event_name, script, code):
    rt.start()
    before = rt.status()["events"]
    raw = b'{"hook_event_name": "%s", "tool_name": "Bash", "tool_input": {"command": "' % event_name.encode()
    raw += b"x" * (50 * 1024 * 1024) + b'"}}'
    proc = rt.hook(None, raw=raw, script=script)
    assert proc.returncode == code and proc.stdout == b""
    assert proc.stderr == f"hookopt: cannot evaluate this event: event is {MAX_EVENT_BYTES + 1} bytes, over the limit of {MAX_EVENT_BYTES} bytes\n".encode()
    assert rt.status()["events"] == before  # never sent to the daemon
    assert decision(rt.hook(pre_event(rt.project, "rm -rf /"))) == "deny"


def _pre_without(field):
    event = pre_event("/p", "rm -rf /")
    del event[field]
    return json.dumps(event).encode()


@pytest.mark.parametrize(
    ("raw", "code", "message"),
    [
        (_pre_without("tool_name"), 2, "PreToolUse event has no tool_name"),
        (_pre_without("hook_event_name"), 1, "event has no hook_event_name"),
        (json.dumps({**pre_event("/p"), "hook_event_name": "PostToolUse", "tool_name": ""}).encode(), 1, "PostToolUse event has no tool_name"),
        (json.dumps({**pre_event("/p"), "tool_input": ["rm", "-rf", "/"]}).encode(), 2, "tool_input that is not an object"),
        (b'["PreToolUse"]', 2, "must be a JSON object, not list"),
        # More digits than int() converts: this used to escape as a traceback (exit 1, the call let through).
        (_pre_without("tool_use_id")[:-1] + b', "timeout": ' + b"9" * 5000 + b"}", 2, "Exceeds the limit (4300 digits)"),
        (b'{"hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_input": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 2, "nested too deeply"),
    ],
    ids=["pre-no-tool-name", "no-event-name", "post-empty-tool-name", "tool-input-list", "array", "huge-int", "deep"],
)
def test_events_missing_fields_get_the_same_clear_answer_from_daemon_and_fallback(rt, raw, code, message):
    rt.start()
    served = rt.hook(None, raw=raw)
    fallback = rt.hook(None, raw=raw, env=OFF)
    for proc in (served, fallback):
        assert proc.returncode == code and proc.stdout == b"", proc.stderr
        assert proc.stderr.decode().startswith("hookopt: cannot evaluate this event:") and message in proc.stderr.decode(), proc.stderr
    assert served.stderr == fallback.stderr
    assert decision(rt.hook(pre_event(rt.project, "rm -rf /"))) == "deny"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
event_like = st.fixed_dictionaries(
    {},
    optional={
        "hook_event_name": st.sampled_from(sorted(EVENTS)) | st.text(max_size=12) | json_values,
        "tool_name": st.sampled_from(["Bash", "Read", "Write", ""]) | json_values,
        "tool_input": st.fixed_dictionaries({}, optional={"command": st.text(max_size=40), "file_path": st.text(max_size=20)}) | json_values,
        "tool_use_id": st.text(max_size=10),
        "cwd": st.text(max_size=10),
    },
)


@st.composite
def mangled(draw, values):
    """JSON text of a drawn value, sometimes cut short or with bytes spliced in."""
    raw = json.dumps(draw(values)).encode()
    how = draw(st.sampled_from(["as is", "cut", "splice"]))
    if how == "cut":
        raw = raw[: draw(st.integers(0, len(raw)))]
    elif how == "splice":
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.binary(min_size=1, max_size=8)) + raw[at:]
    return raw


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300) | mangled(event_like) | mangled(json_values))
@example(b"[" * 100_000)
@example(b'{"hook_event_name": "PreToolUse", "tool_name": "Bash", "n": ' + b"1" * 5000 + b"}")
@example(b'{"hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_input": {"command": "\\ud800"}}')
@example(b"\xef\xbb\xbf{}")
def test_fuzz_parse_event_raises_only_protocol_error(raw):
    try:
        event = parse_event(raw)
    except ProtocolError:
        return
    assert isinstance(event, dict) and event["hook_event_name"] in EVENTS
    if event["hook_event_name"] in TOOL_EVENTS:
        assert isinstance(event["tool_name"], str) and event["tool_name"]
        assert isinstance(event.get("tool_input", {}), dict)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200) | st.builds(lambda parts: b",".join(parts), st.lists(st.sampled_from([b'{"v":1', b'"exit":3', b'"out":-1', b'"err":x', b'"error":""', b"}", b":", b'"v":2']), max_size=6)))
def test_fuzz_reply_header_parser_fails_only_in_ways_the_client_catches(header):
    try:
        parsed = wire.parse_reply_header(header)
    except (ValueError, KeyError):
        return  # ask_daemon turns these into "no answer": the client evaluates in-process
    assert parsed is None or (len(parsed) == 3 and all(isinstance(n, int) for n in parsed))


@settings(max_examples=200, deadline=None)
@given(st.integers(-300, 300), st.binary(max_size=100), st.binary(max_size=100), st.text(max_size=50))
def test_fuzz_reply_frames_round_trip_through_the_client_parser(code, out, err, message):
    frame = _reply(HookResult(code, out, err))
    size = int.from_bytes(frame[:4], "big")
    assert wire.parse_reply_header(frame[4 : 4 + size]) == (code, len(out), len(err))
    assert frame[4 + size :] == out + err
    error = _reply_error(message)
    assert wire.parse_reply_header(error[4:]) is None


@pytest.fixture
def inproc_daemon(tmp_path, monkeypatch):
    """A Daemon object in this process with a private runtime dir (not serving sockets)."""
    runtime = Path(tempfile.mkdtemp(prefix="hz", dir="/tmp"))
    monkeypatch.setitem(posix.environ, b"HOOKOPT_RUNTIME_DIR", str(runtime).encode())
    monkeypatch.setenv("CLAUDE_PROJECT_DIR", str(tmp_path))
    ensure_runtime_dir()
    daemon = Daemon(tmp_path, load_settings(tmp_path))
    yield daemon
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
    """Daemon.answer_frame fed arbitrary and mangled frames from a StreamReader: it answers
    with a well-formed reply or raises ProtocolError / IncompleteReadError, which
    the frame protocol catches (log, close) before serving the next connection."""
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
        async def answer():
            reader = asyncio.StreamReader()  # made on the running loop, as the server makes it
            reader.feed_data(data[4:])
            reader.feed_eof()
            return await daemon.answer_frame(reader, int.from_bytes(data[:4].rjust(4, b"\0"), "big"))

        try:
            reply = loop.run_until_complete(answer())
        except (ProtocolError, asyncio.IncompleteReadError):
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


# ---------------------------------------------------------------------------
# Security

# Modules whose import gives a way to run code from bytes.
UNPICKLERS = {"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "marshal", "shelve", "jsonpickle", "yaml", "copyreg"}
# What is allowed to exec or compile code: running a stub's own .original script file.
EXEC_ALLOWED = {("client.py", "run_original")}


def _module_imports(path):
    """(absolute module names imported, sibling module files imported relatively)."""
    tree = ast.parse(path.read_text(), str(path))
    absolute, relative = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            absolute.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                absolute.add(node.module or "")
                continue
            base = path.parent
            for _ in range(node.level - 1):
                base = base.parent
            if node.module:
                target = base.joinpath(*node.module.split("."))
                relative.add(target.with_suffix(".py") if target.with_suffix(".py").exists() else target / "__init__.py")
            else:
                relative.update(base / f"{alias.name}.py" for alias in node.names if (base / f"{alias.name}.py").exists())
    return tree, absolute, relative


def _code_runners(tree):
    """(innermost enclosing function, name) of every eval/exec/compile/__import__ call."""
    found = []

    def visit(node, owner):
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else owner
            if isinstance(child, ast.Call) and isinstance(child.func, ast.Name) and child.func.id in ("eval", "exec", "compile", "__import__"):
                found.append((owner, child.func.id))
            visit(child, inner)

    visit(tree, "<module>")
    return found


def test_nothing_from_the_socket_or_http_is_unpickled_or_evaluated():
    """Static: the code the daemon and the thin client load imports no unpickler and runs
    no eval/exec on data. The one exception is the process pool for isolated validators
    (subprocess_coordinator.py): multiprocess pickles over pipes it creates to workers it
    forked itself, never over the daemon's socket or http."""
    seen, todo = set(), [MODULES / "daemon.py", MODULES / "client.py", MODULES / "hook_integration.py"]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        tree, absolute, relative = _module_imports(path)
        rel = path.relative_to(MODULES)
        if str(rel) == "subprocess_coordinator.py":
            continue  # private pipes to its own forked workers (see the docstring)
        assert not {name.split(".")[0] for name in absolute} & UNPICKLERS, (rel, absolute & UNPICKLERS)
        # multiprocess pickles over its pipes; only its shared_memory (raw bytes) may be used here.
        assert {name for name in absolute if name.split(".")[0] in ("multiprocess", "multiprocessing")} <= {"multiprocess.shared_memory"}, rel
        for owner, name in _code_runners(tree):
            assert (str(rel), owner) in EXEC_ALLOWED, f"{rel}: {name}() in {owner}"
        todo.extend(relative)
    names = {str(p.relative_to(MODULES)) for p in seen}
    assert {"daemon.py", "client.py", "protocol.py", "async_db.py", "hook_pool.py"} <= names
    # The daemon's only pickling peer is the isolated-validator pool, reached through the engine.
    assert "subprocess_coordinator.py" in names


def _read_response(conn):
    """(status, headers, body) of one HTTP response, or None if the server closed first."""
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = conn.recv(65536)
        except ConnectionResetError:  # closed with our unread request still queued
            chunk = b""
        if not chunk:
            assert not data, data
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers["content-length"]):
        body += conn.recv(65536)
    return int(lines[0].split()[1]), headers, body


def _closed(conn):
    try:
        return conn.recv(1) == b""
    except ConnectionResetError:
        return True


def test_http_hostile_requests_are_refused_and_the_daemon_keeps_serving(rt):
    rt.start()
    endpoint = json.loads((state(rt) / "http.json").read_text())
    token = endpoint["token"]
    body = json.dumps(pre_event(rt.project, "rm -rf /")).encode()

    def request(headers, payload=b"", method="POST"):
        lines = [f"{method} /hook HTTP/1.1", "Host: x", *headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload

    def connect():
        return socket.create_connection(("127.0.0.1", endpoint["port"]), timeout=10)

    good = request([f"X-Hookopt-Token: {token}", f"Content-Length: {len(body)}"], body)
    # A Content-Length over the event limit: 413 at once, nothing read, connection closed.
    for length in (MAX_EVENT_BYTES + 1, 10**15, -1):
        with connect() as conn:
            conn.sendall(request([f"X-Hookopt-Token: {token}", f"Content-Length: {length}"]))
            status, headers, _ = _read_response(conn)
            assert status == 413 and headers["connection"] == "close" and _closed(conn)
    # No token header at all.
    with connect() as conn:
        conn.sendall(request([f"Content-Length: {len(body)}", "Connection: close"], body))
        status, _, payload = _read_response(conn)
        assert status == 403 and b"x-hookopt-token" in payload and _closed(conn)
    # One keep-alive connection: a good request, garbage, a good request again (a refused
    # request keeps the connection when its framing was clear).
    with connect() as conn:
        conn.sendall(good)
        assert _read_response(conn)[0] == 200
        conn.sendall(b"\x00\xff\xfe GARBAGE \x01\r\nnot a header\r\n\r\n")
        assert _read_response(conn)[0] == 403
        conn.sendall(good)
        status, _, payload = _read_response(conn)
        assert status == 200 and json.loads(payload)["hookSpecificOutput"]["permissionDecision"] == "deny"
    # Garbage that cannot be framed: the server closes without answering.
    for garbage in (b"A" * 200_000, request([f"X-Hookopt-Token: {token}", "Content-Length: twelve"]), good[: len(good) - 10]):
        with connect() as conn:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # it may close mid-send
                conn.sendall(garbage)
                conn.shutdown(socket.SHUT_WR)
            assert _read_response(conn) is None
    # Still serving, same daemon, over a fresh connection and the unix socket alike.
    with connect() as conn:
        conn.sendall(good)
        assert _read_response(conn)[0] == 200
    assert decision(rt.hook(pre_event(rt.project, "rm -rf /"))) == "deny"
    assert len(rt.supervisors()) == 1 and rt.status()["supervisor"]["restarts"] == 0  # the same worker throughout


@pytest.mark.parametrize("guard", BUILTIN_PRE, ids=lambda v: v.name)
def test_every_builtin_guard_fails_closed_on_its_own_error(tmp_path, monkeypatch, guard):
    monkeypatch.setenv("CLAUDE_PROJECT_DIR", str(tmp_path))

    def broken(event):
        raise RuntimeError("internal bug")

    engine = Engine(tmp_path, load_settings(tmp_path), validators=[dataclasses.replace(guard, fn=broken)], persist=False)
    try:
        outcome = interpret("PreToolUse", engine.evaluate(pre_event(tmp_path, "ls -la")))
    finally:
        engine.close()
    assert outcome.decision == "deny"
    assert outcome.reason == f"validator {guard.name!r} failed: RuntimeError: internal bug"


def test_a_bug_inside_a_builtin_guard_denies_through_the_engine_and_is_not_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("CLAUDE_PROJECT_DIR", str(tmp_path))
    engine = Engine(tmp_path, load_settings(tmp_path), persist=False)
    original = pre_tool_use._delete_findings

    def broken(*args):
        raise IndexError("parser bug")

    try:
        monkeypatch.setattr(pre_tool_use, "_delete_findings", broken)
        outcome = interpret("PreToolUse", engine.evaluate(pre_event(tmp_path, "rm -r build")))
        assert outcome.decision == "deny" and "'recursive_delete'" in outcome.reason and "IndexError: parser bug" in outcome.reason
        monkeypatch.setattr(pre_tool_use, "_delete_findings", original)
        assert interpret("PreToolUse", engine.evaluate(pre_event(tmp_path, "rm -r build"))).decision is None
    finally:
        engine.close()


# ---------------------------------------------------------------------------
# Load


def test_many_concurrent_clients_lose_and_duplicate_nothing(rt):
    """16 thin-client processes at a time, 400 events (half PreToolUse guards, half
    PostToolUse observers) against one daemon: every decision right, every observer
    record stored exactly once, every event answered by the daemon (no fallback)."""
    concurrency, total = 16, 400
    rt.start()
    before = rt.status()["events"]

    def one(i):
        if i % 2:
            event, script = post_event(rt.project, f"echo {i}", tool_use_id=f"toolu_load_{i}"), "post_tool_use"
        else:
            event, script = pre_event(rt.project, f"rm -rf / ; echo {i}" if i % 4 == 0 else f"echo {i}"), "pre_tool_use"
        start = time.perf_counter()
        proc = rt.hook(event, script=script)
        return i, time.perf_counter() - start, proc

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, range(total)))
    elapsed = time.perf_counter() - started
    for i, _, proc in results:
        if i % 2:
            assert proc.returncode == 0 and proc.stdout == b"" and proc.stderr == b"", (i, proc.stderr)
        else:
            assert decision(proc) == ("deny" if i % 4 == 0 else None), (i, proc.stdout)
    assert rt.status()["events"] - before == total  # all answered by the daemon
    rt.stop()
    stored = stored_ids(rt.project)
    assert stored == Counter({f"toolu_load_{i}": 1 for i in range(1, total, 2)})
    latencies = sorted(t for _, t, _ in results)

    def pick(q):
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    print(
        f"\n{total} events, {concurrency} concurrent clients, {elapsed:.1f} s ({total / elapsed:.0f} events/s); "
        f"client process latency p50 {pick(0.50):.1f} ms, p95 {pick(0.95):.1f} ms, p99 {pick(0.99):.1f} ms"
    )
    assert elapsed < 60
