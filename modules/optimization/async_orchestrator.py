"""The daemon's scheduler: run dependent tasks on the worker pool by priority, under one deadline."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Final

from .hook_pool import WorkerPool
from .parallel import TaskResult

__all__ = ["DependencyError", "Orchestrator", "TaskSpec"]

_HEDGE_S: Final = 0.01  # see _Run


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
        run = _Run(self._pool, order, asyncio.get_running_loop(), deadline_s)
        await run.wait()
        return {spec.name: run.results[spec.name] for spec in specs}


class _Run:
    """One Orchestrator.run: its bookkeeping happens on the worker threads, under one lock.

    Each thread hand-off costs the daemon more CPU than a built-in validator, so tasks
    free to start at once share one pool submission per priority (the pool still orders
    them among other events' work), and the loop is woken once, when the last result is
    in, not once per task. A task that hangs would hold up the tasks behind it in its
    submission: if one is still running _HEDGE_S (or a quarter of the deadline, if
    shorter) after the batch was queued, or later, each task of the batch not yet started
    is submitted on its own as well, and whichever submission reaches it first runs it.
    So a hung task delays its batch-mates by a few milliseconds, and decides nothing for
    them: each still gets the whole deadline and its own result.
    """

    def __init__(self, pool: WorkerPool, order: list[TaskSpec], loop: asyncio.AbstractEventLoop, deadline_s: float) -> None:
        self.pool = pool
        self.order = order
        self.loop = loop
        self.deadline_s = deadline_s
        self.start = time.perf_counter()
        self.lock = threading.Lock()
        self.results: dict[str, TaskResult] = {}
        self.claimed: set[str] = set()  # started (or settled) by some submission
        self.submitted: set[str] = set()
        self.futures: list[Future[None]] = []
        self.timers: list[asyncio.TimerHandle] = []
        self.closed = False  # every result is in, or the deadline fell: later outcomes are dropped
        self.done = loop.create_future()
        self.waiting = {spec.name: len(spec.depends_on) for spec in order}
        self.dependants: dict[str, list[TaskSpec]] = {}
        for spec in order:
            for dep in spec.depends_on:
                self.dependants.setdefault(dep, []).append(spec)

    async def wait(self) -> None:
        batches: dict[int, list[TaskSpec]] = {}
        for spec in self.order:
            if spec.depends_on:
                continue
            if spec.timeout_s is None:
                batches.setdefault(spec.priority, []).append(spec)
            else:  # its timer starts when a worker picks it up: alone, so no batch-mate delays that
                self._submit([spec], spec.priority)
        for priority, batch in batches.items():
            self._submit(batch, priority)
        for batch in batches.values():
            if len(batch) > 1:
                self._hedge(batch)
        self.timers.append(self.loop.call_later(max(0.0, self.deadline_s), self._wake))
        try:
            await self.done
        finally:
            self._close()

    def _close(self) -> None:
        """Freeze the results; what is still missing timed out or was skipped."""
        with self.lock:
            self.closed = True
            futures, timers, submitted = self.futures, self.timers, set(self.submitted)
        for future in futures:
            future.cancel()  # queued work need not run any more
        for timer in timers:
            timer.cancel()
        results = self.results
        for spec in self.order:  # dependencies first, so a blocker's result is known
            if spec.name in results:
                continue
            if spec.name in submitted:
                why = f"no answer within the {self.deadline_s * 1000:.0f} ms deadline"
                results[spec.name] = TaskResult(spec.name, "timeout", error=why, elapsed_s=time.perf_counter() - self.start)
            elif (blocker := next((results[d] for d in spec.depends_on if not results[d].ok), None)) is not None:
                # Still waiting for a dependency, which is reported before us (timeout or skipped).
                results[spec.name] = TaskResult(spec.name, "skipped", error=_failure(blocker))
            else:  # its dependencies finished just as the deadline fell
                results[spec.name] = TaskResult(spec.name, "timeout", error=f"the {self.deadline_s * 1000:.0f} ms deadline passed before it started")

    def _wake(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def _submit(self, specs: list[TaskSpec], priority: int) -> None:
        # Submitted to the pool directly: loop.run_in_executor knows nothing of priorities.
        try:
            future = self.pool.submit(self._job, specs, priority=priority)
        except RuntimeError as exc:  # the pool has been shut down
            for spec in specs:
                self._finish(TaskResult(spec.name, "error", error=f"{type(exc).__name__}: {exc}"), claim=True)
            return
        with self.lock:
            self.submitted.update(spec.name for spec in specs)
            self.futures.append(future)
            late = self.closed
        if late:
            future.cancel()
        else:
            future.add_done_callback(lambda f: self._dropped(f, specs))

    def _dropped(self, future: Future[None], specs: list[TaskSpec]) -> None:
        if future.cancelled():  # by a pool shutdown (ours come after closing, and are ignored)
            for spec in specs:
                self._finish(TaskResult(spec.name, "error", error="cancelled before it ran (pool shut down)"), claim=True)

    def _hedge(self, batch: list[TaskSpec]) -> None:
        timer = self.loop.call_later(min(_HEDGE_S, self.deadline_s / 4), self._spill, batch)
        with self.lock:
            self.timers.append(timer)

    def _spill(self, batch: list[TaskSpec]) -> None:
        """On the loop: submit on its own each task of batch held up behind one still running."""
        with self.lock:
            if self.closed:
                return
            waiting = [spec for spec in batch if spec.name not in self.claimed]
            running = any(spec.name in self.claimed and spec.name not in self.results for spec in batch)
        if waiting and not running:
            # Still queued (a busy pool), or between two tasks: submitting more would only
            # lengthen the queue. Look again later.
            self._hedge(batch)
            return
        for spec in waiting:
            self._submit([spec], spec.priority)

    def _job(self, specs: list[TaskSpec]) -> None:
        """On a worker: run each task of one submission that no other submission has started."""
        for spec in specs:
            with self.lock:
                if self.closed or spec.name in self.claimed:
                    continue
                self.claimed.add(spec.name)
                inputs = {dep: self.results[dep] for dep in spec.depends_on}
            if spec.timeout_s is not None:
                self._call_soon(self._arm, spec)
            begin = time.perf_counter()
            try:
                value = spec.fn(inputs)
            except BaseException as exc:  # as a future would report it
                self._finish(TaskResult(spec.name, "error", error=f"{type(exc).__name__}: {exc}"))
            else:
                self._finish(TaskResult(spec.name, "ok", value=value, elapsed_s=time.perf_counter() - begin))

    def _arm(self, spec: TaskSpec) -> None:
        """On the loop: start spec's own clock, now that a worker has picked it up."""
        assert spec.timeout_s is not None
        begin = time.perf_counter()
        timeout_s = spec.timeout_s

        def expire() -> None:
            error = f"no answer within {timeout_s * 1000:.0f} ms"
            self._finish(TaskResult(spec.name, "timeout", error=error, elapsed_s=time.perf_counter() - begin))

        timer = self.loop.call_later(timeout_s, expire)
        with self.lock:
            self.timers.append(timer)

    def _finish(self, result: TaskResult, *, claim: bool = False) -> None:
        """Record one result (unless one is in already), settle its dependants, wake the loop when all are in."""
        ready: list[TaskSpec] = []
        with self.lock:
            if self.closed or result.name in self.results or (claim and result.name in self.claimed):
                return
            self.claimed.add(result.name)
            pending = [result]
            while pending:
                settled = pending.pop()
                self.results[settled.name] = settled
                for spec in self.dependants.get(settled.name, ()):
                    self.waiting[spec.name] -= 1
                    if self.waiting[spec.name]:
                        continue
                    blocker = next((self.results[d] for d in spec.depends_on if not self.results[d].ok), None)
                    if blocker is None:
                        ready.append(spec)
                    else:
                        self.claimed.add(spec.name)
                        pending.append(TaskResult(spec.name, "skipped", error=_failure(blocker)))
            finished = len(self.results) == len(self.order)
            if finished:
                self.closed = True
        for spec in ready:
            self._submit([spec], spec.priority)
        if finished:
            self._call_soon(self._wake)

    def _call_soon(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop has closed: run() is long over, nobody is listening
            pass
