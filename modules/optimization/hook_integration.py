"""Glue: the engine that evaluates one event, the hook entry point, and a decorator
for users' own validators.

The same Engine runs inside the daemon and in the thin client's in-process
fallback, so an event gets the same outcome either way.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from .async_db import SPOOL_NAME, spool_event
from .async_orchestrator import Orchestrator, TaskSpec
from .cache import ValidatorCache, make_key
from .circuit_breaker import BreakerBoard, Guarded
from .hook_pool import WorkerPool
from .integrated_optimizer import ConfigError, Settings, load_settings
from .parallel import TaskResult
from .paths import project_dir, state_dir
from .performance_monitor import Monitor
from .protocol import (
    BLOCK_EXIT,
    JSON_BLOCK_EVENTS,
    MAX_EVENT_BYTES,
    TOOL_EVENTS,
    HookResult,
    ProtocolError,
    block_result,
    combine,
    context_result,
    interpret,
    matcher_matches,
    matcher_subject,
    parse_event,
    pre_tool_use_result,
)
from .stack import load_stacks, run_selected
from .subprocess_coordinator import ProcessCoordinator
from .validators.base import PASS, Validator, Verdict, collect_validators, validator
from .validators.post_tool_use import builtin_post
from .validators.pre_tool_use import BUILTIN_PRE
from .validators.session_start import builtin_session

__all__ = [
    "GUARDED_EVENTS",
    "run_stack_spawned",
    "Engine",
    "bad_input",
    "evaluate_bytes",
    "not_recorded",
    "collect_validators",
    "run_hook",
    "validator",
]

# Events that decide whether a tool runs; every other event is also recorded by the observers.
GUARDED_EVENTS = frozenset({"PreToolUse", "PermissionRequest"})

log = logging.getLogger("hookopt.engine")
_MATCHING_CACHE_SIZE = 1024


def load_validator_file(path: Path) -> tuple[Validator, ...]:
    """Run a project's validator module and collect what it marked with @validator."""
    if not path.is_file():
        raise ConfigError(f"{path}: validator file not found")
    spec = importlib.util.spec_from_file_location(f"hookopt_user_{abs(hash(str(path)))}", path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path}: cannot load as a Python module")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise ConfigError(f"{path}: {type(exc).__name__}: {exc}") from None
    return collect_validators(module)


def _verdict_result(event_name: str, verdict: Verdict) -> HookResult:
    """Render one validator's verdict as the hook output Claude Code reads."""
    if event_name == "PreToolUse" and verdict.decision:
        return pre_tool_use_result(verdict.decision, verdict.reason, verdict.context)
    if verdict.decision == "deny":
        if event_name in JSON_BLOCK_EVENTS:
            return block_result(verdict.reason)
        return HookResult(BLOCK_EXIT, b"", verdict.reason.encode())
    return context_result(event_name, verdict.context)


def _outcome_label(event_name: str, result: HookResult) -> str:
    if result.exit_code == 0 and not result.stdout and not result.stderr:
        return "pass"  # what interpret() makes of it, without the work
    outcome = interpret(event_name, result)
    if outcome.blocks:
        return "deny"
    if outcome.error:
        return "error"
    return outcome.decision or ("context" if outcome.additional_context else "pass")


