from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future, wait
from typing import Any

import pytest

from modules.optimization.hook_pool import GUARD, OBSERVER, WorkerPool
from modules.optimization.integrated_optimizer import Profile
from tests.clock import FakeClock

WAIT = 5.0  # upper bound for things that should happen at once; never reached when all is well


class Harness:
    """Makes pools and gates; on teardown opens every gate, then shuts every pool down."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.pools: list[WorkerPool] = []
        self.gates: list[threading.Event] = []

    def pool(self, min_workers: int, max_workers: int, **kwargs: Any) -> WorkerPool:
        pool = WorkerPool(min_workers, max_workers, name=self.name, **kwargs)
        self.pools.append(pool)
        return pool

    def gate(self) -> threading.Event:
        gate = threading.Event()
        self.gates.append(gate)
        return gate

    def threads(self) -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name.startswith(self.name + "-")]

    def hold(self, pool: WorkerPool, count: int, **kwargs: Any) -> tuple[threading.Event, list[Future[Any]]]:
        """Occupy count workers at once; return once all of them are running."""
        gate = self.gate()
        barrier = threading.Barrier(count + 1)

        def held() -> str:
            barrier.wait(WAIT)
            gate.wait(WAIT)
            return "held"

        futures = [pool.submit(held, **kwargs) for _ in range(count)]
        barrier.wait(WAIT)  # breaks (and fails the test) unless count tasks truly run together
        return gate, futures


@pytest.fixture
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    h = Harness(f"test-pool-{request.node.name}")
    yield h
    for gate in h.gates:
        gate.set()
    for pool in h.pools:
        pool.shutdown(wait=True)
    assert h.threads() == []


def test_workers_are_started_before_any_submit(harness: Harness) -> None:
    pool = harness.pool(3, 8)
    assert len(harness.threads()) == 3
    assert all(t.is_alive() and t.daemon for t in harness.threads())
    assert (pool.workers, pool.idle, pool.queue_depth) == (3, 3, 0)
    assert pool.stats()["spawned"] == 3


def test_results_args_and_map(harness: Harness) -> None:
    pool = harness.pool(2, 2)
    assert pool.submit(lambda a, b=0: a + b, 1, b=2).result(WAIT) == 3
    assert list(pool.map(lambda x: x * x, range(5), timeout=WAIT)) == [0, 1, 4, 9, 16]


def test_lower_priority_number_runs_first_fifo_within_a_priority(harness: Harness) -> None:
    pool = harness.pool(1, 1)
    gate, held = harness.hold(pool, 1)
    order: list[str] = []
    queued = [pool.submit(order.append, f"observer{i}", priority=OBSERVER) for i in range(3)]
    queued += [pool.submit(order.append, f"guard{i}", priority=GUARD) for i in range(3)]
    assert pool.queue_depth == 6
    gate.set()
    wait(held + queued, timeout=WAIT)
    assert order == ["guard0", "guard1", "guard2", "observer0", "observer1", "observer2"]


def test_does_not_grow_while_idle_workers_can_take_the_queue(harness: Harness) -> None:
    pool = harness.pool(2, 6)
    gate, _ = harness.hold(pool, 2)
    assert pool.workers == 2
    assert pool.stats()["spawned"] == 2


def test_grows_with_queue_depth_up_to_max_and_never_beyond(harness: Harness) -> None:
    pool = harness.pool(1, 3)
    gate, held = harness.hold(pool, 3)  # only possible if the pool grew from 1 to 3
    extra = [pool.submit(gate.wait, WAIT) for _ in range(5)]
    assert pool.workers == 3
    assert pool.workers == 3
    assert pool.queue_depth == 5
    assert len(harness.threads()) == 3
    gate.set()
    wait(held + extra, timeout=WAIT)
    assert all(f.result() for f in extra)
    assert pool.stats()["peak_workers"] == 3


def test_idle_workers_retire_down_to_min_after_the_idle_timeout(harness: Harness) -> None:
    clock = FakeClock(100.0)
    pool = harness.pool(1, 3, idle_timeout_s=30.0, clock=clock)
    gate, held = harness.hold(pool, 3)
    gate.set()
    wait(held, timeout=WAIT)
    assert pool.idle == 3  # a worker is back on the books before its future settles

    clock.tick(29.9)
    assert pool.reap_idle() == 0
    assert pool.workers == 3
    clock.tick(0.1)
    assert pool.reap_idle() == 2
    assert pool.workers == 1
    assert len(harness.threads()) == 1  # reap_idle joined the retirees
    clock.tick(1000.0)
    assert pool.reap_idle() == 0  # never below min_workers
    assert pool.submit(lambda: "still serving").result(WAIT) == "still serving"
    assert pool.stats()["retired"] == 2


def test_busy_workers_and_workers_the_queue_needs_are_not_retired(harness: Harness) -> None:
    clock = FakeClock()
    pool = harness.pool(0, 2, idle_timeout_s=5.0, clock=clock)
    gate, held = harness.hold(pool, 2)
    clock.tick(60.0)
    assert pool.reap_idle() == 0  # both busy
    gate.set()
    wait(held, timeout=WAIT)
    clock.tick(60.0)
    assert pool.reap_idle() == 2  # min_workers=0: an idle pool may empty entirely
    assert harness.threads() == []
    assert pool.submit(lambda: "respawned").result(WAIT) == "respawned"
    assert pool.workers == 1


def test_exceptions_land_in_the_future(harness: Harness) -> None:
    pool = harness.pool(1, 1)

    def boom() -> None:
        raise ValueError("boom")

    future = pool.submit(boom)
    with pytest.raises(ValueError, match="boom"):
        future.result(WAIT)
    assert pool.submit(lambda: "next").result(WAIT) == "next"  # the worker survived
    assert pool.stats()["failed"] == 1


def test_a_future_cancelled_while_queued_never_runs(harness: Harness) -> None:
    pool = harness.pool(1, 1)
    gate, held = harness.hold(pool, 1)
    ran: list[str] = []
    doomed = pool.submit(ran.append, "doomed")
    assert doomed.cancel()
    gate.set()
    assert pool.submit(ran.append, "after").result(WAIT) is None
    assert ran == ["after"]
    assert pool.stats()["cancelled"] == 1


def test_shutdown_cancel_futures_drops_the_queue_but_finishes_running_work(harness: Harness) -> None:
    pool = harness.pool(1, 1)
    gate, held = harness.hold(pool, 1)
    ran: list[int] = []
    queued = [pool.submit(ran.append, i) for i in range(3)]
    pool.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in queued)
    assert held[0].running()
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(print)
    gate.set()
    assert held[0].result(WAIT) == "held"
    pool.shutdown(wait=True)
    assert harness.threads() == []
    assert ran == []


def test_shutdown_without_cancel_drains_the_queue(harness: Harness) -> None:
    pool = harness.pool(1, 1)
    gate, held = harness.hold(pool, 1)
    queued = [pool.submit(lambda i=i: i * 10) for i in range(3)]
    pool.shutdown(wait=False)
    gate.set()
    pool.shutdown(wait=True)
    assert [f.result(0) for f in queued] == [0, 10, 20]
    assert harness.threads() == []


def test_done_callbacks_may_submit_more_work(harness: Harness) -> None:
    pool = harness.pool(1, 1)
    chained: list[Future[str]] = []
    submitted = threading.Event()

    def follow(_: Future[str]) -> None:
        chained.append(pool.submit(lambda: "second"))
        submitted.set()

    pool.submit(lambda: "first").add_done_callback(follow)
    assert submitted.wait(WAIT)
    assert chained[0].result(WAIT) == "second"


def test_from_profile_takes_sizes_and_idle_timeout(harness: Harness) -> None:
    profile = Profile(
        name="t", min_workers=2, max_workers=5, batch_size=1, batch_wait_ms=1, cache_size=1, cache_ttl_s=1,
        deadline_ms=1, client_timeout_ms=1, idle_timeout_s=7, breaker_fail_max=1, breaker_reset_s=1,
        process_workers=1, worker_memory_mb=1, worker_cpu_s=1, shm_threshold_bytes=1,
    )
    pool = WorkerPool.from_profile(profile)
    harness.pools.append(pool)
    stats = pool.stats()
    assert (stats["min_workers"], stats["max_workers"], stats["workers"]) == (2, 5, 2)
    assert pool._idle_timeout_s == 7.0


@pytest.mark.parametrize(("lo", "hi"), [(-1, 2), (3, 2), (0, 0)])
def test_bad_sizes_are_refused(lo: int, hi: int) -> None:
    with pytest.raises(ValueError):
        WorkerPool(lo, hi)


def test_many_submitters_lose_nothing(harness: Harness) -> None:
    pool = harness.pool(2, 4)
    start = threading.Barrier(4)
    futures: list[list[Future[int]]] = [[] for _ in range(4)]

    def submitter(slot: int) -> None:
        start.wait(WAIT)
        futures[slot] += [pool.submit(lambda n=n: n, priority=n % 3) for n in range(200)]

    threads = [threading.Thread(target=submitter, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    everything = [f for fs in futures for f in fs]
    wait(everything, timeout=WAIT)
    assert sorted(f.result(0) for f in everything) == sorted(list(range(200)) * 4)
    assert pool.workers <= 4
    assert pool.stats()["completed"] == 800
