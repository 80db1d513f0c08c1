"""The daemon and thin clients as real processes: lazy start, one instance, security,
reload, idle exit, graceful stop, http transport, metrics, observers; and under faults
and load: SIGKILLed while clients stream, a read-only and a full state directory (real
mounts, see tests/mounts.py), many concurrent clients."""

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client.parser import text_string_to_metric_families

from modules.optimization.installer import install
from tests.daemon_helpers import OFF, decision, post_event, pre_event, project_with_hook, state, wait_for
from tests.mounts import fill, read_only, tiny_tmpfs


def write_settings(project, optimization):
    (project / ".claude").mkdir(exist_ok=True)
    (project / ".claude" / "settings.json").write_text(json.dumps({"optimization": optimization}))


def test_runtime_files_are_private(rt):
    rt.start()
    directory = rt.path(".sock").parent
    assert directory.stat().st_mode & 0o777 == 0o700
    assert rt.path(".sock").stat().st_mode & 0o777 == 0o600
    assert (rt.project / ".claude" / "hookopt").stat().st_mode & 0o777 == 0o700
    assert (rt.project / ".claude" / "hookopt" / "http.json").stat().st_mode & 0o777 == 0o600


def test_stale_socket_and_pid_files_are_recovered(rt):
    directory = rt.path(".sock").parent
    directory.mkdir(mode=0o700, parents=True)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(rt.path(".sock")))
    stale.close()  # a socket file nobody listens on, as a killed daemon leaves
    rt.path(".pid").write_text("999999")
    assert decision(rt.hook(pre_event(rt.project, "rm -rf /"))) == "deny"
    status = wait_for(rt.status, what="a daemon replacing the stale socket")
    assert rt.pid() == status["pid"] != 999999


def test_peer_of_another_uid_is_refused(rt):
    if os.getuid() != 0:
        pytest.skip("needs root to connect as another uid")
    rt.start()
    # Open the way for uid 65534 so the daemon's own SO_PEERCRED check is what refuses it.
    rt.root.chmod(0o711)
    rt.path(".sock").parent.chmod(0o711)
    rt.path(".sock").chmod(0o666)
    frame = b"".join([len(b'{"v":1,"op":"status","project":0,"env":0,"body":0}').to_bytes(4, "big"), b'{"v":1,"op":"status","project":0,"env":0,"body":0}'])
    code = (
        "import os, socket, sys\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "s = socket.socket(socket.AF_UNIX); s.settimeout(10); s.connect(sys.argv[1])\n"
        "try:\n"
        "    s.sendall(bytes.fromhex(sys.argv[2])); print(len(s.recv(100)))\n"
        "except (ConnectionResetError, BrokenPipeError):\n"
        "    print(0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(rt.path(".sock")), frame.hex()], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "0"  # closed without a reply
    assert "refused a peer with uid 65534" in (rt.project / ".claude/hookopt/daemon.log").read_text()


@pytest.mark.parametrize(
    ("raw", "code", "message"),
    [
        (b"{not json", 1, "malformed JSON"),
        (b"", 1, "empty input"),
        (b'{"hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_input": {"command": "rm -rf /"', 2, "malformed JSON"),
        (b'{"hook_event_name": "Bogus"}', 1, "unknown hook_event_name"),
        (b"\xff\xfe", 1, "not valid UTF-8"),
    ],
)
def test_bad_input_through_the_daemon_is_a_clear_error_and_it_keeps_serving(rt, raw, code, message):
    rt.start()
    proc = rt.hook(None, raw=raw)
    assert proc.returncode == code and proc.stdout == b""
    assert proc.stderr.decode().startswith("hookopt: cannot evaluate this event:") and message in proc.stderr.decode()
    assert decision(rt.hook(pre_event(rt.project, "rm -rf /"))) == "deny"


def test_post_tool_use_is_journaled_and_lands_in_sqlite_on_sigterm(rt):
    rt.start()
    for i in range(25):
        proc = rt.hook(post_event(rt.project, f"echo {i}", tool_use_id=f"toolu_{i}"), script="post_tool_use")
        assert proc.returncode == 0, proc.stderr
    rt.stop()  # SIGTERM: flush batches, compact the journal
    db = sqlite3.connect(rt.project / ".claude/hookopt/observer.db")
    rows = db.execute("SELECT json_extract(payload, '$.tool_use_id') FROM events ORDER BY seq").fetchall()
    assert [r[0] for r in rows] == [f"toolu_{i}" for i in range(25)]
    assert (rt.project / ".claude/hookopt/journal.jsonl").read_text().count("\n") <= 1  # compacted to a marker


def test_post_tool_use_analyzers_answer_through_the_daemon(rt):
    rt.start()
    replies = [rt.hook(post_event(rt.project, "make test", tool_use_id=f"t{i}"), script="post_tool_use") for i in range(3)]
    assert replies[0].stdout == b"" and replies[1].stdout == b""
    context = json.loads(replies[2].stdout)["hookSpecificOutput"]["additionalContext"]
    assert "`make test` has now run 3 times in a row" in context


def test_session_start_context_in_a_git_project(rt):
    subprocess.run(["git", "init", "-q", "-b", "trunk", str(rt.project)], check=True)
    (rt.project / "a.py").write_text("# TODO one\n# FIXME two\n")
    git = ["git", "-C", str(rt.project), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "add", "a.py"], check=True)
    subprocess.run([*git, "commit", "-qm", "first commit"], check=True)
    (rt.project / "b.txt").write_text("new")
    event = {"session_id": "s", "transcript_path": "/tmp/t", "cwd": str(rt.project), "hook_event_name": "SessionStart", "source": "startup"}
    rt.start()
    proc = rt.hook(event, script="session_start")
    context = json.loads(proc.stdout)["hookSpecificOutput"]["additionalContext"]
    assert "Git branch: trunk" in context
    assert "Uncommitted changes (1 files)" in context and "?? b.txt" in context
    assert "first commit" in context
    assert "TODO/FIXME markers in tracked files: 2" in context
    assert "hookopt: profile balanced" in context


