# The fork server's child side: becoming ``python script.py`` and ending as it would.
#
# Not a module of its own at run time: forkserver.py reads this file into its own
# namespace (one module for the interpreter, so a hook sees nothing more in
# sys.modules; two files for the reader). It may use every name forkserver.py
# defines, and forkserver.py every name defined here. (A comment, not a docstring:
# read into forkserver.py's namespace, a docstring would replace that module's own.)

MYPY = False
if MYPY:  # for the type checker only: at run time these are forkserver.py's own globals
    import gc
    import io
    import json
    import os
    import select
    import signal
    import socket
    import sys
    from typing import Any

    from .forkserver import _EXITS_ADDR, _FFLUSH, _HOLD_MAX_S, _MAIN0, _MAX_FDS

# Scripts the zygote compiled ahead, with the stat (device, inode, size, mtime, ctime) of the file it read:
# (code_path, filename) -> (stat, code). A child uses one only if the file still stats the same.
_CODES: "dict[tuple[str, str], tuple[tuple[int, int, int, int, int], Any]]" = {}


def _filename_in(script: str, cwd: str) -> str:
    """The script's name as the interpreter makes it (absolute by plain joining since 3.9; see become_child)."""
    return script if sys.version_info < (3, 9) or script.startswith("/") else cwd + "/" + script


def _stamp(path: str) -> "tuple[int, int, int, int, int] | None":
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _precompile(code_path: str, filename: str) -> None:
    """Compile a script's source as PyRun_FileExFlags would (no inherited flags); skip .pyc and syntax errors."""
    before = _stamp(code_path)
    try:
        with open(code_path, "rb") as f:
            source = f.read()
        if _is_pyc(code_path, filename) or before is None:
            return
        code = compile(source, filename, "exec", dont_inherit=True)
    except Exception:  # SyntaxError and friends: the child's own run reports them exactly
        return
    if _stamp(code_path) == before:  # not rewritten while we read it
        _CODES[(code_path, filename)] = (before, code)


def _recompile_edited(scripts: "dict[tuple[str, str], Any]", keys: "list[tuple[str, str]] | None" = None) -> None:
    """Compile each script (code_path, filename) of scripts (or of keys only) again whose file's
    stamp is not the one we last compiled it from (or tried to; None: never). The children of a
    script edited since would otherwise compile it themselves, each run (the stamp tells them).
    A file that no longer compiles is left to them until it changes again."""
    for key in scripts if keys is None else keys:
        stamp = scripts[key]
        now = _stamp(key[0])
        if now != stamp:
            scripts[key] = now
            _CODES.pop(key, None)
            _precompile(*key)


def _compiled(code_path: str, filename: str) -> "Any":
    entry = _CODES.get((code_path, filename))
    if entry is None or _stamp(code_path) != entry[0]:
        return None
    return entry[1]


def _quote_from(code_path: str, filename: str) -> None:
    """Make tracebacks and warnings quote code_path's lines for filename (a stub runs its original)."""
    import linecache
    import tokenize

    with tokenize.open(code_path) as f:
        lines = f.readlines()
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    # The traceback module, warnings and inspect read linecache; mtime None keeps
    # checkcache from re-reading the stub over it.
    linecache.cache[filename] = (sum(map(len, lines)), None, lines, filename)
    # The interpreter's own traceback printer (before 3.13) reads the file with io.open.
    io_open = io.open

    def open_original(file: "Any", mode: str = "r", *args: "Any", **kwargs: "Any") -> "Any":
        if file == filename and mode == "rb":
            file = code_path
        return io_open(file, mode, *args, **kwargs)

    io.open = open_original


_OWN_IDS: "set[int]" = set()  # objects we create in the child that a fresh interpreter has too (its stdio)


