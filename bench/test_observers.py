"""Answer latency of a PostToolUse event whose loggers are observers vs run inline, alternated.

  .venv/bin/python -m pytest bench/test_observers.py --benchmark-enable -s

Two copies of the example project (examples/project), each with its own real daemon: one
installed with --consolidate (the PostToolUse hooks all run before the answer), one with
--observers for its two loggers (change_notes.py tells Claude what changed: not a logger) (the event is journaled, answered, and the loggers run
after). Each event goes the thin client's way (client.ask_daemon: one connection, one
"stack" frame); the two sides alternate, each from idle (the observers' work after the
answer is given time to finish, so it is not billed to the other side). Both must answer
the same bytes, and the observers must have logged every event by the end.
"""

import json
import os
import shutil
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from bench.conftest import EXAMPLE, BenchRuntime, bash_event, client_env, report, sized
from modules.optimization import client
from modules.optimization.installer import install
from tests.daemon_helpers import wait_for

# change_notes.py is no logger: it tells Claude what changed (additionalContext), so it stays inline.
LOGGERS = ["log_tools.py", "sqlite_logger.py"]
SETTLE_S = float(os.environ.get("HOOKOPT_BENCH_SETTLE_S", "0.15"))


def _runtime(tmp_path: Path, name: str, **options) -> BenchRuntime:
    project = tmp_path / name
    shutil.copytree(EXAMPLE, project)
    install(project, say=lambda _: None, **options)
    rt = BenchRuntime(Path(tempfile.mkdtemp(prefix="hb", dir="/tmp")), project)
    rt.start()
    return rt


def _logged(project: Path) -> int:
    with sqlite3.connect(project / ".claude" / "logs" / "tools.db") as db:
        return int(db.execute("SELECT COUNT(*) FROM calls").fetchone()[0])


def test_observer_loggers_vs_inline(benchmark, tmp_path):
    sides = {"inline": _runtime(tmp_path, "inline", consolidate_hooks=True), "observers": _runtime(tmp_path, "observers", observers=LOGGERS)}
    rounds = sized(benchmark, 6, 80)
    times: dict[str, list[float]] = {side: [] for side in sides}

    def ask(side: str, i: int) -> tuple[float, tuple]:
        rt = sides[side]
        event = bash_event(rt.project, "x", hook="PostToolUse", tool_use_id=f"toolu_{i}")
        target = rt.project / "src" / "app.py"
        event.update(tool_name="Edit", tool_input={"file_path": str(target), "old_string": "a", "new_string": "b"})
        env = {**rt.env, "CLAUDE_PROJECT_DIR": str(rt.project)}
        frame = client.encode_request(
            "stack", project=str(rt.project).encode(), env=b"\0".join(f"{k}={v}".encode() for k, v in env.items()),
            cwd=str(rt.project).encode(), body=json.dumps(event).encode(),
        )
        with client_env(rt):
            start = time.perf_counter()
            reply = client.ask_daemon(str(rt.project), frame, 30.0)
            elapsed = time.perf_counter() - start
        assert reply is not None, f"the {side} daemon did not answer"
        return elapsed, tuple(reply)

    def measure() -> None:
        for i in range(3):  # warm-up: zygotes, preloads, spares
            for side in sides:
                ask(side, -1 - i)
                time.sleep(SETTLE_S)
        for i in range(rounds):
            answers = {}
            for side in (list(sides) if i % 2 else list(reversed(sides))):
                time.sleep(SETTLE_S)
                elapsed, answers[side] = ask(side, i)
                times[side].append(elapsed)
            assert answers["inline"] == answers["observers"]

    try:
        benchmark.pedantic(measure, rounds=1, iterations=1)
        total = rounds + 3
        wait_for(lambda: _logged(sides["observers"].project) == total, what="the observers to log every event")
        assert _logged(sides["inline"].project) == total

        def observer_stats():
            with client_env(sides["observers"]):
                return sides["observers"].status()["observer_hooks"]

        # A logger's line is written before its run is counted: wait for the count too.
        wait_for(lambda: observer_stats()["ran"] == len(LOGGERS) * total, what="every observer run to be counted")
        assert observer_stats()["lost_output"] == 0
    finally:
        for rt in sides.values():
            rt.stop()
            shutil.rmtree(rt.root, ignore_errors=True)
    inline, observers = (statistics.median(times[s]) * 1000 for s in ("inline", "observers"))
    p95 = {s: sorted(times[s])[int(0.95 * (len(times[s]) - 1))] * 1000 for s in sides}
    report(
        benchmark, "PostToolUse Edit (2 loggers + change_notes)",
        f"observers p50 {observers:.2f} ms (p95 {p95['observers']:.2f}) vs inline p50 {inline:.2f} ms (p95 {p95['inline']:.2f}): "
        f"{observers / inline:.2f}x (median of {rounds}, alternated)",
        observers_ms=observers, inline_ms=inline, ratio=observers / inline,
    )
