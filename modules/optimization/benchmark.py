"""`hookopt bench`: a project's own hook stack, natively and optimized, side by side.

Two throw-away copies of the project are made, so the hooks' own side effects (logs,
databases) never touch the real one. Natively, each recorded event runs every
matching command hook spawned in parallel with ``sh -c``, as Claude Code does.
Optimized, the copy is installed with ``--consolidate`` and each event is one thin
client process (the install's own command, native client included, under ``sh -c``)
answered by the warm daemon. Runs alternate event by event so
machine drift cancels, and every outcome must be identical.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from . import client, native_client, wire
from .installer import HOOKS_DIR, install
from .paths import state_dir
from .performance_monitor import nearest_rank
from .protocol import HookResult, ProtocolError, parse_event
from .stack import run_spawned, select

__all__ = ["BenchResult", "load_events", "run_bench"]

RECORDED_ROOT = "/home/user/project"  # the project path recorded in the bundled events
PLACEHOLDER = "<project>"
_IGNORED = shutil.ignore_patterns("hookopt", "logs")


class BenchError(Exception):
    """The benchmark cannot run on this project; the message says why."""


@dataclass
class BenchResult:
    """Timings per event kind, in milliseconds, and the outcomes that differed."""

    native: dict[str, list[float]] = field(default_factory=dict)
    optimized: dict[str, list[float]] = field(default_factory=dict)
    mismatches: list[str] = field(default_factory=list)
    events: int = 0
    idle: int = 0  # recorded events no hook matches: Claude Code starts nothing for them
    client: str = ""  # the optimized side's thin client, as the install chose it


def load_events(path: Path) -> list[str]:
    """The recorded events of a JSONL file, as text still holding the recorded project root."""
    if not path.is_file():
        raise BenchError(f"no recorded events at {path}")
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for number, line in enumerate(lines, 1):
        try:
            parse_event(line.encode())
        except ProtocolError as exc:
            raise BenchError(f"{path}:{number}: {exc}") from None
    return lines


def _copy(project: Path, into: Path) -> Path:
    target = into / "project"
    shutil.copytree(project, target, symlinks=True, ignore=_IGNORED)
    return target


def _rooted(line: str, project: Path) -> bytes:
    return line.replace(RECORDED_ROOT, json.dumps(str(project))[1:-1]).encode()


def _normal(result: HookResult, project: Path) -> tuple[int | None, bytes, bytes]:
    root = str(project).encode()
    return result.exit_code, result.stdout.replace(root, PLACEHOLDER.encode()), result.stderr.replace(root, PLACEHOLDER.encode())


def _native(hooks: dict[str, Any], raw: bytes, env: dict[str, str], cwd: Path) -> HookResult:
    return run_spawned(hooks, parse_event(raw), raw, env, str(cwd))


def _client_commands(project: Path) -> dict[str, str]:
    """Each event's client command in an installed project's settings (what Claude Code runs)."""
    hooks = json.loads((project / ".claude" / "settings.json").read_text(encoding="utf-8")).get("hooks") or {}
    return {
        event: hook["command"]
        for event, groups in hooks.items() for group in groups for hook in group.get("hooks", [])
        if str(HOOKS_DIR / "stack.py") in hook.get("command", "")
    }


def _optimized(command: str | None, raw: bytes, env: dict[str, str], cwd: Path) -> HookResult:
    """The consolidated client as Claude Code starts it (sh -c, the install's own command)."""
    argv = ["sh", "-c", command] if command else [sys.executable, "-S", str(HOOKS_DIR / "stack.py")]
    proc = subprocess.run(argv, input=raw, capture_output=True, env=env, cwd=cwd)
    return HookResult(proc.returncode, proc.stdout, proc.stderr)


def _timed(fn: Callable[[], HookResult]) -> tuple[HookResult, float]:
    start = time.perf_counter()
    result = fn()
    return result, (time.perf_counter() - start) * 1000


def run_bench(
    project: Path,
    events_path: Path,
    *,
    rounds: int = 3,
    progress: Callable[[int, int], None] | None = None,
) -> BenchResult:
    """Replay the events natively and optimized, alternating, and compare every outcome."""
    lines = load_events(events_path)
    settings = project / ".claude" / "settings.json"
    try:
        hooks = json.loads(settings.read_text(encoding="utf-8")).get("hooks") or {}
    except (OSError, ValueError) as exc:
        raise BenchError(f"{settings}: cannot read the project's hooks ({exc})") from None
    if not any(select(hooks, parse_event(line.encode())) for line in lines):
        raise BenchError(f"no command hook in {settings} matches any recorded event; nothing to compare")
    result = BenchResult(events=len(lines))
    tmp = Path(tempfile.mkdtemp(prefix="hookopt-bench-"))
    optimized_root = tmp / "optimized" / "project"
    try:
        native_root = _copy(project, tmp / "native")
        _copy(project, optimized_root.parent)
        install(optimized_root, consolidate_hooks=True, say=lambda _: None)
        if native_client.client_path(state_dir(optimized_root, create=False), "project").exists():
            result.client = "native (hooks/client.c, built at install)"
        else:
            why = native_client.unavailable() or "it did not build here; `hookopt install --client native` says why"
            result.client = f"Python ({why}; a native one saves about 10 ms per event)"
        commands = _client_commands(optimized_root)
        # Only events some hook matches run anything, natively or through the consolidated client.
        lines = [line for line in lines if select(hooks, parse_event(line.encode()))]
        result.idle = result.events - len(lines)
        native_env = {**os.environ, "CLAUDE_PROJECT_DIR": str(native_root)}
        optimized_env = {**os.environ, "CLAUDE_PROJECT_DIR": str(optimized_root)}
        total, done = len(lines) * (rounds + 1), 0
        for round_no in range(rounds + 1):  # round 0 warms the daemon and its fork servers
            for index, line in enumerate(lines):
                native_raw, optimized_raw = _rooted(line, native_root), _rooted(line, optimized_root)
                command = commands.get(parse_event(optimized_raw)["hook_event_name"])
                runs: list[tuple[str, Callable[[], HookResult]]] = [
                    ("native", functools.partial(_native, hooks, native_raw, native_env, native_root)),
                    ("optimized", functools.partial(_optimized, command, optimized_raw, optimized_env, optimized_root)),
                ]
                if (round_no + index) % 2:
                    runs.reverse()  # alternate who goes first, so drift cancels
                outcome: dict[str, tuple[HookResult, float]] = {name: _timed(fn) for name, fn in runs}
                kind = parse_event(native_raw)["hook_event_name"]
                native_out = _normal(outcome["native"][0], native_root)
                optimized_out = _normal(outcome["optimized"][0], optimized_root)
                if native_out != optimized_out and round_no == 0:
                    result.mismatches.append(f"event {index + 1} ({kind}): native {native_out!r} != optimized {optimized_out!r}")
                if round_no:
                    result.native.setdefault(kind, []).append(outcome["native"][1])
                    result.optimized.setdefault(kind, []).append(outcome["optimized"][1])
                done += 1
                if progress:
                    progress(done, total)
    finally:
        # Hold the daemon's lock while the copies are removed: a daemon still writing (or one
        # a last client just spawned) would otherwise race the removal of its state dir.
        with stopped_daemon(optimized_root):
            shutil.rmtree(tmp)
    return result


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] != b"Z"  # a zombie has exited
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True