def _finalizers_pending() -> bool:
    """Whether the script left objects whose teardown could be observed (__del__, weakref callbacks)."""
    ref_type = type(sys.modules["_weakref"].ref(_finalizers_pending))
    for obj in gc.get_objects():  # after gc.freeze() in the zygote: only what the child made
        if id(obj) in _OWN_IDS:
            continue
        if type(obj) in _PLAIN_IO and _closed(obj):
            continue  # `with open(...) as f` leaves f: a closed built-in file's __del__ does nothing
        if hasattr(type(obj), "__del__") or (isinstance(obj, ref_type) and _observable(obj.__callback__)):
            return True
    return False


# The C io classes: their finaliser (iobase_finalize) returns at once for a closed object.
# Subclasses may define their own __del__ or close(): they still count.
_PLAIN_IO = frozenset((io.FileIO, io.BufferedReader, io.BufferedWriter, io.BufferedRandom, io.TextIOWrapper, io.BytesIO, io.StringIO))


def _closed(obj: "Any") -> bool:
    try:
        return obj.closed is True
    except Exception:  # a TextIOWrapper whose buffer is detached, say
        return False


def _observable(callback: "Any") -> bool:
    """Whether a weakref callback could do something visible (not WeakSet/abc-cache bookkeeping)."""
    if callback is None:
        return False
    weakref = sys.modules.get("weakref")
    if weakref is not None and isinstance(callback, weakref.finalize):
        return bool(callback.alive)  # finalize(atexit=True) has already run by now
    return not (isinstance(callback, type(len)) or getattr(callback, "__module__", None) in ("_weakrefset", "weakref"))


def _exit_fast(status: int, interrupted: bool) -> None:
    """Finish as Py_FinalizeEx would and _exit, unless tearing the heap down could be noticed: then return."""
    threading = sys.modules.get("threading")
    if threading is not None:
        threading._shutdown()  # what finalisation does first
    try:
        import atexit

        atexit._run_exitfuncs()  # the interpreter's own runner: same order, same messages
    except BaseException:
        pass  # before 3.11 it re-raises what it already reported
    if sys.flags.dev_mode or _finalizers_pending():
        return
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None and not stream.closed:
                stream.flush()
    except Exception:
        return  # the interpreter flushes again, reports it and exits 120
    _FFLUSH(None)  # C-level stdio, as exit() would
    if interrupted:
        # An unhandled ^C ends a fresh interpreter by SIGINT (exit_sigint() in main.c).
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    else:
        _report_exit(status & 0xFF)
    os._exit(status & 0xFF)


def _system_exit_status(exc: SystemExit) -> int:
    """The exit status a fresh interpreter takes from an uncaught SystemExit (_Py_HandleSystemExit)."""
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code if -(2**63) <= code < 2**63 else -1
    try:
        if sys.stderr is not None:
            sys.stderr.write(str(code))
            sys.stderr.write("\n")
        else:
            os.write(2, (str(code) + "\n").encode(errors="backslashreplace"))
    except Exception:
        pass
    return 1


def _flush_io() -> None:
    """flush_io() of pythonrun.c: stderr then stdout, errors ignored."""
    for stream in (sys.stderr, sys.stdout):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass


def _report(exc: BaseException) -> "int | None":
    """Print an uncaught exception as PyErr_Print() does (sys.last_*, then sys.excepthook); an exit status if the hook exits."""
    tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None  # not our frame
    exc.__traceback__ = tb
    sys.last_type, sys.last_value, sys.last_traceback = type(exc), exc, tb
    if sys.version_info >= (3, 12):
        sys.last_exc = exc
    hook = getattr(sys, "excepthook", None)
    sys.audit("sys.excepthook", hook, type(exc), exc, tb)
    if hook is None:
        sys.stderr.write("sys.excepthook is missing\n")
        sys.__excepthook__(type(exc), exc, tb)
        return None
    try:
        hook(type(exc), exc, tb)
    except BaseException as error:
        if isinstance(error, SystemExit):
            return _system_exit_status(error)  # exits at once: __file__ stays
        error_tb = error.__traceback__.tb_next if error.__traceback__ is not None else None
        error.__traceback__ = error_tb
        sys.stderr.write("Error in sys.excepthook:\n")
        sys.__excepthook__(type(error), error, error_tb)
        sys.stderr.write("\nOriginal exception was:\n")
        sys.__excepthook__(type(exc), exc, tb)
    return None


