"""The daemon's unix socket, frame by frame: a real daemon, real sockets, frames cut anywhere.

The unix server answers what the thin client sends (one frame, one reply) and also several
frames on one connection, frames arriving a byte at a time, and a client that half-closes
after its frame; a frame cut short by EOF or a header the parser refuses closes the
connection without a reply, and the daemon keeps serving others.
"""

import json
import os
import resource
import socket
import subprocess
import sys
import time

import pytest

from modules.optimization import wire
from tests.daemon_helpers import ROOT, ppid, pre_event, wait_for


def _connect(rt):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(str(rt.path(".sock")))
    return sock


def _frame(rt, command):
    return wire.encode_request("event", project=str(rt.project).encode(), body=json.dumps(pre_event(rt.project, command)).encode())


def _reply(sock):
    """One reply, read exactly: a second reply may already be in the socket behind it."""
    header = wire.recv_exactly(sock, int.from_bytes(wire.recv_exactly(sock, 4), "big"))
    code, out_len, err_len = wire.parse_reply_header(header)
    body = wire.recv_exactly(sock, out_len + err_len)
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


def test_out_of_fds_pauses_accepting_instead_of_spinning_then_serves_again(rt):
    """At its fd limit the daemon cannot accept: it must pause (not spin on the still-readable
    listener) and serve again once fds are free."""
    limit = 80
    subprocess.Popen(
        [sys.executable, "-m", "modules.optimization.daemon", "--project", str(rt.project)],
        env=rt.env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit)),
    )  # fmt: skip
    wait_for(rt.status, what="the daemon to answer status")
    worker = rt.pid()
    assert ppid(worker) in rt.daemons()
    held = []
    try:
        for _ in range(limit):  # idle connections, each holding one of the daemon's fds once accepted
            held.append(_connect(rt))
        log = rt.project / ".claude" / "hookopt" / "daemon.log"
        wait_for(lambda: "cannot accept a client, pausing" in log.read_text(), what="the daemon to hit its fd limit")

        def cpu_s():
            with open(f"/proc/{worker}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

        before = cpu_s()
        time.sleep(2.0)
        assert cpu_s() - before < 0.5, "the daemon spins on its listener while out of fds"
    finally:
        for sock in held:
            sock.close()
    with _connect(rt) as sock:  # served again once the fds are free
        sock.sendall(_frame(rt, "rm -rf / --no-preserve-root"))
        assert b'"deny"' in _reply(sock)[1]
    assert rt.pid() == worker
