"""One output that Claude Code renders exactly as it renders several hooks' outputs.

A consolidated install runs a stack's hooks behind one client, so Claude Code sees
one hook where it used to see several. What the model receives must not change.
Claude Code (2.1.329, checked by tests/conformance against the real CLI) renders
each hook's output into parts and joins them:

- PreToolUse: one blocking hook's message becomes the tool_result
  ``PreToolUse:<Tool> hook error: <message>`` (with several blockers it shows one
  of them, depending on which finished when); an exit-2 message reads ``[<command>]: <stderr>``
  (``No stderr output`` when empty), a JSON deny reads its reason. Every
  additionalContext goes into one ``PreToolUse:<Tool> hook additional context: ``
  message, joined with newlines.
- PostToolUse and PostToolUseFailure: each blocking hook adds a part
  ``<Event>:<Tool> hook blocking error from command: "<command>": <message>`` and
  each additionalContext a part ``<Event>:<Tool> hook additional context: <text>``;
  parts are joined with a blank line, in the order the hooks finished.

So the combined output carries the first part in the field Claude Code renders and
the other parts, prefixes included, after it: the model reads the same text,
except that Claude Code names our client where it names the first hook's command.
Several hooks finish in any order natively; here they are listed in settings order,
one of the orders Claude Code itself produces.

Only these events are consolidated (see ``CONSOLIDATED_EVENTS``); every other
event's hooks are left to Claude Code.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

from .protocol import BLOCK_EXIT, DECISION_ORDER, HookResult, Outcome, interpret

__all__ = ["CONSOLIDATED_EVENTS", "combine_stack"]

CONSOLIDATED_EVENTS: Final = frozenset({"PreToolUse", "PostToolUse", "PostToolUseFailure"})
_PART_SEPARATOR: Final = "\n\n"


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _block_message(result: HookResult, outcome: Outcome, command: str) -> str:
    """What Claude Code shows for one blocking hook."""
    if result.exit_code == BLOCK_EXIT:
        stderr = _text(result.stderr)  # as written: Claude Code keeps a trailing newline
        return f"[{command}]: {stderr if stderr.strip() else 'No stderr output'}"
    return outcome.reason


def _common(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """The top-level fields every event merges the same way."""
    out: dict[str, Any] = {}
    if any(o.stop for o in outcomes):
        out["continue"] = False
        if reason := "\n".join(o.stop_reason for o in outcomes if o.stop and o.stop_reason):
            out["stopReason"] = reason
    if message := "\n".join(o.system_message for o in outcomes if o.system_message):
        out["systemMessage"] = message
    if any(o.suppress_output for o in outcomes):
        out["suppressOutput"] = True
    return out


def _pre_tool_use(pairs: Sequence[tuple[HookResult, Outcome, str]]) -> dict[str, Any]:
    outcomes = [o for _, o, _ in pairs]
    out = _common(outcomes)
    specific: dict[str, Any] = {}
    for o in outcomes:
        for key, value in o.extra.items():
            specific.setdefault(key, value)
    blockers = [(r, o, c) for r, o, c in pairs if o.blocks]
    if blockers:
        result, outcome, command = blockers[0]
        specific["permissionDecision"] = "deny"
        if message := _block_message(result, outcome, command):
            specific["permissionDecisionReason"] = message
    else:
        decided = [o for o in outcomes if o.decision]
        if decided:
            decision = min((o.decision for o in decided if o.decision), key=DECISION_ORDER.index)
            specific["permissionDecision"] = decision
            if reason := "\n".join(o.reason for o in decided if o.decision == decision and o.reason):
                specific["permissionDecisionReason"] = reason
        updated = [o.updated_input for o in outcomes if o.updated_input is not None]
        if updated:
            specific["updatedInput"] = updated[0]
    if context := "\n".join(o.additional_context for o in outcomes if o.additional_context):
        specific["additionalContext"] = context
    if specific:
        out["hookSpecificOutput"] = {"hookEventName": "PreToolUse", **specific}
    return out


def _post_tool_use(event_name: str, subject: str, pairs: Sequence[tuple[HookResult, Outcome, str]]) -> dict[str, Any]:
    outcomes = [o for _, o, _ in pairs]
    out = _common(outcomes)
    head = f"{event_name}:{subject}" if subject else event_name
    blocks = [(c, _block_message(r, o, c)) for r, o, c in pairs if o.blocks]
    contexts = [o.additional_context for o in outcomes if o.additional_context]
    later = [f'{head} hook blocking error from command: "{c}": {m}' for c, m in blocks[1:]]
    if blocks:
        later += [f"{head} hook additional context: {text}" for text in contexts]
        out["decision"] = "block"
        out["reason"] = _PART_SEPARATOR.join([blocks[0][1], *later])
    elif contexts:
        later = [f"{head} hook additional context: {text}" for text in contexts[1:]]
        out["hookSpecificOutput"] = {"hookEventName": event_name, "additionalContext": _PART_SEPARATOR.join([contexts[0], *later])}
    return out


def combine_stack(event_name: str, subject: str, results: Sequence[HookResult], commands: Sequence[str]) -> HookResult:
    """Combine the results of a consolidated event's hooks (in settings order, with their commands)."""
    if event_name not in CONSOLIDATED_EVENTS:
        raise ValueError(f"{event_name} hooks are not consolidated; Claude Code runs them itself")
    if len(results) != len(commands):
        raise ValueError(f"{len(results)} results for {len(commands)} commands")
    # A timed-out hook decides nothing; a silent success adds nothing.
    pairs = [
        (r, interpret(event_name, r), c)
        for r, c in zip(results, commands, strict=True)
        if not r.timed_out and (r.exit_code != 0 or r.stdout or r.stderr)
    ]
    if event_name == "PreToolUse":
        out = _pre_tool_use(pairs)
    else:
        out = _post_tool_use(event_name, subject, pairs)
    # Non-blocking errors' stderr is shown to the user only (verbose mode), never to the model.
    errors = "\n".join(o.error for _, o, _ in pairs if o.error).encode()
    if not out:
        return HookResult(0, b"", errors)
    return HookResult(0, json.dumps(out, ensure_ascii=False).encode(), errors)
