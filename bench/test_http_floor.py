"""The http transport around the hooks, against the floor, alternated.

  .venv/bin/python -m pytest bench/test_http_floor.py --benchmark-enable -s

The example project (examples/project) installed with --transport http and served by a
real daemon, against the floor of the real-CLI benchmark (bench/test_e2e_claude.py): a
server that answers every POST at once with `{}`. Each request goes the way Claude Code
sends it to the daemon: one POST with the event and the token header, on a connection
kept alive (one per side); both sides are asked alike, alternated, each from idle
(SETTLE_S apart). Two events: one no hook matches (what the transport and the daemon
cost around the hooks) and a PreToolUse Bash (the example's two guards, run warm). The
answers are checked: `{}` for the first, the guards' decision for the second.
"""

import json
import os
import shutil
import socket
import statistics
import time

from bench.conftest import BENIGN_COMMAND, DANGEROUS_COMMAND, EXAMPLE, FloorServer, bash_event, report, sized
from modules.optimization.installer import install

SETTLE_S = float(os.environ.get("HOOKOPT_BENCH_SETTLE_S", "0.05"))


class Connection:
    """A kept-alive connection, as Claude Code keeps one per hook server."""

    def __init__(self, port, path, token):
        self.path, self.token = path, token
        self.conn = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.stream = self.conn.makefile("rb")

    def post(self, body):
        """One POST: (seconds to the whole answer, status line, body)."""
        head = (
            f"POST {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nX-Hookopt-Token: {self.token}\r\n\r\n"
        )
        start = time.perf_counter()
        self.conn.sendall(head.encode() + body)
        status = self.stream.readline().rstrip()
        headers = []
        while (line := self.stream.readline()) not in (b"\r\n", b""):
            headers.append(line)
        assert line, ("the connection closed before a whole response", status, headers)
        length = next(int(line.split(b":")[1]) for line in headers if line.lower().startswith(b"content-length:"))
        answer = self.stream.read(length)
        elapsed = time.perf_counter() - start
        assert any(line.lower().startswith(b"connection: keep-alive") for line in headers), headers
        return elapsed, status, answer

    def close(self):
        self.stream.close()
        self.conn.close()


def test_http_transport_vs_floor(benchmark, daemon):
    project = daemon.project
    shutil.rmtree(project)
    shutil.copytree(EXAMPLE, project)
    install(project, transport="http", say=lambda _: None)
    daemon.stop()
    daemon.start()
    endpoint = json.loads((project / ".claude" / "hookopt" / "http.json").read_text())
    floor = FloorServer()
    glob = bash_event(project, "x", tool_name="Glob", tool_input={"pattern": "*.py"})
    cases = {
        "no hook (Glob)": [json.dumps(glob).encode()],
        "PreToolUse Bash (2 guards)": [json.dumps(bash_event(project, command)).encode() for command in (BENIGN_COMMAND, DANGEROUS_COMMAND)],
    }
    rounds = sized(benchmark, 3, 80)
    times = {(case, side): [] for case in cases for side in ("daemon", "floor")}

    connections = {"daemon": Connection(endpoint["port"], "/hook/stack", endpoint["token"]), "floor": Connection(floor.port, "/hook", "")}

    def ask(side, body):
        return connections[side].post(body)

    def measure():
        for case, bodies in cases.items():
            for body in bodies:  # warm: the zygote, its spares, the pages touched
                for side in ("daemon", "floor"):
                    ask(side, body)
            for i in range(rounds):
                body = bodies[i % len(bodies)]
                for side in ("daemon", "floor") if i % 2 else ("floor", "daemon"):
                    time.sleep(SETTLE_S)
                    elapsed, status, answer = ask(side, body)
                    assert status.startswith(b"HTTP/1.1 200"), (side, status, answer)
                    if side == "daemon" and b"rm -rf" in body:
                        decision = json.loads(answer)["hookSpecificOutput"]["permissionDecision"]
                        assert decision == "deny", answer  # the guard's verdict came through
                    elif side == "daemon" and case.startswith("no hook"):
                        assert answer == b"{}", answer  # what the floor answers too
                    times[(case, side)].append(elapsed)

    try:
        benchmark.pedantic(measure, rounds=1, iterations=1)
    finally:
        for connection in connections.values():
            connection.close()
        floor.close()
    for case in cases:
        d, f = (statistics.median(times[(case, side)]) * 1e3 for side in ("daemon", "floor"))
        report(
            benchmark, case, f"daemon p50 {d:.2f} ms vs floor {f:.2f} ms: + {d - f:.2f} ms (median of {rounds}, alternated)",
            **{f"{case}_daemon_ms": d, f"{case}_floor_ms": f},
        )
