"""The fork server ("zygote") that runs users' legacy Python hook scripts warm.

Started by the USER'S interpreter as ``<python> [flags] forkserver.py FD [EXITS|- [CPU]]`` with
the daemon's end of a unix socketpair at fd FD (and the abstract name, without its
leading NUL, of the daemon's datagram socket for exit reports; and the processor its
spares try first), so it is standard-library only and runs
on Python 3.8+. It imports what the hooks import once, then forks per event; each
child turns itself into what ``python [flags] script.py args`` would have been (fds,
cwd, environment, argv, sys.path[0], stdio, a fresh ``__main__``) and runs the file
through the interpreter's own C entry point, PyRun_FileExFlags, then ends it as
pythonrun.c and Py_FinalizeEx do. When nothing the script left behind could notice
(no finalisers, flushes that succeed) it skips tearing the heap down, which in a fork
would copy every page; otherwise it lets the interpreter finalise for real.

Per-run latency: forking (copying page tables) and the job-independent part of becoming
a child (signals, setsid, closing the zygote's fds) happen ahead of time in "spares",
forks that wait on a private socketpair for their job. The zygote passes each spare's
socket to the daemon, which sends a run straight to it (no hop through the zygote);
the zygote forks replacements only while no run is in flight, so the refill never
competes with a hook for the CPU. A child that ends through the fast exit sends its
status straight to the daemon's EXITS socket (the kernel vouches for its pid) and closes
its stdio before _exit, so neither the status nor the EOFs wait for the kernel to tear
its address space down, nor for us to reap it (we still report it then; the daemon
keeps the first).

Messages both ways: a 4-byte big-endian length, then JSON. Nothing is pickled.
  -> {"op":"preload","id":N,"modules":[...]}
  <- {"id":N,"loaded":[...],"failed":[...],"refused":[...],"modules":[...],"env_read":{k:v},"files":{...}}
  -> {"op":"run","id":N,"script":S,"code_path":C,"argv":[...],"orig_argv":[...],"cwd":D,"env":[[k,v],...][,"nice":K]}
     with 3 fds (stdin read end, stdout and stderr write ends) as SCM_RIGHTS
  <- {"id":N,"pid":P} at once, then {"id":N,"exit":X} (X < 0: killed by signal -X)
  <- {"op":"spare","pid":P,"gen":G} with 1 fd: a fork waiting for a run frame (as above) on that
     socket, made after G preloads (the daemon closes it if it has sent more: it lacks their imports)
  -> {"op":"took","id":N,"pid":P,"inflight":K[,"run":{...}]}: the daemon gave run N to spare P, with
     K runs in flight then (sent once its runs are over, or ahead of any other message, so P may
     be reaped before); "run" is that frame's message when we have not seen a run of its
     script, arguments and directory, or its environment, yet (or not lately)
     <- {"id":N,"exit":X} later, as for a run
  -> {"op":"kill","id":N}    -> {"op":"stop"} (or EOF): exit
On start it sends {"op":"ready","pid":P,"ctypes":B,"modules":[...]} after pointing its
own stdout and stderr at /dev/null: whatever the interpreter printed before that (a
noisy sitecustomize, say) is the daemon's sign that warm runs could not be identical.
"""

import sys

# __main__ exactly as the interpreter prepared it and the modules it had imported
# before our first line: a script's fresh process starts from the same two things.
_MAIN0 = {k: v for k, v in globals().items() if k.startswith("__")}
_STARTUP = frozenset(sys.modules)

# (imported after the snapshots above, on purpose)
import gc
import io
import json
import os
import select
import signal
import socket

MYPY = False  # true for the type checker only: `typing` is one more import each zygote would carry
if MYPY:
    from typing import Any

    # Defined in forkserver_child.py, which is read into this module's namespace below.
    from .forkserver_child import (
        _AFFINITY,
        _CPUS,
        _OWN_IDS,
        _POLICY,
        _compiled,
        _conclude,
        _exit_fast,
        _filename_in,
        _finalizers_pending,
        _fresh_main,
        _is_pyc,
        _kill_group,
        _quote_from,
        _received_fds,
        _recompile_edited,
        _scratch_fd,
        _set_environ,
        _stdio,
        _wait_for_job,
        _wait_on_cpu,
        _yield_on_wake,
    )

