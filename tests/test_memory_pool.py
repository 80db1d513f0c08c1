from __future__ import annotations

import os
import threading
from typing import Any

import pytest

from modules.optimization.memory_pool import PoolExhaustedError, SharedBlockPool

KB = 1 << 10


def _exists(name: str) -> bool:
    return os.path.exists(os.path.join("/dev/shm", name))


# --- SharedBlockPool ---------------------------------------------------------


def test_released_block_is_reused() -> None:
    with SharedBlockPool(max_blocks=2, min_block_size=4 * KB) as pool:
        first = pool.acquire(1000)
        first.buf[:5] = b"hello"
        pool.release(first)
        again = pool.acquire(3000)
        assert again.name == first.name
        assert bytes(again.buf[:5]) == b"hello"
        assert pool.stats() == {"created": 1, "reused": 1, "in_use": 1, "free": 0}


def test_sizes_round_up_to_a_power_of_two_at_least_the_minimum() -> None:
    with SharedBlockPool(max_blocks=4, min_block_size=3000) as pool:
        assert pool.acquire(0).size == 4 * KB
        assert pool.acquire(10).size == 4 * KB
        assert pool.acquire(4 * KB + 1).size == 8 * KB
        assert pool.acquire(64 * KB).size == 64 * KB


def test_smallest_free_block_that_fits_is_chosen() -> None:
    with SharedBlockPool(max_blocks=3, min_block_size=4 * KB) as pool:
        small, big = pool.acquire(4 * KB), pool.acquire(64 * KB)
        pool.release(big)
        pool.release(small)
        assert pool.acquire(100).name == small.name
        assert pool.acquire(5 * KB).name == big.name


def test_exhausted_pool_raises_after_timeout() -> None:
    with SharedBlockPool(max_blocks=1, min_block_size=4 * KB) as pool:
        pool.acquire(10)
        with pytest.raises(PoolExhaustedError):
            pool.acquire(10, timeout=0.05)
        with pytest.raises(PoolExhaustedError):
            pool.acquire(10, timeout=0)


def test_waiting_acquire_gets_a_released_block() -> None:
    with SharedBlockPool(max_blocks=1, min_block_size=4 * KB) as pool:
        held = pool.acquire(10)
        got: list[Any] = []
        waiter = threading.Thread(target=lambda: got.append(pool.acquire(10, timeout=30)))
        waiter.start()
        pool.release(held)
        waiter.join(30)
        assert [b.name for b in got] == [held.name]


def test_too_small_free_block_is_replaced_at_capacity() -> None:
    with SharedBlockPool(max_blocks=1, min_block_size=4 * KB) as pool:
        small = pool.acquire(10)
        pool.release(small)
        big = pool.acquire(32 * KB, timeout=0)
        assert big.size == 32 * KB
        assert not _exists(small.name)
        assert pool.stats()["created"] == 2


def test_release_rejects_foreign_and_double_release() -> None:
    with SharedBlockPool(max_blocks=2, min_block_size=4 * KB) as pool, SharedBlockPool(min_block_size=4 * KB) as other:
        block = pool.acquire(10)
        with pytest.raises(ValueError):
            other.release(block)
        pool.release(block)
        with pytest.raises(ValueError):
            pool.release(block)


def test_close_unlinks_free_and_in_use_blocks() -> None:
    pool = SharedBlockPool(max_blocks=2, min_block_size=4 * KB)
    free, in_use = pool.acquire(10), pool.acquire(10)
    pool.release(free)
    assert _exists(free.name) and _exists(in_use.name)
    pool.close()
    assert not _exists(free.name) and not _exists(in_use.name)
    pool.release(in_use)  # late release after close is harmless
    pool.close()
    with pytest.raises(RuntimeError):
        pool.acquire(10)
