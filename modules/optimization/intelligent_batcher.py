"""Collect items into batches by size and age, most urgent first, under a bounded backlog.

A batch is handed to the flush callback when ``max_size`` items wait or the oldest has
waited ``max_wait_s``, whichever comes first. Lower priority numbers are more urgent;
within one priority items keep the order they were put in.

Backpressure: at most ``capacity`` items are held in memory (waiting plus the batch being
flushed). Beyond that, "block" waits up to ``block_timeout_s`` for room and then raises
BackpressureError; "spill" appends the item to an unlinked temporary file in
``spill_dir`` and feeds spilled items back, in order, as room frees. Nothing is ever
dropped silently. A spilled item waits behind everything put before it, whatever its
priority, and comes back as ``json.loads`` gives it (a tuple comes back as a list).

Adaptive sizing: after each flush, if it took longer than ``target_flush_s`` the batch
size halves (not below ``min_size``); if it was full and took under half the target the
batch size doubles (not above ``GROWTH_CAP`` times the configured ``max_size``).

Flush failures: the batch goes back into the backlog with its place and age. poll(),
flush() and close() re-raise the error; the background thread counts it in
``stats()["errors"]``, keeps its text in ``stats()["last_error"]`` and retries after
``max_wait_s`` (at least RETRY_S).
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Final, Generic, Literal, TypeVar

__all__ = ["GROWTH_CAP", "RETRY_S", "BackpressureError", "Batcher"]

T = TypeVar("T")
# Adaptive growth stops at this multiple of the configured max_size, so a slow spike after
# a fast spell costs one bounded batch.
GROWTH_CAP: Final = 4
# Shortest pause before the background thread retries a failed flush, so a broken sink
# (a locked database, a full disk) does not turn the thread into a busy loop.
RETRY_S: Final = 0.01

_Entry = tuple[int, int, float, T]  # (priority, sequence, enqueue time, item): heap order


class BackpressureError(RuntimeError):
    """The backlog is full and an item could not be accepted within its bound."""


class Batcher(Generic[T]):
    """Batch items for a flush callback by size, age and priority, with backpressure."""

    def __init__(
        self,
        flush: Callable[[list[T]], None],
        *,
        max_size: int = 100,
        max_wait_s: float = 0.05,
        capacity: int = 10_000,
        overflow: Literal["block", "spill"] = "block",
        block_timeout_s: float = 1.0,
        spill_dir: Path | None = None,
        adaptive: bool = True,
        min_size: int = 1,
        target_flush_s: float = 0.01,
        clock: Callable[[], float] = time.monotonic,
        background: bool = True,
    ) -> None:
        if max_size < 1 or not 1 <= min_size <= max_size:
            raise ValueError(f"need 1 <= min_size <= max_size, got min_size={min_size}, max_size={max_size}")
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        if overflow not in ("block", "spill"):
            raise ValueError(f"overflow must be 'block' or 'spill', got {overflow!r}")
        self._flush_fn = flush
        self._max_size = max_size
        self._min_size = min_size
        self._ceiling = max_size * GROWTH_CAP
        self._max_wait_s = max_wait_s
        self._capacity = capacity
        self._overflow = overflow
        self._block_timeout_s = block_timeout_s
        self._spill_dir = spill_dir
        self._adaptive = adaptive
        self._target_flush_s = target_flush_s
        self._clock = clock

        self._heap: list[_Entry[T]] = []
        self._counter = itertools.count()
        self._oldest = math.inf  # enqueue time of the oldest waiting item
        self._inflight = 0  # items handed to the callback and not yet confirmed
        self._spill: IO[bytes] | None = None
        self._spill_read = 0  # file offset of the next spilled item to feed back
        self._on_disk = 0
        self._closed = False
        self._stats: dict[str, Any] = {
            "batches": 0,
            "items": 0,
            "last_batch_size": 0,
            "spilled": 0,
            "errors": 0,
            "last_error": "",
            "flush_seconds_total": 0.0,
        }
        # One lock guards all state; _wake and _room share it. _flushing is taken first and
        # serialises flushes, so batches reach the callback one at a time and in order.
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._room = threading.Condition(self._lock)
        self._flushing = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._run, name="hookopt-batcher", daemon=True)
            self._thread.start()

    @property
    def size(self) -> int:
        """Items waiting in memory, not counting a batch being flushed."""
        with self._lock:
            return len(self._heap)

    @property
    def pending(self) -> int:
        """Items accepted and not yet flushed: waiting, being flushed, or spilled."""
        with self._lock:
            return len(self._heap) + self._inflight + self._on_disk

    @property
    def max_size(self) -> int:
        """Return the current batch size (adaptive sizing moves it)."""
        with self._lock:
            return self._max_size

    def stats(self) -> dict[str, Any]:
        """Return counters: batches, items, last_batch_size, max_size, spilled and more."""
        with self._lock:
            return {
                **self._stats,
                "max_size": self._max_size,
                "pending": len(self._heap) + self._inflight + self._on_disk,
                "on_disk": self._on_disk,
            }

    def put(self, item: T, priority: int = 0) -> None:
        """Accept one item, or raise BackpressureError if the backlog stays full."""
        with self._lock:
            if self._closed:
                raise RuntimeError("put on a closed Batcher")
            # While anything is spilled, new items go behind it so order is kept.
            if self._on_disk or len(self._heap) + self._inflight >= self._capacity:
                if self._overflow == "spill":
                    self._spill_item((priority, next(self._counter), self._clock(), item))
                    return
                # Condition.wait takes real seconds, so the bound uses the real clock.
                deadline = time.monotonic() + self._block_timeout_s
                while len(self._heap) + self._inflight >= self._capacity and not self._closed:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise BackpressureError(
                            f"batcher full ({self._capacity} items) for {self._block_timeout_s:g} s"
                        )
                    self._room.wait(remaining)
                if self._closed:
                    raise RuntimeError("put on a closed Batcher")
            self._push((priority, next(self._counter), self._clock(), item))
            # Wake the thread only when it has something new to time or a full batch.
            if len(self._heap) == 1 or len(self._heap) >= self._max_size:
                self._wake.notify()

    def poll(self) -> int:
        """Flush the batches that size or age say are due; return how many items went."""
        return self._drain(force=False)

    def flush(self) -> int:
        """Flush everything waiting, spilled items included; return how many items went."""
        return self._drain(force=True)

    def close(self) -> None:
        """Stop the background thread and flush everything, spilled items included."""
        with self._lock:
            self._closed = True
            self._wake.notify_all()
            self._room.notify_all()
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.flush()
        with self._lock:
            if self._spill is not None and not self._on_disk:
                self._spill.close()
                self._spill = None

    # Internals: _drain, _deliver and _run take the locks; every other helper expects self._lock held.

    def _push(self, entry: _Entry[T]) -> None:
        heapq.heappush(self._heap, entry)
        self._oldest = min(self._oldest, entry[2])

    def _due(self) -> bool:
        return len(self._heap) >= self._max_size or self._clock() - self._oldest >= self._max_wait_s

    def _spill_item(self, entry: _Entry[T]) -> None:
        line = json.dumps(entry, separators=(",", ":")).encode() + b"\n"  # raises before anything is written
        if self._spill is None:
            # Unlinked at once: a crash leaves no file behind (the caller's journal, not
            # the spill, is what must survive a crash).
            self._spill = tempfile.TemporaryFile(dir=self._spill_dir, prefix="hookopt-spill-")
        self._spill.seek(0, 2)
        self._spill.write(line)
        self._on_disk += 1
        self._stats["spilled"] += 1

    def _refill(self) -> None:
        if not self._on_disk or self._spill is None:
            return
        self._spill.seek(self._spill_read)
        while self._on_disk and len(self._heap) + self._inflight < self._capacity:
            priority, seq, enqueued, item = json.loads(self._spill.readline())
            self._push((priority, seq, enqueued, item))
            self._on_disk -= 1
        self._spill_read = self._spill.tell()
        if not self._on_disk:
            self._spill.seek(0)
            self._spill.truncate()
            self._spill_read = 0
        self._wake.notify()

    def _take(self) -> list[_Entry[T]]:
        count = min(self._max_size, len(self._heap))
        batch = [heapq.heappop(self._heap) for _ in range(count)]
        self._oldest = min((entry[2] for entry in self._heap), default=math.inf)
        self._inflight += len(batch)
        return batch

    def _drain(self, *, force: bool) -> int:
        total = 0
        with self._flushing:
            while True:
                with self._lock:
                    self._refill()
                    if not self._heap or not (force or self._due()):
                        return total
                    batch = self._take()
                total += self._deliver(batch)

    def _deliver(self, batch: list[_Entry[T]]) -> int:
        start = self._clock()
        try:
            self._flush_fn([entry[3] for entry in batch])
        except BaseException as exc:
            with self._lock:
                self._inflight -= len(batch)
                for entry in batch:
                    self._push(entry)
                self._stats["errors"] += 1
                self._stats["last_error"] = f"{type(exc).__name__}: {exc}"
            raise
        elapsed = self._clock() - start
        with self._lock:
            self._inflight -= len(batch)
            self._stats["batches"] += 1
            self._stats["items"] += len(batch)
            self._stats["last_batch_size"] = len(batch)
            self._stats["flush_seconds_total"] += elapsed
            self._adapt(len(batch), elapsed)
            self._refill()
            self._room.notify_all()
        return len(batch)

    def _adapt(self, count: int, elapsed: float) -> None:
        if not self._adaptive:
            return
        if elapsed > self._target_flush_s:
            self._max_size = max(self._min_size, self._max_size // 2)
        elif count >= self._max_size and elapsed < self._target_flush_s / 2:
            # Only a full batch shows demand for a bigger one.
            self._max_size = min(self._ceiling, self._max_size * 2)

    def _until_due(self) -> float | None:
        if not self._heap:
            return None
        return max(0.0, self._oldest + self._max_wait_s - self._clock())

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._closed and not self._due():
                    self._wake.wait(self._until_due())
                if self._closed:
                    return  # close() flushes what is left on its own thread
            try:
                self.poll()
            except Exception:
                # The batch is back in the backlog and counted in stats; wait, then retry.
                self._stop.wait(max(self._max_wait_s, RETRY_S))
