"""Conformance cases: hook stacks and the scripted tool calls that exercise them.

Each case is run by the real Claude Code CLI natively and under every install; the
transcript the model sees must be the same. Hooks are behave.py (Python: stubbed or
run warm) and behave.sh (a shell script: always spawned), told what to do per
scenario by the case's behaviours table (see behave.py).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

PY = 'python3 "$CLAUDE_PROJECT_DIR"/.claude/hooks/behave.py {}'
SH = 'sh "$CLAUDE_PROJECT_DIR"/.claude/hooks/behave.sh {}'


def py(name: str, **fields: Any) -> dict[str, Any]:
    return {"type": "command", "command": PY.format(name), **fields}


def sh(name: str, **fields: Any) -> dict[str, Any]:
    return {"type": "command", "command": SH.format(name), **fields}


def bash(tag: str, command: str = "echo ran") -> tuple[str, dict[str, Any]]:
    return ("Bash", {"command": f"{command} #S={tag}", "description": tag})


def pre(decision: str, reason: str = "", **extra: Any) -> str:
    specific = {"hookEventName": "PreToolUse", "permissionDecision": decision, **extra}
    if reason:
        specific["permissionDecisionReason"] = reason
    return json.dumps({"hookSpecificOutput": specific})


def ctx(event: str, text: str) -> str:
    return json.dumps({"hookSpecificOutput": {"hookEventName": event, "additionalContext": text}})


@dataclass(frozen=True)
class Case:
    name: str
    hooks: dict[str, Any]
    behaviours: dict[str, dict[str, dict[str, Any]]]
    calls: list[tuple[str, dict[str, Any]]]
    prompt: str = "conformance: run the scripted tool calls"
    files: dict[str, str] = field(default_factory=dict)
    # Texts that stand for one another (e.g. which of two blocking hooks Claude Code names).
    either: tuple[tuple[str, ...], ...] = ()
    # Files a session creates, removed before each session so every run starts alike.
    cleanup: tuple[str, ...] = ()
    # Texts the native transcript must hold: proof that the case's hooks really ran.
    expect: tuple[str, ...] = ()
    # How many main-loop requests the native session makes, when a hook ends it early.
    requests: int | None = None
    # Whether the session has the MCP server of mcp_server.py, as "srv" (tool mcp__srv__echo).
    mcp: bool = False


def _scenarios(event: str, table: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, dict[str, Any]]]:
    return {f"{event}:{tag}": hooks for tag, hooks in table.items()}


# PreToolUse: one Python hook A and one shell hook C on Bash; each scenario is one call.
PRE_SINGLE = {
    "ok": {},
    "exit1": {"A": {"exit": 1, "err": "A failed softly"}},
    "exit2": {"A": {"exit": 2, "err": "A blocks"}},
    "exit2-empty": {"A": {"exit": 2}},
    "exit127": {"C": {"exit": 127, "err": "sh: nope: not found"}},
    "exit3-json-deny": {"A": {"exit": 3, "out": pre("deny", "A denies on exit 3")}},
    "exit1-json-deny": {"A": {"exit": 1, "out": pre("deny", "A denies on exit 1")}},
    "exit1-json-allow": {"A": {"exit": 1, "out": pre("allow", "fine")}},
    "exit1-json-ctx": {"A": {"exit": 1, "out": ctx("PreToolUse", "ctx on exit 1")}},
    "exit2-json": {"A": {"exit": 2, "out": pre("allow", "says allow"), "err": "but exits 2"}},
    "exit2-badjson": {"A": {"exit": 2, "out": "{not json", "err": "bad json, exit 2"}},
    "badjson0": {"A": {"out": "{not json"}},
    "stderr0": {"A": {"err": "chatter on stderr"}},
    "plain0": {"A": {"out": "plain stdout on PreToolUse"}},
    "json-deny": {"C": {"out": pre("deny", "C denies")}},
    "old-block": {"A": {"out": json.dumps({"decision": "block", "reason": "old style block"})}},
    "old-approve": {"A": {"out": json.dumps({"decision": "approve", "reason": "old style approve"})}},
}
PRE_MULTI = {
    "two-exit2": {"A": {"exit": 2, "err": "A blocks"}, "C": {"exit": 2, "err": "C blocks"}},
    "deny-and-exit2": {"A": {"out": pre("deny", "A denies")}, "C": {"exit": 2, "err": "C blocks too\n"}},
    "exit1deny-and-ok": {"A": {"exit": 1, "out": pre("deny", "A denies on exit 1")}, "C": {}},
    "two-deny": {"A": {"out": pre("deny", "A denies")}, "C": {"out": pre("deny", "C denies")}},
    "allow-deny": {"A": {"out": pre("allow", "A allows")}, "C": {"out": pre("deny", "C denies")}},
    "two-ctx": {"A": {"out": ctx("PreToolUse", "context from A")}, "C": {"out": ctx("PreToolUse", "context from C")}},
    "ctx-and-deny": {"A": {"out": ctx("PreToolUse", "context from A")}, "C": {"out": pre("deny", "C denies")}},
    "exit1-both": {"A": {"exit": 1, "err": "A soft"}, "C": {"exit": 3, "err": "C soft"}},
    "exit1-and-ctx": {"A": {"exit": 1, "err": "A soft"}, "C": {"out": ctx("PreToolUse", "context from C")}},
    "updated-one": {"A": {"out": pre("allow", "rewrite", updatedInput={"command": "echo rewritten #S=none"})}},
    "updated-two": {
        "A": {"out": pre("allow", "A rewrites", updatedInput={"command": "echo from A #S=none"})},
        "C": {"out": pre("allow", "C rewrites", updatedInput={"command": "echo from C #S=none"})},
    },
    "updated-no-decision": {"A": {"out": json.dumps({"hookSpecificOutput": {"hookEventName": "PreToolUse", "updatedInput": {"command": "echo quiet rewrite #S=none"}}})}},
    "sysmsg-two": {"A": {"out": json.dumps({"systemMessage": "note from A"})}, "C": {"out": json.dumps({"systemMessage": "note from C"})}},
    "suppress": {"A": {"out": json.dumps({"suppressOutput": True, "systemMessage": "quiet"})}},
}
# In headless mode "ask" and "defer" end the session after that call: one case each.
PRE_ASK = {"ask-allow": {"A": {"out": pre("ask", "A asks")}, "C": {"out": pre("allow", "C allows")}}}
PRE_DEFER = {"allow-defer": {"A": {"out": pre("allow", "A allows")}, "C": {"out": pre("defer", "C defers")}}}
PRE_STOP = {
    "continue-false": {"A": {"out": json.dumps({"continue": False, "stopReason": "A halts the session"})}, "C": {"out": ctx("PreToolUse", "context from C")}},
}

CASES = [
    Case(
        "pre-single",
        {"PreToolUse": [{"matcher": "Bash", "hooks": [py("A"), sh("C")]}]},
        _scenarios("PreToolUse", PRE_SINGLE),
        [bash(tag) for tag in PRE_SINGLE],
        expect=("A denies on exit 1", "A denies on exit 3", "[<hook>]: A blocks", "ctx on exit 1"),
    ),
    Case(
        "pre-multi",
        {"PreToolUse": [{"matcher": "Bash", "hooks": [py("A")]}, {"matcher": "Bash|Read", "hooks": [sh("C")]}]},
        _scenarios("PreToolUse", PRE_MULTI),
        [bash(tag) for tag in PRE_MULTI],
        either=(
            # (hook commands read "<hook>" by then)
            ("PreToolUse:Bash hook error: [<hook>]: A blocks", "PreToolUse:Bash hook error: [<hook>]: C blocks"),
            ("PreToolUse:Bash hook error: A denies", "PreToolUse:Bash hook error: [<hook>]: C blocks too\n", "PreToolUse:Bash hook error: C denies"),
            ("from A", "from C"),  # two hooks' updatedInput: Claude Code runs one of them
        ),
        expect=("context from A", "context from C", "rewritten", "quiet rewrite"),
    ),
    Case(
        "pre-continue-false",
        {"PreToolUse": [{"matcher": "Bash", "hooks": [py("A"), sh("C")]}]},
        _scenarios("PreToolUse", PRE_STOP),
        [bash("continue-false"), bash("none")],
        requests=1,  # the hook's continue: false ends the session at its first call
    ),
    Case(
        "pre-ask",
        {"PreToolUse": [{"matcher": "Bash", "hooks": [py("A"), sh("C")]}]},
        _scenarios("PreToolUse", PRE_ASK),
        [bash("ask-allow"), bash("none")],
        expect=("A asks",),
    ),
    Case(
        "pre-defer",
        {"PreToolUse": [{"matcher": "Bash", "hooks": [py("A"), sh("C")]}]},
        _scenarios("PreToolUse", PRE_DEFER),
        [bash("allow-defer"), bash("none")],
        requests=1,  # defer, in headless mode, ends the session at that call
    ),
]

POST = {
    "ok": {},
    "block": {"A": {"out": json.dumps({"decision": "block", "reason": "A objects to the result"})}},
    "exit2": {"A": {"exit": 2, "err": "A complains after the fact"}},
    "exit1": {"A": {"exit": 1, "err": "A soft error"}},
    "exit1-block": {"A": {"exit": 1, "out": json.dumps({"decision": "block", "reason": "A blocks on exit 1"})}},
    "two-ctx": {"A": {"out": ctx("PostToolUse", "post context A")}, "C": {"out": ctx("PostToolUse", "post context C")}},
    "two-block": {"A": {"out": json.dumps({"decision": "block", "reason": "A objects"})}, "C": {"out": json.dumps({"decision": "block", "reason": "C objects"})}},
    "block-and-ctx": {"A": {"out": json.dumps({"decision": "block", "reason": "A objects"})}, "C": {"out": ctx("PostToolUse", "post context C")}},
    "exit2-and-ctx": {"A": {"exit": 2, "err": "A complains"}, "C": {"out": ctx("PostToolUse", "post context C")}},
    "plain": {"A": {"out": "plain stdout after the tool"}},
    "sysmsg": {"C": {"out": json.dumps({"systemMessage": "post note"})}},
    "stop": {"A": {"out": json.dumps({"continue": False, "stopReason": "post halt"})}},
}
FAILURE = {
    "fail-ctx": {"A": {"out": ctx("PostToolUseFailure", "failure context A")}, "C": {"out": ctx("PostToolUseFailure", "failure context C")}},
    "fail-exit2": {"A": {"exit": 2, "err": "A on failure"}},
}

CASES += [
    Case(
        "post",
        {
            "PostToolUse": [{"matcher": "*", "hooks": [py("A"), sh("C")]}],
            "PostToolUseFailure": [{"matcher": "Bash", "hooks": [py("A"), sh("C")]}],
        },
        {**_scenarios("PostToolUse", POST), **_scenarios("PostToolUseFailure", FAILURE)},
        [bash(tag) for tag in POST if tag != "stop"]
        + [bash(tag, "exit 3") for tag in FAILURE]
        + [bash("stop"), bash("none")],
        expect=("post context C", "A blocks on exit 1", "failure context A", "A on failure"),
    ),
    Case(
        "session",
        {
            "SessionStart": [{"hooks": [py("A"), sh("C")]}],
            "UserPromptSubmit": [{"hooks": [py("A"), sh("C")]}],
            "Stop": [{"hooks": [py("A"), sh("C")]}],
            "SessionEnd": [{"hooks": [py("A")]}],
            "Notification": [{"hooks": [py("A")]}],
            "PreCompact": [{"matcher": "manual", "hooks": [py("A")]}],
            "PermissionRequest": [{"matcher": "Bash", "hooks": [py("A")]}],
            "SubagentStop": [{"hooks": [py("A")]}],
            "FutureEvent": [{"hooks": [py("A")]}],
        },
        {
            "SessionStart:*": {"A": {"out": "plain context from A at start"}, "C": {"out": ctx("SessionStart", "json context from C at start")}},
            "UserPromptSubmit:*": {"A": {"out": "plain prompt context from A"}, "C": {"out": ctx("UserPromptSubmit", "json prompt context from C")}},
            "Stop:*": {"A": {"first_only": True, "out": json.dumps({"decision": "block", "reason": "A wants one more step"})}, "C": {"exit": 1, "err": "C stop error"}},
            "SessionEnd:*": {"A": {"out": "bye"}},
        },
        [bash("none")],
        prompt="conformance session #S=prompt",
        expect=("plain context from A at start", "UserPromptSubmit hook success: plain prompt context from A", "Stop hook feedback:\nA wants one more step"),
    ),
    Case(
        "prompt-block",
        {"UserPromptSubmit": [{"hooks": [py("A"), sh("C")]}]},
        {"UserPromptSubmit:*": {"A": {"exit": 2, "err": "A refuses the prompt"}, "C": {"out": "C context"}}},
        [bash("none")],
        expect=("A refuses the prompt",),
    ),
    Case(
        "fields",
        {
            "PreToolUse": [
                {"matcher": "Bash", "hooks": [
                    py("A", **{"if": "Bash(rm *)"}),
                    py("T", timeout=1),
                    sh("C", statusMessage="checking"),
                    py("Y", **{"async": True}),
                    py("U", futureField=True),
                    py("B", shell="bash"),
                    {"type": "command", "command": "python3", "args": [".claude/hooks/behave.py", "X"]},
                ]},
            ],
            "PostToolUse": [{"matcher": "Bash", "hooks": [py("R", asyncRewake=True), py("O", once=True)]}],
        },
        _scenarios("PreToolUse", {
            "rm": {"A": {"out": pre("deny", "A guards rm")}},
            "not-rm": {"A": {"out": pre("deny", "A guards rm")}},
            "slow": {"T": {"sleep": 3, "out": pre("deny", "too late")}},
            "status": {"C": {"out": ctx("PreToolUse", "C checked")}},
            "async": {"Y": {"out": pre("deny", "async says no")}},
            "unknown-field": {"U": {"out": pre("deny", "U denies")}},
            "shell": {"B": {"out": ctx("PreToolUse", "B ran under its shell")}},
            "args": {"X": {"exit": 2, "err": "X blocks via args"}},
        }) | _scenarios("PostToolUse", {
            "rewake": {"R": {"exit": 2, "err": "R wakes Claude"}},
            "once": {"O": {"out": ctx("PostToolUse", "once context")}},
        }),
        [bash("rm", "rm -f /tmp/hookopt-conformance-none"), bash("not-rm"), bash("slow"), bash("status"),
         bash("async"), bash("unknown-field"), bash("shell"), bash("args"), bash("rewake"), bash("once"), bash("once")],
        expect=("A guards rm", "X blocks via args", "R wakes Claude", "once context"),
    ),
    Case(
        "matchers",
        {
            "PreToolUse": [
                {"matcher": "Bash", "hooks": [py("E")]},
                {"matcher": "Read|Write", "hooks": [py("L")]},
                {"matcher": "^(Ba|Re).*", "hooks": [sh("G")]},
                {"matcher": "mcp__srv__.*", "hooks": [py("M")]},
                {"matcher": "mcp__srv__echo", "hooks": [sh("K")]},
                {"matcher": "mcp__other__.*", "hooks": [py("O")]},
                {"matcher": "*", "hooks": [py("S")]},
                {"matcher": "", "hooks": [py("N")]},
                {"hooks": [py("P")]},
                {"matcher": "Edit", "hooks": [py("D")]},
            ],
        },
        {
            f"PreToolUse:{tag}": {name: {"out": ctx("PreToolUse", f"{name} matched")} for name in "ELGMKOSNPD"}
            for tag in ("read", "bash", "write", "mcp")
        },
        [bash("bash"), ("Read", {"file_path": "/etc/hostname #S=read"}), ("Write", {"file_path": "/tmp/hookopt-conformance-w.txt", "content": "#S=write"}),
         ("mcp__srv__echo", {"text": "#S=mcp"})],
        cleanup=("/tmp/hookopt-conformance-w.txt",),
        mcp=True,
        expect=("PreToolUse:mcp__srv__echo hook additional context", "M matched", "K matched", "L matched"),
    ),
]

CASES += [
    Case(
        "missing-script",
        {"PreToolUse": [{"matcher": "Read", "hooks": [
            {"type": "command", "command": 'python3 "$CLAUDE_PROJECT_DIR"/.claude/hooks/missing.py'},
            {"type": "command", "command": "exit 127"},
        ]}, {"matcher": "Bash", "hooks": [py("A")]}]},
        {},
        [("Read", {"file_path": "/etc/hostname"}), bash("none")],
        expect=("can't open file",),
    ),
]
