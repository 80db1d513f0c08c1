"""Thin client start-up against a bare interpreter, alternated in one run so drift cancels;
and a consolidated install's client as Claude Code starts it (sh -c, the settings command),
native against Python against a `true` hook, on an event no hook matches (the client alone).

  .venv/bin/python -m pytest bench/test_client_startup.py --benchmark-enable -s
"""

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from modules.optimization.installer import install
from tests.conftest import EXAMPLE_PROJECT
from tests.daemon_helpers import ROOT, Runtime, pre_event, private_runtime

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


def test_native_client_vs_python_client_vs_true(benchmark, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(EXAMPLE_PROJECT, project, ignore=shutil.ignore_patterns("hookopt", "logs"))
    install(project, consolidate_hooks=True, client="native", say=lambda _: None)
    settings = json.loads((project / ".claude" / "settings.json").read_text())
    (native,) = [h["command"] for g in settings["hooks"]["PreToolUse"] for h in g["hooks"]]
    python = native.rpartition("; exec ")[2]
    event = json.dumps(pre_event(project, "**/*.py", tool="Glob")).encode()  # no hook matches: the client alone
    commands = {"true": ["sh", "-c", "true"], "native": ["sh", "-c", native], "python": ["sh", "-c", python]}
    times: dict[str, list[float]] = {name: [] for name in commands}
    with private_runtime(project) as rt:
        rt.start()
        env = {**rt.env, "CLAUDE_HOOKS_PROFILE": "latency"}

        def round_():
            for name, cmd in commands.items():
                times[name].append(timed(cmd, event, env))

        benchmark.pedantic(round_, rounds=ROUNDS, warmup_rounds=3)
        served = rt.status()["events"]
    assert served >= len(times["native"]) + len(times["python"])  # every client run was answered by the daemon
    ms = {name: statistics.median(values) * 1000 for name, values in times.items()}
    benchmark.extra_info.update({f"{name}_ms": round(value, 2) for name, value in ms.items()})
    print(
        f"\nconsolidated client on an event no hook matches (median of {len(times['true'])}, sh -c each): "
        f"true {ms['true']:.2f} ms, native {ms['native']:.2f} ms, python {ms['python']:.2f} ms; "
        f"python/native {ms['python'] / ms['native']:.1f}x, native - true {ms['native'] - ms['true']:.2f} ms"
    )
