"""Pre-warmed pools: a priority-aware thread pool, and the fork server that runs legacy Python hooks warm.

Legacy hooks: ``LegacyRunner.run(command, ...)`` answers exactly what ``/bin/sh -c command``
with the event on stdin would have produced (exit code, stdout bytes, stderr bytes).
Commands of the form ``python script.py args`` run in a child forked from a ``ForkServer``
(a zygote started by the user's own interpreter, see forkserver.py) that has already
imported what the script imports; anything else is spawned through /bin/sh.

Known differences of a warm run (tests/test_legacy.py checks everything else byte for
byte): its parent is the zygote and it leads its own session (no controlling tty);
/proc/self/cmdline names forkserver.py; it may have been forked (as a spare) well before
the event, so its start time in /proc/self/stat is older; an audit hook the script adds sees our exit (gc.get_objects,
and the socket that reports the exit status); the script runs one frame below ours (deeper
stacks by one, recursion limit reached two calls sooner, a module-level warning with
stacklevel=2 names forkserver.py instead of "sys:1"); gc.freeze() hides the zygote's
objects from gc.get_objects(); every run of a zygote shares its hash seed; preloaded
modules ran their import-time code once (values computed at import, like a timestamp,
are shared; output, threads, open fds and process-wide changes make us refuse them).
"""

from __future__ import annotations

import array
import ast
import asyncio
import dataclasses
import heapq
import itertools
import json
import logging
import os
import re
import shlex
import signal
import socket
import struct
import threading
import time
import tomllib
import zipfile
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar

from .client import LEGACY_ENV  # set when spawning, so a stub runs its original instead of calling us
from .protocol import HookResult

if TYPE_CHECKING:
    from .integrated_optimizer import Profile

__all__ = [
    "GUARD",
    "LEGACY_ENV",
    "OBSERVER",
    "STUB_MARKER",
    "ForkServer",
    "ForkServerUnavailable",
    "LegacyRunner",
    "Plan",
    "WorkerPool",
    "spawn",
]

GUARD: Final = 0  # lower runs first: blocking guards go ahead of observers
OBSERVER: Final = 10

_T = TypeVar("_T")
_Outcome = Literal["completed", "failed", "cancelled"]


