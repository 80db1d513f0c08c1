"""Built-in PostToolUse analyzers: notice when Claude is stuck in a loop and tell it.

They keep a little state per session, never block, and only add context for Claude.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Generic, Literal, TypeVar

from .base import PASS, Validator, Verdict

__all__ = ["MAX_SESSIONS", "OBSERVER_PRIORITY", "POST_EVENTS", "FailureLoopDetector", "RepeatDetector", "builtin_post"]

POST_EVENTS: Final = frozenset({"PostToolUse", "PostToolUseFailure"})
MAX_SESSIONS: Final = 256  # sessions tracked per analyzer; the least recently seen is forgotten
OBSERVER_PRIORITY: Final = 10  # after the guards (0)
_SHOWN: Final = 200  # characters of a command quoted back to Claude
_ERROR_SHOWN: Final = 300
_EXIT_CODE: Final = re.compile(r"\bexit (?:code|status)\b", re.IGNORECASE)

T = TypeVar("T")


class _Sessions(Generic[T]):
    """Per-session state, least recently used dropped beyond a cap. Not locked: the owner locks."""

    def __init__(self, factory: Callable[[], T], cap: int) -> None:
        if cap < 1:
            raise ValueError("max_sessions must be at least 1")
        self._factory = factory
        self._cap = cap
        self._states: OrderedDict[str, T] = OrderedDict()

    def get(self, session_id: str) -> T:
        """Return the state of session_id, creating it (and forgetting the oldest) if new."""
        state = self._states.get(session_id)
        if state is None:
            state = self._states[session_id] = self._factory()
            if len(self._states) > self._cap:
                self._states.popitem(last=False)
        else:
            self._states.move_to_end(session_id)
        return state

    def __len__(self) -> int:
        return len(self._states)


def _session(event: Mapping[str, Any]) -> str:
    sid = event.get("session_id")
    return sid if isinstance(sid, str) else ""


def _one_line(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _canonical(value: Any) -> str:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    except (ValueError, TypeError):  # a cycle, or keys that cannot be sorted
        return repr(value)


def _call(event: Mapping[str, Any]) -> tuple[str, str] | None:
    """Return (key, description) of the tool call in event: equal keys mean the same call."""
    tool = event.get("tool_name")
    if not isinstance(tool, str) or event.get("hook_event_name") not in POST_EVENTS:
        return None
    tool_input = event.get("tool_input")
    command = tool_input.get("command") if isinstance(tool_input, Mapping) else None
    if tool == "Bash" and isinstance(command, str):
        # Whitespace and the description do not make it a different command.
        text = " ".join(command.split())
        shown = f"The command `{_one_line(text, _SHOWN)}`"
    else:
        text = _canonical(tool_input)
        shown = f"The {tool} call with input `{_one_line(text, _SHOWN)}`"
    # A digest keeps memory bounded whatever the size of the input (Write carries whole files).
    key = hashlib.blake2b(f"{tool}\0{text}".encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
    return key, shown


@dataclass
class _RepeatState:
    recent: deque[tuple[str, str]]
    last: str = ""
    run: int = 0


def _cycle(recent: list[tuple[str, str]], threshold: int) -> tuple[int, int]:
    """Return (period, repeats) of the longest periodic tail repeated >= threshold times, or (0, 0)."""
    n = len(recent)
    for period in range(2, n // threshold + 1):
        length = period
        while length < n and recent[n - 1 - length][0] == recent[n - 1 - length + period][0]:
            length += 1
        if length // period >= threshold:
            return period, length // period
    return 0, 0


class RepeatDetector:
    """Note when the same tool call (same input) keeps running without anything changing.

    A run of ``threshold`` identical calls in a row is noted, and so is a cycle of a few
    calls (A B A B A B) repeated ``threshold`` times within the last ``window`` calls;
    any other call in between breaks a run.
    """

    def __init__(self, threshold: int = 3, window: int = 20, *, max_sessions: int = MAX_SESSIONS) -> None:
        if threshold < 2 or window < threshold:
            raise ValueError("need threshold >= 2 and window >= threshold")
        self.threshold = threshold
        self.window = window
        self._lock = threading.Lock()
        self._sessions: _Sessions[_RepeatState] = _Sessions(lambda: _RepeatState(deque(maxlen=window)), max_sessions)

    def __call__(self, event: Mapping[str, Any]) -> Verdict:
        """Record the call in event and return a note for Claude if it is repeating itself."""
        call = _call(event)
        if call is None:
            return PASS
        key, shown = call
        with self._lock:
            state = self._sessions.get(_session(event))
            state.run = state.run + 1 if key == state.last else 1
            state.last = key
            state.recent.append(call)
            run = state.run
            period, repeats = (0, 0) if run >= self.threshold else _cycle(list(state.recent), self.threshold)
            cycle = [s for _, s in list(state.recent)[-period:]] if period else []
        if run >= self.threshold:
            return Verdict(
                context=f"{shown} has now run {run} times in a row with the same input; its result will not "
                "change unless something else does. Stop repeating it: read the last output, change the "
                "approach, or ask the user."
            )
        if period:
            steps = "; ".join(cycle)
            return Verdict(
                context=f"The last {period * repeats} tool calls repeat the same {period} calls {repeats} times "
                f"with identical inputs ({steps}). This loop is not making progress: stop and change the approach."
            )
        return PASS


Outcome = Literal["ok", "failed", "ignore"]


def _outcome(event: Mapping[str, Any]) -> tuple[Outcome, str]:
    """Classify the tool call in event as ok, failed (with its error) or to ignore."""
    if event.get("hook_event_name") == "PostToolUseFailure":
        if event.get("is_interrupt") is True:
            return "ignore", ""  # the user pressed stop: not the tool failing
        return "failed", str(event.get("error") or "failed")
    response = event.get("tool_response")
    if isinstance(response, Mapping):
        if response.get("error"):
            return "failed", str(response["error"])
        if response.get("is_error") is True:
            return "failed", str(response.get("content") or "error")
        stderr = response.get("stderr")
        stderr = stderr if isinstance(stderr, str) else ""
        if response.get("interrupted") is True:
            return "failed", f"interrupted. {stderr}".strip()
        # Plain stderr is often only warnings; it is a failure when it reports an exit code.
        if stderr.strip() and _EXIT_CODE.search(stderr):
            return "failed", stderr
    elif isinstance(response, str) and response.lstrip().lower().startswith("error"):
        return "failed", response
    return "ok", ""


@dataclass
class _FailureState:
    failures: dict[str, tuple[int, str]] = field(default_factory=dict)  # tool -> (in a row, last error)


class FailureLoopDetector:
    """Note when the same tool fails ``threshold`` times in a row (its success resets the count)."""

    def __init__(self, threshold: int = 3, *, max_sessions: int = MAX_SESSIONS) -> None:
        if threshold < 1:
            raise ValueError("threshold must be at least 1")
        self.threshold = threshold
        self._lock = threading.Lock()
        self._sessions: _Sessions[_FailureState] = _Sessions(_FailureState, max_sessions)

    def __call__(self, event: Mapping[str, Any]) -> Verdict:
        """Record whether the call in event failed and return a note for Claude if it keeps failing."""
        tool = event.get("tool_name")
        if not isinstance(tool, str) or event.get("hook_event_name") not in POST_EVENTS:
            return PASS
        outcome, error = _outcome(event)
        if outcome == "ignore":
            return PASS
        with self._lock:
            failures = self._sessions.get(_session(event)).failures
            if outcome == "ok":
                failures.pop(tool, None)
                return PASS
            count = failures.get(tool, (0, ""))[0] + 1
            failures[tool] = (count, error)
        if count < self.threshold:
            return PASS
        return Verdict(
            context=f"`{tool}` has failed {count} times in a row; last error: {_one_line(error, _ERROR_SHOWN)} "
            "Stop retrying the same way: read the error, check your assumptions, or ask the user."
        )


def _observer(name: str, fn: Callable[[Mapping[str, Any]], Verdict]) -> Validator:
    return Validator(
        name,
        fn,
        events=POST_EVENTS,
        matcher="*",
        policy="fail_open",  # a note is never worth blocking a tool call for
        cacheable=False,  # stateful: the same event means something new each time
        priority=OBSERVER_PRIORITY,
        inline=True,  # a look at this session's history in memory: no I/O, microseconds
    )


def builtin_post() -> tuple[Validator, ...]:
    """Return fresh PostToolUse analyzers, each with its own per-session state."""
    return (_observer("repeat_detector", RepeatDetector()), _observer("failure_loop", FailureLoopDetector()))
