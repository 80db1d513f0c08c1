"""A stack of `uv run` hooks: installed with --consolidate (daemon, warm) against native, alternated.

  .venv/bin/python -m pytest bench/test_uv_stack.py --benchmark-enable -s

Three PreToolUse hooks launched the ways uv users launch them (`uv run` with PEP 723
dependencies, `uv run --script`, a `#!/usr/bin/env -S uv run --script` shebang). Native is
what Claude Code does: each command through `/bin/sh -c`, all three at once, combined.
The consolidated install answers through the daemon the thin client's way. Answers are
compared; the figure is each side's p50 and native/daemon (target: >= 3x).
"""

import asyncio
import json
import os
import shutil
import statistics
import sys
import time

import pytest

from bench.conftest import DANGEROUS_COMMAND, bash_event, client_env, report, sized
from modules.optimization import client
from modules.optimization.installer import install
from modules.optimization.consolidation import combine_stack
from modules.optimization.protocol import HookResult
from modules.optimization.spawn import spawn

UV = shutil.which("uv") or os.path.join(os.path.dirname(sys.executable), "uv")
GUARD = """\
# /// script
# dependencies = ["six"]
# ///
import json, re, sys
import six
event = json.load(sys.stdin)
if re.search(r"\\brm\\s+-rf\\s+/", event["tool_input"]["command"]):
    print("Blocked by %s" % __file__.rsplit("/", 1)[-1], file=sys.stderr)
    sys.exit(2)
"""


def test_uv_stack_consolidated_vs_native(benchmark, daemon):
    if not os.access(UV, os.X_OK):
        pytest.fail("uv is a test dependency: pip install -e '.[test]'")
    project = daemon.project
    bin_dir = project / "bin"
    hooks = project / ".claude" / "hooks"
    bin_dir.mkdir()
    hooks.mkdir(parents=True)
    (bin_dir / "uv").symlink_to(UV)
    (hooks / "guard.py").write_text(GUARD)
    (hooks / "audit.py").write_text("import json, sys\nevent = json.load(sys.stdin)\n")
    (hooks / "shebang.py").write_text("#!/usr/bin/env -S uv run --script\n" + GUARD)
    (hooks / "shebang.py").chmod(0o755)
    commands = [
        'uv run "$CLAUDE_PROJECT_DIR"/.claude/hooks/guard.py',
        'uv run --script "$CLAUDE_PROJECT_DIR"/.claude/hooks/audit.py',
        '"$CLAUDE_PROJECT_DIR"/.claude/hooks/shebang.py',
    ]
    settings = {"hooks": {"PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": c} for c in commands]}]}}
    (project / ".claude" / "settings.json").write_text(json.dumps(settings))
    install(project, consolidate_hooks=True, say=lambda _: None)
    daemon.stop()  # started before the install: a fresh one reads the manifest at once
    daemon.start()
    env = {**daemon.env, "PATH": f"{bin_dir}:{os.environ['PATH']}", "CLAUDE_PROJECT_DIR": str(project)}
    env_bytes = b"\0".join(f"{k}={v}".encode() for k, v in env.items())
    events = [json.dumps(bash_event(project, c)).encode() for c in ("git status --short", DANGEROUS_COMMAND)]
    rounds = sized(benchmark, 3, 20)
    times = {"daemon": [], "native": []}

    def ask_daemon(raw):
        frame = client.encode_request("stack", project=str(project).encode(), env=env_bytes, cwd=str(project).encode(), body=raw)
        start = time.perf_counter()
        reply = client.ask_daemon(str(project), frame, 120.0)
        elapsed = time.perf_counter() - start
        assert reply is not None, "the daemon did not answer"
        return elapsed, HookResult(*reply)

    def native(raw):
        async def all_hooks():
            return await asyncio.gather(*(spawn(c, stdin=raw, env=env, cwd=str(project)) for c in commands))

        start = time.perf_counter()
        results = asyncio.run(all_hooks())
        # Rendered as Claude Code renders several hooks (consolidation.py), not as the built-in validators combine.
        return time.perf_counter() - start, combine_stack("PreToolUse", "Bash", list(results), list(commands))

    def measure():
        with client_env(daemon):
            for raw in events:  # uv creates the environments; the daemon probes them once
                native(raw)
                ask_daemon(raw)
            for i in range(rounds):
                raw = events[i % 2]
                sides = (("daemon", ask_daemon), ("native", native))
                answers = {}
                for side, ask in sides if i % 2 else reversed(sides):
                    time.sleep(0.05)
                    elapsed, answers[side] = ask(raw)
                    times[side].append(elapsed)
                mine, theirs = answers["daemon"], answers["native"]
                assert (mine.exit_code, mine.stdout, mine.stderr) == (theirs.exit_code, theirs.stdout, theirs.stderr)
                assert (b"Blocked by guard.py" in mine.stdout) == (raw == events[1])

    benchmark.pedantic(measure, rounds=1, iterations=1)
    d, n = statistics.median(times["daemon"]) * 1000, statistics.median(times["native"]) * 1000
    report(
        benchmark, "stack of 3 `uv run` hooks",
        f"consolidated (daemon) p50 {d:.1f} ms vs native {n:.1f} ms: native/daemon {n / d:.1f}x (median of {rounds}, alternated)",
        daemon_ms=d, native_ms=n, ratio=n / d,
    )  # fmt: skip
