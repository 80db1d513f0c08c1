"""The consolidated combination: what Claude Code renders for several hooks, from one output.

The rendering rules were read off the real CLI (tests/conformance runs them against it);
here they are checked directly, and a property test holds the safety rule: whenever
Claude Code's rules would block, the combination blocks, and only then.
"""
from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modules.optimization.consolidation import combine_stack
from modules.optimization.protocol import HookResult, interpret
from modules.optimization.stack import left_reason

A, B = 'python3 "$CLAUDE_PROJECT_DIR"/.claude/hooks/a.py', "sh hooks/b.sh"


def pre(decision, reason=""):
    return json.dumps({"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision": decision, "permissionDecisionReason": reason}}).encode()


def ctx(event, text):
    return json.dumps({"hookSpecificOutput": {"hookEventName": event, "additionalContext": text}}).encode()


def output(result):
    return json.loads(result.stdout) if result.stdout else {}


def test_an_exit_2_block_reads_as_claude_code_writes_it():
    combined = combine_stack("PreToolUse", "Bash", [HookResult(2, b"", b"no rm\n"), HookResult(0)], [A, B])
    specific = output(combined)["hookSpecificOutput"]
    assert specific["permissionDecision"] == "deny"
    assert specific["permissionDecisionReason"] == f"[{A}]: no rm\n"
    empty = combine_stack("PreToolUse", "Bash", [HookResult(2)], [A])
    assert output(empty)["hookSpecificOutput"]["permissionDecisionReason"] == f"[{A}]: No stderr output"


def test_a_json_deny_on_exit_1_blocks():
    combined = combine_stack("PreToolUse", "Bash", [HookResult(1, pre("deny", "no"), b"oops"), HookResult(0)], [A, B])
    assert output(combined)["hookSpecificOutput"]["permissionDecision"] == "deny"
    assert interpret("PreToolUse", combined).blocks


def test_exit_2_ignores_json_on_stdout():
    combined = combine_stack("PreToolUse", "Bash", [HookResult(2, pre("allow"), b"blocked")], [A])
    assert output(combined)["hookSpecificOutput"]["permissionDecisionReason"] == f"[{A}]: blocked"


def test_pre_tool_use_contexts_share_one_prefix():
    combined = combine_stack("PreToolUse", "Bash", [HookResult(0, ctx("PreToolUse", "a")), HookResult(0, ctx("PreToolUse", "b"))], [A, B])
    assert output(combined)["hookSpecificOutput"]["additionalContext"] == "a\nb"


def test_post_tool_use_parts_carry_their_native_prefixes():
    results = [HookResult(0, b'{"decision": "block", "reason": "A objects"}'), HookResult(2, b"", b"B too"), HookResult(0, ctx("PostToolUse", "note"))]
    combined = output(combine_stack("PostToolUse", "Write", results, [A, B, "c"]))
    assert combined["decision"] == "block"
    assert combined["reason"] == (
        "A objects\n\n"
        f'PostToolUse:Write hook blocking error from command: "{B}": [{B}]: B too\n\n'
        "PostToolUse:Write hook additional context: note"
    )
    only_context = output(combine_stack("PostToolUseFailure", "Bash", [HookResult(0, ctx("PostToolUseFailure", "x")), HookResult(0, ctx("PostToolUseFailure", "y"))], [A, B]))
    assert only_context == {"hookSpecificOutput": {"hookEventName": "PostToolUseFailure", "additionalContext": "x\n\nPostToolUseFailure:Bash hook additional context: y"}}


def test_silence_and_timeouts_add_nothing():
    assert combine_stack("PreToolUse", "Bash", [HookResult(0), HookResult(None, b"late", b"")], [A, B]) == HookResult(0)
    soft = combine_stack("PreToolUse", "Bash", [HookResult(1, b"", b"soft")], [A])
    assert soft.exit_code == 0 and soft.stdout == b"" and soft.stderr == b"soft"


def test_other_events_are_refused():
    with pytest.raises(ValueError, match="not consolidated"):
        combine_stack("Stop", "", [HookResult(0)], [A])


@pytest.mark.parametrize(
    ("event", "hook", "why"),
    [
        ("PreToolUse", {"type": "command", "command": "x"}, None),
        ("PreToolUse", {"type": "command", "command": "x", "timeout": 5}, None),
        ("PreToolUse", {"type": "command", "command": "x", "if": "Bash(rm *)"}, "it sets if"),
        ("PreToolUse", {"type": "command", "command": "x", "async": True}, (
            "it sets async: Claude Code shows an async hook's additionalContext and systemMessage to the model "
            "on a later turn, which hookopt cannot; mark it with --observers to run it warm without that output"
        )),
        ("PostToolUse", {"type": "command", "command": "x", "async": "yes"}, "its async 'yes' is not a boolean"),
        ("PostToolUse", {"type": "command", "command": "x", "async": False}, None),
        ("PostToolUse", {"type": "command", "command": "x", "asyncRewake": True}, "it sets asyncRewake"),
        ("PreToolUse", {"type": "command", "command": "python3", "args": ["a.py"]}, "it sets args"),
        ("PreToolUse", {"type": "command", "command": "x", "shell": "bash", "once": True}, "it sets once, shell"),
        ("PreToolUse", {"type": "command", "command": "x", "statusMessage": "..."}, "it sets statusMessage"),
        ("PreToolUse", {"type": "command", "command": "x", "futureField": 1}, "it sets futureField"),
        ("PreToolUse", {"type": "command", "command": "x", "timeout": "5"}, "its timeout '5' is not a positive number"),
        ("PreToolUse", {"type": "http", "url": "http://x"}, "a 'http' hook, not a command"),
        ("SessionStart", {"type": "command", "command": "x"}, "SessionStart hooks are not consolidated"),
        ("FutureEvent", {"type": "command", "command": "x"}, "FutureEvent hooks are not consolidated"),
    ],
)
def test_what_is_left_to_claude_code(event, hook, why):
    assert left_reason(event, hook) == why


