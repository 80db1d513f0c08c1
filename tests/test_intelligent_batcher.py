import threading
import time

import pytest

from modules.optimization.intelligent_batcher import GROWTH_CAP, BackpressureError, Batcher

# A bound on how long a test waits for a real thread; reaching it means a failure, not timing.
BOUND_S = 10.0


class FakeClock:
    def __init__(self, now=0.0):
        self.now = now

    def __call__(self):
        return self.now


class Sink:
    """Collect flushed batches; optionally advance a fake clock inside each flush."""

    def __init__(self, clock=None, cost=0.0):
        self.batches = []
        self.clock = clock
        self.cost = cost
        self.flushed = threading.Event()

    def __call__(self, items):
        if self.clock is not None:
            self.clock.now += self.cost
        self.batches.append(list(items))
        self.flushed.set()

    @property
    def items(self):
        return [item for batch in self.batches for item in batch]


def manual(sink, clock=None, **kwargs):
    kwargs.setdefault("adaptive", False)
    return Batcher(sink, clock=clock or FakeClock(), background=False, **kwargs)


def test_flushes_when_max_size_items_wait():
    sink = Sink()
    batcher = manual(sink, max_size=3, max_wait_s=60)
    batcher.put("a")
    batcher.put("b")
    assert batcher.poll() == 0
    batcher.put("c")
    assert batcher.poll() == 3
    assert sink.batches == [["a", "b", "c"]]
    assert batcher.pending == 0


def test_flushes_by_age_of_the_oldest_item_not_before():
    clock = FakeClock()
    sink = Sink()
    batcher = manual(sink, clock, max_size=100, max_wait_s=1.0)
    batcher.put("old")
    clock.now = 0.5
    batcher.put("young")
    clock.now = 0.999
    assert batcher.poll() == 0
    clock.now = 1.0
    assert batcher.poll() == 2
    assert sink.batches == [["old", "young"]]
    # The age timer restarts with the next item, not from the last flush.
    batcher.put("next")
    clock.now = 1.5
    assert batcher.poll() == 0
    clock.now = 2.0
    assert batcher.poll() == 1


def test_batch_takes_most_urgent_first_fifo_within_a_priority():
    sink = Sink()
    batcher = manual(sink, max_size=3, max_wait_s=60)
    for name, priority in [("low1", 5), ("hi1", 1), ("mid", 3), ("hi2", 1), ("urgent", 0), ("low2", 5)]:
        batcher.put(name, priority=priority)
    assert batcher.flush() == 6
    assert sink.batches == [["urgent", "hi1", "hi2"], ["mid", "low1", "low2"]]


def test_block_raises_backpressure_after_the_bound_when_flush_is_stuck():
    release = threading.Event()
    flushed = []

    def stuck(items):
        release.wait(BOUND_S)
        flushed.extend(items)

    batcher = Batcher(stuck, max_size=1, max_wait_s=0.0, capacity=2, block_timeout_s=0.05)
    try:
        # Capacity counts the batch being flushed too, so a and b fill it either way.
        batcher.put("a")
        batcher.put("b")
        start = time.monotonic()
        with pytest.raises(BackpressureError):
            batcher.put("c")
        assert time.monotonic() - start >= 0.05
    finally:
        release.set()
        batcher.close()
    assert flushed == ["a", "b"]


def test_blocked_put_gets_in_when_room_frees():
    sink = Sink()
    batcher = manual(sink, max_size=1, capacity=1, block_timeout_s=BOUND_S)
    batcher.put("a")
    putter = threading.Thread(target=batcher.put, args=("b",))
    putter.start()
    batcher.flush()
    putter.join(BOUND_S)
    assert not putter.is_alive()
    batcher.close()
    assert sink.items == ["a", "b"]


def test_spill_moves_overflow_to_disk_and_brings_it_back_in_order(tmp_path):
    sink = Sink()
    batcher = manual(sink, max_size=3, max_wait_s=60, capacity=3, overflow="spill", spill_dir=tmp_path)
    for i in range(10):
        batcher.put({"n": i})
    assert batcher.size == 3  # memory holds only capacity
    assert batcher.pending == 10
    assert batcher.stats()["on_disk"] == 7
    assert batcher.stats()["spilled"] == 7
    assert batcher.poll() == 9  # three full batches; the last item is neither full nor old
    batcher.close()
    assert sink.items == [{"n": i} for i in range(10)]
    assert all(len(batch) <= 3 for batch in sink.batches)
    assert batcher.stats()["on_disk"] == 0


def test_spill_is_drained_by_close(tmp_path):
    sink = Sink()
    batcher = manual(sink, max_size=2, max_wait_s=60, capacity=2, overflow="spill", spill_dir=tmp_path)
    for i in range(7):
        batcher.put(i)
    batcher.close()
    assert sink.items == list(range(7))


