"""Drive the real Claude Code CLI headless against a scripted local stand-in for the Messages API."""
from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

CLAUDE_VERSION = "2.1.329"
CLAUDE_PACKAGE = f"@anthropic-ai/claude-code@{CLAUDE_VERSION}"
CACHE_DIR = Path.home() / ".cache" / "hookopt-tests" / f"claude-code-{CLAUDE_VERSION}"
DEFAULT_PROMPT = "hookopt harness: run the scripted tool calls"
ALLOWED_TOOLS = "Bash,Read,Write,Edit"

ToolCall = tuple[str, dict[str, Any]]


class ClaudeInstallError(RuntimeError):
    """The Claude Code CLI could not be found or installed."""


def find_or_install_claude(cache_dir: Path = CACHE_DIR) -> Path:
    """Return the claude binary: $HOOKOPT_CLAUDE_BIN, else the cache, else a fresh npm install."""
    override = os.environ.get("HOOKOPT_CLAUDE_BIN")
    if override:
        path = Path(override)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ClaudeInstallError(f"HOOKOPT_CLAUDE_BIN={override} is not an executable file")
        return path
    binary = cache_dir / "node_modules" / ".bin" / "claude"
    if _runs(binary):
        return binary
    npm = shutil.which("npm")
    if npm is None:
        raise ClaudeInstallError(
            f"npm is not on PATH: install Node.js/npm (or set HOOKOPT_CLAUDE_BIN) to get {CLAUDE_PACKAGE}"
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Parallel test workers must not run two npm installs into one prefix.
    with open(cache_dir / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _runs(binary):
            return binary
        _npm_install(npm, cache_dir, binary)
    return binary


def _npm_install(npm: str, cache_dir: Path, binary: Path) -> None:
    """Install the pinned CLI into cache_dir, or raise with npm's output."""
    cmd = [npm, "install", "--no-audit", "--no-fund", "--prefix", str(cache_dir), CLAUDE_PACKAGE]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ClaudeInstallError(f"{' '.join(cmd)} timed out after {exc.timeout} s") from exc
    if proc.returncode != 0 or not _runs(binary):
        raise ClaudeInstallError(
            f"{' '.join(cmd)} failed (exit {proc.returncode}); {binary} is not usable\n"
            f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
        )


def _runs(binary: Path) -> bool:
    """True when `binary --version` reports the pinned version."""
    if not binary.exists():
        return False
    try:
        proc = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0 and CLAUDE_VERSION in proc.stdout


# --------------------------------------------------------------------------- stand-in Messages API


@dataclass
class RecordedRequest:
    """One HTTP request the CLI made to the stand-in."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    main: bool = False
    step: int | None = None


class FakeMessagesAPI:
    """A scripted Messages API on 127.0.0.1: the i-th main-loop turn answers with the i-th tool call."""

    def __init__(
        self,
        calls: Sequence[ToolCall],
        *,
        prompt: str = DEFAULT_PROMPT,
        final_text: str = "done",
        on_step: Callable[[int], None] | None = None,
    ) -> None:
        self.calls = [(name, dict(args)) for name, args in calls]
        self.on_step = on_step  # called before the answer to each main-loop step (e.g. to kill a daemon)
        self.prompt = prompt
        self.final_text = final_text
        self.nonce = secrets.token_hex(4)
        self.requests: list[RecordedRequest] = []
        self.lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        # A short poll interval so shutdown() returns promptly (the default costs 0.5 s per session).
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-messages-api", daemon=True
        )

    @property
    def ids(self) -> list[str]:
        """The tool_use id of each scripted call, in order."""
        return [self.tool_use_id(i) for i in range(len(self.calls))]

    def tool_use_id(self, step: int) -> str:
        """The tool_use id the stand-in gives the call at this step (unique per session)."""
        return f"toolu_{self.nonce}_{step:02d}"

    @property
    def base_url(self) -> str:
        """The URL to put in ANTHROPIC_BASE_URL."""
        return f"http://127.0.0.1:{self._server.server_port}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    # -- request classification and replies

    def is_main_loop(self, body: Any) -> bool:
        """A main-conversation turn: offers tools, starts with our prompt and ends with a user turn."""
        if not isinstance(body, dict) or not body.get("tools"):
            return False
        # The CLI interleaves role "system" turns (reminders); only the user/assistant turns matter here.
        turns = [m for m in body.get("messages") or [] if m.get("role") in ("user", "assistant")]
        if not turns or turns[-1].get("role") != "user":
            return False
        return self.prompt in _text_of(turns[0].get("content"))

    def step_of(self, body: dict[str, Any]) -> int:
        """Which scripted step a main-loop request asks for: the number of assistant turns so far.

        Derived from the conversation rather than a counter, so a retried request gets the same answer.
        """
        return sum(1 for m in body.get("messages", []) if m.get("role") == "assistant")

    def reply_for(self, body: Any) -> tuple[list[dict[str, Any]], str, bool, int | None]:
        """The content blocks, stop reason, main-loop flag and step to answer a /v1/messages body with."""
        if self.is_main_loop(body):
            step = self.step_of(body)
            if step < len(self.calls):
                name, args = self.calls[step]
                block = {"type": "tool_use", "id": self.tool_use_id(step), "name": name, "input": args}
                return [block], "tool_use", True, step
            return [{"type": "text", "text": self.final_text}], "end_turn", True, step
        # Side requests (titles, summaries, quota probes...) get a short text so they never consume the script.
        return [{"type": "text", "text": "ok"}], "end_turn", False, None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                # One send per response plus no Nagle, or delayed ACK adds ~40 ms per request.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _body(self) -> Any:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    return json.loads(raw) if raw else None
                except ValueError:
                    return raw.decode("utf-8", "replace")

            def _send(self, status: int, payload: bytes, content_type: str) -> None:
                head = (
                    f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}\r\n"
                    f"Content-Type: {content_type}\r\n"
                    f"Content-Length: {len(payload)}\r\n"
                    "request-id: req_hookopt_harness\r\n"
                    "\r\n"
                ).encode()
                self.wfile.write(head + payload)
                self.wfile.flush()

            def _record(self, body: Any, main: bool = False, step: int | None = None) -> None:
                rec = RecordedRequest(self.command, self.path, dict(self.headers.items()), body, main, step)
                with api.lock:
                    api.requests.append(rec)

            def do_GET(self) -> None:
                self._record(None)
                self._send(200, b"{}", "application/json")

            def do_HEAD(self) -> None:
                self._record(None)
                self._send(200, b"", "application/json")

            def do_POST(self) -> None:
                body = self._body()
                path = self.path.split("?", 1)[0]
                if path.endswith("/v1/messages/count_tokens"):
                    self._record(body)
                    tokens = max(1, len(json.dumps(body)) // 4)
                    self._send(200, json.dumps({"input_tokens": tokens}).encode(), "application/json")
                    return
                if not path.endswith("/v1/messages"):
                    self._record(body)
                    self._send(200, b"{}", "application/json")
                    return
                content, stop, main, step = api.reply_for(body)
                if main and step is not None and api.on_step is not None:
                    api.on_step(step)
                self._record(body, main, step)
                model = body.get("model", "claude-test") if isinstance(body, dict) else "claude-test"
                stream = isinstance(body, dict) and bool(body.get("stream"))
                if stream:
                    self._send(200, _sse(model, content, stop), "text/event-stream")
                else:
                    self._send(200, json.dumps(_message(model, content, stop)).encode(), "application/json")

        return Handler


def _message(model: str, content: list[dict[str, Any]], stop: str | None) -> dict[str, Any]:
    """A complete Messages API response object."""
    return {
        "id": f"msg_{secrets.token_hex(8)}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
    }


def _sse(model: str, content: list[dict[str, Any]], stop: str) -> bytes:
    """The same response as a server-sent event stream."""
    events: list[tuple[str, dict[str, Any]]] = []
    start = _message(model, [], None)
    start["usage"]["output_tokens"] = 1
    events.append(("message_start", {"type": "message_start", "message": start}))
    for index, block in enumerate(content):
        if block["type"] == "tool_use":
            opening = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        else:
            opening = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": block["text"]}
        events.append(("content_block_start", {"type": "content_block_start", "index": index, "content_block": opening}))
        events.append(("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append((
        "message_delta",
        {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None}, "usage": {"output_tokens": 5}},
    ))
    events.append(("message_stop", {"type": "message_stop"}))
    return "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events).encode()


def _text_of(content: Any) -> str:
    """All text in a message content (a string or a list of blocks), tool_result text included."""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content or []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            parts.append(block.get("text", ""))
        elif block.get("type") == "tool_result":
            parts.append(_text_of(block.get("content")))
    return "\n".join(parts)


# --------------------------------------------------------------------------- sessions


@dataclass(frozen=True)
class ToolResult:
    """The tool_result Claude Code sent back for one tool_use."""

    is_error: bool
    text: str


@dataclass
class SessionResult:
    """Everything one headless CLI session produced."""

    returncode: int
    final: dict[str, Any] | None
    results: dict[str, ToolResult]
    ids: list[str]
    calls: list[ToolCall]
    requests: list[RecordedRequest]
    stdout: str
    stderr: str
    elapsed_s: float
    project_dir: Path
    home: Path | None = field(default=None, repr=False)

    @property
    def main_requests(self) -> list[RecordedRequest]:
        """The main-loop /v1/messages requests, in arrival order."""
        return [r for r in self.requests if r.main]

    @property
    def side_requests(self) -> list[RecordedRequest]:
        """Every other request the CLI made."""
        return [r for r in self.requests if not r.main]

    def tool_name(self, tool_use_id: str) -> str:
        """The tool the script called with this id."""
        return self.calls[self.ids.index(tool_use_id)][0]

    def blocked(self, tool_use_id: str) -> bool:
        """True when a PreToolUse hook stopped this call (exit 2, a JSON deny, or the old decision "block").

        Claude Code 2.1.329 reports all three as an is_error tool_result whose text starts with
        "PreToolUse:<Tool> hook error: "; a tool that ran and failed starts differently (e.g. "Exit code 2"),
        and a hook "ask" becomes a permission denial in headless mode (see denied()).
        """
        result = self.results.get(tool_use_id)
        if result is None:
            return False
        return result.is_error and result.text.startswith(_block_prefix(self.tool_name(tool_use_id)))

    def reason(self, tool_use_id: str) -> str:
        """The hook's reason for a block: the JSON reason, or an exit-2 hook's stderr."""
        if not self.blocked(tool_use_id):
            raise ValueError(f"{tool_use_id} was not blocked by a hook: {self.results.get(tool_use_id)}")
        text = self.results[tool_use_id].text[len(_block_prefix(self.tool_name(tool_use_id))):]
        # Exit-2 blocks name the hook command first: "[<command>]: <stderr>".
        if text.startswith("[") and "]: " in text:
            text = text.split("]: ", 1)[1]
        return text.rstrip("\n")

    @property
    def blocked_ids(self) -> list[str]:
        """The ids of the calls a hook blocked, in script order."""
        return [i for i in self.ids if self.blocked(i)]

    @property
    def permission_denials(self) -> list[dict[str, Any]]:
        """The final JSON's permission_denials (hook blocks and hook "ask"s both land here)."""
        return list((self.final or {}).get("permission_denials") or [])

    def denied(self, tool_use_id: str) -> bool:
        """True when the CLI reports this call among its permission denials."""
        return any(d.get("tool_use_id") == tool_use_id for d in self.permission_denials)

    def context_messages(self) -> list[str]:
        """Texts of the role "system" turns in the last main-loop request (where additionalContext lands)."""
        mains = self.main_requests
        if not mains:
            return []
        return [_text_of(m.get("content")) for m in mains[-1].body.get("messages", []) if m.get("role") == "system"]


def _block_prefix(tool: str) -> str:
    """How Claude Code 2.1.329 starts the tool_result of a call a PreToolUse hook blocked."""
    return f"PreToolUse:{tool} hook error: "


def _session_env(base_url: str, home: Path, overrides: Mapping[str, str] | None) -> dict[str, str]:
    """The CLI's environment: ours minus anything Claude-related, a private HOME, the stand-in API."""
    env = {
        k: v
        for k, v in os.environ.items()
        # A surrounding Claude Code session or user config must not leak into the one under test.
        if not k.startswith(("ANTHROPIC_", "CLAUDE", "AWS_", "GOOGLE_", "VERTEX", "XDG_")) and k != "HOME"
    }
    env.update(
        HOME=str(home),
        ANTHROPIC_BASE_URL=base_url,
        ANTHROPIC_API_KEY="test-key",
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        DISABLE_TELEMETRY="1",
        DISABLE_AUTOUPDATER="1",
        DISABLE_ERROR_REPORTING="1",
        PATH=_python_first_path(home, env.get("PATH", os.defpath)),
    )
    env.update(overrides or {})
    return env


def _python_first_path(home: Path, path: str) -> str:
    """PATH with this interpreter as `python3`, so hooks run with the test's Python and its packages."""
    here = Path(sys.executable)
    sibling = here.with_name("python3")
    if sibling.exists() and sibling.resolve() == here.resolve():
        return f"{here.parent}{os.pathsep}{path}"
    # A symlink would lose a venv's site-packages, so use a one-line exec wrapper instead.
    bindir = home / ".hookopt-bin"
    bindir.mkdir(exist_ok=True)
    wrapper = bindir / "python3"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    return f"{bindir}{os.pathsep}{path}"


def run_session(
    claude_bin: str | os.PathLike[str],
    project_dir: str | os.PathLike[str],
    calls: Iterable[ToolCall],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 180,
    home: str | os.PathLike[str] | None = None,
    trust_project: bool = True,
    prompt: str = DEFAULT_PROMPT,
    extra_args: Sequence[str] = (),
    on_step: Callable[[int], None] | None = None,
) -> SessionResult:
    """Run `claude -p` in project_dir with the stand-in API scripted to make these tool calls.

    home is the CLI's private HOME (a temporary directory, removed afterwards, when None).
    """
    project = Path(project_dir).resolve()
    script = list(calls)
    with tempfile.TemporaryDirectory(prefix="hookopt-claude-home-") as tmp, FakeMessagesAPI(script, prompt=prompt, on_step=on_step) as api:
        home_dir = Path(home) if home is not None else Path(tmp)
        home_dir.mkdir(parents=True, exist_ok=True)
        if trust_project:
            _trust(home_dir, project)
        cmd = [str(claude_bin), "-p", prompt, "--output-format", "json", "--allowedTools", ALLOWED_TOOLS, *extra_args]
        started = time.monotonic()
        try:
            proc = subprocess.run(
                cmd, cwd=project, env=_session_env(api.base_url, home_dir, env),
                capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(
                f"claude did not finish within {timeout} s\nstdout:\n{_s(exc.stdout)}\nstderr:\n{_s(exc.stderr)}\n"
                f"requests: {[(r.path, r.main, r.step) for r in api.requests]}"
            ) from exc
        elapsed = time.monotonic() - started
        with api.lock:
            requests = list(api.requests)
    try:
        final = json.loads(proc.stdout)
    except ValueError:
        final = None
    return SessionResult(
        returncode=proc.returncode, final=final, results=collect_results(requests), ids=api.ids,
        calls=script, requests=requests, stdout=proc.stdout, stderr=proc.stderr,
        elapsed_s=elapsed, project_dir=project, home=Path(home) if home is not None else None,
    )


def _trust(home: Path, project: Path) -> None:
    """Mark the project as trusted in HOME/.claude.json, as it is for a user who opened it once interactively.

    Without this the CLI still runs hooks but ignores the project's permissions.allow (and says so on stderr).
    """
    config_path = home / ".claude.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    config.setdefault("projects", {}).setdefault(str(project), {})["hasTrustDialogAccepted"] = True
    config_path.write_text(json.dumps(config, indent=2))


def _s(data: str | bytes | None) -> str:
    """Decode a captured stream that may be bytes or missing."""
    if data is None:
        return ""
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else data


def collect_results(requests: Iterable[RecordedRequest]) -> dict[str, ToolResult]:
    """Every tool_result block found in the recorded /v1/messages bodies, by tool_use id."""
    results: dict[str, ToolResult] = {}
    for rec in requests:
        if not isinstance(rec.body, dict):
            continue
        for message in rec.body.get("messages") or []:
            content = message.get("content")
            if message.get("role") != "user" or not isinstance(content, list):
                continue
            for block in content:
                if isinstance(block, dict) and block.get("type") == "tool_result":
                    results[block["tool_use_id"]] = ToolResult(
                        is_error=bool(block.get("is_error")), text=_text_of(block.get("content"))
                    )
    return results
