from __future__ import annotations

import hashlib
import os
import signal
import time
from collections.abc import Iterator

import multiprocess
import pytest

from modules.optimization.memory_pool import SharedBlockPool
from modules.optimization.subprocess_coordinator import ProcessCoordinator, TaskFailedError, WorkerDiedError

BOUND_S = 30  # an upper bound for waiting on a future, never a timing assumption

# Made at import, before any worker forks, so every worker inherits it: a running
# worker cannot be handed a pipe or Event afterwards (they refuse to pickle).
_STARTED_R, _STARTED_W = multiprocess.get_context("fork").Pipe(duplex=False)


def _sha256(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def _announce_then_hang(payload: bytes) -> None:
    _STARTED_W.send(os.getpid())
    time.sleep(BOUND_S * 10)  # until the test kills this worker


def _raise(payload: bytes) -> None:
    raise ValueError(f"bad payload of {len(payload)} bytes")


def _allocate_2gb(payload: bytes) -> int:
    return len(bytearray(2 << 30))


def _spin(payload: bytes) -> None:
    while True:
        pass


def _wait_started() -> int:
    assert _STARTED_R.poll(BOUND_S), "task never started"
    pid: int = _STARTED_R.recv()
    return pid


@pytest.fixture
def coordinator() -> Iterator[ProcessCoordinator]:
    while _STARTED_R.poll(0):  # drop announcements a failed earlier test left behind
        _STARTED_R.recv()
    with ProcessCoordinator(workers=2, memory_limit_mb=256, cpu_limit_s=10) as coord:
        yield coord


def _shm_segments() -> set[str]:
    return {name for name in os.listdir("/dev/shm") if name.startswith("psm_")}


def test_small_payload_goes_through_the_pipe(coordinator: ProcessCoordinator) -> None:
    payload = os.urandom(1 << 10)
    assert coordinator.submit(_sha256, payload).result(BOUND_S) == _sha256(payload)
    assert coordinator.stats()["shm_transfers"] == 0


def test_large_payload_goes_through_shared_memory(coordinator: ProcessCoordinator) -> None:
    payload = os.urandom(5 << 20)
    assert coordinator.submit(_sha256, payload).result(BOUND_S) == _sha256(payload)
    assert coordinator.submit(lambda b: len(b), payload[:12345] * 100).result(BOUND_S) == 1234500
    stats = coordinator.stats()
    assert stats["shm_transfers"] == 2
    assert stats["tasks_done"] == 2


def test_many_tasks_queue_behind_few_workers(coordinator: ProcessCoordinator) -> None:
    futures = [coordinator.submit(lambda b: b[::-1], str(i).encode()) for i in range(40)]
    assert [f.result(BOUND_S) for f in futures] == [str(i).encode()[::-1] for i in range(40)]
    assert coordinator.stats()["tasks_done"] == 40


def test_exhausted_block_pool_falls_back_to_the_pipe() -> None:
    with SharedBlockPool(max_blocks=1) as pool, ProcessCoordinator(workers=1, block_pool=pool) as coord:
        held = pool.acquire(1)
        payload = os.urandom(2 << 20)
        assert coord.submit(_sha256, payload).result(BOUND_S) == _sha256(payload)
        assert coord.stats()["shm_transfers"] == 0
        pool.release(held)
        assert coord.submit(_sha256, payload).result(BOUND_S) == _sha256(payload)
        assert coord.stats()["shm_transfers"] == 1
        assert pool.stats()["in_use"] == 0  # released once the task ended


def test_task_exception_carries_the_remote_traceback(coordinator: ProcessCoordinator) -> None:
    future = coordinator.submit(_raise, b"abc")
    with pytest.raises(TaskFailedError, match="ValueError: bad payload of 3 bytes") as info:
        future.result(BOUND_S)
    assert "_raise" in info.value.remote_traceback
    assert coordinator.stats()["tasks_failed"] == 1
    assert coordinator.submit(_sha256, b"x").result(BOUND_S) == _sha256(b"x")


def test_unpicklable_result_fails_the_task_not_the_worker(coordinator: ProcessCoordinator) -> None:
    pids = coordinator.worker_pids()
    with pytest.raises(TaskFailedError, match="could not be sent"):
        coordinator.submit(lambda b: multiprocess.get_context("fork").Lock()).result(BOUND_S)
    assert coordinator.worker_pids() == pids


def test_killed_worker_fails_its_task_and_is_replaced(coordinator: ProcessCoordinator) -> None:
    future = coordinator.submit(_announce_then_hang)
    pid = _wait_started()
    assert pid in coordinator.worker_pids()
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(WorkerDiedError, match=rf"worker {pid} was killed by SIGKILL while running task 1 \(_announce_then_hang\)"):
        future.result(BOUND_S)
    pids = coordinator.worker_pids()
    assert pid not in pids and len(pids) == 2
    stats = coordinator.stats()
    assert stats["workers_replaced"] == 1 and stats["alive"] == 2 and stats["tasks_failed"] == 1
    assert coordinator.submit(_sha256, b"after").result(BOUND_S) == _sha256(b"after")


def test_memory_limit_stops_a_greedy_task(coordinator: ProcessCoordinator) -> None:
    with pytest.raises((TaskFailedError, WorkerDiedError)) as info:
        coordinator.submit(_allocate_2gb).result(BOUND_S)
    if isinstance(info.value, TaskFailedError):
        assert "MemoryError" in str(info.value)
    assert coordinator.submit(_sha256, b"ok").result(BOUND_S) == _sha256(b"ok")


def test_cpu_limit_stops_a_busy_loop() -> None:
    with ProcessCoordinator(workers=1, cpu_limit_s=1) as coord:
        with pytest.raises(WorkerDiedError, match="SIGXCPU"):
            coord.submit(_spin).result(BOUND_S)
        assert coord.submit(_sha256, b"ok").result(BOUND_S) == _sha256(b"ok")
        assert coord.stats()["workers_replaced"] == 1


def test_cpu_budget_is_per_task_not_per_worker() -> None:
    def burn(payload: bytes) -> int:
        end = time.process_time() + 0.5
        while time.process_time() < end:
            pass
        return os.getpid()

    with ProcessCoordinator(workers=1, cpu_limit_s=1) as coord:
        pids = {coord.submit(burn).result(BOUND_S) for _ in range(3)}  # 1.5 s of CPU in all
        assert pids == set(coord.worker_pids())
        assert coord.stats()["workers_replaced"] == 0


def test_close_fails_unfinished_tasks_and_leaves_no_segments() -> None:
    while _STARTED_R.poll(0):
        _STARTED_R.recv()
    before = _shm_segments()
    coord = ProcessCoordinator(workers=1, shm_threshold=1 << 10)
    assert coord.submit(_sha256, os.urandom(4 << 10)).result(BOUND_S)
    running = coord.submit(_announce_then_hang, os.urandom(8 << 10))
    queued = coord.submit(_sha256, b"never")
    _wait_started()
    pids = coord.worker_pids()
    assert _shm_segments() - before  # the in-flight payload is in shared memory
    coord.close()
    with pytest.raises(RuntimeError, match="closed before task 2"):
        running.result(BOUND_S)
    with pytest.raises(RuntimeError, match="closed before task 3"):
        queued.result(BOUND_S)
    assert _shm_segments() - before == set()
    assert all(not os.path.exists(f"/proc/{pid}") for pid in pids)
    assert coord.stats()["alive"] == 0
    with pytest.raises(RuntimeError, match="closed"):
        coord.submit(_sha256)
    coord.close()  # idempotent
