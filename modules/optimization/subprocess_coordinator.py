"""Run tasks in forked worker processes under memory and CPU limits, passing large payloads through shared memory."""

from __future__ import annotations

import itertools
import math
import os
import resource
import signal
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import multiprocess
from multiprocess import connection
from multiprocess.reduction import ForkingPickler
from multiprocess.shared_memory import SharedMemory

from .memory_pool import PoolExhaustedError, SharedBlockPool

__all__ = ["ProcessCoordinator", "TaskFailedError", "WorkerDiedError"]

_STOP_GRACE_S = 1.0  # how long close() lets workers exit on SIGTERM before SIGKILL


class WorkerDiedError(RuntimeError):
    """The worker running a task died before answering."""


class TaskFailedError(RuntimeError):
    """The task raised inside its worker; remote_traceback holds the worker's traceback."""

    def __init__(self, message: str, remote_traceback: str = "") -> None:
        super().__init__(message)
        self.remote_traceback = remote_traceback


@dataclass(slots=True)
class _Task:
    label: str
    fn_bytes: bytes
    payload: bytes
    future: Future[Any]
    block: SharedMemory | None = None


@dataclass(slots=True, eq=False)
class _Worker:
    process: Any
    conn: Any
    task: _Task | None = None


def _describe_exit(exitcode: int | None) -> str:
    """Say how a worker process ended, naming the signal if one killed it."""
    if exitcode is None:
        return "died (exit status unknown)"
    if exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


def _set_limit(which: int, soft: int) -> None:
    """Lower a resource limit to soft (and the hard limit with it) without exceeding the current hard limit."""
    _, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(which, (soft, soft))


