from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from modules.optimization.async_orchestrator import DependencyError, Orchestrator, TaskSpec
from modules.optimization.hook_pool import GUARD, OBSERVER, WorkerPool
from modules.optimization.parallel import TaskResult

WAIT = 5.0  # upper bound for things that should happen at once


@pytest.fixture
def gates() -> Iterator[list[threading.Event]]:
    made: list[threading.Event] = []
    yield made
    for gate in made:
        gate.set()  # let hung tasks end so their threads do not outlive the test


@pytest.fixture
def pool(gates: list[threading.Event]) -> Iterator[WorkerPool]:
    pool = WorkerPool(2, 4, name="test-orchestrator")
    yield pool
    for gate in gates:
        gate.set()
    pool.shutdown(wait=True)


def run(pool: WorkerPool, specs: list[TaskSpec], deadline_s: float = WAIT) -> dict[str, TaskResult]:
    return asyncio.run(Orchestrator(pool).run(specs, deadline_s))


def test_dependants_see_their_dependencies_values(pool: WorkerPool) -> None:
    specs = [  # listed dependants first: the orchestrator must order them itself
        TaskSpec("total", lambda deps: deps["base"].value + deps["scaled"].value, depends_on=("base", "scaled")),
        TaskSpec("scaled", lambda deps: deps["base"].value * 10, depends_on=("base",)),
        TaskSpec("base", lambda deps: 2),
    ]
    results = run(pool, specs)
    assert list(results) == ["total", "scaled", "base"]
    assert all(r.ok for r in results.values())
    assert (results["base"].value, results["scaled"].value, results["total"].value) == (2, 20, 22)


def test_a_task_without_dependencies_gets_an_empty_mapping(pool: WorkerPool) -> None:
    assert run(pool, [TaskSpec("solo", lambda deps: dict(deps))])["solo"].value == {}
    assert run(pool, []) == {}


def test_priority_decides_the_order_on_a_single_worker(gates: list[threading.Event]) -> None:
    pool = WorkerPool(1, 1, name="test-orchestrator-one")
    gate = threading.Event()
    gates.append(gate)
    started = threading.Event()

    def hold() -> None:
        started.set()
        gate.wait(WAIT)

    held = pool.submit(hold)
    assert started.wait(WAIT)
    order: list[str] = []
    specs = [
        TaskSpec("observer", lambda d: order.append("observer"), priority=OBSERVER),
        TaskSpec("middle", lambda d: order.append("middle"), priority=5),
        TaskSpec("guard", lambda d: order.append("guard"), priority=GUARD),
    ]

    async def scenario() -> dict[str, TaskResult]:
        running = asyncio.ensure_future(Orchestrator(pool).run(specs, WAIT))
        for _ in range(1000):  # yield to the loop until all three are queued behind hold()
            if pool.queue_depth == 3:
                break
            await asyncio.sleep(0)
        assert pool.queue_depth == 3
        gate.set()
        return await running

    try:
        results = asyncio.run(scenario())
        assert all(r.ok for r in results.values())
        assert order == ["guard", "middle", "observer"]
        held.result(WAIT)
    finally:
        gate.set()
        pool.shutdown(wait=True)


def test_a_cycle_is_refused_and_named_before_anything_runs(pool: WorkerPool) -> None:
    ran: list[str] = []
    specs = [
        TaskSpec("free", lambda d: ran.append("free")),
        TaskSpec("a", lambda d: ran.append("a"), depends_on=("c",)),
        TaskSpec("b", lambda d: ran.append("b"), depends_on=("a",)),
        TaskSpec("c", lambda d: ran.append("c"), depends_on=("b",)),
    ]
    with pytest.raises(DependencyError, match=r"cycle: a -> c -> b -> a"):
        run(pool, specs)
    with pytest.raises(DependencyError, match=r"cycle: self -> self"):
        run(pool, [TaskSpec("self", lambda d: None, depends_on=("self",))])
    assert ran == []


def test_an_unknown_or_duplicate_name_is_refused(pool: WorkerPool) -> None:
    with pytest.raises(DependencyError, match=r"'b' depends on unknown task 'ghost'"):
        run(pool, [TaskSpec("a", lambda d: 1), TaskSpec("b", lambda d: 2, depends_on=("a", "ghost"))])
    with pytest.raises(DependencyError, match=r"duplicate task name 'a'"):
        run(pool, [TaskSpec("a", lambda d: 1), TaskSpec("a", lambda d: 2)])
    assert issubclass(DependencyError, ValueError)


