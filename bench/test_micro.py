"""Micro-benchmarks of the daemon's parts, each against its baseline in the same run.

  .venv/bin/python -m pytest bench/test_micro.py --benchmark-enable -s

Each body measures both sides alternated, asserts what it measured is right, stores
the headline figures in benchmark.extra_info and prints them on one line.
"""

import _socket
import asyncio
import itertools
import json
import os
import sqlite3
import subprocess
import sys
import time

from bench.conftest import BENIGN_COMMAND as BENIGN
from bench.conftest import DANGEROUS_COMMAND as DANGEROUS
from bench.conftest import bash_event, client_env, fixture_event, median_us, report, sized
from modules.optimization import client
from modules.optimization.async_db import STORE_NAME, ObserverLog, ObserverStore
from modules.optimization.cache import ValidatorCache, make_key
from modules.optimization.hook_integration import Engine
from modules.optimization.intelligent_batcher import Batcher
from modules.optimization.memory_pool import SharedBlockPool
from modules.optimization.protocol import HookResult, combine, context_result, pre_tool_use_result
from modules.optimization.subprocess_coordinator import ProcessCoordinator
from modules.optimization.validators.pre_tool_use import recursive_delete

MB = 1 << 20


# -- 1. validator cache -------------------------------------------------------


def test_cache_hit_vs_miss(benchmark, tmp_path):
    event = bash_event(tmp_path, BENIGN)
    cache = ValidatorCache(maxsize=200_000, ttl=300)
    key = make_key("recursive_delete", "Bash", event["tool_input"], event["cwd"])
    expected = recursive_delete(event).to_json()
    cache.put(key, expected)
    n = sized(benchmark, 200, 2000)
    fresh = (f"{key}:{i}" for i in itertools.count())  # a new key each time: every lookup a real miss
    hit, miss = [], []

    def pair():
        keys = [next(fresh) for _ in range(n)]
        start = time.perf_counter()
        for _ in range(n):
            value = cache.get(key)
        middle = time.perf_counter()
        for k in keys:  # the engine's miss path: look up, run the validator, store its verdict
            if cache.get(k) is None:
                cache.put(k, recursive_delete(event).to_json())
        end = time.perf_counter()
        hit.append((middle - start) / n)
        miss.append((end - middle) / n)
        assert value == expected
        assert cache.get(keys[-1]) == expected

    benchmark.pedantic(pair, rounds=sized(benchmark, 1, 20), warmup_rounds=1)
    assert cache.stats()["hits"] >= n * len(hit)
    hit_us, miss_us = median_us(hit), median_us(miss)
    report(
        benchmark, "cache", f"hit {hit_us:.2f} us, miss (get + recursive_delete + put) {miss_us:.2f} us, miss/hit {miss_us / hit_us:.1f}x",
        hit_us=hit_us, miss_us=miss_us, ratio_miss_hit=miss_us / hit_us,
    )


def test_make_key_bash_vs_edit(benchmark, tmp_path):
    target = tmp_path / "README.md"
    target.write_text("hello\n")
    bash = bash_event(tmp_path, BENIGN)
    edit = fixture_event("09-PreToolUse-Edit.json", tmp_path)
    edit["tool_input"]["file_path"] = str(target)
    n = sized(benchmark, 200, 2000)
    timings = {"Bash": [], "Edit": []}

    def pair():
        for event in (bash, edit):
            tool, tool_input = event["tool_name"], event["tool_input"]
            start = time.perf_counter()
            for _ in range(n):
                key = make_key("guard", tool, tool_input, event["cwd"])
            timings[tool].append((time.perf_counter() - start) / n)
            assert len(key) == 64

    benchmark.pedantic(pair, rounds=sized(benchmark, 1, 20), warmup_rounds=1)
    # What the key must capture: input order does not matter, the file's state does.
    edit_key = make_key("guard", "Edit", edit["tool_input"], edit["cwd"])
    assert make_key("guard", "Edit", dict(reversed(list(edit["tool_input"].items()))), edit["cwd"]) == edit_key
    target.write_text("hello, changed\n")
    assert make_key("guard", "Edit", edit["tool_input"], edit["cwd"]) != edit_key
    bash_us, edit_us = median_us(timings["Bash"]), median_us(timings["Edit"])
    report(
        benchmark, "make_key", f"Bash {bash_us:.2f} us, Edit with file stat {edit_us:.2f} us, Edit/Bash {edit_us / bash_us:.2f}x",
        bash_us=bash_us, edit_us=edit_us, ratio_edit_bash=edit_us / bash_us,
    )


# -- 2. combining outcomes ----------------------------------------------------

