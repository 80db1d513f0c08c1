"""The daemon's unix socket, frame by frame: a real daemon, real sockets, frames cut anywhere.

The unix server answers what the thin client sends (one frame, one reply) and also several
frames on one connection, frames arriving a byte at a time, and a client that half-closes
after its frame; a frame cut short by EOF or a header the parser refuses closes the
connection without a reply, and the daemon keeps serving others.
"""

import json
import socket

import pytest

from modules.optimization import wire
from tests.daemon_helpers import pre_event


def _connect(rt):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(str(rt.path(".sock")))
    return sock


def _frame(rt, command):
    return wire.encode_request("event", project=str(rt.project).encode(), body=json.dumps(pre_event(rt.project, command)).encode())


def _reply(sock):
    data = b""
    while len(data) < 4 or len(data) < 4 + int.from_bytes(data[:4], "big"):
        chunk = sock.recv(65536)
        assert chunk, "connection closed before a reply header"
        data += chunk
    size = int.from_bytes(data[:4], "big")
    code, out_len, err_len = wire.parse_reply_header(data[4 : 4 + size])
    body = data[4 + size :]
    while len(body) < out_len + err_len:
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    return code, body[:out_len], body[out_len:]


@pytest.fixture
def daemon(rt):
    rt.start()
    return rt


def test_frames_in_a_row_cut_anywhere_and_a_half_close(daemon):
    deny, allow = _frame(daemon, "rm -rf / --no-preserve-root"), _frame(daemon, "ls -la")
    with _connect(daemon) as sock:
        sock.sendall(deny + allow)  # two frames in one send: two replies, in order
        assert b'"deny"' in _reply(sock)[1]
        assert b'"deny"' not in _reply(sock)[1]
        for byte in deny:  # one byte at a time
            sock.send(bytes([byte]))
        assert b'"deny"' in _reply(sock)[1]
        sock.sendall(allow)
        sock.shutdown(socket.SHUT_WR)  # the reply still comes after our EOF, then the daemon closes
        assert _reply(sock)[0] == 0
        assert sock.recv(1) == b""


@pytest.mark.parametrize("garbage", [b"\x00\x00", b"\xff\xff\xff\xff", b"\x00\x00\x00\x05nope!", "cut"])
def test_a_bad_or_cut_frame_closes_that_connection_only(daemon, garbage):
    frame = _frame(daemon, "ls")
    with _connect(daemon) as sock:
        sock.sendall(frame[: len(frame) // 2] if garbage == "cut" else garbage)
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(65536) == b""  # no reply, closed
    assert daemon.status() is not None  # and it serves the next client
