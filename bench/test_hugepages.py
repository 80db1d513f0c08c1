"""The daemon's heap on huge pages against Python's own allocator, two daemons alternated.

  .venv/bin/python -m pytest bench/test_hugepages.py --benchmark-enable -s

Two copies of the example project (examples/project), each installed with --consolidate
and served by its own daemon: one started as the clients start it (PYTHONMALLOC=malloc,
its heap collapsed onto 2 MiB pages as it grows), one with HOOKOPT_HUGEPAGES=0 (pymalloc,
4 KiB pages). Each event goes the thin client's way (client.ask_daemon), to one daemon
then the other, in alternating order, after HOOKOPT_BENCH_SETTLE_S of quiet (0.1 s by
default: tool calls come seconds apart, and on this machine a page touched after idle
costs microseconds). Both answers must be the same. The baseline is the pymalloc daemon.
"""

import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench.conftest import BENIGN_COMMAND, EXAMPLE, BenchRuntime, bash_event, client_env, report, sized
from modules.optimization import client
from modules.optimization.hugepages import SWITCH, anon_huge_kb
from modules.optimization.installer import install
from tests.daemon_helpers import wait_for

SETTLE_S = float(os.environ.get("HOOKOPT_BENCH_SETTLE_S", "0.1"))
THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def test_huge_pages_vs_pymalloc(benchmark, tmp_path):
    root = Path(tempfile.mkdtemp(prefix="hh", dir="/tmp"))  # short: socket paths stay under 108 bytes
    sides = {}
    try:
        for side in ("huge", "pymalloc"):
            project = tmp_path / side
            shutil.copytree(EXAMPLE, project)
            install(project, consolidate_hooks=True, say=lambda _: None)
            runtime = BenchRuntime(root, project)
            if side == "pymalloc":
                runtime.env[SWITCH] = "0"
            runtime.start()
            sides[side] = runtime
        with client_env(sides["huge"]):
            _measure(benchmark, sides)
    finally:
        for runtime in sides.values():
            runtime.stop()
        shutil.rmtree(root, ignore_errors=True)


def _measure(benchmark, sides):
    def events(project):
        post = bash_event(project, "x", hook="PostToolUse")
        post.update(tool_name="Edit", tool_input={"file_path": str(project / "src" / "app.py"), "old_string": "a", "new_string": "b"})
        return {
            "PreToolUse/Glob (0 hooks)": bash_event(project, "x", tool_name="Glob", tool_input={"pattern": "*.py"}),
            "PreToolUse (2 hooks)": bash_event(project, BENIGN_COMMAND),
            "PostToolUse (3 hooks)": post,
        }

    mode = THP_MODE.read_text() if THP_MODE.exists() else "[never]"
    thp = mode[mode.index("[") : mode.index("]") + 1] if "[" in mode else "[never]"
    collapse_exists = tuple(int(x) for x in platform.release().split(".")[:2]) >= (6, 1)  # MADV_COLLAPSE
    frames = {side: {name: rt.frame(event, op="stack") for name, event in events(rt.project).items()} for side, rt in sides.items()}
    rounds = sized(benchmark, 3, 40)
    times = {(name, side): [] for name in frames["huge"] for side in sides}

    def ask(side, name):
        start = time.perf_counter()
        reply = client.ask_daemon(str(sides[side].project), frames[side][name], 30.0)
        elapsed = time.perf_counter() - start
        assert reply is not None, f"the {side} daemon did not answer"
        return elapsed, reply

    def measure():
        for side in sides:  # warm-up: zygotes, spares, caches
            for name in frames[side]:
                for _ in range(3):
                    ask(side, name)
        huge_pid = sides["huge"].status()["pid"]
        if thp != "[never]" and collapse_exists:  # then the heap's collapse, on the daemon's next tick
            wait_for(lambda: (anon_huge_kb(huge_pid) or 0) >= 2048, what="the daemon's heap on huge pages")
        for i in range(rounds):
            for name in frames["huge"]:
                answers = {}
                for side in sides if i % 2 else reversed(list(sides)):
                    time.sleep(SETTLE_S)
                    elapsed, reply = ask(side, name)
                    times[(name, side)].append(elapsed)
                    here = str(sides[side].project).encode()
                    answers[side] = tuple(part.replace(here, b"P") if isinstance(part, bytes) else part for part in reply)
                assert answers["huge"] == answers["pymalloc"], name

    benchmark.pedantic(measure, rounds=1, iterations=1)
    on_huge = {side: anon_huge_kb(rt.status()["pid"]) or 0 for side, rt in sides.items()}
    assert on_huge["pymalloc"] == 0 or thp == "[always]"  # nothing asked the kernel for them
    figures = {"huge_kb": on_huge["huge"]}
    for name in frames["huge"]:
        huge, base = (statistics.median(times[(name, side)]) * 1000 for side in ("huge", "pymalloc"))
        key = name.split(" ")[0].replace("/", "_")
        figures.update({f"{key}_huge_ms": huge, f"{key}_pymalloc_ms": base, f"{key}_ratio": huge / base})
        summary = f"huge pages p50 {huge:.2f} ms vs pymalloc {base:.2f} ms: {huge / base:.2f}x (median of {rounds}, alternated, {SETTLE_S:g} s apart)"
        report(benchmark, name, summary, **figures)
    print(f"the huge-pages daemon holds {on_huge['huge'] / 1024:.0f} MB on huge pages")
