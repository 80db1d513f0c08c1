"""Keep a worker process alive: the gunicorn arbiter pattern, for one daemon worker.

The parent is a small loop that forks the worker, reaps it with ``waitpid(-1, WNOHANG)``
and forks a new one when it crashes. Signal handlers only enqueue; the loop acts. The
worker proves it is alive by writing a byte to a pipe (its heartbeat); a silent worker is
killed in two steps (SIGTERM, then SIGKILL after a grace period) and replaced at once. Exit codes
the worker returns on purpose end supervision instead: 0 (idle, or told to stop) and the
boot-failure codes (broken configuration, insecure runtime directory), so a worker that
cannot boot is never respawned in a loop. A crash is replaced at once; further crashes in
a row, each soon after its start, back off exponentially and, after ``max_quick_crashes``
in a row, supervision gives up.

Whatever the worker must keep across restarts (listening sockets, so clients and Claude
Code's http hooks meet the same socket, port and token) is created before ``run`` and
inherited through fork. With a ``Keeper`` (kept_connections.py), the loop also accepts the
http connections and keeps them open while workers come and go.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from .kept_connections import Keeper

__all__ = ["EXIT_GAVE_UP", "Policy", "Supervisor", "WorkerContext"]

log = logging.getLogger("hookopt.supervisor")

EXIT_GAVE_UP: Final = 5  # the worker kept crashing right after its start
_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGHUP)


@dataclass(frozen=True, slots=True)
class Policy:
    """When to call a worker dead, and how fast to replace it."""

    heartbeat_timeout_s: float = 30.0  # silence after which a worker is hung
    kill_grace_s: float = 5.0  # between SIGTERM and SIGKILL
    min_uptime_s: float = 5.0  # a worker that dies sooner (or before its first beat) crashed "quickly"
    backoff_s: float = 0.1  # delay before replacing the second quick crash in a row; doubles per further one
    backoff_max_s: float = 10.0
    max_quick_crashes: int = 5  # in a row, then give up
    final_codes: frozenset[int] = frozenset({0})  # exit codes that end supervision


@dataclass(slots=True)
class WorkerContext:
    """What a worker knows about its supervision: where to beat, and the history so far."""

    supervisor_pid: int
    restarts: int
    last_exit: str
    beat_fd: int

    def beat(self) -> None:
        """Tell the supervisor this worker is alive (never blocks)."""
        try:
            os.write(self.beat_fd, b".")
        except BlockingIOError:
            pass  # the pipe is full of unread beats: the supervisor knows we are alive

    def info(self) -> dict[str, object]:
        """A JSON-able summary for the worker's status."""
        return {"pid": self.supervisor_pid, "restarts": self.restarts, "last_exit": self.last_exit}


