"""Observers off the critical path: hooks the daemon runs after it has answered.

A user marks hooks as observers (``hookopt install --observers GLOB``, or
``"optimization": {"observers": [GLOB, ...]}`` in the scope's settings, read at install).
For an event with observers, the daemon journals one entry (the event, the hooks, their
environment and working directory) before it answers, and a single worker then runs the
entries' hooks one after the other, in journal order, warm. Their output cannot reach
Claude any more: when one writes anything or exits non-zero, the ledger (``observers.json``)
counts it, and ``hookopt status`` and ``doctor`` report it.

Which hooks may be observers (checked at install, see ``refusal``):

- A synchronous PreToolUse hook decides (deny, ask, updatedInput, exit 2): marking it is
  refused, never done silently.
- PostToolUse and PostToolUseFailure hooks run after the tool: their output is feedback
  (block reason, additionalContext), not a decision about the call. Marking one gives that
  feedback up, knowingly.
- ``"async": true`` hooks: Claude Code runs them in the background and ignores their
  decisions (deny, exit 2, block), but it does show their additionalContext and
  systemMessage to the model on a later turn (checked with the real CLI 2.1.329, see
  tests/test_observers_claude.py). hookopt cannot put text there, so an async hook is left to
  Claude Code unless the user marks it, on any consolidated event. ``asyncRewake`` hooks are
  always left to Claude Code.
- Hooks of events that are not consolidated are left to Claude Code (they keep running there).

Delivery: an entry journaled before a crash (the daemon SIGKILLed) is run by the next
worker the supervisor starts. A watermark (``observer-runs.done``: seq and hook index) is
advanced after each hook, so every hook runs exactly once, except the one running when the
worker died, which runs again: at least once. The journal is written without fsync, like
the observer log: it survives the process, not a power cut.
"""

from __future__ import annotations

import asyncio
import fnmatch
import functools
import json
import logging
import math
import os
import shlex
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from .async_db import Journal
from .protocol import HookResult

__all__ = [
    "LEDGER_NAME", "OBSERVER_NICE", "RUNS_NAME", "ObserverHook", "ObserverRuns", "load_ledger", "lost_output_lines", "marks", "refusal",
    "validate_globs",
]

log = logging.getLogger("hookopt.observers")

# Observers run after the answer, while Claude Code goes on: at the lowest CPU priority, so
# its next steps (and the next event's guards) get the processors first.
OBSERVER_NICE: Final = 19
RUNS_NAME: Final = "observer-runs.jsonl"
DONE_NAME: Final = "observer-runs.done"
LEDGER_NAME: Final = "observers.json"
_FIRST_BYTES: Final = 200
_COMPACT_BYTES: Final = 1 << 20  # compact the runs journal once it passes this and all is done
# An observer runs once no event has come for QUIET_S, or when its event is MAX_DEFER_S old:
# a burst of tool calls is answered first, and a busy session still gets its observers soon.
QUIET_S: Final = 0.2
MAX_DEFER_S: Final = 5.0
_PROJECT_PREFIXES: Final = ("$CLAUDE_PROJECT_DIR/", "${CLAUDE_PROJECT_DIR}/")


def validate_globs(globs: Any, where: str) -> list[str]:
    """The observer globs of a settings block or the command line, or ValueError."""
    if not isinstance(globs, list) or not all(isinstance(g, str) and g.strip() for g in globs):
        raise ValueError(f"{where}: observers must be a list of non-empty glob strings")
    return list(globs)


def _candidates(command: str) -> Iterable[str]:
    """The command, each of its words, each word's name, and each word relative to the project."""
    yield command
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    for word in words:
        yield word
        yield os.path.basename(word)
        for prefix in _PROJECT_PREFIXES:
            if word.startswith(prefix):
                yield word[len(prefix):]


def marks(command: str, globs: Sequence[str]) -> bool:
    """Whether a glob marks this command: the whole command, a word of it (a script path) or its file name."""
    return bool(globs) and _marks(command, tuple(globs))