def _conclude(failure: "BaseException | None", keep_file: bool = False) -> int:
    """What PyRun_SimpleFile does once the code has run (keep_file: what pymain_run_module does); return the exit status."""
    _flush_io()
    if isinstance(failure, SystemExit):
        return _system_exit_status(failure)  # __file__ stays for atexit, as with Py_Exit()
    if failure is not None:
        status = _report(failure)
        if status is not None:
            return status
    if not keep_file:  # runpy leaves __file__ for atexit handlers; PyRun_SimpleFile removes it
        main = vars(sys.modules["__main__"])
        main.pop("__file__", None)
        main.pop("__cached__", None)
    if isinstance(failure, KeyboardInterrupt):
        return 128 + signal.SIGINT  # what a shell reports for the SIGINT a fresh interpreter dies of
    return 0 if failure is None else 1


def _is_pyc(code_path: str, filename: str) -> bool:
    """maybe_pyc_file() of pythonrun.c."""
    if filename.endswith(".pyc"):
        return True
    magic = sys.modules["_frozen_importlib_external"].MAGIC_NUMBER
    with open(code_path, "rb") as f:
        return f.read(2) == magic[:2]


def _scratch_fd() -> int:
    if hasattr(os, "memfd_create"):
        return os.memfd_create("hookopt-preload")
    import tempfile

    fd, path = tempfile.mkstemp()
    os.unlink(path)
    return fd


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _set_environ(env: "list[list[str]]") -> None:
    """Fill the (empty) environment, in order: the same calls whether done ahead in a spare or now."""
    os.environ.update((str(k), str(v)) for k, v in env)


def _received_fds(ancdata: "list[tuple[int, int, bytes]]") -> "list[int]":
    fds: "list[int]" = []
    for level, kind, cdata in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(cdata) - len(cdata) % 4
            fds.extend(int.from_bytes(cdata[i : i + 4], sys.byteorder, signed=True) for i in range(0, usable, 4))
    return fds


# The processors we may run on, as the zygote was started (None: cannot be read or set here).
try:
    _AFFINITY: "set[int] | None" = os.sched_getaffinity(0)
except (AttributeError, OSError):
    _AFFINITY = None
_CPUS = sorted(_AFFINITY) if _AFFINITY is not None and len(_AFFINITY) > 1 else []
# The zygote's scheduling policy: its spares wait under SCHED_BATCH and get this back.
try:
    _POLICY: "int | None" = os.sched_getscheduler(0)
except (AttributeError, OSError):
    _POLICY = None


def _yield_on_wake() -> None:
    """In a spare: never preempt whoever wakes us (SCHED_BATCH), until become_child.

    The daemon hands an event's runs to its spares one after another. A spare woken on
    the daemon's own processor would preempt it before it has handed over the next run
    (the daemon then waits for that whole hook); under SCHED_BATCH, which never preempts
    on wake-up, it waits its turn. become_child restores the zygote's own policy before
    the script's first line (SCHED_BATCH -> SCHED_OTHER needs no privilege).
    """
    if _POLICY == getattr(os, "SCHED_OTHER", None):
        try:
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
        except OSError:
            pass


def _wait_on_cpu(cpu: int) -> None:
    """Wait for the job on one processor (-1: anywhere), spreading spares over them.

    The kernel wakes a sleeping process next to the one that woke it: the hooks of one
    event, woken by the daemon one after another, would queue on the daemon's processor
    while the other idles. A fork is placed on the idlest processor instead, which is
    why a naive fork loop parallelises better. Pinned while it waits, each spare wakes
    where it was put; become_child gives the script the full set back before its first line.
    """
    if cpu < 0:
        return
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError:
        pass


