"""The thin hook client: what Claude Code actually starts on every hook event.

It is the hottest code in the project, so its fast path imports nothing beyond
modules the interpreter has already loaded (``posix``, ``sys``) and the C
``_socket`` module; it runs under ``python -S``. It reads stdin once, sends one
frame to the project's daemon, writes the reply and exits with its code. If the
daemon does not answer in time it starts one and evaluates the event in-process
with the same engine: slower, never wrong.

The frame format, limits and runtime paths are in wire.py.
"""

import _socket
import posix
import sys

from .wire import (
    BOOT_BACKOFF_S,
    DEFAULT_TIMEOUT_MS,
    DISABLED_SUFFIX,
    HOOKOPT_BIN,
    LEGACY_ENV,
    MAX_EVENT_BYTES,
    MAX_HEADER_BYTES,
    encode_request,
    parse_reply_header,
    recv_exactly,
    runtime_dir,
    runtime_path,
    secure_dir,
)

MYPY = False
if MYPY:  # for the type checker only: importing typing would cost every tool call
    from collections.abc import Callable
    from types import ModuleType

    Reply = tuple[int, bytes, bytes]

ASKED_ENV = b"HOOKOPT_CLIENT_ASKED"


def _timeout_s(project: str) -> float:
    try:
        fd = posix.open(runtime_path(project, ".timeout"), posix.O_RDONLY)
        try:
            return int(posix.read(fd, 32)) / 1000
        finally:
            posix.close(fd)
    except (OSError, ValueError):
        return DEFAULT_TIMEOUT_MS / 1000


def ask_daemon(project: str, frame: bytes, timeout_s: float) -> "tuple[int, bytes, bytes] | None":
    """Send a frame to the project's daemon; its (exit, stdout, stderr), or None if it cannot answer."""
    if not secure_dir(runtime_dir()):
        return None
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout_s)
        sock.connect(runtime_path(project, ".sock"))
        peercred = getattr(_socket, "SO_PEERCRED", None)
        if peercred is not None:
            # Only trust a daemon running as us: anyone else could answer "allow".
            cred = sock.getsockopt(_socket.SOL_SOCKET, peercred, 12)
            if int.from_bytes(cred[4:8], sys.byteorder) != posix.getuid():
                return None
        sock.sendall(frame)
        sock.shutdown(_socket.SHUT_WR)  # one frame per connection: the daemon closes after its reply, without waiting for us
        size = int.from_bytes(recv_exactly(sock, 4), "big")
        if size > MAX_HEADER_BYTES:
            return None
        parsed = parse_reply_header(recv_exactly(sock, size))
        if parsed is None:
            return None
        code, out_len, err_len = parsed
        out = recv_exactly(sock, out_len)
        return code, out, recv_exactly(sock, err_len)
    except (OSError, ValueError, KeyError):
        return None
    finally:
        sock.close()


def environment_bytes() -> bytes:
    """The environment exactly as Claude Code started us with it, NUL-separated, as
    posix.environ reads it (entries with "=", the first of a repeated name).

    Read from /proc/self/environ where there is one: under a C or POSIX locale Python's
    start-up adds LC_CTYPE=C.UTF-8 to its own environment (PEP 538), which the hooks would
    then see and natively do not. The native client (hooks/client.c) sends the same bytes."""
    try:
        fd = posix.open("/proc/self/environ", posix.O_RDONLY)
    except OSError:
        return b"\0".join(k + b"=" + v for k, v in posix.environ.items())
    try:
        chunks = []
        while chunk := posix.read(fd, 1 << 16):
            chunks.append(chunk)
    finally:
        posix.close(fd)
    seen, kept = set(), []
    for entry in b"".join(chunks).split(b"\0"):
        name, eq, _ = entry.partition(b"=")
        if eq and name not in seen:
            seen.add(name)
            kept.append(entry)
    return b"\0".join(kept)


def project_of(environ: "dict[bytes, bytes]") -> str:
    """The project root: $CLAUDE_PROJECT_DIR, else the working directory."""
    root = environ.get(b"CLAUDE_PROJECT_DIR")
    return root.decode("utf-8", "surrogateescape") if root else posix.getcwd()


def start_daemon(project: str) -> None:
    """Start the project's daemon, detached; it exits at once if one already runs."""
    try:
        import time

        if time.time() - posix.stat(runtime_path(project, ".failed")).st_mtime < BOOT_BACKOFF_S:
            return  # it just failed to boot (e.g. broken settings): do not respawn on every event
    except OSError:
        pass
    exe = posix.environ.get(HOOKOPT_BIN.encode(), sys.executable.encode()).decode()
    root = __file__.rsplit("/", 3)[0]  # the directory holding the modules package
    devnull = [(posix.POSIX_SPAWN_OPEN, fd, "/dev/null", posix.O_RDWR, 0) for fd in (0, 1, 2)]
    env = dict(posix.environ)
    env[b"PYTHONPATH"] = root.encode() + (b":" + env[b"PYTHONPATH"] if b"PYTHONPATH" in env else b"")
    from .hugepages import startup_env  # only when starting a daemon: its heap can go on huge pages

    added = startup_env({k.decode("utf-8", "surrogateescape"): v.decode("utf-8", "surrogateescape") for k, v in env.items()})
    env.update((k.encode(), v.encode()) for k, v in added.items())
    try:
        # stdio go to /dev/null: Claude Code waits until every holder of the hook's pipes exits.
        posix.posix_spawn(
            exe, [exe, "-m", "modules.optimization.daemon", "--project", project], env, file_actions=devnull, setsid=True
        )
    except OSError:
        pass  # the in-process evaluation below still answers this event


