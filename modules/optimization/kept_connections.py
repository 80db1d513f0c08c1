"""Claude Code's http hook connections, kept alive across worker restarts.

Claude Code keeps an http hook's connection alive and sends its next request on it; when
the server closes that connection under the request, it does not retry, it lets the tool
call through (tests/test_claude_harness.py). A connection per event avoids that, at
+ 1.0 to + 6.5 ms of Claude Code's time per tool call in four runs
(bench/test_e2e_claude.py, floor-http-close against floor-http). Kept alive by the
worker alone, a worker that dies would close every idle connection, and a request
already on its way would meet the close.

So the supervisor accepts the connections (``Keeper``), keeps a copy of each and hands
each to the worker over a SOCK_SEQPACKET channel with the fd attached. The worker serves
them kept alive (``KeptServer``). When a worker dies, its copies close but the
supervisor's keep every connection open: the next worker gets them all, and a request
sent meanwhile waits in the socket for it. Only a connection whose request the dead
worker had already taken is shut down (the worker marks it in a shared byte per
connection before it reads): Claude Code sees the close at once, as it did when each
event had its own connection, instead of waiting for an answer that will never come.
When the worker is done with a connection (its client closed it, or a refused request),
it shuts it down and tells the supervisor, which drops its copy.
"""

from __future__ import annotations

import array
import logging
import mmap
import socket
import struct
import time
from collections.abc import Callable, Sequence
from typing import Final

from .spawn import _received_fds
from .stream_server import Framing, StreamServer, _Connection, admitted

__all__ = ["Keeper", "KeptServer"]

log = logging.getLogger("hookopt.daemon")

SLOTS: Final = 1024  # connections kept at once; more wait in the listen backlog for a free slot
_ACCEPT_RETRY_S: Final = 1.0  # after a failed accept (out of fds, say): the listener stays readable
_SLOT: Final = struct.Struct("=I")
_ACCEPTS_PER_WAKE: Final = 64