def _wait_for_job(chan: socket.socket) -> "tuple[dict[str, object], list[int]]":
    """In a spare: read one run frame (and its fds) from the daemon, then close the channel."""
    buf = bytearray()
    fds: "list[int]" = []
    while len(buf) < 4 or len(buf) < 4 + int.from_bytes(buf[:4], "big"):
        data, ancdata, _, _ = chan.recvmsg(1 << 16, socket.CMSG_SPACE(_MAX_FDS * 4))
        fds.extend(_received_fds(ancdata))
        if not data:
            os._exit(0)  # dropped (a preload, or the zygote is gone) before it got work
        buf += data
    chan.close()
    return json.loads(bytes(buf[4:]).decode("utf-8", "surrogatepass")), fds


def _report_exit(status: int) -> None:
    """Close our fds and tell the daemon our exit status, then wait for its word before we _exit.

    The daemon has all it needs from us then (stdout and stderr at EOF, the status), and
    neither waits for the kernel's teardown of us. That teardown, and the zygote reaping us,
    still cost a processor: the daemon says when its answer is out (or after _HOLD_MAX_S),
    so they do not compete with the event's other hooks or with the daemon answering it.
    Nothing of the script may run or hold on meanwhile, as nothing would once a fresh
    interpreter is exiting: we wait only when we are the process's last thread, with every
    signal blocked (its handlers wait with them, and are dropped by the _exit) and every fd
    closed before the report (a lock the script held is free, a pipe to its own child ended,
    by the time the daemon hears of the exit, as when a process is gone).
    """
    # What _exit would close anyway (other fds too, but these are the ones the daemon waits on).
    os.closerange(0, 3)
    if _EXITS_ADDR is None:
        return
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    except OSError:
        return  # the zygote reports it anyway when it reaps us
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        alone = len(os.listdir("/proc/self/task")) == 1
        if alone:
            # What _exit closes first, before the daemon hears of the exit, as it would natively.
            for name in os.listdir("/proc/self/fd"):
                if int(name) != sock.fileno():
                    try:
                        os.close(int(name))
                    except OSError:
                        pass  # the listing's own
        sock.bind(b"")  # an address of our own (abstract, made by the kernel), where the word comes
        sock.sendto(bytes((status,)), _EXITS_ADDR)
        if alone:
            select.select([sock], [], [], _HOLD_MAX_S)
    except OSError:
        pass
    finally:
        sock.close()


def _stdio(fd: int, cfg: "tuple[Any, Any, bool, bool, bool]") -> io.TextIOWrapper:
    """Build sys.stdin/stdout/stderr the way the interpreter's create_stdio does."""
    encoding, errors, line_buffering, write_through, buffered = cfg
    write = fd != 0
    buf = io.open(fd, "wb" if write else "rb", -1 if buffered or not write else 0, closefd=False)  # noqa: UP020
    raw: Any = getattr(buf, "raw", buf)
    raw.name = ("<stdin>", "<stdout>", "<stderr>")[fd]
    stream = io.TextIOWrapper(buf, encoding, errors, "\n", line_buffering, write_through)
    stream.mode = "w" if write else "r"  # type: ignore[misc]
    return stream


def _fresh_main() -> "Any":
    """A new __main__ with the keys, in the order, the interpreter gives it before a script runs."""
    main = type(sys)("__main__")
    for key, value in _MAIN0.items():
        if key in ("__file__", "__cached__"):
            continue  # PyRun_SimpleFile sets these, and removes them again when the script ends
        if key == "__annotations__":
            value = {}
        elif key == "__builtins__":
            value = sys.modules["builtins"]
        elif key in ("__name__", "__doc__", "__package__", "__loader__", "__spec__"):
            value = main.__dict__[key]
        main.__dict__[key] = value
    return main
