"""The http transport Claude Code's http hooks use: a real daemon, real sockets."""

import contextlib
import json
import os
import posix
import signal
import socket
import subprocess

from modules.optimization.installer import install
from modules.optimization.protocol import MAX_EVENT_BYTES
from tests.daemon_helpers import decision, http_post, pre_event, project_with_hook, state, wait_for


def _read_response(conn):
    """(status, headers, body) of one HTTP response, or None if the server closed first."""
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = conn.recv(65536)
        except ConnectionResetError:  # closed with our unread request still queued
            chunk = b""
        if not chunk:
            assert not data, data
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers["content-length"]):
        body += conn.recv(65536)
    return int(lines[0].split()[1]), headers, body


def _closed(conn):
    try:
        return conn.recv(1) == b""
    except ConnectionResetError:
        return True


def test_http_hostile_requests_are_refused_and_the_daemon_keeps_serving(rt):
    rt.start()
    endpoint = json.loads((state(rt) / "http.json").read_text())
    token = endpoint["token"]
    body = json.dumps(pre_event(rt.project, "rm -rf /")).encode()

    def request(headers, payload=b"", method="POST"):
        lines = [f"{method} /hook HTTP/1.1", "Host: x", *headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload

    def connect():
        return socket.create_connection(("127.0.0.1", endpoint["port"]), timeout=10)

    good = request([f"X-Hookopt-Token: {token}", f"Content-Length: {len(body)}"], body)
    # A Content-Length over the event limit: 413 at once, nothing read, connection closed.
    for length in (MAX_EVENT_BYTES + 1, 10**15, -1):
        with connect() as conn:
            conn.sendall(request([f"X-Hookopt-Token: {token}", f"Content-Length: {length}"]))
            status, headers, _ = _read_response(conn)
            assert status == 413 and headers["connection"] == "close" and _closed(conn)
    # No token header at all.
    with connect() as conn:
        conn.sendall(request([f"Content-Length: {len(body)}", "Connection: close"], body))
        status, _, payload = _read_response(conn)
        assert status == 403 and b"x-hookopt-token" in payload and _closed(conn)
    # Garbage whose framing is clear is refused with an answer (then a close, as every answer).
    with connect() as conn:
        conn.sendall(b"\x00\xff\xfe GARBAGE \x01\r\nnot a header\r\n\r\n")
        status, headers, _ = _read_response(conn)
        assert status == 403 and headers["connection"] == "close" and _closed(conn)
    # Garbage that cannot be framed: the server closes without answering.
    for garbage in (b"A" * 200_000, request([f"X-Hookopt-Token: {token}", "Content-Length: twelve"]), good[: len(good) - 10]):
        with connect() as conn:
            # It may close mid-send: EPIPE, ECONNRESET, or ENOTCONN at our shutdown.
            with contextlib.suppress(OSError):
                conn.sendall(garbage)
                conn.shutdown(socket.SHUT_WR)
            assert _read_response(conn) is None
    # Still serving, same daemon, over a fresh connection and the unix socket alike.
    with connect() as conn:
        conn.sendall(good)
        assert _read_response(conn)[0] == 200
    assert decision(rt.hook(pre_event(rt.project, "rm -rf /"))) == "deny"
    assert len(rt.supervisors()) == 1 and rt.status()["supervisor"]["restarts"] == 0  # the same worker throughout


def test_http_transport_answers_with_the_token_only(rt):
    rt.start()
    endpoint = json.loads((rt.project / ".claude/hookopt/http.json").read_text())
    body = json.dumps(pre_event(rt.project, "rm -rf /")).encode()
    status, payload = http_post(endpoint["port"], body, endpoint["token"])
    assert status == 200
    assert json.loads(payload)["hookSpecificOutput"]["permissionDecision"] == "deny"
    assert http_post(endpoint["port"], body, "wrong")[0] == 403
    assert http_post(endpoint["port"], body, "")[0] == 403
    assert http_post(endpoint["port"], json.dumps(pre_event(rt.project, "ls")).encode(), endpoint["token"]) == (200, b"{}")
    assert http_post(endpoint["port"], b"{nope", endpoint["token"])[0] == 500


def _response(stream):
    """(status, headers, body) of the next response on a buffered stream (responses may come together)."""
    lines = []
    while (line := stream.readline()) not in (b"\r\n", b""):
        lines.append(line.decode("latin-1").rstrip("\r\n"))
    assert lines and line, "the connection closed before a whole response"
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, stream.read(int(headers["content-length"]))


def _request(endpoint, body, *headers):
    return (
        f"POST /hook HTTP/1.1\r\nHost: x\r\nX-Hookopt-Token: {endpoint['token']}\r\n"
        + "".join(f"{h}\r\n" for h in headers)
        + f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def test_http_connections_are_kept_alive_through_a_worker_crash_and_loopback_only(rt):
    """Claude Code sends its next request on a kept-alive connection and does not retry one
    the server closes under it (tests/test_claude_harness.py): the connections outlive the
    worker, and a request sent while no worker runs is answered by the next one."""
    rt.start()
    endpoint = json.loads((rt.project / ".claude/hookopt/http.json").read_text())
    request = _request(endpoint, json.dumps(pre_event(rt.project, "rm -rf /")).encode())
    with socket.create_connection(("127.0.0.1", endpoint["port"]), timeout=10) as conn, conn.makefile("rb") as stream:
        conn.sendall(request + request)  # two at once: answered in turn on the same connection
        for _ in range(2):
            status, headers, payload = _response(stream)
            assert status == 200 and headers["connection"] == "keep-alive" and b'"deny"' in payload
        worker = rt.status()["pid"]
        os.kill(worker, signal.SIGKILL)
        conn.sendall(request)  # while it dies: waits in the socket for the next worker
        status, headers, payload = _response(stream)
        assert status == 200 and headers["connection"] == "keep-alive" and b'"deny"' in payload
        status = rt.status()
        assert status["pid"] != worker and status["supervisor"]["restarts"] == 1
        conn.sendall(_request(endpoint, json.dumps(pre_event(rt.project, "ls")).encode(), "Connection: close"))
        status, headers, payload = _response(stream)
        assert status == 200 and headers["connection"] == "close"  # the client's choice is kept
        assert stream.read() == b""  # and the connection closed
    for port in (endpoint["port"], endpoint["metrics_port"]):
        listening = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True).stdout.split()
        assert listening[3] == f"127.0.0.1:{port}", listening  # the local address column


SLOW_GUARD = """import os, sys, time
sys.stdin.read()
open(os.path.join(os.environ["CLAUDE_PROJECT_DIR"], "started"), "w").close()
time.sleep(20)
"""


def test_a_request_the_dead_worker_had_taken_closes_its_connection_at_once(rt, monkeypatch):
    """Its answer will never come: Claude Code sees the close at once (as with a connection per
    event), not after its hook timeout. The other connections stay."""
    project_with_hook(rt.project, "PreToolUse", "Bash", "slow.py", SLOW_GUARD)
    monkeypatch.setitem(posix.environ, b"HOOKOPT_RUNTIME_DIR", str(rt.root).encode())  # the install's client starts it there
    install(rt.project, transport="http", say=lambda _: None)
    worker = wait_for(rt.status, what="the daemon the install started")["pid"]
    endpoint = json.loads((rt.project / ".claude/hookopt/http.json").read_text())
    with socket.create_connection(("127.0.0.1", endpoint["port"]), timeout=10) as idle, idle.makefile("rb") as idle_stream:
        idle.sendall(_request(endpoint, json.dumps(pre_event(rt.project, "ls")).encode()))
        assert _response(idle_stream)[0] == 200  # now an idle kept connection
        with socket.create_connection(("127.0.0.1", endpoint["port"]), timeout=10) as busy:
            body = json.dumps(pre_event(rt.project, "ls")).encode()
            busy.sendall(_request(endpoint, body).replace(b"POST /hook ", b"POST /hook/stack "))
            wait_for(lambda: (rt.project / "started").exists(), what="the slow guard to start")
            os.kill(worker, signal.SIGKILL)
            assert _closed(busy)  # within the socket's 10 s timeout, long before the guard's 20 s
        idle.sendall(_request(endpoint, json.dumps(pre_event(rt.project, "rm -rf /")).encode()))
        status, headers, payload = _response(idle_stream)
        assert status == 200 and b'"deny"' in payload and rt.status()["pid"] != worker


def test_the_supervisor_drops_its_copy_of_every_connection_that_ends(rt):
    """No fd kept for a connection its client closed, or the daemon refused (a leak would end
    in connections waiting for a free slot)."""
    rt.start()
    endpoint = json.loads((rt.project / ".claude/hookopt/http.json").read_text())
    supervisor = rt.supervisors()[0]

    def fds():
        return len(os.listdir(f"/proc/{supervisor}/fd"))

    before = fds()
    body = json.dumps(pre_event(rt.project, "ls")).encode()
    for i in range(60):
        with socket.create_connection(("127.0.0.1", endpoint["port"]), timeout=10) as conn, conn.makefile("rb") as stream:
            bad = i % 3 == 0  # a wrong token: 403, and the daemon closes it
            conn.sendall(_request({"token": "nope"} if bad else endpoint, body))
            assert _response(stream)[0] == (403 if bad else 200)
    wait_for(lambda: fds() == before, what=f"the supervisor's fds back to {before} (now {fds()})")


def test_a_worker_replaced_on_sighup_leaves_its_idle_connections_to_the_next(rt):
    """A worker that stops on purpose closes only its copies: no connection ends under Claude Code."""
    rt.start()
    endpoint = json.loads((rt.project / ".claude/hookopt/http.json").read_text())
    request = _request(endpoint, json.dumps(pre_event(rt.project, "rm -rf /")).encode())
    with socket.create_connection(("127.0.0.1", endpoint["port"]), timeout=10) as conn, conn.makefile("rb") as stream:
        conn.sendall(request)
        assert b'"deny"' in _response(stream)[2]
        worker = rt.status()["pid"]
        os.kill(rt.supervisors()[0], signal.SIGHUP)
        wait_for(lambda: (s := rt.status()) and s["pid"] != worker, what="the replacement worker")
        conn.sendall(request)
        status, headers, payload = _response(stream)
        assert status == 200 and headers["connection"] == "keep-alive" and b'"deny"' in payload
