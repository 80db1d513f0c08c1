"""The Claude Code hook protocol: parse events, read hook outputs, combine them.

Everything here follows what Claude Code 2.1.329 does (see DESIGN.md, "Claude Code
hook protocol"). This module imports only the standard library so the thin clients
and the in-process fallback can use it without paying for anything else.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "BLOCK_EXIT",
    "DECISION_ORDER",
    "EVENTS",
    "MAX_EVENT_BYTES",
    "HookResult",
    "Outcome",
    "ProtocolError",
    "combine",
    "interpret",
    "matcher_matches",
    "matcher_subject",
    "parse_event",
    "pre_tool_use_result",
    "context_result",
    "block_result",
    "http_reply",
]

BLOCK_EXIT: Final = 2
# Default bound on one event; PostToolUse carries whole tool responses, so it is generous.
MAX_EVENT_BYTES: Final = 16 * 1024 * 1024

EVENTS: Final = frozenset(
    {
        "PreToolUse",
        "PostToolUse",
        "PostToolUseFailure",
        "PermissionRequest",
        "UserPromptSubmit",
        "Notification",
        "Stop",
        "SubagentStart",
        "SubagentStop",
        "PreCompact",
        "SessionStart",
        "SessionEnd",
    }
)
TOOL_EVENTS: Final = frozenset({"PreToolUse", "PostToolUse", "PostToolUseFailure", "PermissionRequest"})
# Events whose plain stdout (exit 0, not JSON) becomes context for Claude.
PLAIN_CONTEXT_EVENTS: Final = frozenset({"UserPromptSubmit", "SessionStart"})
# Events where a top-level {"decision": "block", "reason": ...} is the JSON form of exit 2.
JSON_BLOCK_EVENTS: Final = frozenset({"PostToolUse", "UserPromptSubmit", "Stop", "SubagentStop"})
# The field each event's matcher is compared with; events not listed ignore matchers.
_MATCHER_FIELD: Final = {
    "PreToolUse": "tool_name",
    "PostToolUse": "tool_name",
    "PostToolUseFailure": "tool_name",
    "PermissionRequest": "tool_name",
    "SessionStart": "source",
    "SessionEnd": "reason",
    "Notification": "notification_type",
    "PreCompact": "trigger",
    "SubagentStart": "agent_type",
    "SubagentStop": "agent_type",
}
# deny > defer > ask > allow: the most restrictive decision wins.
DECISION_ORDER: Final = ("deny", "defer", "ask", "allow")
_PLAIN_MATCHER: Final = re.compile(r"[A-Za-z0-9_ ,|-]*")


class ProtocolError(ValueError):
    """An event or frame that does not follow the hook protocol."""


def parse_event(raw: bytes, *, max_bytes: int = MAX_EVENT_BYTES) -> dict[str, Any]:
    """Parse one hook event from stdin bytes, or raise ProtocolError saying why not."""
    if len(raw) > max_bytes:
        raise ProtocolError(f"event is {len(raw)} bytes, over the limit of {max_bytes} bytes")
    if not raw.strip():
        raise ProtocolError("empty input: expected one JSON event on stdin")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"event is not valid UTF-8 (bad byte at offset {exc.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise ProtocolError("malformed JSON: nested too deeply") from None
    except ValueError as exc:
        # An integer of more than 4300 digits (sys.get_int_max_str_digits): before this, it
        # escaped as a traceback, a non-blocking exit that let a PreToolUse call through.
        raise ProtocolError(f"unreadable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError(f"event must be a JSON object, not {type(data).__name__}")
    name = data.get("hook_event_name")
    if not isinstance(name, str) or not name:
        raise ProtocolError("event has no hook_event_name")
    if name not in EVENTS:
        raise ProtocolError(f"unknown hook_event_name {name!r}")
    if name in TOOL_EVENTS:
        if not isinstance(data.get("tool_name"), str) or not data["tool_name"]:
            raise ProtocolError(f"{name} event has no tool_name")
        if not isinstance(data.get("tool_input", {}), dict):
            raise ProtocolError(f"{name} event has a tool_input that is not an object")
    return data


@dataclass(frozen=True, slots=True)
class HookResult:
    """What one hook process produced. exit_code None means it timed out."""

    exit_code: int | None
    stdout: bytes = b""
    stderr: bytes = b""

    @property
    def timed_out(self) -> bool:
        return self.exit_code is None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What Claude Code reads from one HookResult."""

    blocks: bool = False  # exit 2, a JSON deny, or a JSON decision "block"
    decision: str | None = None  # PreToolUse permission decision
    reason: str = ""
    additional_context: str = ""
    stop: bool = False  # "continue": false
    stop_reason: str = ""
    system_message: str = ""
    suppress_output: bool = False
    updated_input: dict[str, Any] | None = None
    error: str = ""  # a non-blocking error's stderr
    timed_out: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # hookSpecificOutput keys we do not merge


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _json_object(stdout: bytes) -> dict[str, Any] | None:
    text = _text(stdout).strip()
    if not text.startswith("{"):
        return None
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def interpret(event_name: str, result: HookResult) -> Outcome:
    """Read one hook's result the way Claude Code does for event_name."""
    if result.exit_code is None:
        return Outcome(timed_out=True)
    if result.exit_code == BLOCK_EXIT:
        return Outcome(blocks=True, decision="deny" if event_name == "PreToolUse" else None, reason=_text(result.stderr).strip())
    data = _json_object(result.stdout)
    # JSON on stdout is honoured whatever the exit code but 2: Claude Code 2.1.329 denies a
    # call whose hook printed a JSON deny and then exited 1 (tests/conformance).
    error = _text(result.stderr).strip() or f"exit code {result.exit_code}" if result.exit_code != 0 else ""
    if data is None:
        if error:
            return Outcome(error=error)
        plain = _text(result.stdout).strip()
        return Outcome(additional_context=plain if event_name in PLAIN_CONTEXT_EVENTS else "")
    specific = data.get("hookSpecificOutput")
    specific = specific if isinstance(specific, dict) else {}
    decision: str | None = None
    reason = str(data.get("reason") or "")
    blocks = False
    if event_name == "PreToolUse":
        decision = specific.get("permissionDecision")
        if decision not in DECISION_ORDER:
            # The deprecated top-level form: "block" means deny, "approve" means allow.
            decision = {"block": "deny", "approve": "allow"}.get(str(data.get("decision")))
        reason = str(specific.get("permissionDecisionReason") or reason)
        blocks = decision == "deny"
    elif data.get("decision") == "block":
        blocks = True
    updated = specific.get("updatedInput")
    extra = {
        k: v
        for k, v in specific.items()
        if k not in {"hookEventName", "permissionDecision", "permissionDecisionReason", "updatedInput", "additionalContext"}
    }
    return Outcome(
        blocks=blocks,
        decision=decision,
        reason=reason,
        additional_context=str(specific.get("additionalContext") or ""),
        stop=data.get("continue") is False,
        stop_reason=str(data.get("stopReason") or ""),
        system_message=str(data.get("systemMessage") or ""),
        suppress_output=data.get("suppressOutput") is True,
        updated_input=updated if isinstance(updated, dict) else None,
        error=error,
        extra=extra,
    )


