"""The thin client as real processes: what it refuses before any daemon sees it, and
answers identical to the daemon's when it evaluates in-process (the fallback)."""

import json

import pytest

from modules.optimization.protocol import MAX_EVENT_BYTES
from tests.daemon_helpers import OFF, decision, pre_event


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

