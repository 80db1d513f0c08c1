"""The daemon's unix socket: thin clients of our own uid, one frame in, one reply out.

Served by stream_server.StreamServer: this module says who may connect (SO_PEERCRED:
our uid only) and where a frame ends (its 4-byte header length, then the sections the
header declares). The frame itself is parsed and answered by Daemon.answer_frame.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from . import wire
from .stream_server import StreamServer

# The daemon's frame parser: one whole frame (its 4-byte length included) -> the reply.
AnswerFrame = Callable[[bytes], Awaitable[bytes]]

__all__ = ["serve_unix"]

log = logging.getLogger("hookopt.daemon")

_PEERCRED: Final = struct.Struct("3i")


def serve_unix(sock: socket.socket, answer_frame: AnswerFrame, limits: Mapping[str, int]) -> StreamServer:
    """Serve thin clients on the listening unix socket sock from the running loop."""
    return StreamServer(sock, _Frames(answer_frame, limits), admit=_our_uid)


def _our_uid(conn: socket.socket) -> bool:
    _, uid, _ = _PEERCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    if uid != os.getuid():
        log.warning("refused a peer with uid %d", uid)
        return False
    return True


class _Frames:
    def __init__(self, answer_frame: AnswerFrame, limits: Mapping[str, int]) -> None:
        self.answer_frame = answer_frame
        self.limits = limits  # the largest section the daemon's parser accepts, by name

    def size(self, buf: bytearray) -> int | None:
        return _frame_size(buf, self.limits)

    async def answer(self, frame: bytes) -> tuple[bytes, bool]:
        return await self.answer_frame(frame), False


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
