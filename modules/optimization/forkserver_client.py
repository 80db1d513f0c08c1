"""The parent side of forkserver.py: start a zygote, preload modules, hand it runs.

A ``ForkServer`` is one zygote: the user's own interpreter (with its options and start-up
environment) running forkserver.py, which forks per run. Runs go straight to a "spare"
(a fork made ahead, waiting on its own socket) when one is there; children report their
exit status on a datagram socket just before they _exit.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import socket
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from .protocol import HookResult
from .spawn import _close, _collect, _killpg, _pipes, _prefill, _readable, _received_fds, _sendmsg

__all__ = ["FORKSERVER_PATH", "ForkServer", "ForkServerUnavailable"]

FORKSERVER_PATH: Final = os.path.join(os.path.dirname(os.path.abspath(__file__)), "forkserver.py")
_START_TIMEOUT_S: Final = 30.0
_TOOK_GRACE_S: Final = 0.05  # how long a run may go before the zygote must know about it
# Children that reported their exit are let go this long after the turn that sends the notes:
# let go at that turn, their teardown still met the reply (no gain measured); 3 ms later, it did not.
_RELEASE_AFTER_S: Final = 0.003
_SHOWN_RUNS_MAX: Final = 256  # distinct runs (id aside) remembered as shown to the zygote


class ForkServerUnavailable(RuntimeError):
    """The zygote cannot take this run, and nothing of the run was started."""


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
        cpu_first: int = 0,
        hold_max_s: float | None = None,
    ) -> None:
        self.executable = executable  # becomes sys.executable: pass it exactly as python would report it
        self.cpu_first = cpu_first  # the processor its spares try first (see forkserver.fork_spare)
        self.hold_max_s = hold_max_s  # how long a child waits for our word after its exit report (None: the zygote's own)
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
        # What the zygote was shown of our runs: the last environment (its JSON), and each run's
        # other fields (id aside). It needs each script once (to compile it ahead) and the
        # environment when it changes (its spares apply it ahead), not every run's whole message.
        self._shown_env = ""
        self._shown_runs: set[tuple[Any, ...]] = set()
        self._env_json: tuple[object, str] = (None, "")  # the last environment given, and its JSON
        # Children send their exit status here just before they _exit (the zygote's report, once
        # it has reaped them, comes a millisecond later; the first one wins). Each then waits for
        # a word back, sent once the event is answered (see forkserver_child._report_exit).
        self._exits: socket.socket | None = None
        self._held: list[bytes] = []  # the addresses of children waiting for that word
        self._running: dict[int, int] = {}  # pid -> run id, for the exit reports
        # "took" notes for the zygote, sent once no run is in flight (or ahead of any other
        # message): waking the zygote while hooks run would take a core from them.
        self._took: list[bytes] = []

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
                self.executable, *self.flags, FORKSERVER_PATH, str(theirs.fileno()), *(exits_name or ("-",)), str(self.cpu_first),
                *(() if self.hold_max_s is None else (str(self.hold_max_s),)),
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
        module: str | None = None,
        nice: int = 0,
    ) -> HookResult:
        """Run ``python script argv`` in a fresh fork (code read from code_path); killed on timeout.

        module: run ``python -m module argv`` instead (script is then "-m", argv[0] the module).
        nice: added to the run's niceness (a background run).
        """
        if not self.alive:
            raise ForkServerUnavailable("fork server is not running")
        rid = next(self._ids)
        pid_f, exit_f = self._future(rid, "pid"), self._future(rid, "exit")
        child, ours = _pipes()
        # The environment is the same for every hook of a session: encoded once per dict.
        if self._env_json[0] is not env:
            self._env_json = (env, json.dumps(list(env.items())))
        env_json = self._env_json[1]
        fields = {"op": "run", "id": rid, "script": script, "code_path": code_path, "argv": list(argv),
                  "orig_argv": [self.argv0, *self.flags, script, *argv], "cwd": cwd}  # fmt: skip
        if module is not None:
            fields["module"] = module
        if nice:
            fields["nice"] = nice
        msg = json.dumps(fields)[:-1] + ', "env": ' + env_json + "}"
        shape = (script, code_path, tuple(argv), cwd, module, nice)
        fed, stdin = _prefill(ours[0], stdin)
        ours = (fed, ours[1], ours[2])
        try:
            pid = await self._hand_to_spare(rid, msg, shape, env_json, child)
            if pid is None:
                await self._send(msg.encode("utf-8", "surrogatepass"), child)
                self._shown(shape, env_json)
            elif not pid_f.done():
                pid_f.set_result(pid)
        except BaseException:
            _close(ours)
            self._forget(rid)
            raise
        finally:
            _close(child)
        self.busy += 1
        # A child that finalises the slow way exits without reporting to us: the zygote
        # reports it, which needs the pending "took" notes. Quick runs never wait for this.
        late = asyncio.get_running_loop().call_later(_TOOK_GRACE_S, self._flush_now)

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
            late.cancel()
            self.busy -= 1
            if not self.busy and (self._took or self._held):
                asyncio.get_running_loop().call_soon(self._after_event)
            self._forget(rid)
            if pid_f.done() and not pid_f.exception():
                self._running.pop(pid_f.result(), None)

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

    async def _send(self, msg: Mapping[str, Any] | bytes | None, fds: Sequence[int] = ()) -> None:
        """Send msg (JSON already encoded, or None: only the pending "took" notes, which always go first)."""
        sock = self._sock
        if sock is None or self._closed.is_set():
            raise ForkServerUnavailable("fork server is not running")
        async with self._send_lock:  # one message at a time; fds travel with its first byte
            if isinstance(msg, bytes):
                msg = len(msg).to_bytes(4, "big") + msg
            data = b"".join(self._took) + (msg if isinstance(msg, bytes) else _frame(msg) if msg is not None else b"")
            self._took.clear()
            if not data:
                return
            try:
                # Fds go with the first byte: with notes ahead of msg, they would arrive with the
                # notes, and the zygote takes them in order for the next "run" all the same.
                await _sendmsg(sock, data, fds)
            except OSError as exc:
                raise ForkServerUnavailable(f"fork server unreachable: {exc}") from exc

    def _flush_now(self) -> None:
        if self._took and not self._closed.is_set():
            task = asyncio.get_running_loop().create_task(self._send(None))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def _after_event(self) -> None:
        """Two loop turns on, about when the event's reply goes, send the pending notes; once it
        has surely gone (_RELEASE_AFTER_S), let the children that reported their exit go (see
        forkserver_child._report_exit)."""
        loop = asyncio.get_running_loop()

        def after() -> None:
            if not self.busy:
                self._flush_now()
                if self._held:
                    loop.call_later(_RELEASE_AFTER_S, self._release_if_idle)

        loop.call_soon(loop.call_soon, after)

    def _release_if_idle(self) -> None:
        if not self.busy:
            self._release()  # else the event now running lets them go with its own children

    def _release(self) -> None:
        held, self._held = self._held, []
        for address in held:
            self._let_go(address)

    def _let_go(self, address: bytes) -> None:
        try:
            if self._exits is not None:
                self._exits.sendto(b"", address)
        except OSError:
            pass  # gone already (it waits hold_max_s at most)

    def _shown(self, shape: tuple[Any, ...], env_json: str) -> bool:
        """Note that the zygote saw a run of this shape and environment; whether it had not yet."""
        if env_json == self._shown_env and shape in self._shown_runs:
            return False
        if len(self._shown_runs) >= _SHOWN_RUNS_MAX:
            self._shown_runs.clear()  # runs with ever-changing arguments: show them again, now and then
        self._shown_runs.add(shape)
        self._shown_env = env_json
        return True

    async def _hand_to_spare(self, rid: int, msg: str, shape: tuple[Any, ...], env_json: str, fds: Sequence[int]) -> int | None:
        """Send a run (its JSON) straight to a spare fork; its pid, or None when no spare is left to take it."""
        sock = self._sock
        if sock is None or self._closed.is_set():
            raise ForkServerUnavailable("fork server is not running")
        body = msg.encode("utf-8", "surrogatepass")
        data = len(body).to_bytes(4, "big") + body
        # Under the send lock: the "took" that follows the frame reaches the zygote before any
        # preload can, so it never mistakes a spare at work for one a preload made stale.
        async with self._send_lock:
            while self._spares:
                pid, chan = self._spares.pop()
                self._running[pid] = rid  # before it has the frame: its exit report may come at once
                try:
                    await _sendmsg(chan, data, fds)
                except OSError:
                    del self._running[pid]
                    continue  # it died unused: try the next one
                finally:
                    chan.close()
                # "inflight": how many runs went at once, so the zygote keeps as many spares.
                took = f'{{"op": "took", "id": {rid:d}, "pid": {pid:d}, "inflight": {self.busy + 1:d}'
                if self._shown(shape, env_json):  # a script or an environment it has not seen
                    took += ', "run": ' + msg
                # Sent later (see _after_event): a quick child may be reaped before the zygote
                # reads it, which it handles; its exit report reaches us directly meanwhile.
                note = (took + "}").encode("utf-8", "surrogatepass")
                self._took.append(len(note).to_bytes(4, "big") + note)
                return pid
        return None

    def _read_exits(self) -> None:
        """Exit statuses our runs' children sent just before their _exit (see forkserver._report_exit)."""
        assert self._exits is not None
        while True:
            try:
                data, ancdata, _, address = self._exits.recvmsg(16, socket.CMSG_SPACE(_UCRED.size))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            pid = -1
            for level, kind, cdata in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(cdata) >= _UCRED.size:
                    pid = _UCRED.unpack(cdata[: _UCRED.size])[0]
            # Anyone may write to an abstract socket: only a child running one of our runs counts
            # (the kernel fills in the pid). One not known yet (a direct fork whose pid the zygote
            # has not told us) is let go at once: the zygote reports its exit when it reaps it.
            rid = self._running.get(pid)
            fut = None if rid is None or len(data) != 1 else self._futures.get((rid, "exit"))
            if fut is not None and not fut.done():
                fut.set_result(data[0])
                if address:
                    self._held.append(address)
            elif address:
                self._let_go(address)

    def _close_exits(self) -> None:
        self._release()
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