@contextlib.contextmanager
def stopped_daemon(project: Path, timeout_s: float = 15.0, *, clock: Callable[[], float] = time.monotonic) -> Iterator[None]:
    """Stop the project's daemon, wait until its process is gone, and keep it from restarting inside the block."""
    key = str(project)
    try:
        pid: int | None = int(Path(wire.runtime_path(key, ".pid")).read_text())
    except (OSError, ValueError):
        pid = None
    client.ask_daemon(key, wire.encode_request("stop", project=key.encode()), 5.0)
    os.makedirs(wire.runtime_dir(), mode=0o700, exist_ok=True)
    fd = os.open(wire.runtime_path(key, ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline, killed = clock() + timeout_s, False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the daemon holds it for its whole life
                if pid is None or not _alive(pid):
                    break
                fcntl.flock(fd, fcntl.LOCK_UN)
            except BlockingIOError:
                pass
            if clock() > deadline:
                if killed or pid is None:
                    raise BenchError(f"the daemon of {project} (pid {pid}) did not exit; its copy is left in place")
                os.kill(pid, signal.SIGKILL)
                killed, deadline = True, clock() + timeout_s
            time.sleep(0.01)
        yield
    finally:
        os.close(fd)


def percentile(samples: list[float], q: float) -> float:
    """The nearest-rank q-th percentile (q in percent), as `hookopt status` computes it."""
    return nearest_rank(sorted(samples), q / 100)


def rows(result: BenchResult) -> Iterator[tuple[str, dict[str, float], dict[str, float], float]]:
    """(event kind, native p50/p95/p99, optimized p50/p95/p99, speed-up at p50), then all events."""
    kinds = sorted(result.native) + ["all events"]
    for kind in kinds:
        native = [v for k, vs in result.native.items() if kind in (k, "all events") for v in vs]
        optimized = [v for k, vs in result.optimized.items() if kind in (k, "all events") for v in vs]
        n = {f"p{q}": percentile(native, q) for q in (50, 95, 99)}
        o = {f"p{q}": percentile(optimized, q) for q in (50, 95, 99)}
        yield kind, n, o, n["p50"] / o["p50"] if o["p50"] else float("inf")


def report(result: BenchResult, out: TextIO) -> None:
    """Print the per-event table and the overall speed-up."""
    out.write(f"{'event':<20} {'native p50/p95/p99 ms':>24} {'optimized p50/p95/p99 ms':>26} {'speed-up':>9}\n")
    for kind, n, o, ratio in rows(result):
        out.write(
            f"{kind:<20} {n['p50']:>8.1f}{n['p95']:>8.1f}{n['p99']:>8.1f} {o['p50']:>10.1f}{o['p95']:>8.1f}{o['p99']:>8.1f} {ratio:>8.1f}x\n"
        )
    native_total = sum(sum(v) for v in result.native.values())
    optimized_total = sum(sum(v) for v in result.optimized.values())
    runs = sum(len(v) for v in result.native.values())
    if result.client:
        out.write(f"Thin client: {result.client}\n")
    if result.idle:
        out.write(f"({result.idle} of the {result.events} recorded events match no hook, so neither side runs anything for them)\n")
    out.write(
        f"\nAll {runs} timed event runs: {native_total / 1000:.2f} s natively, {optimized_total / 1000:.2f} s optimized "
        f"({native_total / optimized_total:.1f}x faster); outcomes identical: "
        f"{'yes' if not result.mismatches else f'NO, {len(result.mismatches)} differ'}\n"
    )


def chart(result: BenchResult, path: Path) -> bool:
    """Write a PNG bar chart of p50 per event kind; False if matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    table = list(rows(result))
    labels = [kind for kind, *_ in table]
    xs = range(len(labels))
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    ax.bar([x - 0.2 for x in xs], [n["p50"] for _, n, _, _ in table], width=0.4, label="native (spawned)")
    ax.bar([x + 0.2 for x in xs], [o["p50"] for _, _, o, _ in table], width=0.4, label="hookopt (warm daemon)")
    for x, (_, n, o, ratio) in zip(xs, table, strict=True):
        ax.annotate(f"{ratio:.1f}x", (x, max(n["p50"], o["p50"])), ha="center", va="bottom")
    ax.set_xticks(list(xs), labels)
    ax.set_ylabel("milliseconds per event (p50)")
    ax.set_title("Hook stack latency per event: native vs hookopt")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