def test_a_failure_skips_its_dependants_only(pool: WorkerPool) -> None:
    ran: list[str] = []

    def bad(deps: dict[str, TaskResult]) -> None:
        raise ValueError("bad input")

    specs = [
        TaskSpec("bad", bad),
        TaskSpec("child", lambda d: ran.append("child"), depends_on=("bad",)),
        TaskSpec("grandchild", lambda d: ran.append("grandchild"), depends_on=("child",)),
        TaskSpec("other", lambda d: "fine"),
        TaskSpec("other_child", lambda d: d["other"].value + "!", depends_on=("other",)),
    ]
    results = run(pool, specs)
    assert results["bad"].status == "error"
    assert results["bad"].error == "ValueError: bad input"
    assert results["child"].status == "skipped"
    assert "'bad'" in results["child"].error and "bad input" in results["child"].error
    assert results["grandchild"].status == "skipped"
    assert "'child'" in results["grandchild"].error
    assert (results["other"].value, results["other_child"].value) == ("fine", "fine!")
    assert ran == []


def test_a_timeout_error_raised_by_a_task_is_an_error_not_a_timeout(pool: WorkerPool) -> None:
    def raises(deps: dict[str, TaskResult]) -> None:
        raise TimeoutError("its own")

    result = run(pool, [TaskSpec("t", raises, timeout_s=WAIT)])["t"]
    assert (result.status, result.error) == ("error", "TimeoutError: its own")


def test_a_hung_task_is_reported_at_the_deadline_while_others_complete(pool: WorkerPool, gates: list[threading.Event]) -> None:
    never = threading.Event()
    gates.append(never)
    specs = [
        TaskSpec("hung", lambda d: never.wait()),
        TaskSpec("after_hung", lambda d: "unreachable", depends_on=("hung",)),
        TaskSpec("quick", lambda d: 1, priority=GUARD),
        TaskSpec("after_quick", lambda d: d["quick"].value + 1, depends_on=("quick",)),
    ]
    deadline = 0.2
    start = time.perf_counter()
    results = run(pool, specs, deadline_s=deadline)
    elapsed = time.perf_counter() - start
    assert deadline - 0.05 <= elapsed < deadline + 1.0  # waited for it, but not much past the deadline
    assert results["hung"].status == "timeout"
    assert "200 ms" in results["hung"].error
    assert results["after_hung"].status == "skipped"
    assert "'hung'" in results["after_hung"].error
    assert (results["quick"].value, results["after_quick"].value) == (1, 2)


def test_a_per_task_timeout_ends_the_wait_long_before_the_deadline(pool: WorkerPool, gates: list[threading.Event]) -> None:
    never = threading.Event()
    gates.append(never)
    specs = [
        TaskSpec("slow", lambda d: never.wait(), timeout_s=0.05),
        TaskSpec("after_slow", lambda d: "unreachable", depends_on=("slow",)),
        TaskSpec("quick", lambda d: "done"),
    ]
    start = time.perf_counter()
    results = run(pool, specs, deadline_s=30.0)
    assert time.perf_counter() - start < 10.0  # the 30 s deadline was not what ended it
    assert results["slow"].status == "timeout"
    assert "50 ms" in results["slow"].error
    assert results["after_slow"].status == "skipped"
    assert results["quick"].value == "done"


def test_a_task_timeout_counts_from_its_start_not_from_queueing() -> None:
    pool = WorkerPool(1, 1, name="test-orchestrator-queue")
    # The one worker is busy for longer than "queued" may run; the bounded wait is the
    # point of the test (time spent queued must not count against the task's timeout).
    specs = [
        TaskSpec("first", lambda d: threading.Event().wait(0.3), priority=GUARD),
        TaskSpec("queued", lambda d: "ran", priority=OBSERVER, timeout_s=0.15),
    ]
    try:
        results = run(pool, specs)
    finally:
        pool.shutdown(wait=True)
    assert results["queued"].status == "ok"
    assert results["queued"].value == "ran"


def test_a_shut_down_pool_gives_errors_not_a_crash() -> None:
    pool = WorkerPool(1, 1, name="test-orchestrator-closed")
    pool.shutdown(wait=True)
    result = run(pool, [TaskSpec("late", lambda d: 1)])["late"]
    assert result.status == "error"
    assert "shutdown" in result.error


def test_batch_mates_of_a_hung_task_still_get_their_own_results(pool: WorkerPool, gates: list[threading.Event]) -> None:
    # Same priority, no dependencies: they share one pool submission; a hung one must not take the others down.
    never = threading.Event()
    gates.append(never)
    specs = [TaskSpec("hung", lambda d: never.wait())] + [TaskSpec(f"quick{i}", lambda d, i=i: i) for i in range(4)]
    results = run(pool, specs, deadline_s=1.0)
    assert results["hung"].status == "timeout"
    assert [results[f"quick{i}"].value for i in range(4)] == [0, 1, 2, 3]
    assert all(results[f"quick{i}"].elapsed_s < 0.5 for i in range(4))  # answered, not held to the deadline
