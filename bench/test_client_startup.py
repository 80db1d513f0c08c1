"""Thin client start-up against a bare interpreter, alternated in one run so drift cancels.

  .venv/bin/python -m pytest bench/test_client_startup.py --benchmark-enable -s
"""

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.daemon_helpers import ROOT, Runtime, pre_event

ROUNDS = 60


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    root = Path(tempfile.mkdtemp(prefix="hb", dir="/tmp"))
    runtime = Runtime(root, tmp_path_factory.mktemp("project"))
    runtime.start()
    yield runtime
    runtime.stop()


def timed(cmd, stdin, env):
    start = time.perf_counter()
    proc = subprocess.run(cmd, input=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    return elapsed


@pytest.mark.parametrize("command", ["ls -la", "rm -rf /"])
def test_thin_client_vs_bare_interpreter(benchmark, warm, command):
    event = json.dumps(pre_event(warm.project, command)).encode()
    bare_cmd = [sys.executable, "-S", "-c", "pass"]
    client_cmd = [sys.executable, "-S", str(ROOT / "hooks" / "pre_tool_use.py")]
    bare, client = [], []

    def pair():
        bare.append(timed(bare_cmd, event, warm.env))
        client.append(timed(client_cmd, event, warm.env))

    benchmark.pedantic(pair, rounds=ROUNDS, warmup_rounds=3)
    bare_ms, client_ms = statistics.median(bare) * 1000, statistics.median(client) * 1000
    benchmark.extra_info.update(bare_ms=round(bare_ms, 2), client_ms=round(client_ms, 2), ratio=round(client_ms / bare_ms, 3))
    print(f"\n{command!r}: bare interpreter {bare_ms:.2f} ms, thin client {client_ms:.2f} ms (median of {len(bare)}), ratio {client_ms / bare_ms:.2f}x")
