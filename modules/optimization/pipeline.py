"""Composable analysis stages, each under its own timeout (used for PostToolUse)."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from concurrent.futures import Executor, wait
from dataclasses import dataclass
from typing import Any, cast

from .hook_pool import WorkerPool
from .parallel import TaskResult

__all__ = ["Pipeline", "PipelineResult", "Stage"]

_default: WorkerPool | None = None
_default_lock = threading.Lock()


def _default_executor() -> WorkerPool:
    # Made on first use: importing this module must not start threads.
    global _default
    with _default_lock:
        if _default is None:
            _default = WorkerPool(min_workers=0, max_workers=8, name="hookopt-pipeline")
        return _default


@dataclass(frozen=True, slots=True)
class Stage:
    """One step: fn reads a copy of the context and returns updates to merge, or None.

    fn may be a coroutine function; run_async awaits it on the loop instead of a thread.
    """

    name: str
    fn: Callable[[dict[str, Any]], dict[str, Any] | None] | Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]
    timeout_s: float = 1.0
    required: bool = False  # if it fails or times out, the pipeline stops


@dataclass(frozen=True, slots=True)
class PipelineResult:
    """The final context, one result per stage in order, and whether a required stage stopped the run."""

    context: dict[str, Any]
    results: tuple[TaskResult, ...]
    aborted: bool


class Pipeline:
    """Run stages one after another, each on an executor thread so that it can be timed out."""

    def __init__(self, stages: Sequence[Stage], executor: Executor | None = None) -> None:
        self._stages = tuple(stages)
        self._executor = executor

    @property
    def stages(self) -> tuple[Stage, ...]:
        return self._stages

    def then(self, stage: Stage) -> Pipeline:
        """Return a new pipeline with stage appended."""
        return Pipeline(self._stages + (stage,), self._executor)

    def __add__(self, other: Pipeline) -> Pipeline:
        """Return a new pipeline running our stages, then other's (on our executor if we have one)."""
        return Pipeline(self._stages + other._stages, self._executor or other._executor)

    def run(self, context: Mapping[str, Any]) -> PipelineResult:
        """Run every stage in order over a copy of context; never wait on a stage past its timeout."""
        executor = self._executor or _default_executor()
        steps = self._steps(context)
        try:
            stage, ctx = next(steps)
            while True:
                stage, ctx = steps.send(self._run_stage(executor, stage, ctx))
        except StopIteration as done:
            return cast(PipelineResult, done.value)

    async def run_async(self, context: Mapping[str, Any], executor: Executor | None = None) -> PipelineResult:
        """The same from an event loop: coroutine stages run on the loop, the others on executor."""
        pool = executor or self._executor or _default_executor()
        steps = self._steps(context)
        try:
            stage, ctx = next(steps)
            while True:
                stage, ctx = steps.send(await self._run_stage_async(pool, stage, ctx))
        except StopIteration as done:
            return cast(PipelineResult, done.value)

    def _steps(self, context: Mapping[str, Any]) -> Generator[tuple[Stage, dict[str, Any]], TaskResult, PipelineResult]:
        """The fold over the stages, shared by run and run_async: yields each stage to run, gets its result."""
        ctx = dict(context)
        results: list[TaskResult] = []
        abort_reason = ""
        for stage in self._stages:
            if abort_reason:
                results.append(TaskResult(stage.name, "skipped", error=abort_reason))
                continue
            abort_reason = self._merge(stage, (yield stage, ctx), ctx, results)
        return PipelineResult(ctx, tuple(results), aborted=bool(abort_reason))

    @staticmethod
    def _merge(stage: Stage, result: TaskResult, ctx: dict[str, Any], results: list[TaskResult]) -> str:
        """Record a stage's result, merge its updates; the abort reason if a required stage failed."""
        results.append(result)
        if result.ok:
            ctx.update(result.value or {})
            return ""
        return f"required stage {stage.name!r} did not succeed ({result.status}: {result.error})" if stage.required else ""

    @staticmethod
    async def _run_stage_async(executor: Executor, stage: Stage, ctx: dict[str, Any]) -> TaskResult:
        start = time.perf_counter()
        if inspect.iscoroutinefunction(stage.fn):
            step = cast(Awaitable[object], stage.fn(dict(ctx)))
        else:
            step = asyncio.get_running_loop().run_in_executor(executor, stage.fn, dict(ctx))
        # asyncio.timeout cancels this very task: no extra task or waiter per stage.
        timeout = asyncio.timeout(stage.timeout_s)
        try:
            async with timeout:
                updates = await step
        except Exception as exc:
            elapsed = time.perf_counter() - start
            if isinstance(exc, TimeoutError) and timeout.expired():  # a stage's own TimeoutError is an error
                return TaskResult(stage.name, "timeout", error=f"no answer within {stage.timeout_s * 1000:.0f} ms", elapsed_s=elapsed)
            return TaskResult(stage.name, "error", error=f"{type(exc).__name__}: {exc}", elapsed_s=elapsed)
        return _checked(stage, updates, time.perf_counter() - start)

    @staticmethod
    def _run_stage(executor: Executor, stage: Stage, ctx: dict[str, Any]) -> TaskResult:
        start = time.perf_counter()
        # A copy each: the stage cannot change our context, and one that outlives its
        # timeout writes only into its own copy, so its late result never leaks.
        future = executor.submit(stage.fn, dict(ctx))
        done, _ = wait([future], timeout=stage.timeout_s)
        elapsed = time.perf_counter() - start
        if not done:
            future.cancel()
            return TaskResult(stage.name, "timeout", error=f"no answer within {stage.timeout_s * 1000:.0f} ms", elapsed_s=elapsed)
        if (exc := future.exception()) is not None:
            return TaskResult(stage.name, "error", error=f"{type(exc).__name__}: {exc}", elapsed_s=elapsed)
        return _checked(stage, future.result(), elapsed)


def _checked(stage: Stage, updates: object, elapsed: float) -> TaskResult:
    """A stage's result, if it returned what a stage must (user code: check what it really did)."""
    if updates is not None and not isinstance(updates, Mapping):
        return TaskResult(stage.name, "error", error=f"returned {type(updates).__name__}, expected a dict or None", elapsed_s=elapsed)
    return TaskResult(stage.name, "ok", value=updates, elapsed_s=elapsed)
