"""A legacy Python hook run warm by the fork server against spawned through sh -c, alternated.

  .venv/bin/python -m pytest bench/test_legacy.py --benchmark-enable -s
"""

import asyncio
import json
import os
import shutil
import statistics
import sys
import time

import pytest

from bench.conftest import report, sized
from modules.optimization.legacy_runner import LegacyRunner
from modules.optimization.spawn import spawn

HOOK = """import json, sys
event = json.load(sys.stdin)
if "rm -rf" in event["tool_input"]["command"]:
    print("Blocked: recursive delete", file=sys.stderr)
    sys.exit(2)
"""
INTERPRETERS = {
    "absolute interpreter": os.path.realpath(sys.executable),
    "python3 on PATH": "python3",
}


@pytest.mark.parametrize("label", list(INTERPRETERS))
def test_fork_server_vs_spawn(benchmark, tmp_path, label):
    interpreter = INTERPRETERS[label]
    if shutil.which(interpreter) is None:
        pytest.fail(f"{interpreter} not found")
    script = tmp_path / "guard.py"
    script.write_text(HOOK)
    command = f"{interpreter} {script}"
    event = json.dumps({"hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_input": {"command": "rm -rf /"}}).encode()
    env, cwd = dict(os.environ), str(tmp_path)
    rounds = sized(benchmark, 3, 30)
    warm, spawned = [], []

    async def measure():
        runner = LegacyRunner()
        try:
            first = await runner.run(command, stdin=event, env=env, cwd=cwd)  # starts the zygote
            assert runner.plan(command, env, cwd).warm
            for _ in range(rounds):
                start = time.perf_counter()
                fast = await runner.run(command, stdin=event, env=env, cwd=cwd)
                warm.append(time.perf_counter() - start)
                start = time.perf_counter()
                slow = await spawn(command, stdin=event, env=env, cwd=cwd)
                spawned.append(time.perf_counter() - start)
                assert (fast.exit_code, fast.stdout, fast.stderr) == (slow.exit_code, slow.stdout, slow.stderr) == (first.exit_code, first.stdout, first.stderr)
            assert first.exit_code == 2 and b"Blocked" in first.stderr
            assert runner.stats()["warm_runs"] == rounds + 1
        finally:
            await runner.close()

    benchmark.pedantic(lambda: asyncio.run(measure()), rounds=1, iterations=1)
    warm_ms, spawn_ms = statistics.median(warm) * 1000, statistics.median(spawned) * 1000
    summary = f"fork server {warm_ms:.1f} ms vs spawned {spawn_ms:.1f} ms (median of {rounds}), {spawn_ms / warm_ms:.1f}x"
    report(benchmark, f"legacy hook, {label}", summary, warm_ms=warm_ms, spawn_ms=spawn_ms, ratio=spawn_ms / warm_ms)