try:
    import ctypes

    _PYRUN = ctypes.pythonapi.PyRun_SimpleFileExFlags
    _PYRUN.argtypes = (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p)
    _PYRUN.restype = ctypes.c_int
    _PYRUN_FILE = ctypes.pythonapi.PyRun_FileExFlags
    _PYRUN_FILE.argtypes = (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.py_object, ctypes.py_object, ctypes.c_int, ctypes.c_void_p)
    _PYRUN_FILE.restype = ctypes.py_object
    _LIBC = ctypes.CDLL(None)
    _FDOPEN = _LIBC.fdopen
    _FDOPEN.argtypes = (ctypes.c_int, ctypes.c_char_p)
    _FDOPEN.restype = ctypes.c_void_p
    _FFLUSH = _LIBC.fflush
    _FFLUSH.argtypes = (ctypes.c_void_p,)
    _HAVE_CTYPES = True
except Exception:  # an interpreter built without ctypes: the daemon spawns instead
    _HAVE_CTYPES = False

_MAX_FDS = 64
_MAX_SCRIPTS = 256  # scripts compiled ahead, at most (others compile in their children)
_MAX_SPARES = 4  # at most this many forks wait for work (one per hook an event runs at once)
# Refill spares only after this long with no run in flight and nothing to read: forking
# costs a core for a millisecond, which must not be taken from hooks still running or
# from the daemon answering the event they belong to.
_REFILL_IDLE_MS = 2
_EXITS_ADDR = None  # the daemon's exit-report socket (bytes, abstract namespace), from our argv
_HOLD_MAX_S = 0.05  # a child that has reported its exit waits at most this long for the daemon's word, or from our argv
_CPU_FIRST = 0  # which processor our spares try first (the daemon gives each zygote the next one), from our argv
# The stdio a fresh interpreter builds for non-tty fds: (encoding, errors, line_buffering,
# write_through, buffered). Our own fds 0-2 are pipes or /dev/null now, so ours match.
_STDIO = [
    (s.encoding, s.errors, s.line_buffering, s.write_through, not isinstance(s.buffer, io.RawIOBase))
    for s in (sys.__stdin__, sys.__stdout__, sys.__stderr__)
    if s is not None
]


def _frame(msg: "dict[str, Any]") -> bytes:
    data = json.dumps(msg).encode("utf-8", "surrogatepass")
    return len(data).to_bytes(4, "big") + data


