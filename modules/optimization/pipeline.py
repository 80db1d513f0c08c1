"""Composable analysis stages, each under its own timeout (used for PostToolUse)."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from concurrent.futures import Executor, wait
from dataclasses import dataclass
from typing import Any, Callable, Sequence

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
    """One step: fn reads a copy of the context and returns updates to merge, or None."""

    name: str
    fn: Callable[[dict[str, Any]], dict[str, Any] | None]
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
        ctx = dict(context)
        results: list[TaskResult] = []
        abort_reason = ""
        for stage in self._stages:
            if abort_reason:
                results.append(TaskResult(stage.name, "skipped", error=abort_reason))
                continue
            result = self._run_stage(executor, stage, ctx)
            results.append(result)
            if result.ok:
                ctx.update(result.value or {})
            elif stage.required:
                abort_reason = f"required stage {stage.name!r} did not succeed ({result.status}: {result.error})"
        return PipelineResult(ctx, tuple(results), aborted=bool(abort_reason))

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
        updates: object = future.result()  # user code: check what it really returned
        if updates is not None and not isinstance(updates, Mapping):
            return TaskResult(stage.name, "error", error=f"returned {type(updates).__name__}, expected a dict or None", elapsed_s=elapsed)
        return TaskResult(stage.name, "ok", value=updates, elapsed_s=elapsed)
