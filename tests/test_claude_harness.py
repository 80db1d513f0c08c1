"""The Claude Code harness: the stand-in Messages API, and real CLI sessions with the example's native hooks."""
from __future__ import annotations

import itertools
import json
import shutil
import socket
import sqlite3
import textwrap
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.claude_harness import (
    DEFAULT_PROMPT,
    ClaudeInstallError,
    FakeMessagesAPI,
    SessionResult,
    ToolResult,
    find_or_install_claude,
)

Session = Callable[..., SessionResult]


# --------------------------------------------------------------------------- installing the CLI


def test_install_without_npm_fails_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOOKOPT_CLAUDE_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ClaudeInstallError, match="npm is not on PATH"):
        find_or_install_claude(tmp_path / "cache")


def test_failed_npm_install_reports_its_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The real npm, pointed at a registry nobody listens on, with a cache of its own (a cached
    # package would install without the registry).
    monkeypatch.delenv("HOOKOPT_CLAUDE_BIN", raising=False)
    monkeypatch.setenv("npm_config_registry", "http://127.0.0.1:9/")
    monkeypatch.setenv("npm_config_fetch_retries", "0")
    monkeypatch.setenv("npm_config_cache", str(tmp_path / "npm-cache"))
    with pytest.raises(ClaudeInstallError, match="(?s)failed \\(exit [1-9][0-9]*\\).*ECONNREFUSED"):
        find_or_install_claude(tmp_path / "cache")


def test_claude_bin_override_must_be_executable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOKOPT_CLAUDE_BIN", str(tmp_path / "missing"))
    with pytest.raises(ClaudeInstallError, match="HOOKOPT_CLAUDE_BIN"):
        find_or_install_claude(tmp_path / "cache")


# --------------------------------------------------------------------------- the stand-in API alone


def _post(api: FakeMessagesAPI, path: str, body: dict[str, Any]) -> tuple[str, bytes]:
    """POST a JSON body to the stand-in; return the content type and raw body."""
    request = urllib.request.Request(
        api.base_url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers["Content-Type"], response.read()


def _main_body(*messages: dict[str, Any], stream: bool = False) -> dict[str, Any]:
    """A main-loop request: tools offered, the prompt first, the given later turns after it."""
    first = {"role": "user", "content": [{"type": "text", "text": DEFAULT_PROMPT}]}
    return {"model": "m", "tools": [{"name": "Bash"}], "stream": stream, "messages": [first, *messages]}


def _sse_events(raw: bytes) -> list[dict[str, Any]]:
    """The data payloads of a server-sent event stream."""
    return [json.loads(line[6:]) for line in raw.decode().splitlines() if line.startswith("data: ")]


def test_stand_in_scripts_tool_calls_then_ends() -> None:
    calls = [("Bash", {"command": "echo hi", "description": "x"})]
    with FakeMessagesAPI(calls) as api:
        kind, raw = _post(api, "/v1/messages?beta=true", _main_body())
        assert kind == "application/json"
        message = json.loads(raw)
        assert message["stop_reason"] == "tool_use"
        assert message["content"] == [{"type": "tool_use", "id": api.ids[0], "name": "Bash", "input": calls[0][1]}]

        # A retried request asks for the same step again and gets the same answer.
        assert json.loads(_post(api, "/v1/messages", _main_body())[1])["content"][0]["id"] == api.ids[0]

        answered = [
            {"role": "assistant", "content": message["content"]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": api.ids[0], "content": "hi"}]},
            {"role": "system", "content": "a reminder turn the CLI interleaves"},
        ]
        kind, raw = _post(api, "/v1/messages", _main_body(*answered, stream=True))
        assert kind == "text/event-stream"
        events = _sse_events(raw)
        assert [e["type"] for e in events] == [
            "message_start", "content_block_start", "content_block_delta", "content_block_stop",
            "message_delta", "message_stop",
        ]
        assert events[2]["delta"] == {"type": "text_delta", "text": "done"}
        assert events[4]["delta"]["stop_reason"] == "end_turn"
    assert [r.step for r in api.requests] == [0, 0, 1]


def test_stand_in_streams_tool_input_as_json_delta() -> None:
    args = {"file_path": "/x/y.py", "content": "print('é')\n"}
    with FakeMessagesAPI([("Write", args)]) as api:
        events = _sse_events(_post(api, "/v1/messages", _main_body(stream=True))[1])
    assert events[1]["content_block"] == {"type": "tool_use", "id": api.ids[0], "name": "Write", "input": {}}
    assert events[2]["delta"]["type"] == "input_json_delta"
    assert json.loads(events[2]["delta"]["partial_json"]) == args
    assert events[4]["delta"]["stop_reason"] == "tool_use"


def test_stand_in_side_requests_do_not_consume_the_script() -> None:
    with FakeMessagesAPI([("Bash", {"command": "true"})]) as api:
        no_tools = {"model": "haiku", "messages": [{"role": "user", "content": DEFAULT_PROMPT}]}
        other_prompt = {"model": "m", "tools": [{"name": "Bash"}], "messages": [{"role": "user", "content": "title?"}]}
        for body in (no_tools, other_prompt):
            assert json.loads(_post(api, "/v1/messages", body)[1])["content"] == [{"type": "text", "text": "ok"}]
        assert json.loads(_post(api, "/v1/messages/count_tokens", no_tools)[1])["input_tokens"] > 0
        assert json.loads(_post(api, "/api/anything", {})[1]) == {}
        assert json.loads(_post(api, "/v1/messages", _main_body())[1])["content"][0]["id"] == api.ids[0]
    assert [r.main for r in api.requests] == [False, False, False, False, True]


# --------------------------------------------------------------------------- the real CLI


def _jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.claude
def test_native_example_hooks_decide_in_the_real_cli(claude_session: Session, example_project: Path) -> None:
    project = example_project
    outside = Path("/etc/hookopt-test")
    existed = outside.exists()
    calls = [
        ("Bash", {"command": "echo hi", "description": "greet"}),
        ("Bash", {"command": "rm -rf /", "description": "destroy"}),
        ("Read", {"file_path": f"{project}/.env"}),
        ("Write", {"file_path": str(outside), "content": "nope\n"}),
        ("Bash", {"command": "ls /nonexistent-dir", "description": "fail"}),
        ("Write", {"file_path": f"{project}/src/new.py", "content": "print('new')\n"}),
    ]
    session = claude_session(project, calls)
    ids = session.ids
    assert session.returncode == 0, session.stderr
    assert session.final is not None and session.final["num_turns"] == len(calls) + 1
    assert set(session.results) == set(ids)

    # Exactly the three guarded calls were blocked, each with its hook's reason.
    assert session.blocked_ids == [ids[1], ids[2], ids[3]]
    assert session.reason(ids[1]) == "Blocked: recursive delete of a root, home or current directory: rm -rf /"
    assert "block_dangerous.py]: Blocked:" in session.results[ids[1]].text  # exit 2 names the hook command
    assert session.reason(ids[2]) == ".env holds secrets; it must not be read or changed by the agent"
    assert session.reason(ids[3]) == f"{outside} is outside the project {project}"
    assert [d["tool_use_id"] for d in session.permission_denials] == session.blocked_ids

    assert session.results[ids[0]] == ToolResult(is_error=False, text="hi")
    failed = session.results[ids[4]]
    assert failed.is_error and failed.text.startswith("Exit code 2") and not session.blocked(ids[4])
    assert not session.results[ids[5]].is_error
    assert (project / "src" / "new.py").read_text() == "print('new')\n"
    assert outside.exists() == existed

    logs = project / ".claude" / "logs"
    # PreToolUse hooks run in parallel, so the audit hook also saw the command block_dangerous blocked.
    assert [(r["tool_use_id"], r["command"]) for r in _jsonl(logs / "bash_audit.jsonl")] == [
        (ids[0], "echo hi"), (ids[1], "rm -rf /"), (ids[4], "ls /nonexistent-dir"),
    ]
    # PostToolUse fires only for calls that ran and succeeded; the failing ls gets PostToolUseFailure instead.
    ran = [(ids[0], "Bash"), (ids[5], "Write")]
    assert [(r["tool_use_id"], r["tool"]) for r in _jsonl(logs / "tools.jsonl")] == ran
    with sqlite3.connect(logs / "tools.db") as db:
        rows = db.execute("SELECT tool_use_id, tool, input FROM calls").fetchall()
    assert sorted((i, t) for i, t, _ in rows) == sorted(ran)
    assert {i: json.loads(inp) for i, _, inp in rows}[ids[5]] == calls[5][1]

    # additionalContext comes back as a role "system" turn right after the Write's tool_result.
    last = session.main_requests[-1].body["messages"]
    at = next(n for n, m in enumerate(last) if any(
        isinstance(b, dict) and b.get("tool_use_id") == ids[5] for b in m["content"] if isinstance(m["content"], list)
    ))
    note = "PostToolUse:Write hook additional context: new.py changed; it is now 13 bytes."
    assert last[at + 1]["role"] == "system" and note in json.dumps(last[at + 1]["content"])
    assert note in session.context_messages()


PROBE_HOOK = textwrap.dedent('''
    import json, os, sys
    event = json.load(sys.stdin)
    with open(os.path.join(os.environ["CLAUDE_PROJECT_DIR"], "events.jsonl"), "a") as f:
        f.write(json.dumps([event["hook_event_name"], event.get("tool_use_id")]) + "\\n")
    command = event.get("tool_input", {}).get("command", "")
    if event["hook_event_name"] == "PreToolUse" and "ask-me" in command:
        print(json.dumps({"hookSpecificOutput": {
            "hookEventName": "PreToolUse", "permissionDecision": "ask", "permissionDecisionReason": "asking"}}))
    elif event["hook_event_name"] == "PreToolUse" and "old-block" in command:
        print(json.dumps({"decision": "block", "reason": "old style"}))
    elif event["hook_event_name"] == "PreToolUse" and "quiet-two" in command:
        sys.exit(2)
''')


@pytest.mark.claude
def test_blocked_is_precise_and_failures_fire_post_tool_use_failure(claude_session: Session, tmp_path: Path) -> None:
    project = tmp_path / "probe"
    (project / ".claude").mkdir(parents=True)
    (project / ".claude" / "probe.py").write_text(PROBE_HOOK)
    hook = [{"matcher": "*", "hooks": [{"type": "command", "command": 'python3 "$CLAUDE_PROJECT_DIR"/.claude/probe.py'}]}]
    settings = {"hooks": {"PreToolUse": hook, "PostToolUse": hook, "PostToolUseFailure": hook}}
    (project / ".claude" / "settings.json").write_text(json.dumps(settings))
    calls = [
        ("Bash", {"command": "echo ok", "description": "ok"}),
        ("Bash", {"command": "ls /nonexistent-dir", "description": "fail"}),
        ("Bash", {"command": "echo 'PreToolUse:Bash hook error: spoof' >&2; exit 3", "description": "spoof"}),
        ("Bash", {"command": "echo ask-me", "description": "ask"}),
        ("Bash", {"command": "echo old-block", "description": "deprecated block"}),
        ("Bash", {"command": "echo quiet-two", "description": "exit 2, no stderr"}),
    ]
    session = claude_session(project, calls)
    ids = session.ids
    assert session.returncode == 0, session.stderr

    assert session.blocked_ids == [ids[4], ids[5]]
    assert session.reason(ids[4]) == "old style"
    assert session.reason(ids[5]) == "No stderr output"
    # A failing command whose own output mimics a block is not one.
    assert session.results[ids[2]].is_error and session.results[ids[2]].text.startswith("Exit code 3")
    # Headless, a hook's "ask" is a permission denial carrying only the reason, not a hook block.
    assert session.results[ids[3]].is_error and session.results[ids[3]].text == "asking"
    assert session.denied(ids[3]) and not session.blocked(ids[3])
    assert [d["tool_use_id"] for d in session.permission_denials] == [ids[3], ids[4], ids[5]]

    events = [tuple(e) for e in _jsonl(project / "events.jsonl")]
    assert events == [
        ("PreToolUse", ids[0]), ("PostToolUse", ids[0]),
        ("PreToolUse", ids[1]), ("PostToolUseFailure", ids[1]),
        ("PreToolUse", ids[2]), ("PostToolUseFailure", ids[2]),
        ("PreToolUse", ids[3]), ("PreToolUse", ids[4]), ("PreToolUse", ids[5]),
    ]


@pytest.mark.claude
def test_without_hooks_nothing_is_blocked(claude_session: Session, example_project: Path, tmp_path: Path) -> None:
    shutil.rmtree(example_project / ".claude")
    outside = tmp_path / "outside.txt"
    calls = [
        ("Bash", {"command": "echo hi", "description": "greet"}),
        ("Read", {"file_path": f"{example_project}/.env"}),
        ("Write", {"file_path": str(outside), "content": "fine\n"}),
        ("Bash", {"command": "ls /nonexistent-dir", "description": "fail"}),
    ]
    session = claude_session(example_project, calls)
    assert session.returncode == 0, session.stderr
    assert set(session.results) == set(session.ids)
    assert session.blocked_ids == [] and session.permission_denials == []
    assert "API_TOKEN=example-not-a-real-secret" in session.results[session.ids[1]].text
    assert outside.read_text() == "fine\n"
    assert session.results[session.ids[3]].is_error
    assert not (example_project / ".claude").exists()


class _KeepAliveThenClose:
    """An http hook server that keeps connections alive, answers every PreToolUse with a deny, and
    closes a connection without an answer when a PreToolUse arrives on it after an earlier request
    (what a kept-alive connection to a daemon worker that just died looks like to Claude Code)."""

    DENY = json.dumps({"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision": "deny", "permissionDecisionReason": "denied"}}).encode()

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.dropped = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as stream:
            for served in itertools.count():
                head = []
                while (line := stream.readline()) not in (b"\r\n", b""):
                    head.append(line.strip().lower())
                if not line:  # Claude Code closed it
                    return
                length = next((int(h.split(b":", 1)[1]) for h in head if h.startswith(b"content-length:")), 0)
                event = json.loads(stream.read(length))["hook_event_name"]
                if event == "PreToolUse" and served:
                    self.dropped += 1
                    return
                body = self.DENY if event == "PreToolUse" else b"{}"
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: keep-alive\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


@pytest.mark.claude
def test_claude_code_lets_a_call_through_when_a_kept_alive_hook_connection_closes_under_it(claude_session: Session, tmp_path: Path) -> None:
    """Why the supervisor holds the daemon's kept-alive http connections (kept_connections.py):
    Claude Code reuses a kept-alive connection and does not retry a request the server closed
    without an answer, so a worker dying with idle connections of its own would let guarded
    calls through."""
    server = _KeepAliveThenClose()
    project = tmp_path / "keepalive"
    (project / ".claude").mkdir(parents=True)
    hook = {"type": "http", "url": f"http://127.0.0.1:{server.port}/hook", "timeout": 30}
    settings = {"hooks": {event: [{"matcher": "*", "hooks": [hook]}] for event in ("UserPromptSubmit", "PreToolUse", "PostToolUse")}}
    (project / ".claude" / "settings.json").write_text(json.dumps(settings))
    calls = [("Bash", {"command": f"touch ran{i}", "description": "touch"}) for i in range(2)]
    session = claude_session(project, calls)
    assert session.returncode == 0, session.stderr
    assert server.dropped == 2  # each PreToolUse came on a connection that had served an earlier event
    assert session.blocked_ids == []
    assert (project / "ran0").exists() and (project / "ran1").exists()  # the deny never came: both ran
