"""Requests answered straight off a listening socket, one at a time per connection.

asyncio's servers and transports (an accept task, a transport object, a reader
registered before anything is read, streams awaited line by line, a loop turn per
step) cost more per connection than answering a cached event, and every step is paid
again, slower, when the daemon wakes from idle between tool calls. Here the listening
socket's readiness callback accepts, admits the peer, and reads the request its client
has usually sent already; a reader is registered only when bytes are still to come.
Each reply goes out in one send (a writer is registered only when the socket cannot
take it all). What a request is, and its answer, is the framing's business: the unix
socket's frames (unix_server.py) and HTTP (http_transport.py).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Coroutine
from typing import Any, Final, Protocol

from .protocol import ProtocolError

__all__ = ["UNFRAMED", "Framing", "StreamServer", "admitted"]

log = logging.getLogger("hookopt.daemon")

UNFRAMED: Final = -1  # Framing.size: these bytes can never be a request (close, no reply)
_RECV_BYTES: Final = 1 << 18
_MAX_AHEAD: Final = 1 << 20  # bytes read past a request still being answered, then we stop reading
_ACCEPTS_PER_WAKE: Final = 64  # then back to the loop, so one burst cannot starve the rest
_ACCEPT_RETRY_S: Final = 1.0


class Framing(Protocol):
    def size(self, buf: bytearray) -> int | None:
        """The length of the first whole request in buf; None: not all there yet; UNFRAMED."""

    def answer(self, request: bytes) -> Coroutine[Any, Any, tuple[bytes, bool]]:
        """The reply to one request, and whether to close the connection after it.
        Raising ProtocolError (or ConnectionError) closes it without a reply."""


def admitted(admit: Callable[[socket.socket], bool], conn: socket.socket) -> bool:
    """Whether admit lets conn's peer in (set its options); a refused one is closed."""
    try:
        ok = admit(conn)
    except OSError:
        ok = False
    if not ok:
        conn.close()
    return ok


class StreamServer:
    """Serve a framing on a listening socket from the running loop until close()."""

    def __init__(self, sock: socket.socket, framing: Framing, admit: Callable[[socket.socket], bool] = lambda _: True) -> None:
        self.sock = sock
        self.framing = framing
        self.admit = admit  # may refuse a peer, or set socket options
        self.loop = asyncio.get_running_loop()
        self.connections: set[_Connection] = set()
        self.closed = False
        sock.setblocking(False)
        self.loop.add_reader(sock.fileno(), self._accept)

    def close(self) -> None:
        """Stop accepting and drop every open connection (answers in flight are not sent)."""
        self.closed = True
        if self.sock.fileno() >= 0:
            self.loop.remove_reader(self.sock.fileno())
        for connection in list(self.connections):
            connection.close()

    def _resume(self) -> None:
        if not self.closed and self.sock.fileno() >= 0:
            self.loop.add_reader(self.sock.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(_ACCEPTS_PER_WAKE):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of fds, say: the clients fall back or retry
                # The listener stays readable: pause accepting, as asyncio's servers do, or
                # the loop would spin on it until an fd is free.
                log.warning("cannot accept a client, pausing %.0f s: %s", _ACCEPT_RETRY_S, exc)
                self.loop.remove_reader(self.sock.fileno())
                self.loop.call_later(_ACCEPT_RETRY_S, self._resume)
                return
            if not admitted(self.admit, conn):
                continue
            conn.setblocking(False)
            connection = _Connection(self, conn)
            self.connections.add(connection)
            connection.readable()  # the request usually came with the connection


class _Connection:
    """One client's connection: read requests, answer each in turn, write replies."""

    def __init__(self, server: StreamServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.fd = sock.fileno()
        self.buf = bytearray()
        self.pending = b""  # reply bytes the socket has not taken yet
        self.close_after = False
        self.busy = False  # a request is being answered or its reply written: later bytes wait
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
        if self.busy:  # the next request waits for this one's reply
            if self.eof or len(self.buf) > _MAX_AHEAD:
                self._want_read(False)
            return
        self._next()

    def _next(self) -> None:
        """Answer the next whole request in buf, if any; close at EOF when nothing is left."""
        if self.busy or self.fd < 0:
            return
        size = self.server.framing.size(self.buf)
        if size == UNFRAMED:
            log.warning("bad request from a client: %r", bytes(self.buf[:80]))
            self.close()
            return
        if size is None or len(self.buf) < size:
            if self.eof:
                if self.buf:
                    log.warning("bad request from a client: %d bytes then EOF", len(self.buf))
                self.close()
            else:
                self._want_read(True)
            return
        request, self.buf = bytes(self.buf[:size]), self.buf[size:]
        self.busy = True  # a kept-alive connection stays registered: its next request is read ahead
        task = self.server.loop.create_task(self.server.framing.answer(request))
        task.add_done_callback(self._answered)

    def _answered(self, task: asyncio.Task[tuple[bytes, bool]]) -> None:
        if self.fd < 0 or task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            if isinstance(exc, (ConnectionError, ProtocolError)):
                log.warning("bad request from a client: %s", exc)
            else:
                log.error("answering a request failed", exc_info=exc)
            self.close()
            return
        self.pending, self.close_after = task.result()
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
        if self.close_after:
            self.close()
            return
        self.busy = False
        self.idle()
        if self.buf or self.eof or self.reading:
            self._next()
        else:
            self.readable()  # a thin client's EOF is usually there already: no reader needed

    def idle(self) -> None:
        """A reply has gone out and the connection stays (see kept_connections)."""

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