def _join(parts: Iterable[str]) -> str:
    return "\n".join(p for p in parts if p)


def combine(event_name: str, results: list[HookResult]) -> HookResult:
    """Merge the results of all hooks that ran for one event into the one result
    that makes Claude Code do what it would have done running them separately.

    One result passes through untouched, byte for byte. Several are merged:
    any blocking hook blocks (exit 2 or JSON), PreToolUse decisions combine as
    deny > defer > ask > allow, every additionalContext and systemMessage is
    kept, and ``continue: false`` wins. Timed-out hooks decide nothing.
    """
    live = [r for r in results if not r.timed_out]
    if not live:
        return HookResult(0)
    if len(results) == 1:
        return results[0]
    # A silent success (exit 0, no output) reads as an empty Outcome, which adds nothing
    # below: dropping it saves interpreting it, the common case for validators that pass.
    live = [r for r in live if r.exit_code != 0 or r.stdout or r.stderr]
    outcomes = [interpret(event_name, r) for r in live]
    blocking = [o for o in outcomes if o.blocks]
    errors = _join(o.error for o in outcomes)
    if blocking and event_name != "PreToolUse" and event_name not in JSON_BLOCK_EVENTS:
        # No JSON form of exit 2 here (e.g. SessionStart): keep the exit code.
        return HookResult(BLOCK_EXIT, b"", _join(o.reason for o in blocking).encode())

    out: dict[str, Any] = {}
    specific: dict[str, Any] = {}
    if any(o.stop for o in outcomes):
        out["continue"] = False
        if reason := _join(o.stop_reason for o in outcomes if o.stop):
            out["stopReason"] = reason
    if message := _join(o.system_message for o in outcomes):
        out["systemMessage"] = message
    if any(o.suppress_output for o in outcomes):
        out["suppressOutput"] = True
    for o in outcomes:
        for key, value in o.extra.items():
            specific.setdefault(key, value)
    if event_name == "PreToolUse":
        decided = [o.decision for o in outcomes if o.decision]
        if decided:
            decision = min(decided, key=DECISION_ORDER.index)
            specific["permissionDecision"] = decision
            if reason := _join(o.reason for o in outcomes if o.decision == decision):
                specific["permissionDecisionReason"] = reason
            if decision != "deny":
                updated = [o.updated_input for o in outcomes if o.updated_input is not None and o.decision == decision]
                if updated:
                    specific["updatedInput"] = updated[0]
    elif blocking:
        out["decision"] = "block"
        out["reason"] = _join(o.reason for o in blocking) or "blocked by hook"
    if context := "\n\n".join(o.additional_context for o in outcomes if o.additional_context):
        specific["additionalContext"] = context
    if specific:
        out["hookSpecificOutput"] = {"hookEventName": event_name, **specific}
    if not out:
        if errors:
            first_error = next(r.exit_code for r, o in zip(live, outcomes, strict=True) if o.error)
            return HookResult(first_error, b"", errors.encode())
        return HookResult(0)
    return HookResult(0, json.dumps(out, ensure_ascii=False).encode(), errors.encode())


