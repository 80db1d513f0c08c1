"""The daemon's scheduler: run dependent tasks on the worker pool by priority, under one deadline."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from .hook_pool import WorkerPool
from .parallel import TaskResult

__all__ = ["DependencyError", "Orchestrator", "TaskSpec"]


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """One task: fn gets the results of the tasks named in depends_on."""

    name: str
    fn: Callable[[dict[str, TaskResult]], Any]
    priority: int = 0  # lower runs first
    depends_on: tuple[str, ...] = ()
    timeout_s: float | None = None  # counted from when the task starts running, not from queueing


class DependencyError(ValueError):
    """A task graph that cannot run: an unknown or duplicate name, or a cycle; the message names it."""


def _ordered(specs: Sequence[TaskSpec]) -> list[TaskSpec]:
    """Return specs with every task after its dependencies, or raise DependencyError."""
    by_name: dict[str, TaskSpec] = {}
    for spec in specs:
        if spec.name in by_name:
            raise DependencyError(f"duplicate task name {spec.name!r}")
        by_name[spec.name] = spec
    for spec in specs:
        for dep in spec.depends_on:
            if dep not in by_name:
                raise DependencyError(f"task {spec.name!r} depends on unknown task {dep!r}")
    order: list[TaskSpec] = []
    state: dict[str, int] = {}  # 1 while on the DFS path, 2 once placed
    path: list[str] = []

    def visit(name: str) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = path[path.index(name):] + [name]
            raise DependencyError(f"dependency cycle: {' -> '.join(cycle)}")
        state[name] = 1
        path.append(name)
        for dep in by_name[name].depends_on:
            visit(dep)
        path.pop()
        state[name] = 2
        order.append(by_name[name])

    for spec in specs:
        visit(spec.name)
    return order


def _failure(result: TaskResult) -> str:
    return f"dependency {result.name!r} did not succeed ({result.status}{': ' + result.error if result.error else ''})"


class Orchestrator:
    """Run a graph of tasks on a WorkerPool, each as soon as its dependencies succeed."""

    def __init__(self, pool: WorkerPool) -> None:
        self._pool = pool

    async def run(self, specs: Sequence[TaskSpec], deadline_s: float) -> dict[str, TaskResult]:
        """Run every task; return by deadline_s with one result per task, in spec order."""
        order = _ordered(specs)
        if not order:
            return {}
        start = time.perf_counter()
        submitted: dict[str, Future[tuple[Any, float]]] = {}
        tasks: dict[str, asyncio.Task[TaskResult]] = {}
        for spec in order:  # dependencies first, so their tasks exist to be awaited
            deps = {dep: tasks[dep] for dep in spec.depends_on}
            tasks[spec.name] = asyncio.ensure_future(self._run_one(spec, deps, submitted))
        _, late = await asyncio.wait(tasks.values(), timeout=max(0.0, deadline_s))
        for task in late:
            task.cancel()  # _run_one then cancels its pool future: queued work need not run any more
        if late:
            await asyncio.wait(late)  # cancelled tasks only unwind: no waiting on the pool

        results: dict[str, TaskResult] = {}
        for spec in order:
            task = tasks[spec.name]
            if not task.cancelled():
                results[spec.name] = task.result()
            elif spec.name in submitted:
                results[spec.name] = TaskResult(spec.name, "timeout", error=f"no answer within the {deadline_s * 1000:.0f} ms deadline", elapsed_s=time.perf_counter() - start)
            elif (blocker := next((results[d] for d in spec.depends_on if not results[d].ok), None)) is not None:
                # Still waiting for a dependency, which is reported before us (timeout or skipped).
                results[spec.name] = TaskResult(spec.name, "skipped", error=_failure(blocker))
            else:  # its dependencies finished just as the deadline fell
                results[spec.name] = TaskResult(spec.name, "timeout", error=f"the {deadline_s * 1000:.0f} ms deadline passed before it started")
        return {spec.name: results[spec.name] for spec in specs}

    async def _run_one(
        self,
        spec: TaskSpec,
        deps: Mapping[str, asyncio.Task[TaskResult]],
        submitted: dict[str, Future[tuple[Any, float]]],
    ) -> TaskResult:
        inputs = {name: await task for name, task in deps.items()}
        for result in inputs.values():
            if not result.ok:
                return TaskResult(spec.name, "skipped", error=_failure(result))
        loop = asyncio.get_running_loop()
        started = asyncio.Event()

        def call() -> tuple[Any, float]:
            try:
                loop.call_soon_threadsafe(started.set)
            except RuntimeError:  # the loop has closed: run() is long over, nobody is listening
                pass
            begin = time.perf_counter()
            return spec.fn(inputs), time.perf_counter() - begin

        # Submitted to the pool directly: loop.run_in_executor knows nothing of priorities.
        try:
            future = self._pool.submit(call, priority=spec.priority)
        except RuntimeError as exc:  # the pool has been shut down
            return TaskResult(spec.name, "error", error=f"{type(exc).__name__}: {exc}")
        submitted[spec.name] = future
        outcome = asyncio.wrap_future(future)
        try:
            return await self._await(spec, outcome, started)
        finally:
            if not outcome.done():
                outcome.cancel()  # also cancels the pool future if it has not started

    @staticmethod
    async def _await(
        spec: TaskSpec,
        outcome: asyncio.Future[tuple[Any, float]],
        started: asyncio.Event,
    ) -> TaskResult:
        if spec.timeout_s is not None:
            # The task's own clock starts when a worker picks it up, not while it queues.
            waiter: asyncio.Future[Any] = asyncio.ensure_future(started.wait())
            try:
                await asyncio.wait({waiter, outcome}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
            begin = time.perf_counter()
            # asyncio.wait, not wait_for: a TimeoutError raised by fn must stay an error.
            await asyncio.wait({outcome}, timeout=spec.timeout_s)
            if not outcome.done():
                return TaskResult(spec.name, "timeout", error=f"no answer within {spec.timeout_s * 1000:.0f} ms", elapsed_s=time.perf_counter() - begin)
        else:
            await asyncio.wait({outcome})
        if outcome.cancelled():
            return TaskResult(spec.name, "error", error="cancelled before it ran (pool shut down)")
        if (exc := outcome.exception()) is not None:
            return TaskResult(spec.name, "error", error=f"{type(exc).__name__}: {exc}")
        value, elapsed = outcome.result()
        return TaskResult(spec.name, "ok", value=value, elapsed_s=elapsed)
