import json
import re
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from modules.optimization.protocol import (
    DECISION_ORDER,
    EVENTS,
    TOOL_EVENTS,
    HookResult,
    ProtocolError,
    combine,
    interpret,
    matcher_matches,
    matcher_subject,
    parse_event,
    pre_tool_use_result,
)
from tests.fuzz_strategies import event_like, json_values, mangled

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "claude-code-2.1.329"


def fixture_events():
    return sorted(FIXTURES.glob("[0-9]*.json"))


@pytest.mark.parametrize("path", fixture_events(), ids=lambda p: p.name)
def test_real_payloads_parse(path):
    event = parse_event(path.read_bytes())
    assert event["hook_event_name"] in path.name


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "empty input"),
        (b"   \n", "empty input"),
        (b"{not json", "malformed JSON at line 1 column 2"),
        (b"[1, 2]", "must be a JSON object, not list"),
        (b'{"a": 1}', "no hook_event_name"),
        (b'{"hook_event_name": "Bogus"}', "unknown hook_event_name 'Bogus'"),
        (b'{"hook_event_name": "PreToolUse"}', "PreToolUse event has no tool_name"),
        (b'{"hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_input": []}', "tool_input that is not an object"),
        (b'{"hook_event_name": "Stop", "x": "\xff"}', "not valid UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
)
def test_bad_events_are_clear_errors(raw, message):
    with pytest.raises(ProtocolError, match=re.escape(message)):
        parse_event(raw)


def test_size_bound_checked_before_parsing():
    with pytest.raises(ProtocolError, match="over the limit of 10 bytes"):
        parse_event(b'{"hook_event_name": "Stop"}', max_bytes=10)


def deny(reason):
    return pre_tool_use_result("deny", reason)


def test_exit_2_blocks_with_stderr():
    outcome = interpret("PreToolUse", HookResult(2, b"ignored", b"no rm -rf /\n"))
    assert outcome.blocks and outcome.decision == "deny" and outcome.reason == "no rm -rf /"


def test_other_exit_codes_are_non_blocking_errors():
    outcome = interpret("PreToolUse", HookResult(1, b"", b"boom"))
    assert not outcome.blocks and outcome.error == "boom" and outcome.decision is None


def test_plain_stdout_is_context_only_for_prompt_and_session_start():
    assert interpret("SessionStart", HookResult(0, b"branch main\n")).additional_context == "branch main"
    assert interpret("UserPromptSubmit", HookResult(0, b"hi")).additional_context == "hi"
    assert interpret("PreToolUse", HookResult(0, b"hi")).additional_context == ""


def test_deprecated_pre_tool_use_block_means_deny():
    outcome = interpret("PreToolUse", HookResult(0, b'{"decision": "block", "reason": "old style"}'))
    assert outcome.decision == "deny" and outcome.reason == "old style"


def test_single_result_passes_through_byte_for_byte():
    raw = HookResult(0, b"\xff\xfe not utf8", b"\x00err")
    assert combine("PreToolUse", [raw]) is raw


def test_timed_out_hook_decides_nothing():
    combined = combine("PreToolUse", [HookResult(None), pre_tool_use_result("allow")])
    assert json.loads(combined.stdout)["hookSpecificOutput"]["permissionDecision"] == "allow"
    assert combine("PreToolUse", [HookResult(None)]) == HookResult(0)


def test_exit_2_and_json_deny_merge_into_one_deny_with_both_reasons():
    combined = combine("PreToolUse", [HookResult(2, b"", b"first"), deny("second"), pre_tool_use_result("allow", "fine")])
    specific = json.loads(combined.stdout)["hookSpecificOutput"]
    assert combined.exit_code == 0
    assert specific["permissionDecision"] == "deny"
    assert specific["permissionDecisionReason"] == "first\nsecond"


def test_every_additional_context_is_kept():
    combined = combine(
        "PostToolUse",
        [
            HookResult(0, json.dumps({"hookSpecificOutput": {"hookEventName": "PostToolUse", "additionalContext": "a"}}).encode()),
            HookResult(0, json.dumps({"hookSpecificOutput": {"hookEventName": "PostToolUse", "additionalContext": "b"}}).encode()),
            HookResult(0, b""),
        ],
    )
    assert json.loads(combined.stdout)["hookSpecificOutput"]["additionalContext"] == "a\n\nb"


def test_continue_false_wins():
    combined = combine("Stop", [HookResult(0, b'{"continue": false, "stopReason": "quota"}'), HookResult(0, b"{}")])
    data = json.loads(combined.stdout)
    assert data["continue"] is False and data["stopReason"] == "quota"