@functools.lru_cache(maxsize=256)
def _compile(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except re.error:
        return None


def matcher_matches(matcher: str | None, subject: str | None) -> bool:
    """Apply Claude Code's matcher rules to the event's subject (tool name, source...)."""
    if matcher is None or matcher.strip() in ("", "*") or subject is None:
        return True
    if _PLAIN_MATCHER.fullmatch(matcher):
        names = {part.strip() for part in re.split(r"[|,]", matcher)}
        return subject in names - {""}
    compiled = _compile(matcher)
    return compiled is not None and compiled.search(subject) is not None


def matcher_subject(event: Mapping[str, Any]) -> str | None:
    """The value an event's matchers are compared with, or None if it has no matchers."""
    key = _MATCHER_FIELD.get(str(event.get("hook_event_name")))
    value = event.get(key) if key else None
    return value if isinstance(value, str) else ("" if key else None)


def _json_result(payload: Mapping[str, Any]) -> HookResult:
    return HookResult(0, json.dumps(payload, ensure_ascii=False).encode())


def pre_tool_use_result(decision: str, reason: str = "", context: str = "") -> HookResult:
    """The JSON output of a PreToolUse permission decision."""
    if decision not in DECISION_ORDER:
        raise ValueError(f"unknown permission decision {decision!r}")
    specific: dict[str, Any] = {"hookEventName": "PreToolUse", "permissionDecision": decision}
    if reason:
        specific["permissionDecisionReason"] = reason
    if context:
        specific["additionalContext"] = context
    return _json_result({"hookSpecificOutput": specific})


def context_result(event_name: str, context: str) -> HookResult:
    """The JSON output that hands additionalContext to Claude."""
    if not context:
        return HookResult(0)
    return _json_result({"hookSpecificOutput": {"hookEventName": event_name, "additionalContext": context}})


def block_result(reason: str) -> HookResult:
    """The JSON block output of PostToolUse, UserPromptSubmit and Stop."""
    return _json_result({"decision": "block", "reason": reason})


def http_reply(event_name: str, result: HookResult) -> tuple[int, bytes]:
    """Translate a command hook's result into the HTTP answer with the same effect.

    An http hook blocks only through a 2xx JSON body; a non-2xx status is a
    non-blocking error, like an exit code other than 0 and 2.
    """
    if result.exit_code is None:
        return 500, b"hook timed out\n"
    if result.exit_code == BLOCK_EXIT:
        reason = _text(result.stderr).strip() or "blocked by hook"
        if event_name == "PreToolUse":
            return 200, pre_tool_use_result("deny", reason).stdout
        if event_name in JSON_BLOCK_EVENTS:
            return 200, block_result(reason).stdout
        return 500, result.stderr
    if _json_object(result.stdout) is not None:
        return 200, result.stdout.strip()  # honoured whatever the exit code, as for command hooks
    if result.exit_code != 0:
        return 500, result.stderr
    if event_name in PLAIN_CONTEXT_EVENTS and result.stdout.strip():
        return 200, context_result(event_name, _text(result.stdout).strip()).stdout
    return 200, b"{}"