def _open_fds() -> "list[int]":
    try:
        return [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return [fd for fd in range(256) if _is_open(fd)]


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def _exit_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        threading = sys.modules.get("threading")
        return threading.active_count() if threading else 1


def _global_state() -> "tuple[object, ...]":
    """What an import must leave alone for its module to be shared by every script."""
    handlers = []
    for sig in signal.valid_signals() if hasattr(signal, "valid_signals") else range(1, signal.NSIG):
        try:
            handlers.append(signal.getsignal(sig))
        except (OSError, ValueError):
            pass
    return (
        tuple(sys.path),
        tuple(map(id, sys.meta_path)),
        tuple(map(id, sys.path_hooks)),
        dict(os.environ),
        tuple(handlers),
        sys.excepthook,
        sys.displayhook,
        sys.stdin,
        sys.stdout,
        sys.stderr,
        os.getcwd(),
        _threads(),
        tuple(sorted(_open_fds())),
    )


class _Zygote:
    """Fork children (per run request, or ahead as spares for the daemon); reap them; report pids and exit codes."""

    def __init__(self, fd: int) -> None:
        self.sock = socket.socket(fileno=fd)
        self.sock.setblocking(True)
        self.buf = bytearray()
        self.fds: "list[int]" = []  # received with SCM_RIGHTS, three per run, in order
        self.children: "dict[int, int]" = {}  # pid -> run id, until reaped
        self.by_id: "dict[int, int]" = {}  # run id -> pid
        self.spares: "set[int]" = set()  # spares the daemon holds and has not given a run yet
        self.early_reaped: "dict[int, int]" = {}  # spares reaped before their "took" was read here
        self.generation = 0  # preloads done: spares made before the last one lack its imports
        self.peak = 1  # most runs in flight at once so far: how many spares to keep
        self.refilling = False  # forked a spare last time round: go on without waiting again
        self.last: "dict[str, Any] | None" = None  # the last run message: spares apply its environment and rehearse it
        self.main: "Any" = None  # in a spare: the fresh __main__ made ahead
        self.applied_env: "list[list[str]] | None" = None  # in a child: what leave() put in os.environ
        self.env_checked: "tuple[Any, bool] | None" = None  # (an environment, whether it is ours in order)
        self.spare_cpu: "dict[int, int]" = {}  # waiting spare -> the processor it waits on
        # (code_path, filename) of the scripts seen in runs -> the file's stamp when we last compiled
        # it (or tried; None: not yet). Compiled again when the file changes: see fork_spare.
        self.scripts: "dict[tuple[str, str], Any]" = {}
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.sigchld = signal.getsignal(signal.SIGCHLD)
        # SIGCHLD only wakes poll(); children are reaped in the loop, never in the handler.
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.set_wakeup_fd(self.wake_w)

    def send(self, msg: "dict[str, Any]") -> None:
        self.sock.sendall(_frame(msg))

    def serve(self) -> "tuple[dict[str, object], list[int]]":
        """Answer requests until told to stop; return only in a forked child, with its job."""
        self.send({"op": "ready", "pid": os.getpid(), "ctypes": _HAVE_CTYPES, "modules": self.modules(_STARTUP)})
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        poller.register(self.wake_r, select.POLLIN)
        while True:
            timeout = None
            if self.wants_spare():
                timeout = 0 if self.refilling else _REFILL_IDLE_MS
            events = poller.poll(timeout)
            self.refilling = not events
            if not events:
                job = self.fork_spare()
                if job is not None:
                    return job
                continue
            for fd, _ in events:
                if fd == self.wake_r:
                    self.drain_wakeups()
                    self.reap()
                else:
                    job = self.receive()
                    if job is not None:
                        return job

    def drain_wakeups(self) -> None:
        try:
            while os.read(self.wake_r, 512):
                pass
        except OSError:
            pass

    def wants_spare(self) -> bool:
        return _HAVE_CTYPES and len(self.spares) < self.peak and not self.children

    def reap(self) -> None:
        while True:  # spares are children too: reap whatever has exited
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.spares:
                self.spares.discard(pid)  # unused (the daemon finds its socket closed), or "took" is on its way
                self.early_reaped[pid] = _exit_code(status)
            rid = self.children.pop(pid, None)
            if rid is not None:
                self.by_id.pop(rid, None)
                self.send({"id": rid, "exit": _exit_code(status)})

    def receive(self) -> "tuple[dict[str, object], list[int]] | None":
        data, ancdata, _, _ = self.sock.recvmsg(1 << 16, socket.CMSG_SPACE(_MAX_FDS * 4))
        if not data:
            os._exit(0)  # the daemon is gone
        self.fds.extend(_received_fds(ancdata))
        self.buf += data
        while len(self.buf) >= 4:
            size = int.from_bytes(self.buf[:4], "big")
            if len(self.buf) < 4 + size:
                break
            msg = json.loads(self.buf[4 : 4 + size].decode("utf-8", "surrogatepass"))
            del self.buf[: 4 + size]
            job = self.handle(msg)
            if job is not None:
                return job
        return None

    def handle(self, msg: "dict[str, Any]") -> "tuple[dict[str, object], list[int]] | None":
        op = msg.get("op")
        if op == "run":  # the daemon had no spare left
            fds, self.fds = self.fds[:3], self.fds[3:]
            key = self.started(int(msg["id"]), msg)
            if key in self.scripts:  # compiled here (first seen, or edited), the child inherits the code
                _recompile_edited(self.scripts, [key])
            # Everything alive now belongs to the zygote: the GC leaves it alone in the child
            # (fewer copied pages), and whatever the GC tracks in the child is the script's.
            gc.freeze()
            ours = self.is_ours(msg["env"])
            pid = os.fork()
            if pid == 0:
                # As a spare does: an environment that is ours already is not cleared and refilled.
                self.leave(keep=fds, env=msg["env"], ours=ours)
                return msg, fds
            for fd in fds:
                os.close(fd)
            self.children[pid] = int(msg["id"])
            self.by_id[int(msg["id"])] = pid
            self.send({"id": msg["id"], "pid": pid})
        elif op == "took":
            # Sent right after the frame: a quick script may have ended, and been reaped, already.
            pid, rid = int(msg["pid"]), int(msg["id"])
            self.spares.discard(pid)
            self.peak = min(_MAX_SPARES, max(self.peak, int(msg.get("inflight", 1))))
            self.started(rid, msg.get("run"))
            if pid in self.early_reaped:  # it has come and gone already
                self.send({"id": rid, "exit": self.early_reaped.pop(pid)})
                return None
            self.children[pid] = rid
            self.by_id[rid] = pid
        elif op == "preload":
            # The daemon has closed every spare it held: forked before these imports, they would
            # run scripts without them. They exit on that EOF; reap() collects them.
            self.spares.clear()
            self.early_reaped.clear()  # every "took" sent before the preload has been read
            self.generation += 1
            self.env_checked = None  # an import may have changed our environment (we are then replaced)
            reply = self.preload([str(m) for m in msg.get("modules") or ()])
            reply["id"] = msg.get("id")
            self.send(reply)
        elif op == "kill":
            victim = self.by_id.get(int(msg["id"]))
            if victim is not None:
                _kill_group(victim)
        elif op == "stop":
            os._exit(0)
        return None

    def started(self, rid: int, run: "dict[str, Any] | None") -> "tuple[str, str] | None":
        """Note a run (its message when we are shown it); the script's key in self.scripts, if any."""
        self.peak = min(_MAX_SPARES, max(self.peak, len(self.children) + 1))
        if run is None:
            return None
        self.last = run
        if run.get("module") is not None:
            return None
        key = (str(run["code_path"]), _filename_in(str(run["script"]), os.path.realpath(str(run["cwd"]))))
        if key not in self.scripts and len(self.scripts) < _MAX_SCRIPTS:
            self.scripts[key] = None  # compiled before the next spare is forked: it inherits the code
        return key

    # -- spares ---------------------------------------------------------------------

    def fork_spare(self) -> "tuple[dict[str, object], list[int]] | None":
        """Fork a child that waits for a run; return only in that child, once its job came."""
        _recompile_edited(self.scripts)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # The processor fewest waiting spares are pinned to (see _wait_on_cpu).
        # Ties go to _CPU_FIRST, then on round: another zygote's hooks of the same event
        # (uv gives each script an interpreter, so a zygote of its own) wait elsewhere.
        waiting = [self.spare_cpu.get(p) for p in self.spares]
        turn = _CPU_FIRST % len(_CPUS) if _CPUS else 0
        cpu = min(_CPUS[turn:] + _CPUS[:turn], key=waiting.count) if _CPUS else -1
        env = self.last["env"] if self.last else None
        same = env is not None and self.is_ours(env)
        gc.freeze()  # as for a direct fork (see handle)
        pid = os.fork()
        if pid == 0:
            ours.detach()  # leave() closes its fd; the object must not close that number again later
            self.leave(keep=[theirs.fileno()], env=env, ours=same)
            _yield_on_wake()
            self.main = _fresh_main()  # the same whatever the job
            self.rehearse()
            _wait_on_cpu(cpu)
            return _wait_for_job(theirs)
        theirs.close()
        self.spare_cpu = {p: c for p, c in self.spare_cpu.items() if p in self.spares}
        self.spare_cpu[pid] = cpu
        frame = _frame({"op": "spare", "pid": pid, "gen": self.generation})
        try:
            sent = self.sock.sendmsg([frame], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, ours.fileno().to_bytes(4, sys.byteorder, signed=True))])
            if sent < len(frame):  # the fd travelled with the first byte
                self.sock.sendall(frame[sent:])
        finally:
            ours.close()  # the daemon's copy is the only one: closing it ends the spare
        self.spares.add(pid)
        return None

    def rehearse(self) -> None:
        """In a spare: run the pure steps of the last job once, so the pages they write
        (reference counts, allocator pools, the type cache) are copied from the zygote
        now rather than, a page fault each, once the next job is waiting."""
        if self.last is None:
            return
        try:
            msg = json.loads(_frame(self.last)[4:].decode("utf-8", "surrogatepass"))
            for path in (msg["script"], msg["code_path"]):
                os.path.dirname(os.path.realpath(str(path)))
        except Exception:
            pass  # only a warm-up: the job does the real thing
        for fd in (0, 1, 2):
            # Built on our /dev/null and dropped at once (closefd=False: the fds stay as they are;
            # nothing is buffered, so nothing is written).
            _stdio(fd, _STDIO[fd])
        _finalizers_pending()

    # -- becoming a child -------------------------------------------------------------

    def is_ours(self, env: "list[list[str]]") -> bool:
        """Whether env is our own environment, in the same order (checked once per environment
        here, rather than in every fork: our environment does not change once we run)."""
        if self.env_checked is None or self.env_checked[0] is not env:
            self.env_checked = (env, list(os.environ.items()) == [(key, value) for key, value in env])
        return self.env_checked[1]

    def leave(self, keep: "list[int]", env: "list[list[str]] | None" = None, ours: bool = False) -> None:
        """In a fresh fork, drop what was the zygote's: its signal set-up, session, fds and environment.

        env: the environment the next job most likely brings (hooks of one session share
        one), applied now so that become_child has nothing to do when it is the same;
        ours: whether it is ours already (see is_ours).
        """
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, self.sigchld)
        os.setsid()  # its own process group, so a timeout kills the script's children too
        self.sock.detach()
        for fd in _open_fds():
            if fd > 2 and fd not in keep:
                try:
                    os.close(fd)
                except OSError:
                    pass
        # The job brings the whole environment. Often it is ours already, in the same order
        # (the session's, which started us): then there is nothing to redo, and a spare keeps
        # the pages clearing and refilling it would have copied (0.8 ms of its processor).
        if not ours:
            os.environ.clear()
            if env is not None:
                _set_environ(env)
        self.applied_env = env

    def modules(self, baseline: "frozenset[str] | set[str]") -> "list[str]":
        """Top-level names of the modules we hold that a fresh interpreter would not."""
        return sorted({name.partition(".")[0] for name in sys.modules if name not in baseline} - {"__main__"})

    def preload(self, names: "list[str]") -> "dict[str, Any]":
        """Import each name unless it prints, starts threads, keeps fds open or changes process-wide state."""
        loaded, failed, refused = [], [], []
        env_read: "set[str]" = set()
        files: "dict[str, int]" = {}
        start = set(sys.modules)
        for name in names:
            if name in sys.modules:
                loaded.append(name)
                continue
            before = set(sys.modules)
            state = _global_state()
            ok, noisy = self.quiet_import(name, env_read)
            if noisy or _global_state() != state:
                # Its import did something every later child would miss or inherit; this
                # zygote is no longer a fresh interpreter, so the daemon replaces it.
                refused.append(name)
                break
            if not ok:
                failed.append(name)
                for new in set(sys.modules) - before:  # undo a half-done import completely
                    del sys.modules[new]
                continue
            loaded.append(name)
        for name in set(sys.modules) - start:
            path = getattr(sys.modules[name], "__file__", None)
            if isinstance(path, str):
                try:
                    files[path] = os.stat(path).st_mtime_ns
                except OSError:
                    pass
        return {
            "loaded": loaded,
            "failed": failed,
            "refused": refused,
            "modules": self.modules(_STARTUP),
            "env_read": {key: os.environ.get(key) for key in sorted(env_read)},
            "files": files,
        }

    def quiet_import(self, name: str, env_read: "set[str]") -> "tuple[bool, bool]":
        """Import name with fds 1 and 2 captured and os.environ reads recorded."""
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        sink = _scratch_fd()
        saved = [os.dup(1), os.dup(2)]
        os.dup2(sink, 1)
        os.dup2(sink, 2)
        environ_cls = type(os.environ)
        getitem = environ_cls.__getitem__

        def spy(self: "os._Environ[str]", key: str) -> str:
            env_read.add(os.fsdecode(key))
            return getitem(self, key)

        environ_cls.__getitem__ = spy  # type: ignore[method-assign]
        ok = True
        try:
            __import__(name)
        except BaseException:
            ok = False
        finally:
            environ_cls.__getitem__ = getitem  # type: ignore[method-assign]
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:
                    pass
            if _HAVE_CTYPES:
                _FFLUSH(None)  # C-level printf output too
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
        noisy = os.fstat(sink).st_size > 0
        os.close(sink)
        return ok, noisy

    def stdio_and_main(self) -> None:
        """The three standard streams and the fresh __main__ a starting interpreter makes."""
        streams = [_stdio(fd, _STDIO[fd]) for fd in (0, 1, 2)]
        _OWN_IDS.update(id(obj) for stream in streams for obj in (stream, stream.buffer, getattr(stream.buffer, "raw", None)))
        sys.stdin = sys.__stdin__ = streams[0]  # type: ignore[misc]
        sys.stdout = sys.__stdout__ = streams[1]  # type: ignore[misc]
        sys.stderr = sys.__stderr__ = streams[2]  # type: ignore[misc]
        sys.modules["__main__"] = self.main if self.main is not None else _fresh_main()

    def become_child(self, msg: "dict[str, Any]", fds: "list[int]") -> "tuple[Any, int, bytes, bool]":
        """Turn this fork (past leave()) into the process ``python script args`` would be.

        Return the script's code when the zygote compiled this very file already (else None),
        and the (FILE*, filename, is .pyc) the interpreter's own runner needs otherwise.
        """
        if msg.get("nice"):
            os.nice(int(msg["nice"]))  # a background run (an observer): the lowest CPU priority
        if _AFFINITY is not None:
            try:
                os.sched_setaffinity(0, _AFFINITY)  # the script runs with the zygote's own (see _wait_on_cpu)
            except OSError:
                pass  # the allowed set shrank since: the kernel keeps us where we may run
        if _POLICY == getattr(os, "SCHED_OTHER", None):
            try:
                os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
            except OSError:
                pass
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        os.chdir(str(msg["cwd"]))
        if msg["env"] != self.applied_env:
            if self.applied_env is not None:
                os.environ.clear()
            _set_environ(msg["env"])
        if "time" in sys.modules and hasattr(sys.modules["time"], "tzset"):
            sys.modules["time"].tzset()  # TZ may differ from ours
        script = str(msg["script"])
        sys.argv = [script] + [str(a) for a in msg["argv"]]
        if hasattr(sys, "orig_argv"):
            sys.orig_argv = [str(a) for a in msg["orig_argv"]]
        if msg.get("module") is not None:
            # `python -m module args`: sys.argv[0] is "-m" until runpy finds the module's file,
            # sys.path[0] the working directory; runpy does the rest, as it does natively.
            sys.argv = ["-m"] + sys.argv[2:]
            if not (getattr(sys.flags, "safe_path", False) or sys.flags.isolated):
                sys.path.insert(0, os.getcwd())
            self.stdio_and_main()
            return None, 0, b"", False
        if not (getattr(sys.flags, "safe_path", False) or sys.flags.isolated):
            sys.path.insert(0, os.path.dirname(os.path.realpath(script)))
        # 3.9+ makes the script's name absolute by plain joining, before anything else.
        filename = script if sys.version_info < (3, 9) or script.startswith("/") else os.getcwd() + "/" + script
        sys.path_importer_cache[filename] = None  # the interpreter asked the path hooks about it
        self.stdio_and_main()
        code_path = str(msg["code_path"])
        if os.path.realpath(code_path) != os.path.realpath(filename):
            _quote_from(code_path, filename)
        code = _compiled(code_path, filename)
        pyc = code is None and _is_pyc(code_path, filename)
        if not pyc:
            # What PyRun_SimpleFile sets before it runs the code (it does so itself for .pyc).
            main = vars(sys.modules["__main__"])
            main["__file__"] = filename
            main["__cached__"] = None
            main["__loader__"] = sys.modules["_frozen_importlib_external"].SourceFileLoader("__main__", filename)
        if code is not None:
            return code, 0, os.fsencode(filename), False
        fd = os.open(code_path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        return None, _FDOPEN(fd, b"rb"), os.fsencode(filename), pyc


# The child's side lives in forkserver_child.py, read into this module's own namespace:
# a second module would be one more entry in sys.modules that every hook could see.
_CHILD_PART = os.path.join(os.path.dirname(os.path.abspath(__file__)), "forkserver_child.py")
with open(_CHILD_PART, "rb") as _part:
    exec(compile(_part.read(), _CHILD_PART, "exec"), globals())
del _part

if __name__ == "__main__":
    if sys.path and sys.path[0] == os.path.dirname(os.path.realpath(__file__)):
        del sys.path[0]  # our own directory must not shadow anything the hooks import
    _devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(_devnull, 1)
    os.dup2(_devnull, 2)
    os.close(_devnull)
    if len(sys.argv) > 2 and sys.argv[2] != "-":
        _EXITS_ADDR = b"\0" + os.fsencode(sys.argv[2])
    if len(sys.argv) > 3:
        _CPU_FIRST = int(sys.argv[3])
    if len(sys.argv) > 4:
        _HOLD_MAX_S = float(sys.argv[4])
    _zygote = _Zygote(int(sys.argv[1]))
    _job, _fds = _zygote.serve()  # returns only in a forked child
    _module = _job.get("module")
    _code, _fp, _filename, _pyc = _zygote.become_child(_job, _fds)
    del _zygote, _job, _fds
    # Called from module level so the script runs as few frames below a fresh interpreter's as we can.
    if _pyc:
        # Rare: let the interpreter's own runner do everything, exactly (and slowly).
        raise SystemExit(0 if _PYRUN(_fp, _filename, 1, None) == 0 else 1)
    _failure = None
    try:
        if _module is not None:
            # What `python -m` calls (pymain_run_module), from module level: the traceback
            # starts at runpy's frames once ours is dropped, as natively.
            __import__("runpy")._run_module_as_main(str(_module))
        elif _code is not None:
            # What PyRun_FileExFlags would have compiled (same file, same flags), run the same way.
            exec(_code, vars(sys.modules["__main__"]))
        else:
            _PYRUN_FILE(_fp, _filename, 257, vars(sys.modules["__main__"]), vars(sys.modules["__main__"]), 1, None)
    except BaseException as _exc:
        _failure = _exc  # handled below, outside the except block, as the interpreter does
    _status = _conclude(_failure, keep_file=_module is not None)
    _interrupted = isinstance(_failure, KeyboardInterrupt) and _status == 128 + signal.SIGINT
    # Hold nothing of the script's: finalisation must find its objects unreferenced, as it would.
    del _failure, _fp, _filename, _code, _module
    _exit_fast(_status, _interrupted)
    # Raised from module level, so the interpreter finalises with no frame of ours left running
    # (a warning at teardown then says "sys:1", as it would).
    raise SystemExit(_status)
