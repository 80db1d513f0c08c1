"""Run several validators at once under one deadline, each isolated from the others."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Final, Literal

__all__ = ["TaskResult", "run_parallel"]

Status = Literal["ok", "error", "timeout", "skipped"]
_SHARED: Final = ThreadPoolExecutor(max_workers=8, thread_name_prefix="hookopt-parallel")


@dataclass(frozen=True, slots=True)
class TaskResult:
    """How one task ended: its value, or the error or timeout that stopped it."""

    name: str
    status: Status
    value: Any = None
    error: str = ""
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def run_parallel(
    tasks: Mapping[str, Callable[[], Any]],
    deadline_s: float,
    executor: Executor | None = None,
) -> dict[str, TaskResult]:
    """Run every task concurrently; return by the deadline with one result per task.

    A task that raises is reported as "error" with its message; one still running at
    the deadline is reported as "timeout" and left to finish on its own thread (Python
    cannot kill a thread), so the caller is never held past the deadline.
    """
    pool = executor or _SHARED
    start = time.perf_counter()
    futures: dict[str, Future[tuple[Any, float]]] = {name: pool.submit(_timed, fn) for name, fn in tasks.items()}
    wait(futures.values(), timeout=max(0.0, deadline_s))
    results: dict[str, TaskResult] = {}
    for name, future in futures.items():
        if not future.done():
            future.cancel()
            results[name] = TaskResult(name, "timeout", error=f"no answer within {deadline_s * 1000:.0f} ms", elapsed_s=time.perf_counter() - start)
        elif (exc := future.exception()) is not None:
            results[name] = TaskResult(name, "error", error=f"{type(exc).__name__}: {exc}", elapsed_s=time.perf_counter() - start)
        else:
            value, elapsed = future.result()
            results[name] = TaskResult(name, "ok", value=value, elapsed_s=elapsed)
    return results
