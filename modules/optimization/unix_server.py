"""The daemon's unix-socket connections as a plain asyncio Protocol.

A thin client opens a connection, sends one frame and reads one reply. asyncio's
streams (StreamReader, StreamWriter, a task per connection, three awaited reads, an
IncompleteReadError at EOF) cost more per connection than answering a cached event;
this protocol gathers a whole frame from data_received, answers it with the daemon's
own frame parser (Daemon.answer_frame, fed from memory) and writes the reply in one
call. Frames on one connection are answered in order, one at a time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, cast

from . import wire
from .protocol import ProtocolError

# The daemon's frame parser: (a reader holding the frame after its length, the header length) -> reply.
AnswerFrame = Callable[[asyncio.StreamReader, int], Awaitable[bytes]]

__all__ = ["FrameProtocol"]

log = logging.getLogger("hookopt.daemon")

_PEERCRED: Final = struct.Struct("3i")


class FrameProtocol(asyncio.Protocol):
    """Answer request frames from one thin client of our own uid."""

    def __init__(self, answer_frame: AnswerFrame, limits: Mapping[str, int]) -> None:
        self.answer_frame = answer_frame
        self.limits = limits  # the largest section the daemon's parser accepts, by name
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.busy = False  # a frame is being answered: later bytes wait in buf
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        try:
            _, uid, _ = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
        except OSError:
            transport.close()
            return
        if uid != os.getuid():
            log.warning("refused a peer with uid %d", uid)
            transport.close()
            return
        self.transport = cast(asyncio.Transport, transport)  # a uvloop transport is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._next()

    def eof_received(self) -> bool:
        self.eof = True
        if not self.busy:
            self._next()
        return True  # we close once the last reply is written

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def _next(self) -> None:
        """Answer the next complete frame in buf, if any; close at EOF when nothing is left."""
        transport = self.transport
        if transport is None:
            return
        size = _frame_size(self.buf, self.limits)
        if size is None or len(self.buf) < size:
            if self.eof:
                if self.buf:
                    log.warning("bad frame from a client: %d bytes then EOF", len(self.buf))
                transport.close()
            return
        frame, self.buf = bytes(self.buf[:size]), self.buf[size:]
        self.busy = True
        task = asyncio.get_running_loop().create_task(self._answer(frame))
        task.add_done_callback(self._answered)

    async def _answer(self, frame: bytes) -> bytes:
        reader = asyncio.StreamReader()
        reader.feed_data(frame[4:])
        reader.feed_eof()
        return await self.answer_frame(reader, int.from_bytes(frame[:4], "big"))

    def _answered(self, task: asyncio.Task[bytes]) -> None:
        self.busy = False
        transport = self.transport
        if transport is None or task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            if isinstance(exc, (ConnectionError, asyncio.IncompleteReadError, ProtocolError)):
                log.warning("bad frame from a client: %s", exc)
            else:
                log.error("answering a frame failed", exc_info=exc)
            transport.close()
            return
        transport.write(task.result())
        self._next()


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
