"""How the daemon answers a request: admission, then the op's path, then the reply frame.

Every op goes through one admission (``_admit``: activity, the Claude Code session,
the event parsed) and every event that is not a guarded one through one journaling
path (``_journal``) before it is answered: an observer event is never lost. The ops:
``event`` (hookopt's own validators), ``stack`` (a consolidated install's hooks),
``legacy`` (one stubbed script, its own result untouched), ``status`` and ``stop``.
The process around it (lock, listeners, supervisor, idle exit) is daemon.py; the
transports are unix_server.py and http_transport.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from . import wire
from .async_db import ObserverLog
from .hook_integration import GUARDED_EVENTS, Engine, bad_input, not_recorded
from .http_transport import http_endpoint
from .hugepages import HeapPages
from .integrated_optimizer import ConfigError, Settings
from .journal_writer import JournalWriter
from .legacy_runner import LegacyRunner
from .observers import OBSERVER_NICE, ObserverHook, ObserverRuns
from .paths import state_dir
from .performance_monitor import Monitor
from .pipeline import Pipeline, Stage
from .protocol import MAX_EVENT_BYTES, HookResult, ProtocolError, parse_event
from .stack import StackHook, combine_selected, load_stacks

__all__ = ["SECTION_LIMITS", "Dispatcher", "reply", "reply_error"]

log = logging.getLogger("hookopt.daemon")

_RECORD_TIMEOUT_S: Final = 5.0  # journaling an observer event; a stalled disk must not hold the answer longer
SECTION_LIMITS: Final = {"body": MAX_EVENT_BYTES + 1, "env": 1 << 20, "argv": 1 << 20, "project": 4096, "cwd": 4096, "script": 4096}


def _claude_pid(raw: bytes) -> dict[str, str]:
    """Just CLAUDE_PID from a NUL-separated environment."""
    start = raw.find(b"CLAUDE_PID=")
    if start < 0 or (start and raw[start - 1] != 0):
        return {}
    end = raw.find(b"\0", start)
    return {"CLAUDE_PID": raw[start + 11 : end if end >= 0 else len(raw)].decode("ascii", "replace")}


def _file_stamps(paths: Sequence[str]) -> list[tuple[int, int, int] | None]:
    """Identity, size and mtime of each file (None when missing): a cheap test for a change."""
    stamps: list[tuple[int, int, int] | None] = []
    for path in paths:
        try:
            st = os.stat(path)
            stamps.append((st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            stamps.append(None)
    return stamps


def _parse_env(raw: bytes) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep and key:
            env[os.fsdecode(key)] = os.fsdecode(value)
    return env


class Dispatcher:
    """Answer one project's requests: the daemon's state and every op's path."""

    def __init__(
        self, project: Path, settings: Settings, *, clock: Callable[[], float] = time.monotonic, on_malloc: bool = False
    ) -> None:
        self.project = project
        self.settings = settings
        self.clock = clock
        self.started = clock()
        self.last_activity = self.started
        self.monitor = Monitor()
        self.monitor.set_profile(settings.profile.name, "start")
        self.engine = Engine(project, settings, monitor=self.monitor)
        profile = settings.profile
        self.state = state_dir(project)
        self.observers = ObserverLog(
            self.state, batch_size=profile.batch_size, max_wait_s=profile.batch_wait_ms / 1000, fsync=False,
            on_batch=self.monitor.observe_batch,
        )
        self.observers.ingest_spool()
        self.post = self._post_pipeline()
        self.journal = JournalWriter(self.observers)
        self.sessions: set[int] = set()  # Claude Code pids seen; the daemon stays while one lives
        self.events = 0
        self.stop_event = asyncio.Event()
        self.endpoint = http_endpoint(project)
        self.runner = LegacyRunner()
        # Hooks marked as observers: journaled before the answer, run after it (observers.py).
        self.observer_runs = ObserverRuns(self.state, self._run_observers, idle_for=lambda: self.clock() - self.last_activity)
        self.stacks = load_stacks(project)  # every scope's install that applies here (the user scope's too)
        self._watch_stacks()
        self.supervision: dict[str, object] | None = None
        self._env_raw, self._env = b"", _parse_env(b"")  # the last client environment, decoded (never mutated)
        self.heap_pages = HeapPages(on_malloc)  # collapsed on the daemon's ticks as it grows

    async def _analyze(self, ctx: dict[str, Any]) -> dict[str, Any]:
        # On the daemon's own loop: each thread hand-off costs more CPU than the analysis itself.
        return {"result": await self.engine.evaluate_async(ctx["event"])}

    def _post_pipeline(self) -> Pipeline:
        """Built-in analysis of an observer event, after it is journaled (the profile sets its timeout)."""
        return Pipeline([Stage("analyze", self._analyze, timeout_s=self.settings.profile.deadline_ms / 1000)])

    def _admit(self, env: Mapping[str, str]) -> None:
        """Every op's admission: restart the idle clock, count the request, remember its Claude Code session."""
        self.last_activity = self.clock()
        self.events += 1
        self._track_session(env)

    async def _journal(self, event: Mapping[str, Any]) -> bytes:
        """The one journaling path: an event that is not a guarded one is journaled before it is
        answered, so an observer event is never lost. Through the journal writer (at once, or by
        its thread when the journal is busy), so a stalled disk costs its timeout, not the loop.
        Returns the note for the hook's stderr when the event could not be journaled."""
        if event["hook_event_name"] in GUARDED_EVENTS:
            return b""
        try:
            async with asyncio.timeout(_RECORD_TIMEOUT_S):
                await self.journal.record(event)
        except TimeoutError:
            log.error("%s event not journaled within %.0f s (still being written)", event["hook_event_name"], _RECORD_TIMEOUT_S)
            self.monitor.fallback("record_timeout")
            return b""  # still being written: slow, not lost
        except Exception as exc:
            # Not journaled (state directory full or read-only): tell the user, never drop it silently.
            error = f"{type(exc).__name__}: {exc}"
            log.error("%s event not journaled: error %s", event["hook_event_name"], error)
            self.monitor.fallback("record_error")
            return not_recorded(event, f"cannot journal it in {self.state}: {error}")
        return b""

    async def dispatch(self, raw: bytes, env: Mapping[str, str] | None = None) -> HookResult:
        """Evaluate one raw event with hookopt's validators: guards at once; observers journaled first."""
        self._admit(env or {})
        try:
            event = parse_event(raw)
        except ProtocolError as exc:
            return HookResult(*bad_input(raw, exc))
        if event["hook_event_name"] in GUARDED_EVENTS:
            return await self.engine.evaluate_async(event)
        note = await self._journal(event)
        outcome = await self.post.run_async({"event": event}, executor=self.engine.pool)
        (analyze,) = outcome.results
        if not analyze.ok:
            log.error("%s stage %s: %s %s", event["hook_event_name"], analyze.name, analyze.status, analyze.error)
            self.monitor.fallback(f"{analyze.name}_{analyze.status}")
        result = outcome.context.get("result")
        result = result if isinstance(result, HookResult) else HookResult(0)
        return dataclasses.replace(result, stderr=result.stderr + note) if note else result

    def _track_session(self, env: Mapping[str, str]) -> None:
        if (pid := env.get("CLAUDE_PID", "")).isdigit():
            self.sessions.add(int(pid))

    async def answer_frame(self, frame: bytes) -> bytes:
        """The reply to one whole frame (its 4-byte length included) from a thin client."""
        size = int.from_bytes(frame[:4], "big")
        if size > wire.MAX_HEADER_BYTES:
            raise ProtocolError(f"frame header of {size} bytes")
        raw_header = frame[4 : 4 + size]
        if len(frame) < 4 or len(raw_header) < size:
            raise ProtocolError("frame cut short in its header")
        try:
            header = json.loads(raw_header)
        except (ValueError, RecursionError) as exc:
            raise ProtocolError(f"unreadable frame header: {exc}") from None
        if not isinstance(header, dict) or header.get("v") != wire.VERSION:
            raise ProtocolError(f"unsupported frame header {raw_header[:200]!r}")
        sections: dict[str, bytes] = {}
        offset = 4 + size
        for name in wire.SECTIONS:
            length = header.get(name, 0)
            if not isinstance(length, int) or not 0 <= length <= SECTION_LIMITS.get(name, 65536):
                raise ProtocolError(f"frame section {name} of {length!r} bytes")
            sections[name] = frame[offset : offset + length]
            offset += length
        if offset != len(frame):
            raise ProtocolError(f"frame of {len(frame)} bytes, its header says {offset}")
        for name in ("project", "cwd", "script"):
            if b"\0" in sections[name]:  # a path: the OS would refuse it deeper down, with a ValueError
                raise ProtocolError(f"frame section {name} holds a NUL byte")
        project = sections["project"].decode("utf-8", "surrogateescape")
        if project != str(self.project):
            return reply_error(f"this daemon serves {self.project}, not {project}")
        op = header.get("op")
        if log.isEnabledFor(logging.DEBUG):
            log.debug("request op=%s body=%d bytes cwd=%s", op, len(sections["body"]), sections["cwd"].decode("utf-8", "replace"))
        if op == "status":
            return reply(HookResult(0, json.dumps(self.status()).encode()))
        if op == "stop":
            self.stop_event.set()
            return reply(HookResult(0, b"stopping\n"))
        cwd = sections["cwd"].decode("utf-8", "surrogateescape") or str(self.project)
        if op == "event":
            # Built-in validators read no client environment: decoding it all would cost every event.
            return reply(await self.dispatch(sections["body"], _claude_pid(sections["env"])))
        if sections["env"] != self._env_raw:
            # One dict per distinct environment (a session's hooks send the same bytes): the
            # legacy runner derives what it needs from it once, not per hook and event.
            self._env_raw, self._env = sections["env"], _parse_env(sections["env"])
        env = self._env
        if op == "stack":  # argv: the client's scope (project when empty)
            scope = sections["argv"].decode("utf-8", "replace") or "project"
            return reply(await self.dispatch_stack(sections["body"], env, cwd, scope))
        if op == "legacy":
            # A stub's call is activity too (a stubs-only daemon must not idle out under traffic).
            # Not journaled here: a stub is one hook of its event; the observers see the event
            # through hookopt's own clients, or a consolidated stack, exactly once.
            self._admit(env)
            script = sections["script"].decode("utf-8", "surrogateescape")
            argv = [os.fsdecode(a) for a in sections["argv"].split(b"\0")] if sections["argv"] else []
            command = self.legacy_command(script, argv, cwd)
            if command is None:
                return reply_error(f"{script} is not an installed hook of {self.project}")
            # One stubbed hook: its own result, untouched, as if Claude Code had spawned it.
            (result,) = await self.run_legacy([StackHook(command)], sections["body"], env, cwd)
            return reply(result)
        raise ProtocolError(f"unknown op {op!r}")

    def legacy_command(self, script: str, argv: Sequence[str], cwd: str) -> str | None:
        """The command an installed stub stands for: its original interpreter on the script."""
        path = os.path.realpath(os.path.join(cwd, script))
        interpreter = self.stacks.legacy_command(path)
        if interpreter is None:  # installed since the last look?
            self._refresh_stacks()
            interpreter = self.stacks.legacy_command(path)
        return None if interpreter is None else shlex.join([interpreter, script, *argv])

    def run_legacy(self, hooks: Sequence[StackHook], raw: bytes, env: Mapping[str, str], cwd: str) -> asyncio.Future[list[HookResult]]:
        """Start hooks warm in parallel, as Claude Code runs them: their results in the same order.
        Each hook's task is scheduled at once, ahead of anything the caller schedules next."""

        async def one(hook: StackHook) -> HookResult:
            start = time.perf_counter()
            nice = OBSERVER_NICE if hook.observer else 0
            result = await self.runner.run(hook.command, stdin=raw, env=env, cwd=cwd, timeout_s=hook.timeout_s, nice=nice)
            status = "timeout" if result.timed_out else "ok"
            self.monitor.observe_validator(f"hook:{hook.command[-60:]}", time.perf_counter() - start, status)
            return result

        return asyncio.gather(*(one(h) for h in hooks))

    async def _run_observers(self, hooks: Sequence[ObserverHook], raw: bytes, env: Mapping[str, str], cwd: str) -> list[HookResult]:
        return await self.run_legacy([StackHook(h.command, h.timeout_s, observer=True) for h in hooks], raw, env, cwd)

    async def dispatch_stack(self, raw: bytes, env: Mapping[str, str], cwd: str, scope: str = "project") -> HookResult:
        """Answer one event with a scope's installed stack; observers journaled first."""
        self._admit(env)
        try:
            event = parse_event(raw)
        except ProtocolError as exc:
            return HookResult(*bad_input(raw, exc))
        self._refresh_stacks()
        installed = self.stacks.get(scope)
        if installed is None or installed.manifest is None:
            return HookResult(*bad_input(raw, ConfigError(f"hookopt is not installed in the {scope} scope of {self.project}")))
        journaled = event["hook_event_name"] not in GUARDED_EVENTS  # see _journal
        journal: asyncio.Future[bytes] | None = None
        try:
            start = time.perf_counter()
            hooks = self.stacks.select(scope, event)
            if observers := [ObserverHook(h.command, h.timeout_s) for h in hooks if h.observer]:
                try:
                    self.observer_runs.submit(event["hook_event_name"], observers, raw, env, cwd)
                except (OSError, ValueError) as exc:
                    # Not journaled: run them now, as part of the answer, rather than lose them.
                    log.error("observer hooks of a %s event not journaled, run inline: %s", event["hook_event_name"], exc)
                else:
                    hooks = [h for h in hooks if not h.observer]
            running = self.run_legacy(hooks, raw, env, cwd)
            # Journaled while the hooks run, and done before the answer: their tasks were
            # scheduled first, so every run is handed out before the journal is written.
            journal = asyncio.ensure_future(self._journal(event)) if journaled else None
            result = combine_selected(event, hooks, await running)
        finally:
            if journal is None and journaled:  # something above failed: the event is journaled all the same
                journal = asyncio.ensure_future(self._journal(event))
            note = b"" if journal is None else await journal
        self.monitor.observe_event(event["hook_event_name"], "stack", time.perf_counter() - start)
        return dataclasses.replace(result, stderr=result.stderr + note) if note else result

    def status(self) -> dict[str, Any]:
        """A JSON-able summary for `hookopt status`."""
        return {
            "pid": os.getpid(),
            "project": str(self.project),
            "profile": self.settings.profile.name,
            "uptime_s": round(self.clock() - self.started, 3),
            "events": self.events,
            "pool": self.engine.pool.stats(),
            "cache": self.engine.cache.stats(),
            "breakers": self.engine.breakers.states(),
            "observers": self.observers.stats(),
            "observer_hooks": self.observer_runs.stats(),
            "legacy": self.runner.stats(),
            "installed": bool(self.stacks.installed()),
            "scopes": [s.scope.name for s in self.stacks.installed()],
            "http_port": self.endpoint.get("port"),
            "metrics_port": self.endpoint.get("metrics_port"),
            "monitor": self.monitor.snapshot(),
            "supervisor": self.supervision,
            "heap": self.heap_pages.stats(),
        }

    def _refresh_stacks(self) -> None:
        """Reload the installs if a scope's manifest or settings changed: an install of another
        scope (the user scope serves every project's daemon) counts from its first event."""
        stamps = _file_stamps(self._stack_files)
        if stamps != self._stack_stamps:
            try:
                self.stacks = load_stacks(self.project)
            except ValueError as exc:
                log.error("install manifest unreadable, keeping the previous one: %s", exc)
            self._watch_stacks()

    def _watch_stacks(self) -> None:
        """Note the files the installs were read from, and their stamps (checked on every stack event)."""
        self._stack_files = [str(path) for path in self.stacks.watched()]
        self._stack_stamps = _file_stamps(self._stack_files)




def reply(result: HookResult) -> bytes:
    header = b'{"v":%d,"exit":%d,"out":%d,"err":%d}' % (wire.VERSION, result.exit_code or 0, len(result.stdout), len(result.stderr))
    return len(header).to_bytes(4, "big") + header + result.stdout + result.stderr


def reply_error(message: str) -> bytes:
    header = json.dumps({"v": wire.VERSION, "error": message}).encode()
    return len(header).to_bytes(4, "big") + header