def _send_fd(chan: socket.socket, slot: int, fd: int) -> bool:
    try:
        chan.sendmsg([_SLOT.pack(slot)], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
    except OSError:  # the worker is gone or not reading: the next one gets it
        return False
    return True


class Keeper:
    """In the supervisor: accept on the http listener, keep each connection, hand it to the worker."""

    def __init__(self, listener: socket.socket, admit: Callable[[socket.socket], bool], slots: int = SLOTS) -> None:
        self.listener = listener
        self.admit = admit  # may refuse a peer, or set socket options (once, for both copies)
        listener.setblocking(False)
        self.busy = mmap.mmap(-1, slots)  # shared with the workers: 1 while one answers that slot's request
        self.held: dict[int, socket.socket] = {}  # slot -> the supervisor's copy
        self.unsent: list[int] = []  # kept, not yet handed to the current worker
        self.chan: socket.socket | None = None  # the supervisor's end of the current worker's channel
        self.worker_chan: socket.socket | None = None  # the worker's end, inherited through fork
        self.paused_until = 0.0

    # -- around a worker's life (Supervisor calls these) ------------------------------

    def new_worker(self) -> None:
        """Before the fork: a fresh channel for the worker about to start."""
        self.chan, self.worker_chan = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.chan.setblocking(False)

    def in_worker(self) -> None:
        """In the new worker: drop what is the supervisor's (worker_chan is the worker's)."""
        assert self.chan is not None
        self.chan.close()
        for copy in self.held.values():
            copy.close()  # else a connection the worker closes would stay open through this copy
        self.held.clear()

    def worker_started(self) -> None:
        """In the supervisor after the fork: hand the new worker every kept connection."""
        if self.worker_chan is not None:
            self.worker_chan.close()
            self.worker_chan = None
        self.unsent = sorted(self.held)
        self._send_unsent()

    def worker_exited(self) -> None:
        """Shut down the connections whose request the worker had taken; keep the others."""
        for slot in [s for s in self.held if self.busy[s]]:
            self._drop(slot, shutdown=True)
        if self.chan is not None:
            self.chan.close()
            self.chan = None
        self.unsent = []

    def close(self) -> None:
        for slot in list(self.held):
            self._drop(slot, shutdown=False)
        if self.chan is not None:
            self.chan.close()
            self.chan = None

    # -- the supervisor's loop -------------------------------------------------------

    def fds(self) -> list[int]:
        """What the supervisor's wait should watch."""
        if self.chan is None:
            return []
        room = len(self.held) < len(self.busy) and time.monotonic() >= self.paused_until
        return [self.chan.fileno(), *([self.listener.fileno()] if room else [])]

    def ready(self, fds: Sequence[int]) -> None:
        if self.chan is None:
            return
        if self.chan.fileno() in fds:
            self._read_releases()
        if self.listener.fileno() in fds:
            self._accept()
        self._send_unsent()

    def _accept(self) -> None:
        for _ in range(_ACCEPTS_PER_WAKE):
            free = next((s for s in range(len(self.busy)) if s not in self.held), None)
            if free is None:
                return
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("cannot accept an http connection, pausing %.0f s: %s", _ACCEPT_RETRY_S, exc)
                self.paused_until = time.monotonic() + _ACCEPT_RETRY_S
                return
            if not admitted(self.admit, conn):
                continue
            self.busy[free] = 0
            self.held[free] = conn
            self.unsent.append(free)

    def _send_unsent(self) -> None:
        while self.unsent and self.chan is not None:
            slot = self.unsent[0]
            if slot in self.held and not _send_fd(self.chan, slot, self.held[slot].fileno()):
                return
            self.unsent.pop(0)

    def _read_releases(self) -> None:
        assert self.chan is not None
        while True:
            try:
                data = self.chan.recv(_SLOT.size)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if len(data) != _SLOT.size:
                return  # EOF: the worker is gone; reap() says so
            self._drop(_SLOT.unpack(data)[0], shutdown=False)

    def _drop(self, slot: int, shutdown: bool) -> None:
        copy = self.held.pop(slot, None)
        self.busy[slot] = 0
        if copy is None:
            return
        if shutdown:
            try:
                copy.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        copy.close()


class KeptServer(StreamServer):
    """In the worker: serve the connections the supervisor hands over, kept alive."""

    def __init__(self, chan: socket.socket, busy: mmap.mmap, framing: Framing) -> None:
        self.busy = busy
        super().__init__(chan, framing)

    def _accept(self) -> None:
        for _ in range(_ACCEPTS_PER_WAKE):
            try:
                data, ancdata, _, _ = self.sock.recvmsg(_SLOT.size, socket.CMSG_SPACE(array.array("i").itemsize))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if not data:  # the supervisor is gone
                self.loop.remove_reader(self.sock.fileno())
                return
            fds = _received_fds(ancdata)
            if len(data) != _SLOT.size or len(fds) != 1:  # no room for the fd here (out of fds, say)
                for fd in fds:
                    socket.socket(fileno=fd).close()
                log.error("an http connection could not be taken over (out of file descriptors?); it is closed")
                if len(data) == _SLOT.size:
                    self._give_back(_SLOT.unpack(data)[0])
                continue
            conn = socket.socket(fileno=fds[0])
            conn.setblocking(False)
            connection = _KeptConnection(self, conn, _SLOT.unpack(data)[0])
            self.connections.add(connection)
            connection.readable()

    def _give_back(self, slot: int) -> None:
        """Done with slot's connection: the supervisor closes its copy (and so the connection)."""
        try:
            self.sock.send(_SLOT.pack(slot))
        except OSError:
            pass  # the supervisor is gone; nothing to keep



class _KeptConnection(_Connection):
    server: KeptServer

    def __init__(self, server: KeptServer, sock: socket.socket, slot: int) -> None:
        super().__init__(server, sock)
        self.slot = slot

    def readable(self) -> None:
        self.server.busy[self.slot] = 1  # before the read: a request this worker takes is marked
        super().readable()
        if not self.busy and not self.buf and self.fd >= 0:
            self.server.busy[self.slot] = 0  # nothing taken (a spurious wake-up)

    def idle(self) -> None:
        if not self.buf:
            self.server.busy[self.slot] = 0

    def close(self) -> None:
        """Done with it: shut it down (the supervisor's copy would keep it open) and tell the
        supervisor. When the worker stops (the server closed), only this copy closes: the
        supervisor keeps the connection for the next worker (a request taken stays marked)."""
        if self.fd < 0 or self.server.closed:
            super().close()
            return
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        super().close()
        self.server._give_back(self.slot)
