"""The supervisor's side of kept-alive http connections (Keeper), driven step by step.

Real sockets; the worker's side is played by this test on the worker's channel end.
The whole path, with a real supervisor, worker SIGKILLs and a real daemon, is in
tests/test_http_transport.py.
"""
from __future__ import annotations

import array
import select
import socket
from collections.abc import Iterator

import pytest

from modules.optimization.kept_connections import Keeper

SLOT_BYTES = 4


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.create_server(("127.0.0.1", 0))
    yield sock
    sock.close()


def handed(chan: socket.socket) -> dict[int, socket.socket]:
    """What the keeper sent on a worker's channel: slot -> the connection (it sends while it acts,
    so whatever it sent is there already)."""
    got = {}
    while select.select([chan], [], [], 0)[0]:
        data, ancdata, _, _ = chan.recvmsg(SLOT_BYTES, socket.CMSG_SPACE(4))
        if not data:
            break
        fds = array.array("i", ancdata[0][2])
        got[int.from_bytes(data, "little")] = socket.socket(fileno=fds[0])
    return got


def accept_ready(keeper: Keeper, listener: socket.socket) -> None:
    """One turn of the supervisor's wait and what it does with what became ready."""
    ready, _, _ = select.select(keeper.fds(), [], [], 1.0)
    keeper.ready(ready)


def eof_soon(sock: socket.socket) -> bool:
    sock.settimeout(5)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_connections_are_handed_over_kept_and_given_again_to_the_next_worker(listener: socket.socket) -> None:
    keeper = Keeper(listener, lambda conn: True, slots=2)
    keeper.new_worker()
    first = keeper.worker_chan
    assert first is not None
    keeper.worker_chan = None  # the worker's end stays with this test, as the fork would leave it
    clients = [socket.create_connection(listener.getsockname()) for _ in range(3)]
    accept_ready(keeper, listener)
    got = handed(first)
    assert sorted(got) == [0, 1]  # two slots: the third waits in the backlog
    assert listener.fileno() not in keeper.fds()

    # The worker is done with slot 0's connection (its client closed): the slot frees, the third comes in.
    got.pop(0).close()
    first.send((0).to_bytes(SLOT_BYTES, "little"))
    accept_ready(keeper, listener)  # the release
    assert listener.fileno() in keeper.fds()
    accept_ready(keeper, listener)  # the accept
    got.update(handed(first))
    assert sorted(got) == [0, 1]

    # The worker dies while answering slot 1: that connection is shut down at once; slot 0 is kept.
    keeper.busy[1] = 1
    for conn in got.values():
        conn.close()  # its copies go with it
    first.close()
    keeper.worker_exited()
    assert eof_soon(clients[1])
    clients[2].sendall(b"waits for the next worker")
    keeper.new_worker()
    second = keeper.worker_chan
    assert second is not None
    keeper.worker_chan = None
    keeper.worker_started()
    again = handed(second)
    assert sorted(again) == [0]
    assert again[0].recv(100) == b"waits for the next worker"  # the request sent meanwhile is there
    for sock in (*clients, *again.values(), second):
        sock.close()
    keeper.close()


def test_a_failed_accept_pauses_the_listener_instead_of_spinning(listener: socket.socket) -> None:
    keeper = Keeper(listener, lambda conn: True)
    keeper.new_worker()
    assert keeper.worker_chan is not None
    listener.close()  # accept() now fails with EBADF, as it would with EMFILE
    keeper._accept()
    assert keeper.paused_until > 0 and keeper.fds() == [keeper.chan.fileno()]  # type: ignore[union-attr]
    keeper.worker_chan.close()
    keeper.close()