def test_spill_refuses_items_json_cannot_hold(tmp_path):
    batcher = manual(Sink(), capacity=1, overflow="spill", spill_dir=tmp_path)
    batcher.put(object())  # in memory: anything goes
    with pytest.raises(TypeError):
        batcher.put(object())
    assert batcher.pending == 1


def test_adaptive_shrinks_when_flush_is_slow():
    clock = FakeClock()
    sink = Sink(clock, cost=0.05)
    batcher = manual(sink, clock, adaptive=True, max_size=8, min_size=2, max_wait_s=60, target_flush_s=0.01)
    sizes = []
    for _ in range(3):
        for i in range(batcher.max_size):
            batcher.put(i)
        batcher.poll()
        sizes.append(batcher.max_size)
    assert sizes == [4, 2, 2]  # halves per slow batch, never below min_size
    assert [len(b) for b in sink.batches] == [8, 4, 2]
    assert batcher.stats()["flush_seconds_total"] == pytest.approx(0.15)


def test_adaptive_grows_when_full_batches_are_fast_up_to_the_cap():
    clock = FakeClock()
    sink = Sink(clock, cost=0.0)
    batcher = manual(sink, clock, adaptive=True, max_size=2, max_wait_s=1.0, target_flush_s=0.01)
    sizes = []
    for _ in range(4):
        for i in range(batcher.max_size):
            batcher.put(i)
        batcher.poll()
        sizes.append(batcher.max_size)
    assert sizes == [4, 8, 8, 8]
    assert 8 == 2 * GROWTH_CAP
    # A batch that was not full shows no demand, so the size stays.
    batcher = manual(sink, clock, adaptive=True, max_size=2, max_wait_s=1.0, target_flush_s=0.01)
    batcher.put("lonely")
    clock.now += 1.0
    assert batcher.poll() == 1
    assert batcher.max_size == 2


def test_close_flushes_everything_and_stops_the_thread():
    sink = Sink()
    batcher = Batcher(sink, max_size=100, max_wait_s=3600)
    for i in range(5):
        batcher.put(i)
    thread = batcher._thread
    batcher.close()
    assert sink.items == list(range(5))
    assert not thread.is_alive()
    with pytest.raises(RuntimeError):
        batcher.put(5)


def test_background_thread_flushes_a_full_batch():
    sink = Sink()
    batcher = Batcher(sink, max_size=3, max_wait_s=3600, adaptive=False)
    try:
        for i in range(3):
            batcher.put(i)
        assert sink.flushed.wait(BOUND_S)
        assert sink.batches == [[0, 1, 2]]
    finally:
        batcher.close()


def test_flush_raising_once_loses_nothing():
    calls = []

    def flaky(items):
        calls.append(list(items))
        if len(calls) == 1:
            raise OSError("disk hiccup")

    batcher = manual(flaky, max_size=10)
    for i in range(3):
        batcher.put(i)
    with pytest.raises(OSError, match="disk hiccup"):
        batcher.flush()
    assert batcher.pending == 3
    assert batcher.flush() == 3
    assert calls == [[0, 1, 2], [0, 1, 2]]
    stats = batcher.stats()
    assert (stats["errors"], stats["items"], stats["last_error"]) == (1, 3, "OSError: disk hiccup")


def test_background_thread_retries_a_failed_flush():
    done = threading.Event()
    attempts = []
    delivered = []

    def flaky(items):
        attempts.append(list(items))
        if len(attempts) == 1:
            raise OSError("database is locked")
        delivered.extend(items)
        done.set()

    batcher = Batcher(flaky, max_size=2, max_wait_s=0.001, adaptive=False)
    try:
        batcher.put("a")
        batcher.put("b")
        assert done.wait(BOUND_S)
    finally:
        batcher.close()
    assert delivered == ["a", "b"]
    assert batcher.stats()["errors"] == 1


def test_concurrent_puts_all_arrive_exactly_once():
    sink = Sink()
    batcher = Batcher(sink, max_size=16, max_wait_s=0.001, capacity=64, block_timeout_s=BOUND_S)

    def producer(base):
        for i in range(250):
            batcher.put(base + i)

    threads = [threading.Thread(target=producer, args=(n * 1000,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(BOUND_S)
    batcher.close()
    assert sorted(sink.items) == sorted(n * 1000 + i for n in range(4) for i in range(250))
    assert all(len(batch) <= 16 * GROWTH_CAP for batch in sink.batches)


@pytest.mark.parametrize(
    "kwargs",
    [{"max_size": 0}, {"min_size": 5, "max_size": 4}, {"capacity": 0}, {"overflow": "drop"}],
)
def test_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        Batcher(Sink(), background=False, **kwargs)
