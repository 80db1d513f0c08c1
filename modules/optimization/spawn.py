"""Spawning a hook command as Claude Code does, and the pipe plumbing warm runs share.

``spawn(command, ...)`` runs ``/bin/sh -c command`` with the event on stdin and returns
its exit code, stdout and stderr (HookResult; exit None when it timed out and was killed
with its process group).
"""

from __future__ import annotations

import array
import asyncio
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Final

from .protocol import HookResult
from .wire import LEGACY_ENV  # set when spawning, so a stub runs its original instead of calling us

__all__ = ["SH", "spawn"]

SH: Final = "/bin/sh"
# coreutils' nice: it sets the niceness, then execs sh, so the command starts at it (same pid).
NICE: Final = shutil.which("nice", path="/usr/bin:/bin")
_REAP_AFTER_KILL_S: Final = 5.0


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


def _prefill(fd: int, data: bytes) -> tuple[int, bytes]:
    """Write what the pipe takes now (an event usually fits its 64 KiB), before the child runs.

    A child that finds its whole stdin waiting never blocks on it: one wake-up less per
    run. Return (fd, the rest) with fd closed and -1 when everything went.
    """
    try:
        os.set_blocking(fd, False)
        written = os.write(fd, data) if data else 0
    except BlockingIOError:
        written = 0
    except OSError:  # cannot happen before the child exists; be safe and let _feed try
        return fd, data
    if written == len(data):
        os.close(fd)
        return -1, b""
    return fd, data[written:]


async def _collect(
    stdin: bytes, fds: tuple[int, int, int], exited: Awaitable[int], kill: Callable[[], Awaitable[None]], timeout_s: float
) -> HookResult:
    """Feed stdin (fds[0] -1: fed already), gather stdout/stderr to EOF and the exit code; on timeout kill and return what came."""
    feed = asyncio.create_task(_feed(fds[0], stdin)) if fds[0] >= 0 else None
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
        if feed is not None:
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


async def spawn(
    command: str, *, stdin: bytes, env: Mapping[str, str], cwd: str, timeout_s: float = 600.0, nice: int = 0
) -> HookResult:
    """Run command as Claude Code does (`/bin/sh -c command`), with LEGACY_ENV set; kill its group on timeout.
    nice: added to its niceness (a background run; without a `nice` program it runs at ours)."""
    child, ours = _pipes()
    fed, stdin = _prefill(ours[0], stdin)
    ours = (fed, ours[1], ours[2])
    niced = [NICE, "-n", str(nice)] if nice and NICE else []
    try:
        proc = subprocess.Popen(
            [*niced, SH, "-c", command], stdin=child[0], stdout=child[1], stderr=child[2],
            env={**env, LEGACY_ENV: "1"}, cwd=cwd, start_new_session=True,
        )  # fmt: skip
    except BaseException:
        _close(ours)
        raise
    finally:
        _close(child)

    async def kill() -> None:
        if proc.returncode is None:
            _killpg(proc.pid)
            try:  # reaped now; one that will not die in time is left to subprocess's own clean-up
                async with asyncio.timeout(_REAP_AFTER_KILL_S):
                    await _exit_code(proc)
            except TimeoutError:
                pass

    return await _collect(stdin, ours, _exit_code(proc), kill, timeout_s)


async def _exit_code(proc: subprocess.Popen[bytes]) -> int:
    """proc's exit code (-N: killed by signal N), awaited on a pidfd: no thread per child, as
    asyncio's child watcher starts before Python 3.12 (a `true` took 1.8-2.0 ms with it, 1.3-1.4 without)."""
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # no pidfd (Linux < 5.3): wait in a thread
        return await asyncio.to_thread(proc.wait)
    try:
        await _readable(fd)
    finally:
        os.close(fd)
    return proc.wait()


# -- fds and sockets -------------------------------------------------------------


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