def test_post_tool_use_exit_2_becomes_json_block():
    combined = combine("PostToolUse", [HookResult(2, b"", b"lint failed"), HookResult(0, b"")])
    assert json.loads(combined.stdout) == {"decision": "block", "reason": "lint failed"}


def test_session_start_exit_2_keeps_exit_code():
    combined = combine("SessionStart", [HookResult(2, b"", b"nope"), HookResult(0, b"ctx")])
    assert combined == HookResult(2, b"", b"nope")


def test_only_errors_keep_first_error_code():
    combined = combine("PreToolUse", [HookResult(0), HookResult(3, b"", b"bad"), HookResult(1, b"", b"worse")])
    assert combined == HookResult(3, b"", b"bad\nworse")


def test_updated_input_kept_for_winning_allow():
    allow = HookResult(0, json.dumps({"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision": "allow", "updatedInput": {"command": "ls -la"}}}).encode())
    combined = combine("PreToolUse", [allow, HookResult(0)])
    assert json.loads(combined.stdout)["hookSpecificOutput"]["updatedInput"] == {"command": "ls -la"}


# --- properties -----------------------------------------------------------

decisions = st.sampled_from(DECISION_ORDER)
hook_results = st.one_of(
    decisions.map(lambda d: pre_tool_use_result(d, f"r-{d}")),
    st.just(HookResult(2, b"", b"exit two")),
    st.just(HookResult(1, b"", b"error")),
    st.just(HookResult(0, b"")),
    st.just(HookResult(None)),
)


@given(st.lists(hook_results, min_size=2, max_size=8))
def test_combined_decision_is_the_most_restrictive(results):
    expected = [interpret("PreToolUse", r).decision for r in results]
    expected = [d for d in expected if d]
    outcome = interpret("PreToolUse", combine("PreToolUse", results))
    if expected:
        assert outcome.decision == min(expected, key=DECISION_ORDER.index)
    else:
        assert outcome.decision is None
    assert outcome.blocks == any(interpret("PreToolUse", r).blocks for r in results)


@given(st.lists(hook_results, min_size=2, max_size=6), st.randoms())
def test_combination_does_not_depend_on_order_of_decisions(results, rnd):
    shuffled = list(results)
    rnd.shuffle(shuffled)
    a = interpret("PreToolUse", combine("PreToolUse", results))
    b = interpret("PreToolUse", combine("PreToolUse", shuffled))
    assert (a.decision, a.blocks) == (b.decision, b.blocks)
    assert sorted(a.reason.split("\n")) == sorted(b.reason.split("\n"))


names = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,12}", fullmatch=True)


@given(names)
def test_star_empty_and_missing_match_everything(name):
    assert matcher_matches("*", name) and matcher_matches("", name) and matcher_matches(None, name)


@given(st.lists(names, min_size=1, max_size=5), names)
def test_plain_list_is_exact_names(listed, name):
    matcher = "|".join(listed)
    assert matcher_matches(matcher, name) == (name in listed)


@given(names, names)
def test_plain_name_is_not_a_prefix_match(a, b):
    assert matcher_matches(a, a + b) is False


@given(names)
def test_regex_is_unanchored(name):
    assert matcher_matches(f"{name[:1]}.*", "x" + name)
    assert matcher_matches(f"^{re.escape(name)}$", name)


@pytest.mark.parametrize(
    ("matcher", "tool", "expected"),
    [
        ("Bash", "Bash", True),
        ("Bash", "BashOutput", False),
        ("Edit|Write", "Write", True),
        ("Edit, Write", "Write", True),
        ("Edit|Write", "MultiEdit", False),
        ("mcp__.*", "mcp__github__create_issue", True),
        ("Notebook.*", "NotebookEdit", True),
        ("Edit.*", "MultiEdit", True),  # unanchored: a regex matches anywhere in the name
        ("^Edit.*", "MultiEdit", False),
        (".*Edit", "MultiEdit", True),
        ("[invalid", "Bash", False),
    ],
)
def test_matcher_examples(matcher, tool, expected):
    assert matcher_matches(matcher, tool) is expected


def test_matcher_subject_per_event():
    assert matcher_subject({"hook_event_name": "PreToolUse", "tool_name": "Bash"}) == "Bash"
    assert matcher_subject({"hook_event_name": "SessionStart", "source": "resume"}) == "resume"
    assert matcher_subject({"hook_event_name": "Stop"}) is None


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
