"""A hook script edited while the daemon runs, against the same script unedited, alternated.

  .venv/bin/python -m pytest bench/test_edited_script.py --benchmark-enable -s

Two copies of a larger guard (the example's block_dangerous.py with 200 more lines, as
guards grow) run warm by one fork server (LegacyRunner), back to back: no spare is ready
between runs, so the zygote forks each run when it comes, as in a burst of events. Both are
run once, then one is edited (a comment appended) and the two are run in turn. The zygote
compiles a script when it first sees it and again after an edit, before it forks the run,
so neither child compiles it: the edited script must run as fast as the other (ratio about
1.0), and both at the speed of precompiled code. Both must answer the same.
"""

import asyncio
import json
import os
import statistics
import time

from bench.conftest import EXAMPLE, report, sized
from modules.optimization.legacy_runner import LegacyRunner

# The example's guard with 200 more lines (rules it keeps for later): more source to compile.
_HEAD, _TAIL = (EXAMPLE / ".claude" / "hooks" / "block_dangerous.py").read_bytes().split(b"\nevent = ", 1)
GUARD = _HEAD + b"\n" + b"".join(b'RULE_%d = (r"\\bnever-%d\\s+--matching\\b", "rule %d", %d)\n' % (i, i, i, i) for i in range(200)) + b"event = " + _TAIL


def test_edited_script_vs_unedited(benchmark, tmp_path):
    scripts = {}
    for name in ("unedited", "edited"):
        scripts[name] = tmp_path / f"{name}.py"
        scripts[name].write_bytes(GUARD)
    event = json.dumps({"hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_input": {"command": "ls -la"}}).encode()
    env, cwd = dict(os.environ), str(tmp_path)
    rounds = sized(benchmark, 3, 60)
    times = {name: [] for name in scripts}

    async def measure():
        runner = LegacyRunner()
        try:
            for path in scripts.values():
                await runner.run(f"python3 {path}", stdin=event, env=env, cwd=cwd)  # the zygote compiles both
            scripts["edited"].write_bytes(GUARD + b"# edited\n")
            for _ in range(rounds):
                results = []
                for name, path in scripts.items():
                    start = time.perf_counter()
                    results.append(await runner.run(f"python3 {path}", stdin=event, env=env, cwd=cwd))
                    times[name].append(time.perf_counter() - start)
                assert results[0] == results[1] and results[0].exit_code == 0, results
            assert runner.stats()["warm_runs"] == 2 * rounds + 2
        finally:
            await runner.close()

    benchmark.pedantic(lambda: asyncio.run(measure()), rounds=1, iterations=1)
    ms = {name: statistics.median(samples) * 1000 for name, samples in times.items()}
    ratio = ms["edited"] / ms["unedited"]
    summary = f"edited {ms['edited']:.2f} ms vs unedited {ms['unedited']:.2f} ms p50 (median of {rounds}, alternated): {ratio:.2f}x"
    report(benchmark, "a hook script edited while warm", summary, edited_ms=ms["edited"], unedited_ms=ms["unedited"], ratio=ratio)
