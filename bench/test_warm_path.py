"""The daemon answering a consolidated event against a naive fork loop, alternated.

  .venv/bin/python -m pytest bench/test_warm_path.py --benchmark-enable -s

The example project (examples/project) is installed with --consolidate and served by a
real daemon; each event goes the thin client's way (client.ask_daemon: one connection,
one "stack" frame). The baseline is the naive way a careful user could do it without
us: one process that has imported what the hooks import and, per event, forks once per
hook, exec()s the hook's compiled code as __main__ with the event on stdin, collects
stdout, stderr and the exit status. It is asked over a pipe, so both sides pay one
round trip. Both answers are checked against each other (combined as Claude Code
combines them). Target: daemon p50 <= 1.0x naive, goal 0.5x. Also reported: the
processor time of each side's whole process tree per event (the daemon's worker, its
zygotes and their children; the naive loop and its children), which is what the real
CLI pays for between events.
"""

import json
import os
import shutil
import statistics
import subprocess
import time

from bench.conftest import BENIGN_COMMAND, DANGEROUS_COMMAND, EXAMPLE, bash_event, client_env, report, sized, tree_cpu_ms
from bench.conftest import EXAMPLE_STACK as STACK
from bench.naive_loop import NaiveLoop
from modules.optimization import client, wire
from modules.optimization.installer import install
from modules.optimization.protocol import HookResult, parse_event
from modules.optimization.stack import combine_selected, select

PRE_HOOKS = ("block_dangerous.py", "audit_bash.py")  # PreToolUse Bash
# Tool calls come seconds apart: each side starts from idle, so work one does after its
# answer (reaping, refilling spares, batching observers) is not billed to the other.
SETTLE_S = float(os.environ.get("HOOKOPT_BENCH_SETTLE_S", "0.05"))
POST_HOOKS = ("log_tools.py", "sqlite_logger.py", "change_notes.py")  # PostToolUse Edit


def test_warm_path_vs_naive_fork_loop(benchmark, daemon):
    project = daemon.project
    shutil.rmtree(project)
    shutil.copytree(EXAMPLE, project)
    install(project, consolidate_hooks=True, say=lambda _: None)
    daemon.stop()
    daemon.start()
    hooks = project / ".claude" / "hooks"
    env = {**daemon.env, "CLAUDE_PROJECT_DIR": str(project)}
    env_bytes = b"\0".join(f"{k}={v}".encode() for k, v in env.items())
    naive = NaiveLoop(env, project)
    target = project / "src" / "app.py"
    cases = {
        "PreToolUse": [
            (json.dumps(bash_event(project, command)), [str(hooks / name) for name in PRE_HOOKS])
            for command in (BENIGN_COMMAND, DANGEROUS_COMMAND)
        ],
        "PostToolUse": [],
    }
    post = bash_event(project, "x", hook="PostToolUse")
    post.update(tool_name="Edit", tool_input={"file_path": str(target), "old_string": "a", "new_string": "b"})
    cases["PostToolUse"].append((json.dumps(post), [str(hooks / name) for name in POST_HOOKS]))
    # No hook matches a Glob call: what each side costs around the hooks themselves.
    cases["PreToolUse/Glob"] = [(json.dumps(bash_event(project, "x", tool_name="Glob", tool_input={"pattern": "*.py"})), [])]
    rounds = sized(benchmark, 5, 60)
    times = {(event, side): [] for event in cases for side in ("daemon", "naive")}
    cpu_ms = {}  # side -> processor time of its whole process tree over the timed rounds

    def ask_daemon(raw):
        frame = wire.encode_request(
            "stack", project=str(project).encode(), env=env_bytes, cwd=str(project).encode(), body=raw.encode()
        )
        start = time.perf_counter()
        reply = client.ask_daemon(str(project), frame, 30.0)
        elapsed = time.perf_counter() - start
        assert reply is not None, "the daemon did not answer"
        return elapsed, HookResult(*reply)

    def ask_naive(event_name, raw, scripts):
        start = time.perf_counter()
        results = naive.run(raw, scripts)
        elapsed = time.perf_counter() - start
        event = parse_event(raw.encode())
        return elapsed, combine_selected(event, select(STACK, event), results)

    def measure():
        with client_env(daemon):
            for event_name, items in cases.items():  # warm-up: zygotes, preloads, spares, caches
                for raw, scripts in items:
                    for _ in range(3):
                        ask_daemon(raw)
                        ask_naive(event_name, raw, scripts)
            trees = {"daemon": daemon.pid(), "naive": naive.proc.pid}
            cpu_ms.update((side, -tree_cpu_ms(pid)) for side, pid in trees.items())
            for i in range(rounds):
                for event_name, items in cases.items():
                    raw, scripts = items[i % len(items)]
                    sides = (
                        ("daemon", lambda raw=raw: ask_daemon(raw)),
                        ("naive", lambda e=event_name, raw=raw, s=scripts: ask_naive(e, raw, s)),
                    )
                    answers = {}
                    for side, ask in sides if i % 2 else reversed(sides):
                        time.sleep(SETTLE_S)
                        elapsed, answers[side] = ask()
                        times[(event_name, side)].append(elapsed)
                    mine, theirs = answers["daemon"], answers["naive"]
                    assert (mine.exit_code, mine.stdout, mine.stderr) == (theirs.exit_code, theirs.stdout, theirs.stderr)
            time.sleep(SETTLE_S)  # what each side does after its last answer
            for side, pid in trees.items():
                cpu_ms[side] += tree_cpu_ms(pid)
        denied = ask_naive("PreToolUse", *cases["PreToolUse"][1])[1]
        assert b"deny" in denied.stdout and b"Blocked: recursive delete" in denied.stdout  # combined: exit 2 becomes a deny

    spy = None
    if os.environ.get("HOOKOPT_BENCH_PYSPY"):  # a flame graph of the daemon (and its zygotes) while measured
        spy = subprocess.Popen(["py-spy", "record", "-p", str(daemon.pid()), "-s", "-r", "500", "--format", "raw", "-o", os.environ["HOOKOPT_BENCH_PYSPY"]])
        time.sleep(1)
    try:
        benchmark.pedantic(measure, rounds=1, iterations=1)
    finally:
        if spy is not None:
            spy.send_signal(2)
            spy.wait()
        naive.close()
    assert (project / ".claude" / "logs" / "tools.db").exists()
    figures = {}
    for event_name in cases:
        d = statistics.median(times[(event_name, "daemon")]) * 1000
        n = statistics.median(times[(event_name, "naive")]) * 1000
        figures[f"{event_name}_daemon_ms"], figures[f"{event_name}_naive_ms"] = d, n
        figures[f"{event_name}_ratio"] = d / n
        summary = f"daemon p50 {d:.2f} ms vs naive fork loop {n:.2f} ms: {d / n:.2f}x (median of {rounds}, alternated)"
        report(benchmark, f"{event_name} ({len(cases[event_name][0][1])} hooks)", summary, **figures)
    # Latency is not the whole cost: whatever a side does around its answers (refilling spares,
    # reaping, bookkeeping) takes processors that Claude Code, working between hook events, wants.
    events = rounds * len(cases)
    d, n = cpu_ms["daemon"] / events, cpu_ms["naive"] / events
    report(
        benchmark, "processor time", f"per event, whole process tree: daemon {d:.1f} ms vs naive fork loop {n:.1f} ms: {d / n:.2f}x "
        f"(all {events} timed events of each side)", daemon_cpu_ms_per_event=d, naive_cpu_ms_per_event=n, cpu_ratio=d / n,
    )  # fmt: skip
