from __future__ import annotations

import os
import threading
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modules.optimization.memory_pool import BoundedStore, PoolExhaustedError, SharedBlockPool

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


# --- BoundedStore --------------------------------------------------------------


def test_store_evicts_least_recently_used_by_count() -> None:
    store: BoundedStore[str, bytes] = BoundedStore(max_items=2, max_bytes=1000)
    store.put("a", b"1")
    store.put("b", b"2")
    assert store.get("a") == b"1"  # "b" is now the least recently used
    store.put("c", b"3")
    assert "b" not in store
    assert "a" in store and "c" in store
    assert len(store) == 2


def test_store_evicts_least_recently_used_by_bytes() -> None:
    store: BoundedStore[str, bytes] = BoundedStore(max_items=100, max_bytes=10)
    store.put("a", b"aaaa")
    store.put("b", b"bbbb")
    store.get("a")
    store.put("c", b"cccc")
    assert "b" not in store
    assert store.get("a") == b"aaaa" and store.get("c") == b"cccc"
    assert store.total_bytes == 8


def test_store_refuses_a_value_larger_than_the_byte_bound() -> None:
    store: BoundedStore[str, bytes] = BoundedStore(max_items=10, max_bytes=10)
    assert store.put("k", b"small")
    assert not store.put("k", b"x" * 11)
    assert "k" not in store  # no stale value left behind
    assert store.get("k", b"default") == b"default"
    assert store.total_bytes == 0


def test_store_uses_custom_sizeof() -> None:
    store: BoundedStore[str, list[int]] = BoundedStore(max_items=10, max_bytes=100, sizeof=lambda v: 40 * len(v))
    store.put("a", [1])
    store.put("b", [1, 2])
    assert "a" not in store
    assert store.total_bytes == 80


@given(st.lists(st.tuples(st.integers(0, 20), st.binary(max_size=30)), max_size=60))
def test_store_stays_within_both_bounds(ops: list[tuple[int, bytes]]) -> None:
    store: BoundedStore[int, bytes] = BoundedStore(max_items=5, max_bytes=64)
    for key, value in ops:
        store.put(key, value)
        assert store.get(key) == value  # the value just put is never the one evicted
        assert len(store) <= 5
        assert store.total_bytes <= 64
