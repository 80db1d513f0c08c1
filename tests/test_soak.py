"""Bounded growth: 100,000 events through one real daemon keep its RSS and open file
descriptors flat, and its files within their retention settings.

The events come over the daemon's real unix socket (frames as the thin client builds
them, four connections at a time, each reconnecting every 500 events) and its http
port, so the soak measures the daemon, not process spawning. Half are PreToolUse
guards with distinct commands (the result cache churns at its bound), half PostToolUse
observers (journal, batches, SQLite). HOOKOPT_SOAK_EVENTS changes the count.
"""

import http.client
import json
import os
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from modules.optimization import wire
from tests.daemon_helpers import post_event, pre_event, wait_for

EVENTS = int(os.environ.get("HOOKOPT_SOAK_EVENTS", "100000"))
WARMUP = EVENTS // 10
STREAMS = 4
RECONNECT_EVERY = 500
TIME_BOUND_S = 600
RETENTION = {"observer_max_rows": 5000, "journal_max_bytes": 1 << 20, "log_max_bytes": 1 << 16, "log_backups": 2}


def rss_kb(pid):
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


class Stream:
    """One client connection that sends frames and reads replies, reconnecting now and then."""

    def __init__(self, rt):
        self.rt = rt
        self.sock = None
        self.sent = 0

    def ask(self, op, body):
        if self.sock is None or self.sent % RECONNECT_EVERY == 0:
            self.close()
            import socket

            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(30)
            self.sock.connect(str(self.rt.path(".sock")))
        self.sent += 1
        self.sock.sendall(wire.encode_request(op, project=str(self.rt.project).encode(), body=body))
        size = int.from_bytes(self._read(4), "big")
        code, out_len, err_len = wire.parse_reply_header(self._read(size))
        return code, self._read(out_len), self._read(err_len)

    def _read(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            assert chunk, "daemon closed the connection"
            data += chunk
        return data

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def test_a_hundred_thousand_events_keep_rss_fds_and_files_bounded(rt):
    (rt.project / ".claude").mkdir()
    (rt.project / ".claude" / "settings.json").write_text(json.dumps({"optimization": {"retention": RETENTION}}))
    status = rt.start()
    pid = status["pid"]
    endpoint = json.loads((rt.project / ".claude" / "hookopt" / "http.json").read_text())
    counter = iter(range(EVENTS))
    lock = threading.Lock()
    wrong = []
    marks = {}

    def one(stream, conn, i):
        if i % 2:
            code, out, err = stream.ask("event", json.dumps(post_event(rt.project, f"echo {i}", tool_use_id=f"toolu_{i}")).encode())
            ok = code == 0 and not err
        elif i % 50 == 0:
            conn.request("POST", "/hook", json.dumps(pre_event(rt.project, f"rm -rf / # {i}")), {"X-Hookopt-Token": endpoint["token"]})
            reply = conn.getresponse().read()
            ok = json.loads(reply)["hookSpecificOutput"]["permissionDecision"] == "deny"
        else:
            code, out, err = stream.ask("event", json.dumps(pre_event(rt.project, f"echo {i}")).encode())
            ok = code == 0 and out == b""
        if not ok:
            wrong.append(i)

    def run():
        stream = Stream(rt)
        conn = http.client.HTTPConnection("127.0.0.1", endpoint["port"], timeout=30)
        try:
            while True:
                with lock:
                    i = next(counter, None)
                    if i == WARMUP:
                        marks["warm"] = (rss_kb(pid), open_fds(pid), time.monotonic())
                if i is None:
                    return
                one(stream, conn, i)
        finally:
            stream.close()
            conn.close()

    started = time.monotonic()
    with ThreadPoolExecutor(STREAMS) as pool:
        for future in [pool.submit(run) for _ in range(STREAMS)]:
            future.result()
    elapsed = time.monotonic() - started
    assert not wrong, f"{len(wrong)} wrong answers, first {wrong[:5]}"
    # Let the daemon settle (batches written, a journal check tick) before measuring.
    state = rt.project / ".claude" / "hookopt"
    after = wait_for(lambda: (s := rt.status()) and s["observers"]["committed_seq"] == s["observers"]["journal_seq"] and s, what="the observers to catch up")
    assert after["pid"] == pid and after["events"] >= EVENTS
    wait_for(lambda: (state / "journal.jsonl").stat().st_size <= RETENTION["journal_max_bytes"], what="the journal to be compacted")
    end_rss, end_fds = rss_kb(pid), open_fds(pid)
    warm_rss, warm_fds, _ = marks["warm"]
    print(
        f"\n{EVENTS} events in {elapsed:.0f} s ({EVENTS / elapsed:.0f}/s): RSS {warm_rss // 1024} MB after {WARMUP} events, "
        f"{end_rss // 1024} MB after {EVENTS} ({(end_rss - warm_rss) / 1024:+.1f} MB); open fds {warm_fds} -> {end_fds}; "
        f"journal {(state / 'journal.jsonl').stat().st_size} bytes, observer.db {(state / 'observer.db').stat().st_size} bytes"
    )
    assert elapsed < TIME_BOUND_S
    assert end_fds <= warm_fds + 2, "file descriptors leak"
    assert end_rss - warm_rss < 16 * 1024, "RSS grew by more than 16 MB over the soak"
    # observer.db: pruned to its row limit at the next pruning pass (the daemon's, every 30 s).
    def rows():
        db = sqlite3.connect(state / "observer.db")
        try:
            return db.execute("SELECT count(*), max(seq) FROM events").fetchone()
        finally:
            db.close()

    count, newest = wait_for(lambda: (r := rows())[0] <= RETENTION["observer_max_rows"] and r, timeout=60, what="a pruning pass")
    assert count == RETENTION["observer_max_rows"] and newest == after["observers"]["journal_seq"]  # the newest kept
    logs = sorted(state.glob("daemon.log*"))
    assert len(logs) <= 1 + RETENTION["log_backups"]
    assert all(p.stat().st_size <= RETENTION["log_max_bytes"] + 4096 for p in logs)