class Supervisor:
    """Run worker(ctx) in a forked child, replacing it when it crashes, until it exits on purpose."""

    def __init__(
        self,
        worker: Callable[[WorkerContext], int],
        policy: Policy = Policy(),
        *,
        clock: Callable[[], float] = time.monotonic,
        keeper: Keeper | None = None,
    ) -> None:
        self.worker = worker
        self.keeper = keeper
        self.policy = policy
        self.clock = clock
        self.pid: int | None = None
        self.restarts = 0
        self.last_exit = ""
        self.exit_code: int | None = None  # set when supervision ends
        self._signals: deque[int] = deque()
        self._stopping = False
        self._started = 0.0
        self._last_beat = 0.0
        self._ready = False
        self._term_at: float | None = None  # when we sent SIGTERM to a hung or stopping worker
        self._term_reason = ""
        self._quick_crashes = 0
        self._respawn_at = 0.0
        self._beat_r = -1
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        self._saved: dict[int, object] = {}

    # -- the loop -------------------------------------------------------------

    def run(self) -> int:
        """Supervise until the worker exits on purpose or keeps crashing; return the exit code."""
        self.install_signals()
        try:
            while self.exit_code is None:
                self.step()
            return self.exit_code
        finally:
            self.restore_signals()

    def step(self, max_wait_s: float = 1.0) -> None:
        """One turn of the loop: act on signals, reap, check the heartbeat, spawn, then wait."""
        self._handle_signals()
        self.reap()
        if self.exit_code is not None:
            return
        self._check_worker()
        if self.pid is None and not self._stopping and self.clock() >= self._respawn_at:
            self.spawn()
        self._wait(max_wait_s)

    def stop(self) -> None:
        """Stop supervising: the worker gets SIGTERM (then SIGKILL after the grace period)."""
        self._stopping = True
        if self.pid is None:
            self.exit_code = 0
        elif self._term_at is None:
            self._kill(signal.SIGTERM, "stopping")

    # -- children ---------------------------------------------------------------

    def spawn(self) -> int:
        """Fork a worker; in the child, run it and exit with its code."""
        beat_r, beat_w = os.pipe()
        os.set_blocking(beat_w, False)
        ctx = WorkerContext(os.getpid(), self.restarts, self.last_exit, beat_w)
        if self.keeper is not None:
            self.keeper.new_worker()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                self._become_worker(beat_r)
                code = self.worker(ctx)
            except BaseException:
                log.exception("worker failed")
            finally:
                logging.shutdown()
                os._exit(code)
        os.close(beat_w)
        if self.keeper is not None:
            self.keeper.worker_started()
        os.set_blocking(beat_r, False)
        self._close_beat()
        self._beat_r = beat_r
        self.pid, self._started, self._last_beat, self._ready, self._term_at = pid, self.clock(), self.clock(), False, None
        log.info("worker %d started (restarts so far: %d)", pid, self.restarts)
        return pid

    def _become_worker(self, beat_r: int) -> None:
        signal.set_wakeup_fd(-1)
        for sig in _SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        for fd in (beat_r, self._wake_r, self._wake_w):
            os.close(fd)
        if self._beat_r >= 0:
            os.close(self._beat_r)
        if self.keeper is not None:
            self.keeper.in_worker()

    def reap(self) -> None:
        """Collect every exited child (waitpid(-1, WNOHANG)) and decide what comes next."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.pid:
                self._worker_exited(status)

    def _worker_exited(self, status: int) -> None:
        uptime = self.clock() - self._started
        code = os.waitstatus_to_exitcode(status)
        how = f"exit code {code}" if code >= 0 else f"signal {signal.Signals(-code).name}"
        killed_by_us, self.pid, self._term_at = self._term_at is not None, None, None
        if self.keeper is not None:
            self.keeper.worker_exited()
        self._drain_beats()
        self._close_beat()
        if self._stopping:
            log.info("worker stopped (%s)", how)
            self.exit_code = 0 if code < 0 or killed_by_us else code
            return
        if code in self.policy.final_codes and not killed_by_us:
            log.info("worker exited with %s; supervision ends", how)
            self.exit_code = code
            return
        self.restarts += 1
        self.last_exit = f"{how} ({self._term_reason})" if killed_by_us else how
        quick = uptime < self.policy.min_uptime_s or not self._ready
        self._quick_crashes = self._quick_crashes + 1 if quick else 0
        if self._quick_crashes > self.policy.max_quick_crashes:
            log.error("worker crashed %d times in a row right after starting (last: %s); giving up", self._quick_crashes, how)
            self.exit_code = EXIT_GAVE_UP
            return
        # The first crash is replaced at once (every moment without a worker is a moment the http
        # hooks fail open); only crashes in a row wait, doubling each time.
        n = self._quick_crashes
        delay = min(self.policy.backoff_s * 2 ** (n - 2), self.policy.backoff_max_s) if n >= 2 else 0.0
        self._respawn_at = self.clock() + delay
        log.error("worker died after %.1fs (%s); restarting in %.1fs", uptime, self.last_exit, delay)

    def _check_worker(self) -> None:
        if self.pid is None:
            return
        self._drain_beats()
        now = self.clock()
        if self._term_at is not None:
            if now - self._term_at >= self.policy.kill_grace_s:
                log.error("worker %d ignored SIGTERM for %gs; killing it", self.pid, self.policy.kill_grace_s)
                self._kill(signal.SIGKILL)
        elif now - self._last_beat >= self.policy.heartbeat_timeout_s:
            log.error("worker %d sent no heartbeat for %gs; replacing it", self.pid, self.policy.heartbeat_timeout_s)
            self._kill(signal.SIGTERM, f"hung: no heartbeat for {self.policy.heartbeat_timeout_s:g}s")

    def _kill(self, sig: int, reason: str = "") -> None:
        if self.pid is None:
            return
        if sig == signal.SIGTERM:
            self._term_at, self._term_reason = self.clock(), reason
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass  # already dead; reap() collects it

    def _drain_beats(self) -> None:
        if self._beat_r < 0:
            return
        try:
            while data := os.read(self._beat_r, 4096):
                self._last_beat, self._ready = self.clock(), True
                if len(data) < 4096:
                    return
        except BlockingIOError:
            return
        self._close_beat()  # EOF: the worker is gone or closed its end; reap() says which

    def _close_beat(self) -> None:
        if self._beat_r >= 0:
            os.close(self._beat_r)
            self._beat_r = -1

    # -- signals and waiting ------------------------------------------------------

    def install_signals(self) -> None:
        """Handlers only enqueue; the wakeup fd ends the loop's wait."""
        signal.set_wakeup_fd(self._wake_w)
        for sig in _SIGNALS:
            self._saved[sig] = signal.signal(sig, self._enqueue)

    def restore_signals(self) -> None:
        """Put back the handlers run() replaced."""
        signal.set_wakeup_fd(-1)
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._saved.clear()

    def _enqueue(self, signum: int, frame: FrameType | None) -> None:
        self._signals.append(signum)

    def _handle_signals(self) -> None:
        while self._signals:
            sig = self._signals.popleft()
            if sig in (signal.SIGTERM, signal.SIGINT) and not self._stopping:
                log.info("supervisor got %s; stopping the worker", signal.Signals(sig).name)
                self.stop()
            elif sig == signal.SIGHUP and self.pid is not None and self._term_at is None:
                log.info("supervisor got SIGHUP; replacing the worker")
                self._kill(signal.SIGTERM, "replaced on SIGHUP")  # replaced, not final

    def _wait(self, max_wait_s: float) -> None:
        fds = [self._wake_r] + ([self._beat_r] if self._beat_r >= 0 else []) + (self.keeper.fds() if self.keeper else [])
        timeout = max_wait_s
        if self.pid is None and not self._stopping:
            timeout = max(0.0, min(timeout, self._respawn_at - self.clock()))
        poller = select.poll()  # not select(): a kept connection may push a new fd past FD_SETSIZE
        for fd in fds:
            poller.register(fd, select.POLLIN)
        try:
            ready = [fd for fd, _ in poller.poll(timeout * 1000)]
        except InterruptedError:
            return
        except OSError as exc:
            if exc.errno != errno.EBADF:
                raise
            return
        if self.keeper is not None:
            self.keeper.ready(ready)
        if self._wake_r in ready:
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except BlockingIOError:
                pass

    def close(self) -> None:
        """Release the loop's pipes (after run())."""
        self._close_beat()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