MIXED = [
    pre_tool_use_result("allow", "looks fine"),
    context_result("PreToolUse", "note: tests are slow here"),
    pre_tool_use_result("deny", "blocked by guard"),
    HookResult(1, b"", b"non-blocking warning"),
    HookResult(0, b"plain text stdout"),
    pre_tool_use_result("ask", "please confirm"),
    HookResult(2, b"", b"exit-2 block"),
    HookResult(None),  # timed out
]


def test_combine_1_4_16(benchmark):
    sets = {n: [MIXED[(i + 2) % len(MIXED)] if n == 1 else MIXED[i % len(MIXED)] for i in range(n)] for n in (1, 4, 16)}
    n = sized(benchmark, 200, 2000)
    timings = {size: [] for size in sets}

    def rounds():
        for size, results in sets.items():
            start = time.perf_counter()
            for _ in range(n):
                out = combine("PreToolUse", results)
            timings[size].append((time.perf_counter() - start) / n)
            if size == 1:
                assert out is results[0]  # one result passes through byte for byte
            else:
                specific = json.loads(out.stdout)["hookSpecificOutput"]
                assert specific["permissionDecision"] == "deny"
                assert "blocked by guard" in specific["permissionDecisionReason"]
                assert "tests are slow" in specific["additionalContext"]

    benchmark.pedantic(rounds, rounds=sized(benchmark, 1, 20), warmup_rounds=1)
    us = {size: median_us(t) for size, t in timings.items()}
    report(
        benchmark, "combine", ", ".join(f"{k} results {v:.2f} us" for k, v in us.items()) + f"; 16/4 {us[16] / us[4]:.2f}x",
        us_1=us[1], us_4=us[4], us_16=us[16], us_per_result_16=us[16] / 16,
    )


# -- 3. validator fan-out -------------------------------------------------------


def _inline(event, validators):
    """The built-in guards called one after another in this thread: no pool, no cache."""
    results = []
    for v in sorted(validators, key=lambda v: v.name):
        verdict = v.fn(event)
        if verdict.decision:
            results.append(pre_tool_use_result(verdict.decision, verdict.reason, verdict.context))
        else:
            results.append(context_result("PreToolUse", verdict.context))
    return combine("PreToolUse", results)


def test_validator_fan_out(benchmark, tmp_path, monkeypatch):
    monkeypatch.setenv("CLAUDE_PROJECT_DIR", str(tmp_path))  # outside_project reads it at call time
    engine = Engine(tmp_path, persist=False)
    loop = asyncio.new_event_loop()  # the daemon's way: one loop, evaluate_async per event
    events = {"benign": bash_event(tmp_path, BENIGN), "deny": bash_event(tmp_path, DANGEROUS)}
    validators = engine.matching(events["deny"])
    assert len(validators) >= 5
    modes = {
        "inline": lambda e: _inline(e, validators),
        "engine_cold": engine.evaluate,
        "engine_warm": engine.evaluate,
        "async_cold": lambda e: loop.run_until_complete(engine.evaluate_async(e)),
        "async_warm": lambda e: loop.run_until_complete(engine.evaluate_async(e)),
    }
    timings = {name: [] for name in modes}
    k = sized(benchmark, 3, 25)

    def rounds():
        for _ in range(k):
            for kind, event in events.items():
                expected = _inline(event, validators)
                for name, fn in modes.items():
                    if name.endswith("_cold"):
                        engine.cache.clear()
                    start = time.perf_counter()
                    result = fn(event)
                    timings[name].append(time.perf_counter() - start)
                    assert result == expected, (name, kind, result)
                    assert (b'"deny"' in result.stdout) == (kind == "deny")

    try:
        hits = engine.cache.hits
        benchmark.pedantic(rounds, rounds=sized(benchmark, 1, 8), warmup_rounds=1)
        assert engine.cache.hits > hits  # the warm modes were answered from the cache
    finally:
        loop.close()
        engine.close()
    us = {name: median_us(t) for name, t in timings.items()}
    report(
        benchmark, "fan-out",
        f"inline {us['inline']:.0f} us; Engine.evaluate cold {us['engine_cold']:.0f} / warm {us['engine_warm']:.0f} us; "
        f"evaluate_async in one loop cold {us['async_cold']:.0f} / warm {us['async_warm']:.0f} us; "
        f"overhead vs inline: evaluate warm {us['engine_warm'] / us['inline']:.2f}x, async warm {us['async_warm'] / us['inline']:.2f}x",
        **{f"{name}_us": v for name, v in us.items()},
        ratio_engine_warm_inline=us["engine_warm"] / us["inline"],
        ratio_async_warm_inline=us["async_warm"] / us["inline"],
        ratio_async_cold_inline=us["async_cold"] / us["inline"],
    )


