"""Pre-warmed pools: a priority-aware thread pool for the daemon's built-in validators.

Legacy hooks (users' own scripts) run elsewhere: legacy_runner.py (LegacyRunner),
forkserver_client.py and forkserver.py (the warm fork server), sh_plan.py (what sh
would run), spawn.py (spawning as Claude Code does).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar

if TYPE_CHECKING:
    from .integrated_optimizer import Profile

__all__ = ["GUARD", "OBSERVER", "WorkerPool"]

GUARD: Final = 0  # lower runs first: blocking guards go ahead of observers
OBSERVER: Final = 10

_T = TypeVar("_T")
_Outcome = Literal["completed", "failed", "cancelled"]


class _WorkItem:
    __slots__ = ("future", "fn", "args", "kwargs")

    def __init__(self, future: Future[Any], fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.future = future
        self.fn = fn
        self.args = args
        self.kwargs = kwargs

    def call(self) -> tuple[_Outcome, Any]:
        """Run the call unless it was cancelled while queued; return how it went and its result or exception."""
        if not self.future.set_running_or_notify_cancel():
            return "cancelled", None
        try:
            return "completed", self.fn(*self.args, **self.kwargs)
        except BaseException as exc:  # the caller sees it through the future, as with ThreadPoolExecutor
            return "failed", exc

    def settle(self, outcome: _Outcome, value: Any) -> None:
        """Hand the result or exception to the future."""
        if outcome == "completed":
            self.future.set_result(value)
        elif outcome == "failed":
            self.future.set_exception(value)


class _Worker:
    __slots__ = ("thread", "idle_since", "retire")

    def __init__(self, idle_since: float) -> None:
        self.thread: threading.Thread | None = None
        self.idle_since: float | None = idle_since  # None while running a task
        self.retire = False


class WorkerPool(Executor):
    """Run calls on threads started ahead of time, lowest priority number first.

    The pool grows when queued calls outnumber idle workers (up to max_workers) and
    retires workers idle for idle_timeout_s, as told by ``clock``, down to min_workers.
    """

    def __init__(
        self,
        min_workers: int = 4,
        max_workers: int = 16,
        *,
        idle_timeout_s: float = 30.0,
        name: str = "hookopt-pool",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_workers < 1 or not 0 <= min_workers <= max_workers:
            raise ValueError(f"need 0 <= min_workers <= max_workers and max_workers >= 1, got {min_workers}, {max_workers}")
        if idle_timeout_s <= 0:
            raise ValueError(f"idle_timeout_s must be positive, got {idle_timeout_s}")
        self._min = min_workers
        self._max = max_workers
        self._idle_timeout_s = idle_timeout_s
        self._name = name
        self._clock = clock
        # One lock guards everything below; workers wait on it for work.
        self._cond = threading.Condition()
        self._heap: list[tuple[int, int, _WorkItem]] = []
        self._seq = itertools.count()  # FIFO among equal priorities
        self._names = itertools.count(1)
        self._workers: set[_Worker] = set()
        self._idle = 0
        self._shutdown = False
        self._counts = {"submitted": 0, "completed": 0, "failed": 0, "cancelled": 0, "spawned": 0, "retired": 0, "peak_workers": 0}
        with self._cond:
            for _ in range(min_workers):
                self._spawn_locked()

    @classmethod
    def from_profile(cls, profile: Profile) -> WorkerPool:
        """Build a pool sized by a profile."""
        return cls(profile.min_workers, profile.max_workers, idle_timeout_s=float(profile.idle_timeout_s))

    # typeshed types Executor.submit with a ParamSpec, which admits no extra keyword; so a
    # callable's own ``priority`` argument cannot be passed through here.
    def submit(self, fn: Callable[..., _T], /, *args: Any, priority: int = 0, **kwargs: Any) -> Future[_T]:  # type: ignore[override]
        """Queue fn(*args, **kwargs) at a priority (lower runs first); return its future."""
        future: Future[_T] = Future()
        with self._cond:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            heapq.heappush(self._heap, (priority, next(self._seq), _WorkItem(future, fn, args, kwargs)))
            self._counts["submitted"] += 1
            self._grow_locked()
            self._cond.notify()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new calls; let workers drain the queue (or cancel it) and exit."""
        dropped: list[_WorkItem] = []
        with self._cond:
            self._shutdown = True
            if cancel_futures:
                dropped = [item for _, _, item in self._heap]
                self._heap.clear()
                self._counts["cancelled"] += len(dropped)
            threads = [w.thread for w in self._workers if w.thread is not None]
            self._cond.notify_all()
        for item in dropped:
            item.future.cancel()  # outside the lock: cancelling runs the future's done-callbacks
        if wait:
            for thread in threads:
                if thread is not threading.current_thread():
                    thread.join()

    @property
    def workers(self) -> int:
        with self._cond:
            return len(self._workers)

    @property
    def idle(self) -> int:
        with self._cond:
            return self._idle

    @property
    def queue_depth(self) -> int:
        with self._cond:
            return len(self._heap)

    def reap_idle(self) -> int:
        """Retire workers idle longer than idle_timeout_s, down to min_workers; return how many left."""
        with self._cond:
            stale = self._reap_locked()
        for worker in stale:
            if worker.thread is not None:
                worker.thread.join()  # retirees are idle, so they leave at once
        return len(stale)

    def stats(self) -> dict[str, int]:
        """Return a snapshot of sizes and counters."""
        with self._cond:
            return {
                "min_workers": self._min,
                "max_workers": self._max,
                "workers": len(self._workers),
                "idle": self._idle,
                "queue_depth": len(self._heap),
                **self._counts,
            }

    def _spawn_locked(self) -> None:
        worker = _Worker(self._clock())
        # Daemon threads: an idle pool must never keep the hook daemon from exiting.
        worker.thread = threading.Thread(target=self._work, args=(worker,), name=f"{self._name}-{next(self._names)}", daemon=True)
        self._workers.add(worker)
        self._idle += 1  # counted idle from birth, so back-to-back submits do not overshoot
        self._counts["spawned"] += 1
        self._counts["peak_workers"] = max(self._counts["peak_workers"], len(self._workers))
        worker.thread.start()

    def _grow_locked(self) -> None:
        if self._shutdown:
            return
        for _ in range(min(len(self._heap) - self._idle, self._max - len(self._workers))):
            self._spawn_locked()

    def _reap_locked(self) -> list[_Worker]:
        # Never retire a worker the queue is about to need.
        spare = min(len(self._workers) - self._min, self._idle - len(self._heap))
        if spare <= 0:
            return []
        now = self._clock()
        stale = sorted(
            (w for w in self._workers if w.idle_since is not None and now - w.idle_since >= self._idle_timeout_s),
            key=lambda w: w.idle_since or 0.0,
        )[:spare]
        for worker in stale:
            worker.retire = True
            self._workers.discard(worker)
            self._idle -= 1
        self._counts["retired"] += len(stale)
        if stale:
            self._cond.notify_all()
        return stale

    def _work(self, me: _Worker) -> None:
        while True:
            with self._cond:
                while not self._heap and not me.retire and not self._shutdown:
                    if not self._cond.wait(self._idle_timeout_s):
                        self._reap_locked()  # production path: real time passed with nothing to do
                if me.retire:
                    return  # _reap_locked already took us off the books
                if not self._heap:  # shut down and drained
                    self._workers.discard(me)
                    self._idle -= 1
                    return
                _, _, item = heapq.heappop(self._heap)
                self._idle -= 1
                me.idle_since = None
            outcome, value = item.call()
            # Back on the books before the future settles, so whoever waits on it sees an idle worker.
            with self._cond:
                self._counts[outcome] += 1
                self._idle += 1
                me.idle_since = self._clock()
            item.settle(outcome, value)  # outside the lock: done-callbacks may submit more work
            del item, value  # drop the call's arguments and result while we sit idle
