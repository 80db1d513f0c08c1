"""The daemon's unix socket: thin clients' frames answered straight off the listening socket.

A thin client connects, sends one frame and reads one reply. asyncio's servers and
transports (an accept task, a transport object, a reader registered before anything
is read, a loop turn per step) cost more per connection than answering a cached event,
and every step is paid again, slower, when the daemon wakes from idle between tool
calls. Here the listening socket's readiness callback accepts, checks the peer, and
reads the frame that the client has usually sent already; a reader is registered only
when bytes are still to come. The reply goes out in one send (a writer is registered
only when the socket cannot take it all). Frames on one connection are answered in
order, one at a time; the connection closes at the client's EOF or on a bad frame.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from . import wire
from .protocol import ProtocolError

# The daemon's frame parser: one whole frame (its 4-byte length included) -> the reply.
AnswerFrame = Callable[[bytes], Awaitable[bytes]]

__all__ = ["UnixServer"]

log = logging.getLogger("hookopt.daemon")

_PEERCRED: Final = struct.Struct("3i")
_RECV_BYTES: Final = 1 << 18
_ACCEPTS_PER_WAKE: Final = 64  # then back to the loop, so one burst cannot starve the rest


class UnixServer:
    """Answer request frames from thin clients of our own uid on a listening unix socket."""

    def __init__(self, sock: socket.socket, answer_frame: AnswerFrame, limits: Mapping[str, int]) -> None:
        self.sock = sock
        self.answer_frame = answer_frame
        self.limits = limits  # the largest section the daemon's parser accepts, by name
        self.loop = asyncio.get_running_loop()
        self.connections: set[_Connection] = set()
        sock.setblocking(False)
        self.loop.add_reader(sock.fileno(), self._accept)

    def close(self) -> None:
        """Stop accepting and drop every open connection (answers in flight are not sent)."""
        if self.sock.fileno() >= 0:
            self.loop.remove_reader(self.sock.fileno())
        for connection in list(self.connections):
            connection.close()

    def _accept(self) -> None:
        for _ in range(_ACCEPTS_PER_WAKE):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of fds, say: the client falls back and tries again later
                log.warning("cannot accept a client: %s", exc)
                return
            try:
                _, uid, _ = _PEERCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
            except OSError:
                conn.close()
                continue
            if uid != os.getuid():
                log.warning("refused a peer with uid %d", uid)
                conn.close()
                continue
            conn.setblocking(False)
            connection = _Connection(self, conn)
            self.connections.add(connection)
            connection.readable()  # the frame usually came with the connection


class _Connection:
    """One client's connection: read frames, answer each in turn, write replies."""

    def __init__(self, server: UnixServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.fd = sock.fileno()
        self.buf = bytearray()
        self.pending = b""  # reply bytes the socket has not taken yet
        self.busy = False  # a frame is being answered or its reply written: later bytes wait
        self.eof = False
        self.reading = self.writing = False

    def readable(self) -> None:
        try:
            data = self.sock.recv(_RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            data = None
        except OSError:
            self.close()
            return
        if data == b"":
            self.eof = True
        elif data:
            self.buf += data
        self._next()

    def _next(self) -> None:
        """Answer the next complete frame in buf, if any; close at EOF when nothing is left."""
        if self.busy or self.fd < 0:
            return
        size = _frame_size(self.buf, self.server.limits)
        if size is None or len(self.buf) < size:
            if self.eof:
                if self.buf:
                    log.warning("bad frame from a client: %d bytes then EOF", len(self.buf))
                self.close()
            else:
                self._want_read(True)
            return
        frame, self.buf = bytes(self.buf[:size]), self.buf[size:]
        self.busy = True
        self._want_read(False)  # no more frames until this one is answered
        task = self.server.loop.create_task(self.server.answer_frame(frame))
        task.add_done_callback(self._answered)

    def _answered(self, task: asyncio.Task[bytes]) -> None:
        if self.fd < 0 or task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            if isinstance(exc, (ConnectionError, ProtocolError)):
                log.warning("bad frame from a client: %s", exc)
            else:
                log.error("answering a frame failed", exc_info=exc)
            self.close()
            return
        self.pending = task.result()
        self.writable()

    def writable(self) -> None:
        try:
            sent = self.sock.send(self.pending)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:  # the client is gone
            self.close()
            return
        self.pending = self.pending[sent:]
        if self.pending:
            self._want_write(True)
            return
        self._want_write(False)
        self.busy = False
        if self.buf or self.eof:
            self._next()
        else:
            self.readable()  # the client's EOF (or its next frame) is usually there by now

    def _want_read(self, on: bool) -> None:
        if on != self.reading:
            (self.server.loop.add_reader(self.fd, self.readable) if on else self.server.loop.remove_reader(self.fd))
            self.reading = on

    def _want_write(self, on: bool) -> None:
        if on != self.writing:
            (self.server.loop.add_writer(self.fd, self.writable) if on else self.server.loop.remove_writer(self.fd))
            self.writing = on

    def close(self) -> None:
        if self.fd < 0:
            return
        self._want_read(False)
        self._want_write(False)
        self.sock.close()
        self.fd = -1
        self.server.connections.discard(self)


def _frame_size(buf: bytearray, limits: Mapping[str, int]) -> int | None:
    """The frame's length once its header is in buf (None: not yet).

    A header the daemon's parser will refuse (too long, unreadable, a section over its
    limit) counts as a frame by itself: the parser then says what is wrong, as before,
    without our waiting for sections it would never read.
    """
    if len(buf) < 4:
        return None
    header_size = int.from_bytes(buf[:4], "big")
    if header_size > wire.MAX_HEADER_BYTES:
        return 4
    if len(buf) < 4 + header_size:
        return None
    try:
        header: Any = json.loads(bytes(buf[4 : 4 + header_size]))
    except (ValueError, RecursionError):
        return 4 + header_size
    if not isinstance(header, dict):
        return 4 + header_size
    total = 0
    for name in wire.SECTIONS:
        length = header.get(name, 0)
        if not isinstance(length, int) or not 0 <= length <= limits.get(name, 65536):
            return 4 + header_size
        total += length
    return 4 + header_size + total