class _WorkItem:
    __slots__ = ("future", "fn", "args", "kwargs")

    def __init__(self, future: Future[Any], fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.future = future
        self.fn = fn
        self.args = args
        self.kwargs = kwargs

    def call(self) -> tuple[_Outcome, Any]:
        """Run the call unless it was cancelled while queued; return how it went and its result or exception."""
        if not self.future.set_running_or_notify_cancel():
            return "cancelled", None
        try:
            return "completed", self.fn(*self.args, **self.kwargs)
        except BaseException as exc:  # the caller sees it through the future, as with ThreadPoolExecutor
            return "failed", exc

    def settle(self, outcome: _Outcome, value: Any) -> None:
        """Hand the result or exception to the future."""
        if outcome == "completed":
            self.future.set_result(value)
        elif outcome == "failed":
            self.future.set_exception(value)


class _Worker:
    __slots__ = ("thread", "idle_since", "retire")

    def __init__(self, idle_since: float) -> None:
        self.thread: threading.Thread | None = None
        self.idle_since: float | None = idle_since  # None while running a task
        self.retire = False


class WorkerPool(Executor):
    """Run calls on threads started ahead of time, lowest priority number first.

    The pool grows when queued calls outnumber idle workers (up to max_workers) and
    retires workers idle for idle_timeout_s, as told by ``clock``, down to min_workers.
    """

    def __init__(
        self,
        min_workers: int = 4,
        max_workers: int = 16,
        *,
        idle_timeout_s: float = 30.0,
        name: str = "hookopt-pool",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_workers < 1 or not 0 <= min_workers <= max_workers:
            raise ValueError(f"need 0 <= min_workers <= max_workers and max_workers >= 1, got {min_workers}, {max_workers}")
        if idle_timeout_s <= 0:
            raise ValueError(f"idle_timeout_s must be positive, got {idle_timeout_s}")
        self._min = min_workers
        self._max = max_workers
        self._idle_timeout_s = idle_timeout_s
        self._name = name
        self._clock = clock
        # One lock guards everything below; workers wait on it for work.
        self._cond = threading.Condition()
        self._heap: list[tuple[int, int, _WorkItem]] = []
        self._seq = itertools.count()  # FIFO among equal priorities
        self._names = itertools.count(1)
        self._workers: set[_Worker] = set()
        self._idle = 0
        self._shutdown = False
        self._counts = {"submitted": 0, "completed": 0, "failed": 0, "cancelled": 0, "spawned": 0, "retired": 0, "peak_workers": 0}
        with self._cond:
            for _ in range(min_workers):
                self._spawn_locked()

    @classmethod
    def from_profile(cls, profile: Profile) -> WorkerPool:
        """Build a pool sized by a profile."""
        return cls(profile.min_workers, profile.max_workers, idle_timeout_s=float(profile.idle_timeout_s))

    # typeshed types Executor.submit with a ParamSpec, which admits no extra keyword; so a
    # callable's own ``priority`` argument cannot be passed through here.
    def submit(self, fn: Callable[..., _T], /, *args: Any, priority: int = 0, **kwargs: Any) -> Future[_T]:  # type: ignore[override]
        """Queue fn(*args, **kwargs) at a priority (lower runs first); return its future."""
        future: Future[_T] = Future()
        with self._cond:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            heapq.heappush(self._heap, (priority, next(self._seq), _WorkItem(future, fn, args, kwargs)))
            self._counts["submitted"] += 1
            self._grow_locked()
            self._cond.notify()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new calls; let workers drain the queue (or cancel it) and exit."""
        dropped: list[_WorkItem] = []
        with self._cond:
            self._shutdown = True
            if cancel_futures:
                dropped = [item for _, _, item in self._heap]
                self._heap.clear()
                self._counts["cancelled"] += len(dropped)
            threads = [w.thread for w in self._workers if w.thread is not None]
            self._cond.notify_all()
        for item in dropped:
            item.future.cancel()  # outside the lock: cancelling runs the future's done-callbacks
        if wait:
            for thread in threads:
                if thread is not threading.current_thread():
                    thread.join()

    @property
    def workers(self) -> int:
        with self._cond:
            return len(self._workers)

    @property
    def idle(self) -> int:
        with self._cond:
            return self._idle

    @property
    def queue_depth(self) -> int:
        with self._cond:
            return len(self._heap)

    def scale(self) -> int:
        """Apply the scaling rule now (grow for the queue, retire stale idlers); return the worker count."""
        with self._cond:
            self._grow_locked()
            self._reap_locked()
            return len(self._workers)

    def reap_idle(self) -> int:
        """Retire workers idle longer than idle_timeout_s, down to min_workers; return how many left."""
        with self._cond:
            stale = self._reap_locked()
        for worker in stale:
            if worker.thread is not None:
                worker.thread.join()  # retirees are idle, so they leave at once
        return len(stale)

    def stats(self) -> dict[str, int]:
        """Return a snapshot of sizes and counters."""
        with self._cond:
            return {
                "min_workers": self._min,
                "max_workers": self._max,
                "workers": len(self._workers),
                "idle": self._idle,
                "queue_depth": len(self._heap),
                **self._counts,
            }

    def _spawn_locked(self) -> None:
        worker = _Worker(self._clock())
        # Daemon threads: an idle pool must never keep the hook daemon from exiting.
        worker.thread = threading.Thread(target=self._work, args=(worker,), name=f"{self._name}-{next(self._names)}", daemon=True)
        self._workers.add(worker)
        self._idle += 1  # counted idle from birth, so back-to-back submits do not overshoot
        self._counts["spawned"] += 1
        self._counts["peak_workers"] = max(self._counts["peak_workers"], len(self._workers))
        worker.thread.start()

    def _grow_locked(self) -> None:
        if self._shutdown:
            return
        for _ in range(min(len(self._heap) - self._idle, self._max - len(self._workers))):
            self._spawn_locked()

    def _reap_locked(self) -> list[_Worker]:
        # Never retire a worker the queue is about to need.
        spare = min(len(self._workers) - self._min, self._idle - len(self._heap))
        if spare <= 0:
            return []
        now = self._clock()
        stale = sorted(
            (w for w in self._workers if w.idle_since is not None and now - w.idle_since >= self._idle_timeout_s),
            key=lambda w: w.idle_since or 0.0,
        )[:spare]
        for worker in stale:
            worker.retire = True
            self._workers.discard(worker)
            self._idle -= 1
        self._counts["retired"] += len(stale)
        if stale:
            self._cond.notify_all()
        return stale

    def _work(self, me: _Worker) -> None:
        while True:
            with self._cond:
                while not self._heap and not me.retire and not self._shutdown:
                    if not self._cond.wait(self._idle_timeout_s):
                        self._reap_locked()  # production path: real time passed with nothing to do
                if me.retire:
                    return  # _reap_locked already took us off the books
                if not self._heap:  # shut down and drained
                    self._workers.discard(me)
                    self._idle -= 1
                    return
                _, _, item = heapq.heappop(self._heap)
                self._idle -= 1
                me.idle_since = None
            outcome, value = item.call()
            # Back on the books before the future settles, so whoever waits on it sees an idle worker.
            with self._cond:
                self._counts[outcome] += 1
                self._idle += 1
                me.idle_since = self._clock()
            item.settle(outcome, value)  # outside the lock: done-callbacks may submit more work
            del item, value  # drop the call's arguments and result while we sit idle


# -- legacy hooks ----------------------------------------------------------------------

log = logging.getLogger("hookopt.legacy")

STUB_MARKER: Final = b"# hookopt stub"  # in a script's first 512 bytes: ours; its code lives in <script>.original
FORKSERVER_PATH: Final = os.path.join(os.path.dirname(os.path.abspath(__file__)), "forkserver.py")
SH: Final = "/bin/sh"
_START_TIMEOUT_S: Final = 30.0
_RECHECK_S: Final = 1.0  # how often a zygote's imported files are checked for edits
_RETRY_START_S: Final = 60.0  # after a zygote failed to start (noisy start-up, no ctypes...)
_PYTHON_NAME: Final = re.compile(r"python(\d+(\.\d+)?)?")
_ASSIGNMENT: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_VAR_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SH_OWN_VARS: Final = frozenset({"PPID", "OPTIND", "LINENO", "IFS", "PS1", "PS2", "PS4", "OPTARG"})  # sh sets these itself
# Interpreter options a zygote started with the same options reproduces. -i, -c, -m, -x,
# -v, -d and the rest change what runs or print per import, so those commands spawn.
_FLAG_LETTERS: Final = frozenset("bBEIOPqsSu")
_X_OPTIONS: Final = frozenset(
    {"utf8", "dev", "warn_default_encoding", "int_max_str_digits", "no_debug_ranges", "frozen_modules", "pycache_prefix"}
)
# Variables that change what sh, a version-manager shim or the interpreter's start-up do:
# a launch probed under one value of these is not reused under another.
_LAUNCH_VARS: Final = frozenset({"PWD", "PATH", "HOME", "SHLVL", "IFS", "LANG", "LC_ALL", "LC_CTYPE"})
_LAUNCH_PREFIXES: Final = ("PYTHON", "PYENV", "ASDF", "MISE", "RTX", "UV_", "VIRTUAL_ENV", "CONDA")
# What shapes a fresh interpreter's state before the script's first line (sys.path, user
# site, locale, UTF-8 mode, stdio): one zygote per distinct set of values.
_STARTUP_VARS: Final = frozenset({"HOME", "LANG", "LC_ALL", "LC_CTYPE"})
_MODULE_SUFFIXES: Final = (".py", ".pyc", ".pyw", ".so")
_PEP723: Final = re.compile(r"(?m)^# /// script\s*$\s(?P<content>(^#(| .*)$\s)+)^# ///\s*$")
_PROBE: Final = """\
import json, os, sys
try:
    with open('/proc/self/environ', 'rb') as f:
        start = [os.fsdecode(i).partition('=')[::2] for i in f.read().split(b'\\0') if i]
except OSError:
    start = None
sys.stdout.write(json.dumps({'exe': sys.executable, 'argv': getattr(sys, 'orig_argv', None),
    'version': list(sys.version_info[:2]), 'impl': sys.implementation.name,
    'start': start, 'env': list(os.environ.items())}))
"""


class ForkServerUnavailable(RuntimeError):
    """The zygote cannot take this run, and nothing of the run was started."""


class _SpawnInstead(Exception):
    """Why a command is spawned rather than run warm."""


@dataclass(frozen=True, slots=True)
class Plan:
    """How a hook command will run: warm in a fork server, or spawned through sh, and why."""

    warm: bool
    reason: str
    interpreter: str | None = None  # the interpreter (or shim) sh would find on the client's PATH
    script: str | None = None  # as python sees it in sys.argv[0]
    code_path: str | None = None  # where its code is read from (<stub>.original for our stubs)
    argv: tuple[str, ...] = ()
    launcher: tuple[str, ...] = ()  # the words before the script: ("python3", "-u"), ("/usr/bin/env", "python3")
    flags: tuple[str, ...] = ()  # interpreter options among them
    requires: tuple[str, ...] = ()  # import names that must load warm (uv scripts' dependencies)
    replaces_shell: bool = False  # `exec python ...`: no sh waits for it, so a signal death is reported as is


# -- pipes -----------------------------------------------------------------------------


class _Output:
    """Read a pipe into memory on the event loop until EOF."""

    def __init__(self, fd: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.fd = fd
        self.data = bytearray()
        self.eof: asyncio.Future[None] = self.loop.create_future()
        os.set_blocking(fd, False)
        self.loop.add_reader(fd, self._read)

    def _read(self) -> None:
        try:
            chunk = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if chunk:
            self.data += chunk
        else:
            self.close()

    def close(self) -> None:
        if self.fd >= 0:
            self.loop.remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1
        if not self.eof.done():
            self.eof.set_result(None)


async def _writable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    loop.add_writer(fd, lambda: None if ready.done() else ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_writer(fd)


async def _feed(fd: int, data: bytes) -> None:
    """Write the event to the script's stdin, then close it; a script that stops reading is fine."""
    view = memoryview(data)
    try:
        os.set_blocking(fd, False)
        while view:
            try:
                view = view[os.write(fd, view[: 1 << 16]) :]
            except BlockingIOError:
                await _writable(fd)
    except OSError:
        pass  # EPIPE: it exited without reading everything, as subprocess.run tolerates
    finally:
        os.close(fd)


async def _collect(
    stdin: bytes, fds: tuple[int, int, int], exited: Awaitable[int], kill: Callable[[], Awaitable[None]], timeout_s: float
) -> HookResult:
    """Feed stdin, gather stdout/stderr to EOF and the exit code; on timeout kill and return what came."""
    feed = asyncio.create_task(_feed(fds[0], stdin))
    out, err = _Output(fds[1]), _Output(fds[2])
    try:
        async with asyncio.timeout(timeout_s):
            code = await exited
            await out.eof
            await err.eof
        return HookResult(code, bytes(out.data), bytes(err.data))
    except TimeoutError:
        await kill()
        return HookResult(None, bytes(out.data), bytes(err.data))
    finally:
        feed.cancel()
        out.close()
        err.close()


def _pipes() -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Three pipes: (child's stdin read, stdout write, stderr write), (our stdin write, stdout read, stderr read)."""
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    return (in_r, out_w, err_w), (in_w, out_r, err_r)


def _close(fds: Iterable[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


async def spawn(command: str, *, stdin: bytes, env: Mapping[str, str], cwd: str, timeout_s: float = 600.0) -> HookResult:
    """Run command as Claude Code does (`/bin/sh -c command`), with LEGACY_ENV set; kill its group on timeout."""
    child, ours = _pipes()
    try:
        proc = await asyncio.create_subprocess_exec(
            SH, "-c", command, stdin=child[0], stdout=child[1], stderr=child[2],
            env={**env, LEGACY_ENV: "1"}, cwd=cwd, start_new_session=True,
        )  # fmt: skip
    except BaseException:
        _close(ours)
        raise
    finally:
        _close(child)

    async def kill() -> None:
        if proc.returncode is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass

    return await _collect(stdin, ours, proc.wait(), kill, timeout_s)


# -- the fork server -------------------------------------------------------------------


def _frame(msg: Mapping[str, Any]) -> bytes:
    data = json.dumps(msg).encode("utf-8", "surrogatepass")
    return len(data).to_bytes(4, "big") + data


class ForkServer:
    """One zygote: a user's interpreter (with its options and start-up environment) that forks per run."""

    def __init__(
        self,
        executable: str,
        flags: Sequence[str] = (),
        *,
        env: Mapping[str, str],
        cwd: str = "/",
        argv0: str | None = None,
        start_timeout_s: float = _START_TIMEOUT_S,
    ) -> None:
        self.executable = executable  # becomes sys.executable: pass it exactly as python would report it
        self.flags = tuple(flags)
        self.env = dict(env)
        self.cwd = cwd
        self.argv0 = argv0 or executable  # sys.orig_argv[0] as the native process would have it
        self.start_timeout_s = start_timeout_s
        self.pid: int | None = None
        self.modules: set[str] = set()  # top-level modules it holds that a fresh interpreter would not
        self.loaded: set[str] = set()
        self.env_read: dict[str, str | None] = {}  # variables its preloads read, with the values they saw
        self.files: dict[str, int] = {}  # imported files and their mtimes
        self.tainted = False  # a preload changed it beyond repair: replace it
        self.busy = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._sock: socket.socket | None = None
        self._reader: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        self._futures: dict[tuple[int, str], asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._send_lock = asyncio.Lock()
        # Forks the zygote made ahead, each waiting on a socket for one run frame: a run sent
        # there skips the zygote (its wake-up, fork and the child's set-up) entirely.
        self._spares: list[tuple[int, socket.socket]] = []
        self._generation = 0  # preloads sent: a spare forked after fewer (its "gen") lacks their imports
        self._primed: dict[str, Any] | None = None  # the last run (id aside) the zygote was shown
        # Children send their exit status here just before they _exit (the zygote's report, once
        # it has reaped them, comes a millisecond later; the first one wins).
        self._exits: socket.socket | None = None
        self._running: dict[int, int] = {}  # pid -> run id, for the exit reports

    @property
    def alive(self) -> bool:
        return self._sock is not None and not self._closed.is_set() and not self.tainted

    def fits(self, env: Mapping[str, str]) -> bool:
        """Whether env agrees with every variable this zygote's preloaded modules read at import."""
        return all(env.get(key) == value for key, value in self.env_read.items())

    async def start(self) -> None:
        """Start the zygote and wait until it is ready; raise ForkServerUnavailable if it cannot be used."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ours.setblocking(False)
        self._exits, exits_name = _exit_socket()
        if self._exits is not None:
            asyncio.get_running_loop().add_reader(self._exits.fileno(), self._read_exits)
        try:
            self._proc = await asyncio.create_subprocess_exec(
                self.executable, *self.flags, FORKSERVER_PATH, str(theirs.fileno()), *exits_name,
                pass_fds=(theirs.fileno(),), stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=self.env, cwd=self.cwd,
            )  # fmt: skip
        except OSError as exc:
            ours.close()
            self._close_exits()
            raise ForkServerUnavailable(f"cannot start {self.executable}: {exc}") from exc
        finally:
            theirs.close()
        self.pid = self._proc.pid
        self._sock = ours
        self._reader = asyncio.create_task(self._read_loop())
        ready = self._future(0, "ready")
        assert self._proc.stdout is not None and self._proc.stderr is not None
        try:
            async with asyncio.timeout(self.start_timeout_s):
                # It points its stdout/stderr at /dev/null before saying ready, so EOF comes first.
                out, err, msg = await asyncio.gather(self._proc.stdout.read(), self._proc.stderr.read(), ready)
        except (TimeoutError, ConnectionError) as exc:
            await self.close()
            raise ForkServerUnavailable(f"{self.executable} fork server did not start: {exc!r}") from exc
        if out or err:
            await self.close()
            raise ForkServerUnavailable(f"{self.executable} prints at start-up: {(out + err)[:200]!r}")
        if not msg.get("ctypes"):
            await self.close()
            raise ForkServerUnavailable(f"{self.executable} has no ctypes")
        self.modules = set(msg.get("modules", ()))

    async def preload(self, modules: Iterable[str], *, timeout_s: float = _START_TIMEOUT_S) -> list[str]:
        """Import modules in the zygote so children start with them; return those now loaded."""
        self._drop_spares()  # forked before these imports: the zygote forks new ones after
        self._generation += 1
        try:
            async with asyncio.timeout(timeout_s):
                reply = await self._call({"op": "preload", "modules": list(modules)})
        except TimeoutError:
            self.tainted = True  # stuck in an import: it can serve nobody any more
            raise ForkServerUnavailable(f"preloading {list(modules)} took over {timeout_s} s") from None
        self.modules = set(reply.get("modules", ()))
        self.loaded.update(reply.get("loaded", ()))
        self.env_read.update(reply.get("env_read", {}))
        self.files.update(reply.get("files", {}))
        if reply.get("refused"):
            self.tainted = True
        return list(reply.get("loaded", ()))

    async def run(
        self,
        script: str,
        code_path: str,
        argv: Sequence[str],
        *,
        stdin: bytes,
        env: Mapping[str, str],
        cwd: str,
        timeout_s: float,
    ) -> HookResult:
        """Run ``python script argv`` in a fresh fork (code read from code_path); killed on timeout."""
        if not self.alive:
            raise ForkServerUnavailable("fork server is not running")
        rid = next(self._ids)
        pid_f, exit_f = self._future(rid, "pid"), self._future(rid, "exit")
        child, ours = _pipes()
        msg = {
            "op": "run",
            "id": rid,
            "script": script,
            "code_path": code_path,
            "argv": list(argv),
            "orig_argv": [self.argv0, *self.flags, script, *argv],
            "cwd": cwd,
            "env": list(env.items()),
        }
        try:
            pid = await self._hand_to_spare(msg, child)
            if pid is None:
                await self._send(msg, child)
                self._primed = {k: v for k, v in msg.items() if k != "id"}
            elif not pid_f.done():
                pid_f.set_result(pid)
        except BaseException:
            _close(ours)
            self._forget(rid)
            raise
        finally:
            _close(child)
        self.busy += 1

        async def exited() -> int:
            await pid_f
            code: int = await exit_f
            return code

        async def kill() -> None:
            try:
                await self._send({"op": "kill", "id": rid})
            except ForkServerUnavailable:
                if pid_f.done() and not pid_f.exception():
                    _killpg(pid_f.result())  # orphaned by a dead zygote; nobody else will reap it

        try:
            return await _collect(stdin, ours, exited(), kill, timeout_s)
        except ConnectionError:
            # The zygote died mid-run: the exit code is lost with it. Decide nothing, like a timeout.
            await kill()
            return HookResult(None)
        finally:
            self.busy -= 1
            self._forget(rid)
            if pid_f.done() and not pid_f.exception():
                self._running.pop(pid_f.result(), None)

    async def wait_closed(self) -> None:
        """Wait until the zygote's end of the socket is gone."""
        await self._closed.wait()

    async def close(self) -> None:
        """Stop the zygote (children already running finish on their own)."""
        self._drop_spares()
        self._close_exits()
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except asyncio.CancelledError:
                pass
        if self._sock is not None:
            self._sock.close()  # EOF tells it to go
        self._fail_all()
        self._closed.set()
        if self._proc is not None and self._proc.returncode is None:
            try:
                async with asyncio.timeout(5.0):
                    await self._proc.wait()
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()

    # -- plumbing -------------------------------------------------------------------

    def _future(self, rid: int, kind: str) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._futures[(rid, kind)] = fut
        return fut

    def _forget(self, rid: int) -> None:
        for kind in ("pid", "exit", "reply"):
            self._futures.pop((rid, kind), None)

    def _fail_all(self) -> None:
        for fut in self._futures.values():
            if not fut.done():
                fut.set_exception(ConnectionError("fork server exited"))
                fut.exception()  # retrieved: nobody may be waiting any more
        self._futures.clear()

    async def _call(self, msg: dict[str, Any]) -> dict[str, Any]:
        if not self.alive:
            raise ForkServerUnavailable("fork server is not running")
        rid = next(self._ids)
        reply = self._future(rid, "reply")
        try:
            await self._send({**msg, "id": rid})
            result: dict[str, Any] = await reply
            return result
        except ConnectionError as exc:
            raise ForkServerUnavailable(f"fork server exited: {exc}") from exc
        finally:
            self._forget(rid)

    async def _send(self, msg: Mapping[str, Any], fds: Sequence[int] = ()) -> None:
        sock = self._sock
        if sock is None or self._closed.is_set():
            raise ForkServerUnavailable("fork server is not running")
        async with self._send_lock:  # one message at a time; fds travel with its first byte
            try:
                await _sendmsg(sock, _frame(msg), fds)
            except OSError as exc:
                raise ForkServerUnavailable(f"fork server unreachable: {exc}") from exc

    async def _hand_to_spare(self, msg: dict[str, Any], fds: Sequence[int]) -> int | None:
        """Send a run straight to a spare fork; its pid, or None when no spare is left to take it."""
        sock = self._sock
        if sock is None or self._closed.is_set():
            raise ForkServerUnavailable("fork server is not running")
        data = _frame(msg)
        # Under the send lock: the "took" that follows the frame reaches the zygote before any
        # preload can, so it never mistakes a spare at work for one a preload made stale.
        async with self._send_lock:
            while self._spares:
                pid, chan = self._spares.pop()
                self._running[pid] = msg["id"]  # before it has the frame: its exit report may come at once
                try:
                    await _sendmsg(chan, data, fds)
                except OSError:
                    del self._running[pid]
                    continue  # it died unused: try the next one
                finally:
                    chan.close()
                took: dict[str, Any] = {"op": "took", "id": msg["id"], "pid": pid}
                run = {k: v for k, v in msg.items() if k != "id"}
                if run != self._primed:  # the zygote prepares its next spares with the last run's environment
                    took["run"], self._primed = msg, run
                try:
                    await _sendmsg(sock, _frame(took), ())
                except OSError:
                    pass  # the run has started: as when the zygote dies mid-run, its exit is unknown
                return pid
        return None

    def _read_exits(self) -> None:
        """Exit statuses our runs' children sent just before their _exit (see forkserver._report_exit)."""
        assert self._exits is not None
        while True:
            try:
                data, ancdata, _, _ = self._exits.recvmsg(16, socket.CMSG_SPACE(_UCRED.size))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            pid = -1
            for level, kind, cdata in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(cdata) >= _UCRED.size:
                    pid = _UCRED.unpack(cdata[: _UCRED.size])[0]
            # Anyone may write to an abstract socket: only a child running one of our runs counts
            # (the kernel fills in the pid). One not known yet is reported by the zygote instead.
            rid = self._running.get(pid)
            if rid is not None and len(data) == 1:
                fut = self._futures.get((rid, "exit"))
                if fut is not None and not fut.done():
                    fut.set_result(data[0])

    def _close_exits(self) -> None:
        if self._exits is not None:
            asyncio.get_running_loop().remove_reader(self._exits.fileno())
            self._exits.close()
            self._exits = None

    def _drop_spares(self) -> None:
        for _, chan in self._spares:
            chan.close()  # EOF: the spare exits and its zygote reaps it
        self._spares.clear()

    async def _read_loop(self) -> None:
        sock = self._sock
        assert sock is not None
        buf = bytearray()
        fds: list[int] = []  # received with frames, in order: one per "spare" frame
        try:
            while True:
                try:
                    chunk, ancdata, _, _ = sock.recvmsg(1 << 16, socket.CMSG_SPACE(4 * 16), _CMSG_CLOEXEC)
                except (BlockingIOError, InterruptedError):
                    await _readable(sock.fileno())
                    continue
                fds.extend(_received_fds(ancdata))
                if not chunk:
                    break
                buf += chunk
                while len(buf) >= 4 and len(buf) >= 4 + (size := int.from_bytes(buf[:4], "big")):
                    msg = json.loads(buf[4 : 4 + size].decode("utf-8", "surrogatepass"))
                    del buf[: 4 + size]
                    if msg.get("op") == "spare":
                        self._add_spare(int(msg["pid"]), int(msg.get("gen", -1)), fds.pop(0) if fds else -1)
                    else:
                        self._dispatch(msg)
        except OSError:
            pass
        finally:
            _close(fds)
            self._drop_spares()
            self._closed.set()
            self._fail_all()

    def _add_spare(self, pid: int, generation: int, fd: int) -> None:
        if fd < 0:
            return
        chan = socket.socket(fileno=fd)
        if generation != self._generation or self._closed.is_set():
            chan.close()  # forked before a preload we have sent: it lacks those imports
            return
        chan.setblocking(False)
        self._spares.append((pid, chan))

    def _dispatch(self, msg: dict[str, Any]) -> None:
        if msg.get("op") == "ready":
            key = (0, "ready")
            value: Any = msg
        elif "pid" in msg:
            key, value = (msg["id"], "pid"), msg["pid"]
            if key in self._futures:
                self._running[msg["pid"]] = msg["id"]
        elif "exit" in msg:
            key, value = (msg["id"], "exit"), msg["exit"]
        else:
            key, value = (msg.get("id", -1), "reply"), msg
        fut = self._futures.get(key)
        if fut is not None and not fut.done():
            fut.set_result(value)


_CMSG_CLOEXEC: Final = getattr(socket, "MSG_CMSG_CLOEXEC", 0)  # spares' sockets must not leak into what we spawn
_UCRED: Final = struct.Struct("3i")  # struct ucred: pid, uid, gid


def _exit_socket() -> tuple[socket.socket | None, tuple[str, ...]]:
    """A datagram socket for children's exit reports and its abstract name for the zygote's argv, or (None, ())."""
    if not (hasattr(socket, "SO_PASSCRED") and hasattr(socket, "SCM_CREDENTIALS")):
        return None, ()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"hookopt-exits-{os.getpid()}-{os.urandom(8).hex()}"  # abstract: no file to clean up
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)  # the kernel tells us who sent each one
        sock.bind(b"\0" + name.encode())
        sock.setblocking(False)
    except OSError:
        sock.close()
        return None, ()
    return sock, (name,)


async def _readable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    loop.add_reader(fd, lambda: None if ready.done() else ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_reader(fd)


async def _sendmsg(sock: socket.socket, data: bytes, fds: Sequence[int]) -> None:
    """Send one frame on a non-blocking socket; fds travel with its first byte."""
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    while True:
        try:
            sent = sock.sendmsg([data], ancillary)
            break
        except BlockingIOError:
            await _writable(sock.fileno())
    if sent < len(data):
        await asyncio.get_running_loop().sock_sendall(sock, data[sent:])


def _received_fds(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, cdata in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.extend(array.array("i", cdata[: len(cdata) - len(cdata) % 4]))
    return fds


def _killpg(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass


# -- planning: what would sh do with this command? -------------------------------------


def _sh_vars(env: Mapping[str, str], cwd: str) -> dict[str, str]:
    """The variables sh expands: the environment, with PWD as sh resets it at start-up."""
    shell = dict(env)
    pwd = env.get("PWD", "")
    try:
        keep = pwd.startswith("/") and os.path.samestat(os.stat(_consult(pwd)), os.stat(_consult(cwd)))
    except OSError:
        keep = False
    if not keep:
        shell["PWD"] = os.path.realpath(cwd)
    return shell


def _sh_words(command: str, env: Mapping[str, str]) -> list[str]:
    """Split a command as sh would, for simple commands only; raise _SpawnInstead for anything else.

    Handles quotes, backslashes, $VAR and ${VAR} (quoted, or unquoted when the value
    needs no field splitting or globbing) and a leading ~ or ~/. env is _sh_vars().
    """
    words: list[str] = []
    word: list[str] | None = None
    i, n = 0, len(command)
    while i < n:
        c = command[i]
        if c in " \t":
            if word is not None:
                words.append("".join(word))
                word = None
            i += 1
            continue
        if c in "\n|&;<>()`":
            raise _SpawnInstead(f"shell syntax {c!r}")
        if c in "*?[":
            raise _SpawnInstead(f"glob {c!r}")
        if word is None:
            if c == "#":
                raise _SpawnInstead("comment")
            word = []
            if c == "~":
                end = i + 1
                while end < n and command[end] not in " \t/":
                    end += 1
                if end > i + 1 or "HOME" not in env:
                    raise _SpawnInstead("~user or unset HOME")
                word.append(env["HOME"])
                i = end
                continue
        if c == "'":
            end = command.find("'", i + 1)
            if end < 0:
                raise _SpawnInstead("unterminated quote")
            word.append(command[i + 1 : end])
            i = end + 1
        elif c == '"':
            i += 1
            while True:
                if i >= n:
                    raise _SpawnInstead("unterminated quote")
                c = command[i]
                if c == '"':
                    i += 1
                    break
                if c == "`":
                    raise _SpawnInstead("command substitution")
                if c == "\\" and i + 1 < n and command[i + 1] in '$`"\\\n':
                    if command[i + 1] == "\n":
                        raise _SpawnInstead("line continuation")
                    word.append(command[i + 1])
                    i += 2
                elif c == "$":
                    value, i = _expand(command, i, env)
                    word.append(value)
                else:
                    word.append(c)
                    i += 1
        elif c == "\\":
            if i + 1 >= n or command[i + 1] == "\n":
                raise _SpawnInstead("line continuation")
            word.append(command[i + 1])
            i += 2
        elif c == "$":
            value, i = _expand(command, i, env)
            if not value or any(ch in value for ch in " \t\n*?["):
                raise _SpawnInstead("unquoted expansion that sh would split or glob")
            word.append(value)
        else:
            word.append(c)
            i += 1
    if word is not None:
        words.append("".join(word))
    return words


def _expand(command: str, i: int, env: Mapping[str, str]) -> tuple[str, int]:
    """Expand $NAME or ${NAME} at command[i]; return its value (unset: empty) and the index after it."""
    if command.startswith("${", i):
        end = command.find("}", i)
        name = command[i + 2 : end] if end > 0 else ""
        after = end + 1
    else:
        match = _VAR_NAME.match(command, i + 1)
        name = match.group() if match else ""
        after = i + 1 + len(name)
    if not _VAR_NAME.fullmatch(name) or name in _SH_OWN_VARS:
        raise _SpawnInstead("parameter expansion beyond $NAME")
    return env.get(name, ""), after


def _which(name: str, env: Mapping[str, str], cwd: str) -> str | None:
    """The path sh would execute for a command word, or None if sh would not find an executable."""
    if "/" in name:
        path = os.path.join(cwd, name)
        return name if os.path.isfile(_consult(path)) and os.access(path, os.X_OK) else None
    for folder in env.get("PATH", "").split(":"):
        if not folder.startswith("/"):
            continue  # relative PATH entries: rare, and sh's handling varies
        path = os.path.join(folder, name)
        if os.path.isfile(_consult(path)) and os.access(path, os.X_OK):
            return path
    return None


def _python_options(words: Sequence[str]) -> int:
    """Index of the script among python's arguments; raise _SpawnInstead for options we cannot reproduce."""
    i = 0
    while i < len(words) and words[i].startswith("-") and words[i] != "-":
        word = words[i]
        if word.startswith("--"):
            raise _SpawnInstead(f"interpreter option {word}")
        for j, letter in enumerate(word[1:], 1):
            if letter in "WX":
                arg = word[j + 1 :]
                if not arg:
                    i += 1
                    if i >= len(words):
                        raise _SpawnInstead(f"-{letter} without a value")
                    arg = words[i]
                if letter == "X" and arg.partition("=")[0] not in _X_OPTIONS:
                    raise _SpawnInstead(f"interpreter option -X {arg}")
                break
            if letter not in _FLAG_LETTERS:
                raise _SpawnInstead(f"interpreter option -{letter}")
        i += 1
    if i >= len(words) or words[i] == "-":
        raise _SpawnInstead("no script file")
    return i


def _shebang(path: str) -> list[str] | None:
    """The interpreter and optional argument the kernel would use, or None without a usable shebang."""
    try:
        with open(_consult(path), "rb") as f:
            head = f.read(256)
    except OSError:
        return None
    line, newline, _ = head.partition(b"\n")
    if not head.startswith(b"#!") or not newline:
        return None
    parts = os.fsdecode(line[2:]).strip().split(None, 1)
    return parts or None


def _pep723(source: str) -> dict[str, Any] | None:
    """The script's inline metadata block (PEP 723), or None if it has none."""
    match = _PEP723.search(source)
    if match is None:
        return None
    toml = "".join(line[2:] if line.startswith("# ") else line[1:] for line in match.group("content").splitlines(True))
    try:
        return tomllib.loads(toml)
    except tomllib.TOMLDecodeError as exc:
        raise _SpawnInstead(f"uv: bad inline metadata: {exc}") from None


def _requirement_module(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip())
    if not match:
        raise _SpawnInstead(f"uv: cannot read dependency {requirement!r}")
    return re.sub(r"[-.]", "_", match.group().lower())


def _imports(source: bytes) -> tuple[str, ...]:
    """Absolute module names the code imports anywhere (best effort; a syntax error gives none)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return ()
    names: dict[str, None] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update((alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names[node.module] = None
    return tuple(names)


def _local_modules(folder: str) -> set[str]:
    """Top-level module names a script in folder could import from its own directory (sys.path[0])."""
    try:
        entries = os.listdir(folder)
    except OSError:
        return set()
    names = set()
    for entry in entries:
        stem, dot, _ = entry.partition(".")
        if not dot or entry.endswith(_MODULE_SUFFIXES):
            names.add(stem)
    return names


@dataclass(frozen=True, slots=True)
class _Interpreter:
    """A probed launch: what sh (and any shim) hand python, and what python then shows the script."""

    executable: str  # sys.executable
    argv0: str  # sys.orig_argv[0]
    flags: tuple[str, ...]
    start: tuple[tuple[str, str | None], ...]  # environment python was exec'd with (None: the client's value)
    visible: tuple[tuple[str, str | None], ...]  # os.environ once python started (locale coercion...)


def _template(before: Mapping[str, str], after: Iterable[Sequence[str]]) -> tuple[tuple[str, str | None], ...]:
    """Record how a launch turned the environment `before` into `after` (order included)."""
    return tuple((key, None if before.get(key) == value else value) for key, value in after)


def _apply(template: Iterable[tuple[str, str | None]], env: Mapping[str, str]) -> dict[str, str]:
    """The environment the same launch makes of env."""
    return {key: env.get(key, "") if value is None else value for key, value in template}


class LegacyRunner:
    """Run hook commands with Claude Code's semantics: Python scripts warm, everything else through sh."""

    def __init__(self, *, max_servers: int = 4, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_servers = max_servers
        self._clock = clock
        self._servers: list[tuple[tuple[Any, ...], ForkServer]] = []  # most recently used last
        self._checked: dict[int, float] = {}
        self._probes: dict[tuple[Any, ...], _Interpreter | None] = {}
        self._preloaded: dict[int, set[tuple[str, int, int]]] = {}
        self._refused: dict[tuple[Any, ...], set[str]] = {}
        self._imports: dict[tuple[str, int, int], tuple[str, ...]] = {}  # per script version
        self._plans: dict[tuple[Any, ...], tuple[Plan, tuple[tuple[str, Any], ...]]] = {}  # with what they read
        self._signals: dict[int, tuple[int, bytes]] = {}
        self._unusable: dict[tuple[Any, ...], float] = {}  # zygotes that would not start: spawn until then
        self._lock = asyncio.Lock()
        self._counts = {
            "warm_runs": 0,
            "spawned_runs": 0,
            "fallbacks": 0,
            "servers_started": 0,
            "restarts": 0,
            "probes": 0,
            "preloads": 0,
        }

    @property
    def servers(self) -> list[ForkServer]:
        return [server for _, server in self._servers]

    def stats(self) -> dict[str, int]:
        """Counters, plus how many zygotes are up."""
        return {**self._counts, "servers": sum(server.alive for _, server in self._servers)}

    # -- planning -------------------------------------------------------------------

    def plan(self, command: str, env: Mapping[str, str], cwd: str) -> Plan:
        """Decide how command runs; spawn unless it is certainly `python [options] script.py [args]`.

        Planning reads a dozen files and directories; a plan is reused while every one of
        them stats the same (identity, size, mode, mtime and ctime; missing ones still missing).
        """
        key = (command, cwd, tuple(env.items()))
        cached = self._plans.get(key)
        if cached is not None and all(_signature(path) == sig for path, sig in cached[1]):
            return cached[0]
        _planning.paths = []
        try:
            plan = self._plan(command, env, cwd)
        except _SpawnInstead as why:
            plan = Plan(False, str(why))
        finally:
            paths, _planning.paths = _planning.paths, None
        if paths is not None and None not in paths:
            if len(self._plans) >= _MAX_PLANS:
                self._plans.clear()
            self._plans[key] = (plan, tuple((path, _signature(path)) for path in dict.fromkeys(paths) if path is not None))
        return plan

    def _plan(self, command: str, env: Mapping[str, str], cwd: str) -> Plan:
        if env.get("PYTHONINSPECT"):
            raise _SpawnInstead("PYTHONINSPECT: python would go interactive after the script")
        if "PWD" in command:
            _consult(None)  # $PWD may be sh's realpath of cwd: no stat of one file vouches for every link on the way
        words = _sh_words(command, _sh_vars(env, cwd))
        replaces_shell = words[:1] == ["exec"]
        if replaces_shell:
            words = words[1:]
        if not words:
            raise _SpawnInstead("empty command")
        if _ASSIGNMENT.match(words[0]):
            raise _SpawnInstead("variable assignment before the command")
        found = _which(words[0], env, cwd)
        if found is None:
            raise _SpawnInstead(f"{words[0]}: not found or not executable")
        name = os.path.basename(words[0])
        if name == "uv":
            return self._plan_uv(words, env, cwd)
        if name == "env":
            if len(words) < 2 or not _PYTHON_NAME.fullmatch(words[1]):
                raise _SpawnInstead("env with options or a command that is not python")
            interpreter, head, rest = _which(words[1], env, cwd), words[:2], words[2:]
        elif _PYTHON_NAME.fullmatch(name):
            interpreter, head, rest = found, words[:1], words[1:]
        else:
            # A script run directly: the kernel reads its shebang and passes the path sh found.
            shebang = _shebang(os.path.join(cwd, found))
            if shebang is None:
                raise _SpawnInstead("not a python command")
            program, options = shebang[0], shebang[1:]
            if os.path.basename(program) == "env":
                if len(options) != 1 or not _PYTHON_NAME.fullmatch(options[0]):
                    raise _SpawnInstead(f"shebang {' '.join(shebang)} is not python")
                interpreter, head, options = _which(options[0], env, cwd), shebang, []
            elif _PYTHON_NAME.fullmatch(os.path.basename(program)):
                interpreter, head = _which(program, env, cwd), [program]
            else:
                raise _SpawnInstead(f"shebang {program} is not python")
            if options and (len(options[0].split()) != 1 or _python_options(options + ["x"]) != 1):
                raise _SpawnInstead(f"shebang option {options[0]!r}")
            rest = [*options, found, *words[1:]]
        if interpreter is None:
            raise _SpawnInstead(f"{head[-1]}: not found")
        at = _python_options(rest)
        plan = self._plan_script(
            rest[at], rest[at + 1 :], cwd, interpreter=interpreter, launcher=(*head, *rest[:at]), flags=tuple(rest[:at])
        )
        return dataclasses.replace(plan, replaces_shell=replaces_shell)

    def _plan_script(
        self, script: str, argv: Sequence[str], cwd: str, *, interpreter: str, launcher: tuple[str, ...], flags: tuple[str, ...], requires: tuple[str, ...] = ()
    ) -> Plan:
        path = os.path.join(cwd, script)
        if not os.path.isfile(_consult(path)):
            raise _SpawnInstead(f"{script}: no such file (python's own error is spawned)")
        if zipfile.is_zipfile(path):
            raise _SpawnInstead(f"{script} is a zip application")
        with open(path, "rb") as f:
            head = f.read(512)
        code_path, reason = os.path.abspath(path), "python script"
        if STUB_MARKER in head:
            code_path, reason = code_path + ".original", "stub of a python script"
            if not os.path.isfile(_consult(code_path)):
                raise _SpawnInstead(f"stub {script} has no .original")
        return Plan(True, reason, interpreter, script, code_path, tuple(argv), launcher, flags, requires)

    def _plan_uv(self, words: Sequence[str], env: Mapping[str, str], cwd: str) -> Plan:
        """`uv run [--script] X.py args` runs warm on the PATH's python3 only when that can be identical.

        Rule: no other uv options; the script's PEP 723 block, if any, has no
        requires-python; and every dependency imports in python3 under its normalised
        name (lower case, `-` and `.` as `_`), which LegacyRunner.run checks in the
        zygote before running. Anything else is spawned.
        """
        rest = list(words[1:])
        if rest[:1] != ["run"]:
            raise _SpawnInstead("uv: only `uv run [--script] X.py` runs warm")
        rest = rest[1:]
        explicit = rest[:1] == ["--script"]
        rest = rest[1:] if explicit else rest
        if not rest or rest[0].startswith("-") or not (explicit or rest[0].endswith(".py")):
            raise _SpawnInstead("uv: options other than --script")
        try:
            with open(_consult(os.path.join(cwd, rest[0])), encoding="utf-8") as f:
                meta = _pep723(f.read()) or {}
        except (OSError, UnicodeDecodeError) as exc:
            raise _SpawnInstead(f"uv: cannot read {rest[0]}: {exc}") from None
        if "requires-python" in meta:
            raise _SpawnInstead("uv: requires-python may pick another interpreter")
        requires = tuple(_requirement_module(r) for r in meta.get("dependencies", ()))
        interpreter = _which("python3", env, cwd)
        if interpreter is None:
            raise _SpawnInstead("uv: no python3 on PATH")
        plan = self._plan_script(
            rest[0], rest[1:], cwd, interpreter=interpreter, launcher=("python3",), flags=(), requires=requires
        )
        return dataclasses.replace(plan, reason="uv script whose dependencies must import warm")

    # -- running --------------------------------------------------------------------

    async def run(
        self, command: str, *, stdin: bytes, env: Mapping[str, str], cwd: str, timeout_s: float = 600.0
    ) -> HookResult:
        """Run one hook command; the result is what `/bin/sh -c command` would have given."""
        plan = self.plan(command, env, cwd)
        if plan.warm:
            deadline = asyncio.get_running_loop().time() + timeout_s
            try:
                result = await self._run_warm(plan, stdin=stdin, env=env, cwd=cwd, deadline=deadline)
            except Exception as exc:  # the fork server must never fail a hook: spawn instead
                log.warning("warm run of %s failed before it started, spawning: %r", plan.script, exc)
                result = None
            if result is not None:
                self._counts["warm_runs"] += 1
                return result
            self._counts["fallbacks"] += 1
        self._counts["spawned_runs"] += 1
        return await spawn(command, stdin=stdin, env=env, cwd=cwd, timeout_s=timeout_s)

    async def _run_warm(
        self, plan: Plan, *, stdin: bytes, env: Mapping[str, str], cwd: str, deadline: float
    ) -> HookResult | None:
        assert plan.script is not None and plan.code_path is not None
        interp = await self._interpreter(plan, env, cwd)
        if interp is None:
            return None
        visible = _apply(interp.visible, env)
        local = _local_modules(os.path.dirname(os.path.realpath(os.path.join(cwd, plan.script))))
        server = await self._ready_server(interp, plan, env, visible, cwd, local)
        if server is None or local & server.modules:
            return None  # a module next to the script would shadow one the zygote already holds
        if not set(plan.requires) <= server.loaded:
            return None
        timeout_s = max(0.0, deadline - asyncio.get_running_loop().time())
        result = await server.run(
            plan.script, plan.code_path, plan.argv, stdin=stdin, env=visible, cwd=cwd, timeout_s=timeout_s
        )
        if result.exit_code is not None and result.exit_code < 0 and not plan.replaces_shell:
            # sh reports a signal death as 128+N and prints its own message ("Terminated").
            code, message = await self._sh_signal(-result.exit_code)
            result = HookResult(code, result.stdout, result.stderr + message)
        return result

    async def _ready_server(
        self, interp: _Interpreter, plan: Plan, env: Mapping[str, str], visible: Mapping[str, str], cwd: str, local: set[str]
    ) -> ForkServer | None:
        """A live zygote for this interpreter and environment, with the script's imports preloaded."""
        start_env = _apply(interp.start, env)
        key = self._server_key(interp, start_env, cwd)
        imports = self._script_imports(plan.code_path or "")
        async with self._lock:
            for _ in range(3):
                server = await self._server(key, interp, start_env, visible, cwd)
                if server is None:
                    return None
                refused = self._refused.setdefault(key[:2], set())
                stamp = self._stamp(plan.code_path or "")
                done = self._preloaded.setdefault(id(server), set())
                if stamp not in done or not set(plan.requires) <= server.loaded:
                    wanted = [m for m in (*imports, *plan.requires) if m.partition(".")[0] not in local | refused]
                    self._counts["preloads"] += 1
                    try:
                        await server.preload(wanted)
                    except ForkServerUnavailable:
                        refused.update(wanted)
                        await self._drop(server)
                        return None
                    if server.tainted:
                        # A module did something at import a shared zygote cannot carry; never again.
                        refused.update(m for m in wanted if m not in server.loaded)
                        await self._drop(server)
                        continue
                    done.add(stamp)
                if server.fits(visible):
                    return server
            return None

    async def _server(
        self, key: tuple[Any, ...], interp: _Interpreter, start_env: Mapping[str, str], visible: Mapping[str, str], cwd: str
    ) -> ForkServer | None:
        now = self._clock()
        if self._unusable.get(key, now) > now:
            return None
        for entry in list(self._servers):
            k, server = entry
            if k != key:
                continue
            if not server.alive:
                self._counts["restarts"] += 1
                await self._drop(server)
                continue
            if now - self._checked.get(id(server), now) >= _RECHECK_S:
                self._checked[id(server)] = now
                if any(_mtime(path) != stamp for path, stamp in server.files.items()):
                    await self._drop(server)  # an imported file changed: a fresh interpreter would see it
                    continue
            if server.fits(visible):
                self._servers.remove(entry)
                self._servers.append(entry)
                return server
        idle = [s for _, s in self._servers if not s.busy]
        while len(self._servers) >= self.max_servers and idle:
            await self._drop(idle.pop(0))
        server = ForkServer(interp.executable, interp.flags, env=start_env, cwd=cwd, argv0=interp.argv0)
        try:
            await server.start()
        except ForkServerUnavailable as exc:
            log.warning("%s; spawning its hooks for a minute", exc)
            self._unusable[key] = now + _RETRY_START_S
            return None
        self._counts["servers_started"] += 1
        self._servers.append((key, server))
        self._checked[id(server)] = now
        return server

    async def _drop(self, server: ForkServer) -> None:
        self._servers = [(k, s) for k, s in self._servers if s is not server]
        self._preloaded.pop(id(server), None)
        self._checked.pop(id(server), None)
        await server.close()

    @staticmethod
    def _server_key(interp: _Interpreter, start_env: Mapping[str, str], cwd: str) -> tuple[Any, ...]:
        shaping = tuple(sorted((k, v) for k, v in start_env.items() if k in _STARTUP_VARS or k.startswith("PYTHON")))
        # Relative PYTHONPATH entries are made absolute against the start-up directory.
        relative = any(not p.startswith("/") for p in start_env.get("PYTHONPATH", "/").split(":"))
        return (interp.executable, interp.flags, shaping, cwd if relative else None)

    def _stamp(self, path: str) -> tuple[str, int, int]:
        try:
            st = os.stat(path)
        except OSError:
            return (path, 0, 0)
        return (path, st.st_mtime_ns, st.st_size)

    def _script_imports(self, path: str) -> tuple[str, ...]:
        stamp = self._stamp(path)
        if stamp not in self._imports:
            try:
                with open(path, "rb") as f:
                    self._imports[stamp] = _imports(f.read())
            except OSError:
                self._imports[stamp] = ()
        return self._imports[stamp]

    async def _interpreter(self, plan: Plan, env: Mapping[str, str], cwd: str) -> _Interpreter | None:
        """Probe the launch once per launcher, directory and shaping environment (shims never run again)."""
        shaping = tuple((k, v) for k, v in env.items() if k in _LAUNCH_VARS or k.startswith(_LAUNCH_PREFIXES))
        key = (plan.launcher, plan.interpreter, cwd, tuple(env), shaping)
        if key in self._probes:
            return self._probes[key]
        async with self._lock:
            if key not in self._probes:
                self._counts["probes"] += 1
                self._probes[key] = await self._probe(plan, env, cwd)
        return self._probes[key]

    async def _probe(self, plan: Plan, env: Mapping[str, str], cwd: str) -> _Interpreter | None:
        command = shlex.join([*plan.launcher, "-c", _PROBE])
        try:
            proc = await asyncio.create_subprocess_exec(
                SH, "-c", command, env=dict(env), cwd=cwd, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            async with asyncio.timeout(_START_TIMEOUT_S):
                out, err = await proc.communicate()
            info = json.loads(out)
        except (OSError, TimeoutError, ValueError) as exc:
            log.info("%s is not a python we can run warm: %r", plan.launcher, exc)
            return None
        if proc.returncode != 0 or err or info.get("impl") != "cpython" or tuple(info.get("version", ())) < (3, 8):
            return None
        argv = info.get("argv")
        prefix = argv[:-2] if argv else [plan.launcher[-1 - len(plan.flags)], *plan.flags]
        visible = _template(env, info["env"])
        start = _template(env, info["start"]) if info.get("start") is not None else visible
        return _Interpreter(info["exe"], prefix[0], tuple(prefix[1:]), start, visible)

    async def _sh_signal(self, signum: int) -> tuple[int, bytes]:
        """What sh reports when its command dies of signum: exit code and message, asked of sh itself."""
        if signum not in self._signals:
            proc = await asyncio.create_subprocess_exec(
                SH, "-c", f"{SH} -c 'kill -{signum} $$'", stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            _, err = await proc.communicate()
            self._signals[signum] = (proc.returncode if proc.returncode is not None else 128 + signum, err)
        return self._signals[signum]

    async def close(self) -> None:
        """Stop every zygote."""
        for _, server in list(self._servers):
            await server.close()
        self._servers.clear()


_P = TypeVar("_P", str, None)


class _Planning(threading.local):
    paths: list[str | None] | None = None  # what the plan being made has read (None: cannot be reused)


_planning = _Planning()
_MAX_PLANS: Final = 512


def _consult(path: _P) -> _P:
    """Note that planning depends on this file (None: on something a stat cannot vouch for)."""
    if _planning.paths is not None:
        _planning.paths.append(path)
    return path


def _signature(path: str) -> tuple[int, ...] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    # ctime moves with every write, chmod, chown or rename onto it; mtime alone can be set back.
    return (st.st_dev, st.st_ino, st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _mtime(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return -1