class Engine:
    """Evaluate hook events: match validators, consult the cache, run the misses in
    parallel under one deadline and their circuit breakers, combine the verdicts."""

    def __init__(
        self,
        project: Path,
        settings: Settings | None = None,
        *,
        validators: Sequence[Validator] | None = None,
        extra_validators: Iterable[Validator] = (),
        monitor: Monitor | None = None,
        persist: bool = True,
    ) -> None:
        self.project = project
        self.settings = settings or load_settings(project)
        profile = self.settings.profile
        self.validators: tuple[Validator, ...] = (
            tuple(validators)
            if validators is not None
            else BUILTIN_PRE
            + builtin_post()
            + builtin_session(self.status_line)
            + tuple(extra_validators)
            + tuple(v for path in self.settings.validator_files for v in load_validator_file(path))
        )
        self.monitor = monitor
        # No cache file for a project directory that is gone: its state directory would resurrect it.
        cache_path = state_dir(project) / "cache.json" if persist and project.is_dir() else None
        self.cache = ValidatorCache(profile.cache_size, profile.cache_ttl_s, path=cache_path)
        self.breakers = BreakerBoard(
            profile.breaker_fail_max,
            profile.breaker_reset_s,
            on_state_change=monitor.breaker_changed if monitor else None,
        )
        self.pool = WorkerPool.from_profile(profile)
        self._processes: ProcessCoordinator | None = None  # started by the first isolated validator
        self._processes_lock = threading.Lock()
        self.orchestrator = Orchestrator(self.pool)
        # matching() by (event name, matcher subject): the validators are fixed for the
        # engine's life, and matching them costs a regex split per validator per event.
        self._matching: dict[tuple[str, str | None], list[Validator]] = {}

    def status_line(self) -> str:
        """One line on the optimizer's state, for the session's opening context."""
        stats = self.cache.stats()
        return (
            f"hookopt: profile {self.settings.profile.name}, {len(self.validators)} validators, "
            f"validator cache {stats['size']} entries ({stats['hit_rate']:.0%} hit rate)"
        )

    def matching(self, event: Mapping[str, Any]) -> list[Validator]:
        """The validators that apply to this event."""
        name, subject = event["hook_event_name"], matcher_subject(event)
        found = self._matching.get((name, subject))
        if found is None:
            found = [v for v in self.validators if name in v.events and matcher_matches(v.matcher, subject)]
            if len(self._matching) >= _MATCHING_CACHE_SIZE:
                self._matching.clear()  # subjects come from events (tool names): keep it bounded
            self._matching[(name, subject)] = found
        return list(found)

    def _cache_key(self, v: Validator, event: Mapping[str, Any]) -> str | None:
        if not v.cacheable or event["hook_event_name"] not in TOOL_EVENTS:
            return None
        cwd = event.get("cwd")
        return make_key(v.name, event["tool_name"], event.get("tool_input") or {}, cwd if isinstance(cwd, str) else None)

    def _failed(self, v: Validator, why: str) -> Verdict:
        """What a validator's policy makes of it not answering."""
        if v.policy == "fail_closed":
            return Verdict("deny", f"hookopt guard {v.name!r} could not check this call ({why}); denied to stay safe")
        return PASS

    def _settle(self, v: Validator, result: TaskResult | None) -> Verdict:
        if result is None or result.status in ("timeout", "skipped"):
            why = result.error if result else "not run"
            if result is not None and result.status == "timeout":
                self.breakers.record_failure(v.name, TimeoutError(why))
            return self._failed(v, why)
        if result.status == "error":
            return self._failed(v, result.error)
        guarded: Guarded = result.value
        if guarded.denied:
            return Verdict("deny", guarded.reason)
        if guarded.skipped or not isinstance(guarded.value, Verdict):
            return PASS
        return guarded.value

    def _guarded_task(self, v: Validator, event: Mapping[str, Any]) -> Callable[[dict[str, TaskResult]], Guarded]:
        check = functools.partial(self._run_isolated, v, event) if v.isolated else functools.partial(v.fn, event)
        return lambda _deps: self.breakers.guarded(v.name, v.policy, check)

    def _run_isolated(self, v: Validator, event: Mapping[str, Any]) -> Verdict:
        """Run a validator in a limited worker process; a large event crosses in shared memory."""
        with self._processes_lock:
            if self._processes is None:
                profile = self.settings.profile
                self._processes = ProcessCoordinator(
                    profile.process_workers,
                    memory_limit_mb=profile.worker_memory_mb,
                    cpu_limit_s=profile.worker_cpu_s,
                    shm_threshold=profile.shm_threshold_bytes,
                )
            processes = self._processes
        future = processes.submit(functools.partial(_call_isolated, v.fn), json.dumps(event).encode())
        verdict = future.result(timeout=self.settings.profile.deadline_ms / 1000)
        if not isinstance(verdict, Verdict):
            raise TypeError(f"validator {v.name!r} returned {type(verdict).__name__}, not a Verdict")
        return verdict

    async def evaluate_async(self, event: Mapping[str, Any]) -> HookResult:
        """Evaluate one parsed event and return the combined hook result."""
        start = time.perf_counter()
        name = event["hook_event_name"]
        verdicts: dict[str, Verdict] = {}
        keys: dict[str, str] = {}
        misses: list[Validator] = []
        for v in self.matching(event):
            key = self._cache_key(v, event)
            cached = self.cache.get(key) if key else None
            if cached is not None:
                verdicts[v.name] = Verdict.from_json(cached)
            else:
                misses.append(v)
                if key:
                    keys[v.name] = key
            if key and self.monitor:
                (self.monitor.cache_hit if cached is not None else self.monitor.cache_miss)()
        # Inline checks run here, on the loop (nothing depends on them, they depend on nothing).
        needed = {d for v in misses for d in v.depends_on}
        inline = [v for v in misses if v.inline and not v.isolated and not v.depends_on and v.name not in needed]
        if inline:
            misses = [v for v in misses if v not in inline]
            for v in inline:
                begin = time.perf_counter()
                guarded = self.breakers.guarded(v.name, v.policy, functools.partial(v.fn, event))
                verdicts[v.name] = self._settle(v, TaskResult(v.name, "ok", value=guarded))
                if self.monitor:
                    self.monitor.observe_validator(v.name, time.perf_counter() - begin, "ok")
                if v.name in keys and not guarded.denied and not guarded.skipped:
                    self.cache.put(keys[v.name], verdicts[v.name].to_json())
        if misses:
            names = {v.name for v in misses}
            specs = [
                TaskSpec(
                    v.name,
                    self._guarded_task(v, event),
                    priority=v.priority,
                    # a dependency answered from the cache has already finished
                    depends_on=tuple(d for d in v.depends_on if d in names),
                )
                for v in misses
            ]
            results = await self.orchestrator.run(specs, self.settings.profile.deadline_ms / 1000)
            for v in misses:
                task = results.get(v.name)
                verdicts[v.name] = self._settle(v, task)
                if self.monitor and task is not None:
                    self.monitor.observe_validator(v.name, task.elapsed_s, task.status)
                clean = task is not None and task.ok and not task.value.denied and not task.value.skipped
                if clean and v.name in keys:
                    self.cache.put(keys[v.name], verdicts[v.name].to_json())
        combined = combine(name, [_verdict_result(name, verdicts[n]) for n in sorted(verdicts)])
        if self.monitor:
            self.monitor.observe_event(name, _outcome_label(name, combined), time.perf_counter() - start)
        return combined

    def evaluate(self, event: Mapping[str, Any]) -> HookResult:
        """Evaluate one parsed event outside an event loop."""
        return asyncio.run(self.evaluate_async(event))

    def close(self) -> None:
        """Persist the cache and stop the worker pool."""
        try:
            self.cache.save()
        except OSError as exc:
            # A read-only or full state directory: the cache is only an optimisation, and
            # raising here would turn an answered event (a guard's deny) into a crash.
            log.warning("hookopt: validator cache not saved: %s", exc)
        finally:
            self.pool.shutdown(wait=False, cancel_futures=True)
            if self._processes is not None:
                self._processes.close()