def _limit_cpu(seconds: int) -> None:
    """Allow this process seconds more CPU time from now, then SIGXCPU."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    # RLIMIT_CPU counts the whole life of the process, so the budget is set per task;
    # only the soft limit moves, because a lowered hard limit could not be raised for the next task.
    soft = math.ceil(usage.ru_utime + usage.ru_stime) + seconds
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _read_block(name: str, nbytes: int) -> bytes:
    """Read a shared-memory block by name."""
    # Opened as a file rather than SharedMemory(name=...): before Python 3.13 attaching
    # registers the block with the resource tracker, whose lock another parent thread
    # may have held at fork time.
    with open(os.path.join("/dev/shm", name), "rb") as block:
        return block.read(nbytes)


def _serve(conn: Any, close_fds: list[int], memory_limit_mb: int | None, cpu_limit_s: int | None) -> None:
    """Run tasks sent by the coordinator one at a time until the pipe closes."""
    # Parent-side pipe ends inherited by fork would keep this worker's recv() from
    # seeing EOF, and so the worker alive, if the coordinator's process died.
    for fd in close_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the process group; the coordinator decides
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a worker killed by its CPU limit must not drop core files
    if memory_limit_mb is not None:
        # A forked worker starts with its parent's mappings (thread stacks, malloc arenas),
        # so the limit is headroom above that rather than an absolute size.
        with open("/proc/self/statm") as statm:
            mapped = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        _set_limit(resource.RLIMIT_AS, mapped + (memory_limit_mb << 20))
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        fn_bytes, payload, shm_name, nbytes = message
        try:
            if shm_name:
                payload = _read_block(shm_name, nbytes)
            fn = ForkingPickler.loads(fn_bytes)
            if cpu_limit_s is not None:
                _limit_cpu(cpu_limit_s)
            reply: tuple[bool, Any] = (True, fn(payload))
        except Exception as exc:
            reply = (False, (f"{type(exc).__name__}: {exc}", traceback.format_exc()))
        del payload, message  # an idle worker should not keep the last payload alive
        try:
            conn.send(reply)
        except OSError:
            raise  # the coordinator is gone
        except Exception as exc:  # the result would not pickle
            conn.send((False, (f"result could not be sent: {type(exc).__name__}: {exc}", traceback.format_exc())))


class ProcessCoordinator:
    """Run callables on bytes in a fixed set of forked workers, replacing any that die.

    memory_limit_mb is address space a worker may add to what it inherited at fork;
    cpu_limit_s is CPU time per task. Either may be None for no limit.

    One supervisor thread owns the workers: it dispatches queued tasks, collects results,
    and notices deaths through each worker's pipe and sentinel. self._lock guards only
    the queue, the worker list and the closed flag, so submit() never waits on a worker.
    """

    def __init__(
        self,
        workers: int = 2,
        *,
        memory_limit_mb: int | None = 512,
        cpu_limit_s: int | None = 30,
        shm_threshold: int = 1 << 20,
        block_pool: SharedBlockPool | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self._size = workers
        self._memory_limit_mb = memory_limit_mb
        self._cpu_limit_s = cpu_limit_s
        self._shm_threshold = shm_threshold
        self._own_pool = block_pool is None
        self._pool = block_pool if block_pool is not None else SharedBlockPool(max_blocks=workers)
        self._ctx = multiprocess.get_context("fork")
        self._lock = threading.Lock()
        self._queue: deque[_Task] = deque()
        self._closed = False
        self._shut_down = False
        self._ids = itertools.count(1)
        self._done = self._failed = self._replaced = self._shm_transfers = 0
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)  # a full pipe already means "wake up"
        self._workers: list[_Worker] = []
        for _ in range(workers):
            self._workers.append(self._spawn())
        self._supervisor = threading.Thread(target=self._run_supervisor, name="hookopt-coordinator", daemon=True)
        self._supervisor.start()

    def submit(self, fn: Callable[[bytes], Any], payload: bytes = b"") -> Future[Any]:
        """Queue fn(payload) to run in a worker; raise if fn cannot be pickled."""
        fn_bytes = bytes(ForkingPickler.dumps(fn))
        future: Future[Any] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("ProcessCoordinator is closed")
            label = f"task {next(self._ids)} ({getattr(fn, '__qualname__', type(fn).__name__)})"
            self._queue.append(_Task(label, fn_bytes, bytes(payload), future))
        self._wake()
        return future

    def close(self) -> None:
        """Stop the workers, fail unfinished tasks and unlink shared memory."""
        with self._lock:
            if self._shut_down:
                return
            self._closed = self._shut_down = True
        self._wake()
        self._supervisor.join()
        with self._lock:
            workers, self._workers = self._workers, []
            queued = list(self._queue)
            self._queue.clear()
        for worker in workers:
            worker.process.terminate()
        deadline = time.monotonic() + _STOP_GRACE_S
        for worker in workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
        for task in queued:
            if task.future.set_running_or_notify_cancel():
                task.future.set_exception(RuntimeError(f"ProcessCoordinator closed before {task.label} started"))
        for worker in workers:
            if worker.task is not None:
                self._end(worker.task, RuntimeError(f"ProcessCoordinator closed before {worker.task.label} finished"))
            worker.conn.close()
            worker.process.close()
        if self._own_pool:
            self._pool.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def stats(self) -> dict[str, int]:
        """Return worker and task counters."""
        with self._lock:
            # A ready sentinel means the process has exited; checking it never reaps the
            # child, which is the supervisor's job alone.
            dead = connection.wait([w.process.sentinel for w in self._workers], timeout=0) if self._workers else []
            return {
                "workers": self._size,
                "alive": len(self._workers) - len(dead),
                "tasks_done": self._done,
                "tasks_failed": self._failed,
                "workers_replaced": self._replaced,
                "shm_transfers": self._shm_transfers,
            }

    def worker_pids(self) -> list[int]:
        """Return the pids of the current workers."""
        with self._lock:
            return [int(w.process.pid) for w in self._workers]

    def __enter__(self) -> ProcessCoordinator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _spawn(self) -> _Worker:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        close_fds = [parent_conn.fileno(), self._wake_r, self._wake_w] + [w.conn.fileno() for w in self._workers]
        process = self._ctx.Process(
            target=_serve,
            args=(child_conn, close_fds, self._memory_limit_mb, self._cpu_limit_s),
            name="hookopt-worker",
            daemon=True,
        )
        process.start()
        child_conn.close()
        return _Worker(process, parent_conn)

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except BlockingIOError:
            pass

    def _run_supervisor(self) -> None:
        try:
            self._supervise()
        except BaseException as exc:
            # A bug here must not leave callers waiting forever on their futures.
            with self._lock:
                self._closed = True
                queued = list(self._queue)
                self._queue.clear()
            error = RuntimeError(f"ProcessCoordinator supervisor failed: {exc!r}")
            for task in queued:
                if task.future.set_running_or_notify_cancel():
                    task.future.set_exception(error)
            for worker in self._workers:
                if worker.task is not None:
                    self._end(worker.task, error)
                    worker.task = None
            raise

    def _supervise(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
            self._dispatch()
            conns = {w.conn: w for w in self._workers}
            sentinels = {w.process.sentinel: w for w in self._workers}
            ready = connection.wait([self._wake_r, *conns, *sentinels])
            if self._wake_r in ready:
                try:
                    while os.read(self._wake_r, 4096):
                        pass
                except BlockingIOError:
                    pass
            # Results first: a worker that answered and then died still delivered its answer.
            for obj in ready:
                if obj in conns:
                    self._collect(conns[obj])
            for obj in ready:
                if obj in sentinels and sentinels[obj] in self._workers:
                    self._replace(sentinels[obj])

    def _dispatch(self) -> None:
        idle = [w for w in self._workers if w.task is None]
        while idle:
            with self._lock:
                if not self._queue:
                    return
                task = self._queue.popleft()
            if task.future.set_running_or_notify_cancel():
                self._send(idle.pop(), task)

    def _send(self, worker: _Worker, task: _Task) -> None:
        payload, shm_name = task.payload, ""
        if len(payload) >= self._shm_threshold:
            try:
                task.block = self._pool.acquire(len(payload), timeout=0)
            except PoolExhaustedError:
                pass  # the pipe carries any size; shared memory only saves copies
            if task.block is not None:
                task.block.buf[: len(payload)] = payload
                payload, shm_name = b"", task.block.name
                self._shm_transfers += 1
        worker.task = task
        try:
            worker.conn.send((task.fn_bytes, payload, shm_name, len(task.payload)))
        except OSError:
            pass  # the worker is gone; its sentinel fails the task with WorkerDiedError

    def _collect(self, worker: _Worker) -> None:
        try:
            ok, value = worker.conn.recv()
        except (EOFError, OSError):
            self._replace(worker)
            return
        except Exception as exc:
            ok, value = False, (f"result could not be unpickled: {type(exc).__name__}: {exc}", "")
        task, worker.task = worker.task, None
        assert task is not None, "a worker answered without a task"
        if ok:
            self._end(task, None, value)
        else:
            summary, remote_traceback = value
            self._end(task, TaskFailedError(f"{task.label} raised {summary}", remote_traceback))

    def _replace(self, worker: _Worker) -> None:
        process = worker.process
        if process.is_alive():
            process.kill()  # its pipe closed, so it cannot serve even if it has not exited yet
        process.join()
        pid, reason = process.pid, _describe_exit(process.exitcode)
        fresh = self._spawn()
        with self._lock:
            self._workers[self._workers.index(worker)] = fresh
        self._replaced += 1
        worker.conn.close()
        process.close()
        # Fail the task only after the replacement is in place, so its caller sees a full pool.
        if worker.task is not None:
            self._end(worker.task, WorkerDiedError(f"worker {pid} {reason} while running {worker.task.label}"))
            worker.task = None

    def _end(self, task: _Task, error: BaseException | None, value: Any = None) -> None:
        # Release and count before resolving the future, so a caller woken by it sees final stats.
        if task.block is not None:
            self._pool.release(task.block)
            task.block = None
        if error is None:
            self._done += 1
            task.future.set_result(value)
        else:
            self._failed += 1
            task.future.set_exception(error)