# ---------------------------------------------------------------- the safety property

DECISIONS = ("allow", "ask", "defer", "deny")
stdouts = st.one_of(
    st.just(b""),
    st.just(b"plain text"),
    st.just(b"{not json"),
    st.builds(pre, st.sampled_from(DECISIONS), st.text(max_size=5)),
    st.just(b'{"decision": "block", "reason": "old"}'),
    st.just(b'{"decision": "approve"}'),
    st.builds(lambda t: ctx("PreToolUse", t), st.text(max_size=5)),
    st.just(b'{"continue": false, "stopReason": "halt"}'),
)
results = st.builds(HookResult, st.sampled_from([None, 0, 1, 2, 3, 127]), stdouts, st.sampled_from([b"", b"why\n"]))


def claude_code_blocks(result):
    """Claude Code 2.1.329's rule for one PreToolUse hook, written out independently."""
    if result.exit_code is None:
        return False  # a hook past its timeout decides nothing
    if result.exit_code == 2:
        return True
    try:
        data = json.loads(result.stdout)
    except ValueError:
        return False
    if not isinstance(data, dict):
        return False
    decision = (data.get("hookSpecificOutput") or {}).get("permissionDecision")
    if decision in DECISIONS:
        return decision == "deny"
    return data.get("decision") == "block"


def claude_code_decision(result):
    if result.exit_code in (None, 2):
        return None
    try:
        data = json.loads(result.stdout)
    except ValueError:
        return None
    decision = (data.get("hookSpecificOutput") or {}).get("permissionDecision") if isinstance(data, dict) else None
    if decision in DECISIONS:
        return decision
    return {"block": "deny", "approve": "allow"}.get(data.get("decision")) if isinstance(data, dict) else None


@given(st.lists(results, min_size=1, max_size=6))
def test_the_combination_blocks_exactly_when_claude_code_would(hooks):
    combined = interpret("PreToolUse", combine_stack("PreToolUse", "Bash", hooks, [f"hook{i}" for i in range(len(hooks))]))
    assert combined.blocks == any(claude_code_blocks(r) for r in hooks)
    decisions = [d for d in map(claude_code_decision, hooks) if d]
    if not any(claude_code_blocks(r) for r in hooks):
        expected = min(decisions, key=("deny", "defer", "ask", "allow").index) if decisions else None
        assert combined.decision == expected


@given(st.lists(st.builds(HookResult, st.sampled_from([None, 0, 1, 2, 3]), st.sampled_from([b"", b'{"decision": "block", "reason": "r"}', ctx("PostToolUse", "c"), b"x"]), st.just(b"e")), min_size=1, max_size=6))
def test_post_tool_use_blocks_exactly_when_claude_code_would(hooks):
    combined = interpret("PostToolUse", combine_stack("PostToolUse", "Bash", hooks, [f"hook{i}" for i in range(len(hooks))]))
    native = any(r.exit_code == 2 or (r.exit_code is not None and b'"block"' in r.stdout) for r in hooks)
    assert combined.blocks == native


def test_install_says_which_hooks_it_left_and_keeps_them_as_they_were(tmp_path):
    from modules.optimization.installer import install, uninstall

    guarded = {"type": "command", "command": "sh guard.sh", "if": "Bash(rm *)"}
    hooks = {
        "PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "sh audit.sh"}, guarded]}],
        "Stop": [{"hooks": [{"type": "command", "command": "sh stop.sh"}]}],
    }
    (tmp_path / ".claude").mkdir()
    (tmp_path / ".claude" / "settings.json").write_text(json.dumps({"hooks": hooks}))
    said = []
    install(tmp_path, consolidate_hooks=True, say=said.append)
    assert "left to Claude Code: PreToolUse 'sh guard.sh': it sets if" in said
    assert "left to Claude Code: Stop 'sh stop.sh': Stop hooks are not consolidated" in said
    installed = json.loads((tmp_path / ".claude" / "settings.json").read_text())["hooks"]
    assert installed["Stop"] == hooks["Stop"]
    assert installed["PreToolUse"][1] == {"matcher": "Bash", "hooks": [guarded]}
    assert "stack.py" in installed["PreToolUse"][0]["hooks"][0]["command"]
    uninstall(tmp_path, say=lambda _: None)