def _call_isolated(fn: Callable[[Mapping[str, Any]], Verdict], payload: bytes) -> Verdict:
    """In the worker process: decode the event and run the check."""
    return fn(json.loads(payload))


def bad_input(raw: bytes, error: Exception) -> tuple[int, bytes, bytes]:
    """The answer to an event that cannot be evaluated.

    It blocks only what may be a PreToolUse call (guards fail closed); anything else is
    a non-blocking error, so a broken observer never stops the session.
    """
    code = BLOCK_EXIT if b"PreToolUse" in raw[:65536] else 1
    return code, b"", f"hookopt: cannot evaluate this event: {error}\n".encode()


def evaluate_bytes(raw: bytes, project: str, env: Mapping[str, str] | None = None) -> tuple[int, bytes, bytes]:
    """Evaluate one raw event in-process (the thin client's fallback); spool it for the observers."""
    try:
        event = parse_event(raw)
        root = Path(project)
        engine = Engine(root, load_settings(root, os.environ if env is None else env))
    except (ProtocolError, ConfigError, OSError) as exc:
        return bad_input(raw, exc)
    try:
        result = engine.evaluate(event)
    finally:
        engine.close()
    return result.exit_code or 0, result.stdout, result.stderr + _spool(root, event)


def not_recorded(event: Mapping[str, Any], error: object) -> bytes:
    """The stderr line saying an observer event could not be kept (disk full, read-only...)."""
    return f"hookopt: {event.get('hook_event_name')} event not recorded for the observers: {error}\n".encode()


def _spool(root: Path, event: Mapping[str, Any]) -> bytes:
    """Spool an observer event for the daemon; b"" if kept, else the message saying why not."""
    if event["hook_event_name"] in GUARDED_EVENTS:
        return b""
    if not root.is_dir():  # renamed or removed: creating its state directory would resurrect a skeleton
        return not_recorded(event, f"project directory {root} does not exist (renamed or removed?)")
    try:
        spool_event(state_dir(root), event)
    except OSError as exc:
        return not_recorded(event, f"cannot append it to {state_dir(root, create=False) / SPOOL_NAME}: {exc.strerror or exc}")
    return b""


def run_stack_spawned(raw: bytes, project: str, cwd: str, scope: str = "project") -> tuple[int, bytes, bytes]:
    """Run a scope's installed hook stack for one raw event, each hook spawned (the fallback)."""
    try:
        event = parse_event(raw)
        stacks = load_stacks(Path(project))
        installed = stacks.get(scope)
        if installed is None or installed.manifest is None:
            raise ConfigError(f"hookopt is not installed in the {scope} scope of {project}; run `hookopt install --scope {scope}`")
    except (ProtocolError, ValueError) as exc:
        return bad_input(raw, exc)
    result = run_selected(stacks.select(scope, event), event, raw, os.environ, cwd)
    return result.exit_code or 0, result.stdout, result.stderr + _spool(Path(project), event)


def run_hook(
    stdin: BinaryIO | None = None,
    stdout: BinaryIO | None = None,
    stderr: BinaryIO | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """Read one event, evaluate it in-process, write the result; return the exit code."""
    raw = (stdin or sys.stdin.buffer).read(MAX_EVENT_BYTES + 1)
    env = os.environ if env is None else env
    try:
        project = str(project_dir(parse_event(raw), env))
    except ProtocolError as exc:
        code, out, err = bad_input(raw, exc)
    else:
        code, out, err = evaluate_bytes(raw, project, env)
    (stdout or sys.stdout.buffer).write(out)
    (stderr or sys.stderr.buffer).write(err)
    return code