@functools.lru_cache(maxsize=1024)
def _marks(command: str, globs: tuple[str, ...]) -> bool:
    # Asked for every hook an event matches: shlex.split alone costs more than the rest of the selection.
    return any(fnmatch.fnmatchcase(c, g) for c in _candidates(command) for g in globs)


def refusal(event_name: str, hook: Mapping[str, Any]) -> str | None:
    """Why this marked hook must not be an observer, or None."""
    if event_name == "PreToolUse" and hook.get("async") is not True:
        return (
            "a synchronous PreToolUse hook decides whether the tool runs (deny, ask, exit 2, updatedInput); "
            "answering before it ran would drop its decision"
        )
    return None


@dataclass(frozen=True, slots=True)
class ObserverHook:
    """One observer hook of an entry: its command and timeout."""

    command: str
    timeout_s: float


RunHooks = Callable[[Sequence[ObserverHook], bytes, Mapping[str, str], str], Awaitable[list[HookResult]]]


def _read_done(path: Path) -> tuple[int, int]:
    """The watermark: (seq, hooks of that seq done); (0, 0) before the first."""
    try:
        seq, index = path.read_text(encoding="ascii").split()
        return int(seq), int(index)
    except (OSError, ValueError):
        return 0, 0


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def load_ledger(state: Path) -> dict[str, dict[str, Any]]:
    """Per observer command: how often its output was lost, and the last time's exit and first bytes."""
    try:
        data = json.loads((state / LEDGER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def lost_output_lines(ledger: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per observer whose output or exit code could not reach Claude."""
    lines = []
    for command, seen in ledger.items():
        bytes_ = "; ".join(f"{k} {seen.get('last_' + k)!r}" for k in ("stdout", "stderr") if seen.get("last_" + k))
        lines.append(
            f"observer `{command}` ({seen.get('event')}) wrote output or failed {seen.get('lost')} time(s) that Claude "
            f"never saw (observers run after the answer): last exit {seen.get('last_exit')}"
            + (", timed out" if seen.get("last_timed_out") else "")
            + (f"; {bytes_}" if bytes_ else "")
        )
    return lines


class ObserverRuns:
    """The durable queue of observer runs and the one worker that runs them, in order."""

    def __init__(
        self, state: Path, run: RunHooks, *, clock: Callable[[], float] = time.time,
        idle_for: Callable[[], float] = lambda: math.inf,
    ) -> None:
        self._state = state
        self._run = run
        self._clock = clock
        self._idle_for = idle_for  # seconds since the daemon last answered an event
        path = state / RUNS_NAME
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))  # it holds hook environments
        self._journal = Journal(path, fsync=False)
        self._done_path = state / DONE_NAME
        self._done = _read_done(self._done_path)
        self._queue: asyncio.Queue[tuple[int, dict[str, Any]]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._pending = 0
        self.ran = 0
        self.lost = 0
        self.replayed = 0

    # -- the answering side ---------------------------------------------------

    def submit(self, event_name: str, hooks: Sequence[ObserverHook], raw: bytes, env: Mapping[str, str], cwd: str) -> int:
        """Journal one event's observer hooks (raises OSError when it cannot), queue them; return the seq."""
        entry = {
            "event": event_name,
            "hooks": [[h.command, h.timeout_s] for h in hooks],
            "raw": raw.decode("latin-1"),  # lossless: the bytes come back as they were
            "env": dict(env),
            "cwd": cwd,
            "at": self._clock(),
        }
        seq = self._journal.append(entry)
        self._pending += 1
        if self._queue is not None:
            self._queue.put_nowait((seq, entry))
        return seq

    @property
    def busy(self) -> bool:
        """Whether hooks are still to run (the daemon must not idle out before they have)."""
        return self._pending > 0

    def stats(self) -> dict[str, Any]:
        return {"pending": self._pending, "ran": self.ran, "lost_output": self.lost, "replayed": self.replayed}

    # -- the worker -------------------------------------------------------------

    def start(self) -> None:
        """Queue what an earlier worker journaled and did not finish, then run entries as they come."""
        self._queue = asyncio.Queue()
        done_seq, done_hooks = self._done
        for seq, entry in self._journal.entries_after(done_seq - 1):
            if seq == done_seq and done_hooks >= len(entry.get("hooks") or []):
                continue  # finished before the stop
            self._queue.put_nowait((seq, entry))
            self.replayed += 1
        self._pending = self._queue.qsize()
        if self.replayed:
            log.info("replaying %d observer entries journaled before the last worker stopped", self.replayed)
        self._task = asyncio.get_running_loop().create_task(self._work(), name="observers")

    async def _work(self) -> None:
        assert self._queue is not None
        while True:
            seq, entry = await self._queue.get()
            try:
                await self._run_entry(seq, entry)
            except asyncio.CancelledError:
                raise
            except Exception:  # one broken entry must not stop the worker for the ones after it
                log.exception("observer entry %d failed; skipped", seq)
                self._mark(seq, len(entry.get("hooks") or []))
            self._pending -= 1
            if self._pending == 0 and self._journal.size > _COMPACT_BYTES:
                self._journal.compact(seq)

    async def _run_entry(self, seq: int, entry: Mapping[str, Any]) -> None:
        raw = str(entry["raw"]).encode("latin-1")
        env = {str(k): str(v) for k, v in dict(entry.get("env") or {}).items()}
        cwd = str(entry.get("cwd") or self._state)
        hooks = [ObserverHook(str(c), float(t)) for c, t in entry.get("hooks") or []]
        first = self._done[1] if self._done[0] == seq else 0
        for index in range(first, len(hooks)):
            await self._quiet(float(entry.get("at") or 0))
            (result,) = await self._run([hooks[index]], raw, env, cwd)
            self.ran += 1
            if result.exit_code != 0 or result.stdout or result.stderr or result.timed_out:
                self._note_lost(str(entry.get("event")), hooks[index].command, result)
            self._mark(seq, index + 1)

    async def _quiet(self, at: float) -> None:
        """Wait until no event came for QUIET_S, or the event of time at is MAX_DEFER_S old."""
        while (idle := self._idle_for()) < QUIET_S and (age := self._clock() - at) < MAX_DEFER_S:
            await asyncio.sleep(min(QUIET_S - idle, MAX_DEFER_S - age))

    def _mark(self, seq: int, hooks_done: int) -> None:
        self._done = (seq, hooks_done)
        _write_private(self._done_path, f"{seq} {hooks_done}\n".encode("ascii"))

    def _note_lost(self, event_name: str, command: str, result: HookResult) -> None:
        self.lost += 1
        ledger = load_ledger(self._state)
        seen = ledger.get(command, {})
        ledger[command] = {
            "event": event_name,
            "lost": int(seen.get("lost", 0)) + 1,
            "last_exit": result.exit_code,
            "last_timed_out": result.timed_out,
            "last_stdout": result.stdout[:_FIRST_BYTES].decode("utf-8", "replace"),
            "last_stderr": result.stderr[:_FIRST_BYTES].decode("utf-8", "replace"),
            "last_at": self._clock(),
        }
        log.warning("observer %r (%s) exit %s with output Claude will not see", command, event_name, result.exit_code)
        try:
            _write_private(self._state / LEDGER_NAME, json.dumps(ledger, indent=1).encode())
        except OSError as exc:
            log.error("cannot update %s: %s", LEDGER_NAME, exc)

    async def drain(self, timeout_s: float) -> bool:
        """Wait until every queued hook ran, up to timeout_s; return whether all did."""
        deadline = time.monotonic() + timeout_s
        while self._pending and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return not self._pending

    async def close(self) -> None:
        """Stop the worker; what it did not run stays journaled for the next start."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._journal.close()