def test_configuration_reload_and_bad_reload_keeps_the_old(rt):
    rt.start()
    assert rt.status()["profile"] == "balanced"
    write_settings(rt.project, {"profile": "latency"})
    wait_for(lambda: rt.status()["profile"] == "latency", what="the profile to reload")
    (rt.project / ".claude" / "settings.json").write_text("{broken")
    wait_for(lambda: "keeping the previous one" in (rt.project / ".claude/hookopt/daemon.log").read_text(), what="the bad reload to be logged")
    assert rt.status()["profile"] == "latency"
    assert decision(rt.hook(pre_event(rt.project, "rm -rf /"))) == "deny"


def test_metrics_scraped_over_http(rt):
    rt.start()
    for command in ("rm -rf /", "ls", "rm -rf /"):
        rt.hook(pre_event(rt.project, command))
    port = json.loads((rt.project / ".claude/hookopt/http.json").read_text())["metrics_port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    events = {(s.labels["event"], s.labels["outcome"]): s.value for s in families["hookopt_events"].samples if s.name == "hookopt_events_total"}
    assert events[("PreToolUse", "deny")] == 2 and events[("PreToolUse", "pass")] == 1
    assert "hookopt_event_latency_seconds" in families and "hookopt_validator_latency_seconds" in families
    hits = [s.value for s in families["hookopt_cache_hits"].samples if s.name == "hookopt_cache_hits_total"]
    assert hits and hits[0] >= 1
    # promtool (Debian's prometheus package, installed by .ci/run) lints the exposition format.
    lint = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_project_validator_files_reload_when_changed(rt):
    checks = rt.project / "checks.py"
    checks.write_text(
        "from modules.optimization.hook_integration import validator\n"
        "from modules.optimization.validators.base import PASS, Verdict\n"
        "@validator(matcher='Bash', cacheable=False)\n"
        "def no_deploy(event):\n"
        "    return Verdict('deny', 'no deploys today') if 'deploy' in event['tool_input']['command'] else PASS\n"
    )
    write_settings(rt.project, {"validators": ["checks.py"]})
    rt.start()
    assert json.loads(rt.hook(pre_event(rt.project, "make deploy")).stdout)["hookSpecificOutput"]["permissionDecisionReason"] == "no deploys today"
    checks.write_text(checks.read_text().replace("no deploys today", "deploys are frozen"))
    os.utime(checks, ns=(0, checks.stat().st_mtime_ns + 10**9))

    def reloaded():
        out = rt.hook(pre_event(rt.project, "make deploy")).stdout
        return b"deploys are frozen" in out
    wait_for(reloaded, what="the changed validator file to be reloaded")


def test_adaptive_mode_switches_profile_from_observed_load_and_says_why(tmp_path, monkeypatch):
    import posix

    from modules.optimization.daemon import Daemon, ensure_runtime_dir
    from modules.optimization.integrated_optimizer import load_settings

    monkeypatch.setitem(posix.environ, b"HOOKOPT_RUNTIME_DIR", str(tmp_path).encode())
    ensure_runtime_dir()
    write_settings(tmp_path, {"adaptive": True})
    now = [1000.0]
    daemon = Daemon(tmp_path, load_settings(tmp_path), clock=lambda: now[0])
    try:
        for _ in range(3):  # three samples of 200 events/s in a row
            now[0] += 10
            daemon.events += 2000
            daemon.adapt()
        assert daemon.settings.profile.name == "throughput"
        assert daemon.engine.settings.profile.name == "throughput"
        assert "200.0 events/s" in daemon.switcher.history[0].reason
        assert 'hookopt_profile_info{profile="throughput"' in daemon.monitor.exposition().decode()
        for _ in range(3):  # then quiet
            now[0] += 10
            daemon.adapt()
        assert daemon.settings.profile.name == "balanced"
    finally:
        daemon.journal.close()
        daemon.observers.close()
        daemon.engine.close()


def test_observers_still_answered_after_a_reload(rt):
    rt.start()
    write_settings(rt.project, {"profile": "latency"})
    wait_for(lambda: rt.status()["profile"] == "latency", what="the reload")
    replies = [rt.hook(post_event(rt.project, "make lint", tool_use_id=f"r{i}"), script="post_tool_use") for i in range(3)]
    assert all(r.returncode == 0 and not r.stderr for r in replies), [r.stderr for r in replies]
    assert "has now run 3 times" in json.loads(replies[2].stdout)["hookSpecificOutput"]["additionalContext"]


NOT_RECORDED = b"event not recorded for the observers"


def stored_ids(project):
    """How many rows the observer database holds per tool_use_id."""
    db = sqlite3.connect(project / ".claude" / "hookopt" / "observer.db")
    try:
        return Counter(r[0] for r in db.execute("SELECT json_extract(payload, '$.tool_use_id') FROM events"))
    finally:
        db.close()


LOGGER = """\
import json, os, sys
event = json.load(sys.stdin)
fd = os.open(os.path.join(os.environ["CLAUDE_PROJECT_DIR"], "legacy-ids.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
os.write(fd, (event["tool_use_id"] + "\\n").encode())
"""


@pytest.mark.parametrize("clients, kills", [(4, 3), (2, 5)])
def test_daemon_sigkilled_while_clients_stream_loses_no_event(rt, clients, kills):
    """N clients stream PostToolUse events (each a real `hooks/stack.py` process, as a
    consolidated install runs them) while the daemon's worker is SIGKILLed K times (the
    supervisor replaces it each time). The
    project's own legacy logger hook writes every tool_use_id to its log; hookopt records
    each event in observer.db. Afterwards every event is in both, and duplicates are
    counted.

    The bound: an event is recorded twice only when a daemon journaled it (and ran the
    legacy logger, warm) and died before its reply reached the client. The client then
    evaluates the event in-process (spawning the logger, spooling the event), so that
    event is in each log twice. Each client has one event in flight, so one crash
    duplicates at most one event per client, each at most once. A kill between the
    daemon recording the clients' spool and truncating it would also duplicate those
    spooled lines once each; the killer here strikes after the new daemon's first spool
    ingest, so the figure checked is the in-flight bound.
    """
    project_with_hook(rt.project, "PostToolUse", "*", "log_ids.py", LOGGER)
    install(rt.project, consolidate_hooks=True, say=lambda _: None)
    rt.start()

    sent: list[str] = []
    failures: list[bytes] = []
    lock = threading.Lock()
    streaming = threading.Event()
    streaming.set()

    def stream(k):
        i = 0
        while streaming.is_set():
            tool_use_id = f"toolu_{k}_{i}"
            proc = rt.hook(post_event(rt.project, f"echo {k} {i}", tool_use_id=tool_use_id), script="stack")
            with lock:
                sent.append(tool_use_id)
                if proc.returncode != 0 or b"Traceback" in proc.stderr:
                    failures.append(proc.stderr)
            i += 1

    spool = state(rt) / "spool.jsonl"
    killed: list[int] = []
    with ThreadPoolExecutor(clients) as pool:
        workers = [pool.submit(stream, k) for k in range(clients)]
        try:
            for _ in range(kills + 1):
                # A daemon that clients restarted, has served several events, and has had its
                # first tick (spool ingested: the file is empty).
                status = wait_for(
                    lambda: (s := rt.status()) and s["pid"] not in killed and s["events"] >= 2 * clients
                    and s["uptime_s"] > 1.5 and not (spool.exists() and spool.stat().st_size) and s,
                    what="a restarted daemon serving events",
                )
                if len(killed) < kills:
                    os.kill(status["pid"], signal.SIGKILL)
                    killed.append(status["pid"])
        finally:
            streaming.clear()
        for worker in workers:
            worker.result()
    assert not failures, failures[:3]
    assert len(killed) == kills
    rt.stop()
    rt.start()  # a last start ingests anything spooled after the final daemon's last tick
    rt.stop()

    stored = stored_ids(rt.project)
    legacy = Counter((rt.project / "legacy-ids.log").read_text().split())
    expected = set(sent)
    for name, counts in (("observer.db", stored), ("legacy log", legacy)):
        assert set(counts) == expected, f"{name}: lost {sorted(expected - set(counts))[:5]}, unknown {sorted(set(counts) - expected)[:5]}"
        assert max(counts.values()) <= 2, f"{name}: an event recorded more than twice"
        assert sum(counts.values()) - len(counts) <= kills * clients, f"{name}: more duplicates than events in flight"
    print(
        f"\n{len(sent)} events from {clients} clients, {kills} SIGKILLs: observer.db {sum(stored.values())} rows "
        f"({sum(stored.values()) - len(stored)} duplicates), legacy log {sum(legacy.values())} lines "
        f"({sum(legacy.values()) - len(legacy)} duplicates); bound N x K = {kills * clients}"
    )


def test_read_only_state_directory_keeps_guards_deciding_and_loses_nothing_journaled(rt):
    """Behaviour chosen for a state directory that turns read-only under a running daemon:
    the daemon keeps serving (its open journal still takes events; the spool it cannot
    ingest waits, said once in daemon.log); an in-process answer still decides and says on
    stderr that its event was not recorded, never with a traceback; a daemon cannot boot
    there and says why in its .failed file, so clients back off. Once the directory is
    writable again every journaled event reaches SQLite exactly once."""
    assert rt.hook(post_event(rt.project, tool_use_id="toolu_spooled"), script="post_tool_use", env=OFF).returncode == 0
    rt.start()  # ingests the spool (the file stays, empty, as after any fallback)
    pid = rt.pid()
    for i in range(3):
        assert rt.hook(post_event(rt.project, tool_use_id=f"toolu_before_{i}"), script="post_tool_use").returncode == 0
    log = state(rt) / "daemon.log"
    with read_only(state(rt)):
        wait_for(lambda: "cannot ingest the clients' spool yet" in log.read_text(), what="the failed ingest to be logged")
        assert rt.status()["pid"] == pid  # still serving after failed ticks
        assert decision(rt.hook(pre_event(rt.project, "rm -rf /"))) == "deny"
        assert decision(rt.hook(pre_event(rt.project, "ls -la"))) is None
        for i in range(3):
            proc = rt.hook(post_event(rt.project, tool_use_id=f"toolu_during_{i}"), script="post_tool_use")
            assert proc.returncode == 0 and NOT_RECORDED not in proc.stderr, proc.stderr
        # In-process answers: the guard still denies; the observer event is reported lost.
        assert decision(rt.hook(pre_event(rt.project, "rm -rf /"), env=OFF)) == "deny"
        lost = rt.hook(post_event(rt.project, tool_use_id="toolu_lost"), script="post_tool_use", env=OFF)
        assert lost.returncode == 0 and b"Traceback" not in lost.stderr, lost.stderr
        assert b"hookopt: PostToolUse " + NOT_RECORDED in lost.stderr and b"Read-only file system" in lost.stderr
        assert log.read_text().count("cannot ingest the clients' spool yet") == 1  # once, not every second

        rt.stop()  # a clean stop cannot compact the journal here: it says so, and keeps the entries
        assert "the journal keeps what SQLite lacks for the next start" in log.read_text()
        *_, worker_last, supervisor_last = log.read_text().splitlines()
        assert "stopped after" in worker_last and "worker stopped (exit code 0)" in supervisor_last
        assert decision(rt.hook(pre_event(rt.project, "rm -rf ~"))) == "deny"  # answered in-process
        wait_for(rt.path(".failed").exists, what="the daemon's refusal to boot")
        assert "cannot keep state in" in rt.path(".failed").read_text() and "Read-only file system" in rt.path(".failed").read_text()
        wait_for(lambda: not rt.daemons(), what="the refused daemon to exit")
    rt.path(".failed").unlink()  # what the clients' 30 s back-off would wait for
    rt.start()
    rt.stop()
    stored = stored_ids(rt.project)
    expected = {"toolu_spooled", *(f"toolu_{w}_{i}" for w in ("before", "during") for i in range(3))}
    assert set(stored) == expected and set(stored.values()) == {1}, stored


def test_full_state_directory_reports_each_unrecorded_event_and_keeps_the_rest(rt):
    """A tmpfs of 512 KiB as the state directory, filled to the last block while the daemon
    runs: guards keep deciding; each PostToolUse (built-in validators or a consolidated
    stack) either reaches SQLite or its client is told on stderr that it was not recorded
    (never both, never neither); after space is freed, events are recorded again and
    nothing journaled is lost."""
    with tiny_tmpfs(state(rt), 512 * 1024):
        install(rt.project, consolidate_hooks=True, say=lambda _: None)  # no hooks of its own: an empty stack
        rt.start()
        pid = rt.pid()
        sent, reported = [], []

        def post(tool_use_id, env=None, script="post_tool_use"):
            proc = rt.hook(post_event(rt.project, tool_use_id=tool_use_id), script=script, env=env)
            assert proc.returncode == 0 and b"Traceback" not in proc.stderr, proc.stderr
            sent.append(tool_use_id)
            if NOT_RECORDED in proc.stderr:
                assert b"No space left on device" in proc.stderr, proc.stderr
                reported.append(tool_use_id)
            return proc

        for i in range(5):
            post(f"toolu_a{i}")
        filler = fill(state(rt))
        for i in range(20):
            post(f"toolu_full{i}")
        assert decision(rt.hook(pre_event(rt.project, "rm -rf /"))) == "deny"
        assert decision(rt.hook(pre_event(rt.project, "ls -la"))) is None
        assert decision(rt.hook(pre_event(rt.project, "rm -rf /"), env=OFF)) == "deny"
        fallback = post("toolu_fallback", env=OFF)
        assert "toolu_fallback" in reported and b"cannot append it to " + bytes(state(rt) / "spool.jsonl") in fallback.stderr
        # The daemon answers a stack event itself: a fallback's message would name the spool.
        stack = post("toolu_stack", script="stack")
        assert "toolu_stack" in reported and b"cannot journal it in" in stack.stderr, stack.stderr
        assert set(reported) <= {"toolu_fallback", "toolu_stack", *(f"toolu_full{i}" for i in range(20))}
        assert rt.status()["pid"] == pid
        filler.unlink()
        for i in range(5):
            post(f"toolu_b{i}")
        rt.stop()
        stored = stored_ids(rt.project)
    assert set(stored) == set(sent) - set(reported) and set(stored.values()) == {1}, (stored, reported)
    print(f"\n{len(sent)} events, {len(reported)} reported not recorded while full, {len(stored)} stored")


def test_many_concurrent_clients_lose_and_duplicate_nothing(rt):
    """16 thin-client processes at a time, 400 events (half PreToolUse guards, half
    PostToolUse observers) against one daemon: every decision right, every observer
    record stored exactly once, every event answered by the daemon (no fallback)."""
    concurrency, total = 16, 400
    rt.start()
    before = rt.status()["events"]

    def one(i):
        if i % 2:
            event, script = post_event(rt.project, f"echo {i}", tool_use_id=f"toolu_load_{i}"), "post_tool_use"
        else:
            event, script = pre_event(rt.project, f"rm -rf / ; echo {i}" if i % 4 == 0 else f"echo {i}"), "pre_tool_use"
        start = time.perf_counter()
        proc = rt.hook(event, script=script)
        return i, time.perf_counter() - start, proc

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, range(total)))
    elapsed = time.perf_counter() - started
    for i, _, proc in results:
        if i % 2:
            assert proc.returncode == 0 and proc.stdout == b"" and proc.stderr == b"", (i, proc.stderr)
        else:
            assert decision(proc) == ("deny" if i % 4 == 0 else None), (i, proc.stdout)
    assert rt.status()["events"] - before == total  # all answered by the daemon
    rt.stop()
    stored = stored_ids(rt.project)
    assert stored == Counter({f"toolu_load_{i}": 1 for i in range(1, total, 2)})
    latencies = sorted(t for _, t, _ in results)

    def pick(q):
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    print(
        f"\n{total} events, {concurrency} concurrent clients, {elapsed:.1f} s ({total / elapsed:.0f} events/s); "
        f"client process latency p50 {pick(0.50):.1f} ms, p95 {pick(0.95):.1f} ms, p99 {pick(0.99):.1f} ms"
    )
    assert elapsed < 60