def _enabled(project: str) -> bool:
    """Whether to use the daemon: not when $CLAUDE_HOOKS_OPTIMIZATION is false, nor while the
    project's settings say "enabled": false (a daemon left a marker newer than the settings)."""
    if posix.environ.get(b"CLAUDE_HOOKS_OPTIMIZATION", b"").lower() in (b"0", b"false", b"no", b"off"):
        return False
    try:
        marked = posix.stat(runtime_path(project, DISABLED_SUFFIX)).st_mtime_ns
    except OSError:
        return True  # the usual case: one failed stat
    try:
        changed = posix.stat(project + "/.claude/settings.json").st_mtime_ns
    except OSError:
        return True
    return changed > marked  # settings edited since: let a daemon read them again


def _answer(op: str, fallback_fn: "Callable[[bytes, str], Reply]", **sections: bytes) -> int:
    """Read the event, ask the daemon with op, else start it and call fallback_fn(raw, project)."""
    raw = sys.stdin.buffer.read(MAX_EVENT_BYTES + 1)
    # The native client (hooks/client.c) hands over after it asked the daemon in vain: do not ask twice.
    asked = posix.environ.pop(ASKED_ENV, None) is not None
    if asked:
        posix.unsetenv(ASKED_ENV)  # nor pass it on to the hooks
    project = project_of(posix.environ)
    reply = None
    if asked:
        start_daemon(project)
    elif len(raw) <= MAX_EVENT_BYTES and _enabled(project):
        frame = encode_request(
            op,
            project=project.encode("utf-8", "surrogateescape"),
            env=environment_bytes(),
            cwd=posix.getcwd().encode("utf-8", "surrogateescape"),
            body=raw,
            **sections,
        )
        reply = ask_daemon(project, frame, _timeout_s(project))
        if reply is None:
            start_daemon(project)
    if reply is None:
        reply = fallback_fn(raw, project)
    code, out, err = reply
    sys.stdout.buffer.write(out)
    sys.stderr.buffer.write(err)
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def _slow() -> "ModuleType":
    """The in-process fallback (fallback.py): only when no daemon answers. The hooks it
    spawns get the environment we were started with, not what Python's start-up added."""
    started = {entry.partition(b"=")[0] for entry in environment_bytes().split(b"\0")}
    for name in [name for name in posix.environ if name not in started]:
        posix.unsetenv(name)
        del posix.environ[name]
        if "os" in sys.modules:  # its copy was taken at its import
            sys.modules["os"].environb.pop(name, None)
    from . import fallback

    return fallback


def main() -> int:
    """Run one hook event through hookopt's own validators."""
    return _answer("event", lambda raw, project: _slow().evaluate(raw, project))


def main_stack() -> int:
    """Run one hook event through a scope's installed (consolidated) hook stack.

    The client's one argument names the settings scope it was installed in (project when
    absent), so the daemon runs only that scope's hooks."""
    scope = sys.argv[1] if len(sys.argv) > 1 else "project"
    return _answer("stack", lambda raw, project: _slow().run_stack(raw, project, scope), argv=scope.encode())


def run_original(script: str, argv: "list[str]") -> int:
    """Run script's .original as __main__ in this interpreter, __file__ and argv as invoked."""
    import builtins

    sys.path[:] = [p for p in sys.path if p != __file__.rsplit("/", 3)[0]]  # the stub put our root first
    with open(script + ".original", "rb") as f:
        source = f.read()
    try:
        code = compile(source, script, "exec")
    except (SyntaxError, ValueError) as exc:
        return _syntax_error(script, source, exc)
    main = sys.modules["__main__"]
    main.__dict__.clear()
    main.__dict__.update(
        __name__="__main__", __file__=script, __builtins__=builtins,
        __doc__=None, __spec__=None, __loader__=None, __package__=None, __cached__=None,
    )
    sys.argv = [script, *argv]
    exec(code, main.__dict__)
    return 0


def _syntax_error(script: str, source: bytes, exc: Exception) -> int:
    """Report a script python cannot compile as the interpreter does: no traceback, exit 1."""
    import traceback

    if b"\0" in source:  # python reads the file itself and words this one differently
        at = source.index(b"\0")
        line = source[source.rfind(b"\n", 0, at) + 1 : at].decode("utf-8", "replace")
        exc = SyntaxError("source code cannot contain null bytes", (script, source.count(b"\n", 0, at) + 1, None, line))
    traceback.print_exception(type(exc), exc, None)
    return 1


def run_stub(script: str, interpreter: str) -> int:
    """Run an installed stub: its original, warm in the daemon, else spawned with interpreter."""
    argv = sys.argv[1:]
    if posix.environ.get(LEGACY_ENV.encode()):
        # Spawned on purpose (fallback or a non-warm path): be the original, in this process.
        return run_original(script, argv)

    return _answer(
        "legacy",
        lambda raw, project: _slow().spawn_original(interpreter, script, argv, raw),
        script=script.encode("utf-8", "surrogateescape"),
        argv=b"\0".join(a.encode("utf-8", "surrogateescape") for a in argv),
    )
