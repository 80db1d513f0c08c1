"""Behaviour of the built-in PostToolUse analyzers: loop notes for Claude, never a block."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modules.optimization.validators.base import PASS, Verdict
from modules.optimization.validators.post_tool_use import (
    POST_EVENTS,
    FailureLoopDetector,
    RepeatDetector,
    builtin_post,
)

FIXTURES = Path(__file__).parent / "fixtures" / "claude-code-2.1.329"


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


BASH_OK = fixture("04-PostToolUse-Bash.json")
BASH_FAILED = fixture("06-PostToolUseFailure-Bash.json")
READ_OK = fixture("08-PostToolUse-Read.json")


def bash(command: str, session: str = "s1", description: str = "run") -> dict[str, Any]:
    return {
        **BASH_OK,
        "session_id": session,
        "tool_input": {"command": command, "description": description},
    }


def notes(detector: Any, events: list[dict[str, Any]]) -> list[Verdict]:
    return [detector(e) for e in events]


# --- RepeatDetector -----------------------------------------------------------


def test_repeat_noted_at_exactly_the_threshold() -> None:
    detector = RepeatDetector(threshold=3)
    first, second, third, fourth = notes(detector, [bash("pytest -q")] * 4)
    assert first == PASS and second == PASS
    assert third.decision is None
    assert third.context.startswith("The command `pytest -q` has now run 3 times in a row with the same input;")
    assert "4 times in a row" in fourth.context


def test_repeat_ignores_whitespace_and_description() -> None:
    detector = RepeatDetector(threshold=3)
    events = [bash("ls  -la"), bash(" ls -la\n", description="again"), bash("ls -la", description="third")]
    assert "`ls -la` has now run 3 times" in notes(detector, events)[-1].context


def test_repeat_reset_when_a_different_command_intervenes() -> None:
    detector = RepeatDetector(threshold=3)
    results = notes(detector, [bash("make"), bash("make"), bash("git status"), bash("make"), bash("make")])
    assert results == [PASS] * 5
    assert "3 times in a row" in detector(bash("make")).context


def test_repeat_per_session_isolation() -> None:
    detector = RepeatDetector(threshold=3)
    results = notes(detector, [bash("make", "a"), bash("make", "b"), bash("make", "a"), bash("make", "b")])
    assert results == [PASS] * 4
    assert detector(bash("make", "a")).context
    assert detector(bash("make", "c")) == PASS


def test_repeat_of_a_non_bash_tool_uses_its_whole_input() -> None:
    detector = RepeatDetector(threshold=3)
    other = {**READ_OK, "tool_input": {"file_path": "/home/user/project/OTHER.md"}}
    assert notes(detector, [READ_OK, READ_OK, other, READ_OK, READ_OK]) == [PASS] * 5
    note = detector(READ_OK)
    assert "Read" in note.context and "README.md" in note.context and "3 times in a row" in note.context


def test_repeat_counts_failures_too() -> None:
    detector = RepeatDetector(threshold=3)
    assert "`ls /nonexistent-dir`" in notes(detector, [BASH_FAILED, BASH_FAILED, BASH_FAILED])[-1].context


def test_repeat_notices_a_cycle_within_the_window() -> None:
    # A B A B A B with identical inputs is the same loop, just longer.
    detector = RepeatDetector(threshold=3, window=20)
    results = notes(detector, [bash("make"), bash("cat log")] * 3)
    assert results[:5] == [PASS] * 5
    assert "repeat the same 2 calls 3 times" in results[5].context
    # A TDD loop (different edits between the same test run) is progress, not a cycle.
    detector = RepeatDetector(threshold=3, window=20)
    edits = [
        {**READ_OK, "session_id": "s1", "tool_name": "Edit", "tool_input": {"file_path": "a.py", "new_string": str(i)}}
        for i in range(3)
    ]
    assert notes(detector, [x for e in edits for x in (e, bash("pytest"))]) == [PASS] * 6


def test_repeat_cycle_longer_than_the_window_is_not_seen() -> None:
    detector = RepeatDetector(threshold=3, window=8)
    steps = [bash(c) for c in ("a", "b", "c")] * 3  # 9 calls: more than the window holds
    assert notes(detector, steps) == [PASS] * 9


def test_repeat_bounded_session_count() -> None:
    detector = RepeatDetector(threshold=3, max_sessions=2)
    notes(detector, [bash("make", "a"), bash("make", "a")])
    notes(detector, [bash("make", "b"), bash("make", "c")])  # "a" is the oldest: forgotten
    assert detector(bash("make", "a")) == PASS  # counting from 1 again
    assert len(detector._sessions) == 2
    many = RepeatDetector(threshold=3)
    for i in range(1000):
        many(bash("make", f"s{i}"))
    assert len(many._sessions) == 256


def test_repeat_is_thread_safe() -> None:
    detector = RepeatDetector(threshold=3)
    counted: list[int] = []
    lock = threading.Lock()

    def hammer() -> None:
        local = sum(1 for _ in range(200) if detector(bash("make")).context)
        with lock:
            counted.append(local)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Runs 1..1600 in one session: every call from the third on is noted, whatever the interleaving.
    assert sum(counted) == 1600 - 2


def test_repeat_rejects_a_bad_configuration() -> None:
    with pytest.raises(ValueError):
        RepeatDetector(threshold=1)
    with pytest.raises(ValueError):
        RepeatDetector(threshold=5, window=3)


# --- FailureLoopDetector ------------------------------------------------------


def test_failure_loop_from_the_real_failure_payload() -> None:
    detector = FailureLoopDetector(threshold=3)
    first, second, third = notes(detector, [BASH_FAILED] * 3)
    assert first == PASS and second == PASS
    assert third.decision is None
    assert "`Bash` has failed 3 times in a row" in third.context
    assert "cannot access '/nonexistent-dir'" in third.context
    assert "\n" not in third.context


def test_failure_loop_reset_by_a_success_of_the_same_tool() -> None:
    detector = FailureLoopDetector(threshold=3)
    assert notes(detector, [BASH_FAILED, BASH_FAILED, BASH_OK, BASH_FAILED, BASH_FAILED]) == [PASS] * 5
    assert detector(BASH_FAILED).context


def test_failure_loop_counts_per_tool() -> None:
    # Another tool succeeding in between does not hide Bash failing again and again.
    detector = FailureLoopDetector(threshold=3)
    assert notes(detector, [BASH_FAILED, READ_OK, BASH_FAILED, READ_OK]) == [PASS] * 4
    assert "`Bash`" in detector(BASH_FAILED).context


def test_failure_loop_ignores_user_interrupts() -> None:
    detector = FailureLoopDetector(threshold=3)
    interrupted = {**BASH_FAILED, "is_interrupt": True}
    assert notes(detector, [BASH_FAILED, interrupted, BASH_FAILED, interrupted]) == [PASS] * 4
    assert detector(BASH_FAILED).context  # interrupts neither counted nor reset


def test_failure_loop_per_session() -> None:
    detector = FailureLoopDetector(threshold=2)
    assert detector({**BASH_FAILED, "session_id": "a"}) == PASS
    assert detector({**BASH_FAILED, "session_id": "b"}) == PASS
    assert detector({**BASH_FAILED, "session_id": "a"}).context


@pytest.mark.parametrize(
    "response",
    [
        {"stdout": "", "stderr": "Exit code 1\nboom", "interrupted": False},
        {"stdout": "", "stderr": "", "interrupted": True},
        {"error": "File does not exist."},
        {"is_error": True, "content": "tool crashed"},
        "Error: something went wrong",
    ],
)
def test_failure_loop_reads_failures_from_post_tool_use(response: Any) -> None:
    detector = FailureLoopDetector(threshold=2)
    event = {**BASH_OK, "tool_response": response}
    assert detector(event) == PASS
    assert "failed 2 times" in detector(event).context


def test_failure_loop_plain_stderr_is_not_a_failure() -> None:
    detector = FailureLoopDetector(threshold=2)
    warning = {**BASH_OK, "tool_response": {"stdout": "ok", "stderr": "DeprecationWarning: x", "interrupted": False}}
    assert notes(detector, [warning] * 3) == [PASS] * 3


def test_failure_loop_truncates_the_error() -> None:
    detector = FailureLoopDetector(threshold=1)
    note = detector({**BASH_FAILED, "error": "x" * 10_000})
    assert 300 < len(note.context) < 600


def test_failure_loop_bounded_session_count() -> None:
    detector = FailureLoopDetector(threshold=2, max_sessions=2)
    detector({**BASH_FAILED, "session_id": "a"})
    detector({**BASH_FAILED, "session_id": "b"})
    detector({**BASH_FAILED, "session_id": "c"})
    assert detector({**BASH_FAILED, "session_id": "a"}) == PASS  # "a" was forgotten
    assert len(detector._sessions) == 2


# --- builtin_post -------------------------------------------------------------


def test_builtin_post_shape() -> None:
    first, second = builtin_post(), builtin_post()
    assert [v.name for v in first] == ["repeat_detector", "failure_loop"]
    for v in first:
        assert v.events == POST_EVENTS == frozenset({"PostToolUse", "PostToolUseFailure"})
        assert v.policy == "fail_open"
        assert v.cacheable is False
        assert v.priority == 10
        assert v.matcher == "*"
    # Fresh state each time: a run counted by one set is unknown to the other.
    for _ in range(2):
        first[1].fn(BASH_FAILED)
    assert first[1].fn(BASH_FAILED).context
    assert second[1].fn(BASH_FAILED) == PASS


def test_analyzers_ignore_other_events() -> None:
    for v in builtin_post():
        for name in ("01-SessionStart.json", "02-UserPromptSubmit.json", "13-Stop.json", "03-PreToolUse-Bash.json"):
            for _ in range(4):
                assert v.fn(fixture(name)) == PASS


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    event=st.fixed_dictionaries(
        {"hook_event_name": st.sampled_from(["PostToolUse", "PostToolUseFailure", "Stop"])},
        optional={
            "session_id": JSON,
            "tool_name": st.one_of(st.sampled_from(["Bash", "Read"]), JSON),
            "tool_input": JSON,
            "tool_response": JSON,
            "error": JSON,
            "is_interrupt": JSON,
        },
    )
)
def test_analyzers_never_raise(event: dict[str, Any]) -> None:
    for v in builtin_post():
        for _ in range(3):
            verdict = v.fn(event)
            assert isinstance(verdict, Verdict)
            assert verdict.decision is None