# -- 4. batcher -------------------------------------------------------------------


def test_batcher_throughput(benchmark):
    n = sized(benchmark, 2000, 20_000)
    rates = {size: [] for size in (1, 10, 100)}

    def rounds():
        for size in rates:
            sink = []
            batcher = Batcher(sink.extend, max_size=size, adaptive=False)
            start = time.perf_counter()
            for i in range(n):
                batcher.put(i)
            batcher.close()  # returns once everything reached the flush callback
            rates[size].append(n / (time.perf_counter() - start))
            assert sink == list(range(n))
            assert batcher.stats()["batches"] >= n // size

    benchmark.pedantic(rounds, rounds=sized(benchmark, 1, 5), warmup_rounds=1)
    med = {size: sorted(r)[len(r) // 2] for size, r in rates.items()}
    report(
        benchmark, "batcher", ", ".join(f"batch {s}: {r:,.0f} items/s" for s, r in med.items()) + f"; 100 vs 1 {med[100] / med[1]:.1f}x",
        **{f"items_per_s_{s}": r for s, r in med.items()}, ratio_100_1=med[100] / med[1],
    )


# -- 5. SQLite observer store -------------------------------------------------------


def _record(project, i):
    return {"ts": time.time(), "event": bash_event(project, f"echo {i}", hook="PostToolUse", tool_use_id=f"toolu_{i}")}


def test_sqlite_batch_vs_row(benchmark, tmp_path):
    path = tmp_path / STORE_NAME
    store = ObserverStore(path)
    n = sized(benchmark, 300, 2000)
    seqs = itertools.count(1)
    rates = {"batch100": [], "row": []}

    def pair():
        rows = [(next(seqs), _record(tmp_path, 0)) for _ in range(2 * n)]
        start = time.perf_counter()
        for i in range(0, n, 100):
            store.write_batch(rows[i : i + 100])
        middle = time.perf_counter()
        for row in rows[n:]:
            store.write_batch([row])
        end = time.perf_counter()
        rates["batch100"].append(n / (middle - start))
        rates["row"].append(n / (end - middle))

    try:
        benchmark.pedantic(pair, rounds=sized(benchmark, 1, 5), warmup_rounds=1)
        written = next(seqs) - 1
        assert store.count() == written and store.last_seq() == written
    finally:
        store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    med = {k: sorted(r)[len(r) // 2] for k, r in rates.items()}
    report(
        benchmark, "sqlite", f"batches of 100 {med['batch100']:,.0f} rows/s, one row per transaction {med['row']:,.0f} rows/s, "
        f"ratio {med['batch100'] / med['row']:.1f}x",
        rows_per_s_batch100=med["batch100"], rows_per_s_row=med["row"], ratio=med["batch100"] / med["row"],
    )


def test_observer_log_record(benchmark, tmp_path):
    """Journal + batcher + SQLite, as the daemon runs it (fsync=False); target >= 20,000 rows/s."""
    n = sized(benchmark, 2000, 10_000)
    records = [_record(tmp_path, i)["event"] for i in range(n)]
    rates = []
    runs = itertools.count()

    def run():
        state = tmp_path / f"run{next(runs)}"
        log = ObserverLog(state, fsync=False)
        try:
            start = time.perf_counter()
            for event in records:
                log.record(event)
            log.flush()
            rates.append(n / (time.perf_counter() - start))
        finally:
            log.close()
        with sqlite3.connect(state / STORE_NAME) as conn:
            count, distinct = conn.execute("SELECT COUNT(*), COUNT(DISTINCT json_extract(payload, '$.tool_use_id')) FROM events").fetchone()
        assert count == distinct == n

    benchmark.pedantic(run, rounds=sized(benchmark, 1, 5), warmup_rounds=1)
    rate = sorted(rates)[len(rates) // 2]
    report(
        benchmark, "ObserverLog.record", f"{rate:,.0f} rows/s end to end (target 20,000: {'met' if rate >= 20_000 else 'MISSED'})",
        rows_per_s=rate, target_met=rate >= 20_000,
    )


# -- 6. socket round trip -------------------------------------------------------------

ECHO_SERVER = r"""
import socket, sys
def exactly(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError
        data += chunk
    return data
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(sys.argv[1])
srv.listen(64)
print("ready", flush=True)
while True:
    conn, _ = srv.accept()
    with conn:
        try:
            size = exactly(conn, 4)
            conn.sendall(size + exactly(conn, int.from_bytes(size, "big")))
        except ConnectionError:
            pass
"""


def _echo(path, frame):
    """One round trip the way ask_daemon makes it (new connection), minus all the work."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(10.0)
        sock.connect(path)
        sock.sendall(len(frame).to_bytes(4, "big") + frame)
        want, got = len(frame) + 4, b""
        while len(got) < want:
            chunk = sock.recv(want - len(got))
            assert chunk, "echo server closed early"
            got += chunk
        return got
    finally:
        sock.close()


def test_socket_round_trip(benchmark, daemon):
    project = str(daemon.project)
    pre = daemon.frame(bash_event(daemon.project, DANGEROUS))
    stop = daemon.frame(fixture_event("13-Stop.json", daemon.project))
    echo_path = str(daemon.root / "echo.sock")
    server = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, echo_path], stdout=subprocess.PIPE)
    assert server.stdout.readline() == b"ready\n"
    k = sized(benchmark, 20, 200)
    timings = {"echo": [], "pre": [], "stop": []}
    stops = 0

    def rounds():
        nonlocal stops
        for _ in range(k):
            start = time.perf_counter()
            assert len(_echo(echo_path, pre)) == len(pre) + 4
            middle = time.perf_counter()
            code, out, _ = client.ask_daemon(project, pre, 10.0)
            end = time.perf_counter()
            assert code == 0 and b'"permissionDecision": "deny"' in out
            reply = client.ask_daemon(project, stop, 10.0)
            stops += 1
            timings["echo"].append(middle - start)
            timings["pre"].append(end - middle)
            timings["stop"].append(time.perf_counter() - end)
            assert reply is not None and reply[0] == 0, reply

    try:
        with client_env(daemon):
            assert client.ask_daemon(project, pre, 10.0)[0] == 0  # the verdict is cached from here on
            benchmark.pedantic(rounds, rounds=sized(benchmark, 1, 5), warmup_rounds=1)
            assert daemon.status()["cache"]["hits"] >= stops
    finally:
        server.kill()
        server.wait()
    daemon.stop()  # SIGTERM: observers flushed; every Stop must be in the store exactly once
    with sqlite3.connect(daemon.observer_db()) as conn:
        assert conn.execute("SELECT COUNT(*) FROM events WHERE event = 'Stop'").fetchone()[0] == stops
    us = {name: median_us(t) for name, t in timings.items()}
    report(
        benchmark, "round trip",
        f"raw unix echo {us['echo']:.0f} us, daemon PreToolUse (cached deny) {us['pre']:.0f} us, Stop {us['stop']:.0f} us; "
        f"PreToolUse/echo {us['pre'] / us['echo']:.1f}x",
        echo_us=us["echo"], pre_us=us["pre"], stop_us=us["stop"], ratio_pre_echo=us["pre"] / us["echo"],
        ratio_stop_echo=us["stop"] / us["echo"],
    )


# -- 7. shared memory vs pipe -----------------------------------------------------------


def _tail(payload):
    """The worker's task: prove the whole payload arrived without scanning it."""
    return len(payload), bytes(payload[-16:])


def test_shm_vs_pipe(benchmark):
    sizes = (1 * MB, 5 * MB, 10 * MB)
    payloads = {n: bytes(n - 16) + os.urandom(16) for n in sizes}
    # Room for one block per size, so the shm side is measured with its blocks reused.
    pool = SharedBlockPool(max_blocks=len(sizes))
    shm = ProcessCoordinator(1, shm_threshold=MB, block_pool=pool)
    pipe = ProcessCoordinator(1, shm_threshold=1 << 62)
    timings = {(kind, n): [] for kind in ("shm", "pipe") for n in sizes}

    def rounds():
        for n, payload in payloads.items():
            for kind, coordinator in (("shm", shm), ("pipe", pipe)):
                start = time.perf_counter()
                result = coordinator.submit(_tail, payload).result(timeout=30)
                timings[kind, n].append(time.perf_counter() - start)
                assert result == (n, payload[-16:])

    try:
        benchmark.pedantic(rounds, rounds=sized(benchmark, 1, 15), warmup_rounds=2)
        transfers = len(timings["shm", MB])
        assert shm.stats()["shm_transfers"] >= transfers * len(sizes)
        assert pipe.stats()["shm_transfers"] == 0
    finally:
        shm.close()
        pipe.close()
        pool.close()
    ms = {key: median_us(t) / 1000 for key, t in timings.items()}
    report(
        benchmark, "shm vs pipe",
        "; ".join(f"{n // MB} MB shm {ms['shm', n]:.2f} ms, pipe {ms['pipe', n]:.2f} ms ({ms['pipe', n] / ms['shm', n]:.2f}x)" for n in sizes),
        **{f"{kind}_{n // MB}mb_ms": v for (kind, n), v in ms.items()},
        **{f"ratio_pipe_shm_{n // MB}mb": ms["pipe", n] / ms["shm", n] for n in sizes},
    )
