"""Shared pieces of the benchmark suites: real events, a real daemon, one-line reports.

Every suite measures its baseline and the path under test in the same run, alternated,
so drift on this shared 2-core machine cancels. With --benchmark-disable (the CI
default) each body runs once, on the small sizes chosen through `sized`.
"""

import contextlib
import json
import os
import posix
import shutil
import socket
import statistics
import tempfile
import threading
from pathlib import Path

import pytest

from modules.optimization import wire
from tests.daemon_helpers import ROOT, Runtime

FIXTURES = ROOT / "tests" / "fixtures" / "claude-code-2.1.329"
EXAMPLE = ROOT / "examples" / "project"
# The example's hooks as its settings list them, in this order (what select() picks from).
EXAMPLE_STACK = json.loads((EXAMPLE / ".claude" / "settings.json").read_text())["hooks"]
BENIGN_COMMAND = "git status --short && npm test -- --watch=false 2>&1 | tail -n 20"
DANGEROUS_COMMAND = "cd build && rm -rf / --no-preserve-root"


_TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")


def tree_cpu_ms(pid):
    """Processor time (user + system) of pid and of its live descendants so far, each with
    what it has reaped of its own children: the whole cost of a process tree. In clock
    ticks (10 ms here): compare totals over many events, not single ones."""
    children, ticks = {}, {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path("/proc", entry, "stat").read_text()
            except OSError:
                continue  # gone meanwhile: its time is in its parent's reaped share now
            fields = stat[stat.rindex(")") + 2 :].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
            ticks[int(entry)] = sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        total += ticks.get(current, 0)
        todo += children.get(current, [])
    return total * _TICK_MS


def fixture_event(name, project, **changes):
    """A payload captured from the real CLI, moved into project, with top-level fields changed."""
    event = json.loads((FIXTURES / name).read_text())
    event["cwd"] = str(project)
    event.update(changes)
    return event


def bash_event(project, command, hook="PreToolUse", **changes):
    """A captured Bash event (PreToolUse or PostToolUse) running command."""
    name = "03-PreToolUse-Bash.json" if hook == "PreToolUse" else "04-PostToolUse-Bash.json"
    event = fixture_event(name, project, **changes)
    event["tool_input"] = {**event["tool_input"], "command": command}
    return event


def sized(benchmark, ci, full):
    """The CI size when benchmarks are disabled (body runs once), else the full one."""
    return ci if benchmark.disabled else full


def median_us(samples):
    return statistics.median(samples) * 1e6


def percentile(samples, q):
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def report(benchmark, label, text, **figures):
    """Store the headline figures in extra_info and print them on one line."""
    benchmark.extra_info.update({k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()})
    print(f"\n{label}: {text}")


class BenchRuntime(Runtime):
    """Runtime, plus the frame a thin client sends and where the observer database is."""

    def frame(self, event, op="event"):
        """The frame a thin client sends for event: project, environment, cwd, body."""
        return wire.encode_request(
            op,
            project=str(self.project).encode(),
            env=b"\0".join(f"{k}={v}".encode() for k, v in self.env.items()),
            cwd=str(self.project).encode(),
            body=json.dumps(event).encode(),
        )

    def observer_db(self):
        return self.project / ".claude" / "hookopt" / "observer.db"


@contextlib.contextmanager
def client_env(runtime):
    """Point the in-process client at runtime's private directory (it reads posix.environ)."""
    saved = posix.environ.get(b"HOOKOPT_RUNTIME_DIR")
    posix.environ[b"HOOKOPT_RUNTIME_DIR"] = str(runtime.root).encode()
    try:
        yield
    finally:
        if saved is None:
            posix.environ.pop(b"HOOKOPT_RUNTIME_DIR", None)
        else:
            posix.environ[b"HOOKOPT_RUNTIME_DIR"] = saved


@pytest.fixture
def daemon(tmp_path_factory):
    """A real daemon for a fresh project, in a short private runtime dir (socket paths are short)."""
    root = Path(tempfile.mkdtemp(prefix="hb", dir="/tmp"))
    runtime = BenchRuntime(root, tmp_path_factory.mktemp("project"))
    try:
        runtime.start()
        yield runtime
    finally:
        runtime.stop()
        shutil.rmtree(root, ignore_errors=True)


class FloorServer:
    """The least an http hook can cost: a server that answers every POST at once with `{}`.

    Each response goes out in one send on a TCP_NODELAY socket (headers and body apart
    would meet Nagle and delayed ACK: +40 ms); connections are kept alive, or with
    keep_alive=False closed after each answer, as the daemon does (see http_transport).
    answer: instead of `{}`, the (status, body) a function of the request body gives.
    """

    def __init__(self, keep_alive=True, answer=None):
        self.keep_alive = keep_alive
        self.answer = answer
        self.response = self._response(200, b"{}")
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.requests = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        buf = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(buf) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                body, buf = buf[:length], buf[length:]
                self.requests += 1
                conn.sendall(self.response if self.answer is None else self._response(*self.answer(body)))
                if not self.keep_alive:
                    return

    def _response(self, status, body):
        reason = b"OK" if status == 200 else b"Error"
        kind = b"application/json" if body.startswith(b"{") else b"text/plain; charset=utf-8"
        connection = b"keep-alive" if self.keep_alive else b"close"
        return b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: %s\r\n\r\n%s" % (
            status, reason, kind, len(body), connection, body
        )

    def close(self):
        self.sock.close()
