"""Reuse shared-memory blocks between tasks."""

from __future__ import annotations

import threading
import time

from multiprocess.shared_memory import SharedMemory

__all__ = ["PoolExhaustedError", "SharedBlockPool"]


class PoolExhaustedError(RuntimeError):
    """Every block the pool may create is in use and none came back in time."""


def _round_up(nbytes: int, minimum: int) -> int:
    """Return the smallest power of two that is at least nbytes and at least minimum."""
    return max(minimum, 1 << max(nbytes - 1, 0).bit_length())


class SharedBlockPool:
    """Hand out shared-memory blocks for reuse, never holding more than max_blocks.

    A block may be larger than asked for (sizes are powers of two), so callers keep
    the length of what they wrote. Thread-safe; one condition guards all state.
    """

    def __init__(self, max_blocks: int = 8, min_block_size: int = 1 << 20) -> None:
        if max_blocks < 1:
            raise ValueError("max_blocks must be at least 1")
        if min_block_size < 1:
            raise ValueError("min_block_size must be at least 1")
        self._max_blocks = max_blocks
        self._min_block_size = _round_up(min_block_size, 1)
        self._cond = threading.Condition()
        self._free: list[SharedMemory] = []
        self._in_use: dict[str, SharedMemory] = {}
        self._created = 0
        self._reused = 0
        self._closed = False

    def acquire(self, nbytes: int, timeout: float | None = None) -> SharedMemory:
        """Return a block of at least nbytes, waiting up to timeout for one to be released."""
        if nbytes < 0:
            raise ValueError("nbytes must not be negative")
        size = _round_up(nbytes, self._min_block_size)
        deadline = None if timeout is None else time.monotonic() + timeout
        block: SharedMemory
        with self._cond:
            while True:
                if self._closed:
                    raise RuntimeError("SharedBlockPool is closed")
                fits = [block for block in self._free if block.size >= size]
                if fits:
                    block = min(fits, key=lambda b: b.size)
                    self._free.remove(block)
                    self._reused += 1
                    break
                if len(self._free) + len(self._in_use) >= self._max_blocks and self._free:
                    # Free blocks that are all too small would otherwise block this caller
                    # forever at the cap: give up the smallest to make room.
                    smallest = min(self._free, key=lambda b: b.size)
                    self._free.remove(smallest)
                    _destroy(smallest)
                if len(self._free) + len(self._in_use) < self._max_blocks:
                    block = SharedMemory(create=True, size=size)
                    self._created += 1
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise PoolExhaustedError(f"all {self._max_blocks} shared-memory blocks are in use")
                self._cond.wait(remaining)
            self._in_use[block.name] = block
            return block

    def release(self, block: SharedMemory) -> None:
        """Give a block back for reuse."""
        with self._cond:
            if self._closed:
                return  # close() already unlinked it
            name = block.name
            if self._in_use.get(name) is not block:
                raise ValueError(f"block {name} is not in use from this pool")
            del self._in_use[name]
            self._free.append(block)
            self._cond.notify()

    def close(self) -> None:
        """Close and unlink every block this pool created, in use or not."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            blocks = self._free + list(self._in_use.values())
            self._free.clear()
            self._in_use.clear()
            self._cond.notify_all()
        for block in blocks:
            _destroy(block)

    def stats(self) -> dict[str, int]:
        """Return counts of blocks created, reuses, and blocks in use and free."""
        with self._cond:
            return {"created": self._created, "reused": self._reused, "in_use": len(self._in_use), "free": len(self._free)}

    def __enter__(self) -> SharedBlockPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _destroy(block: SharedMemory) -> None:
    """Unlink a block's name, then unmap it; the name is what would leak in /dev/shm."""
    try:
        block.unlink()
    except FileNotFoundError:
        pass
    try:
        block.close()
    except BufferError:
        pass  # a caller still holds a view; the mapping goes when that view does
