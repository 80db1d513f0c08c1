import json
import sqlite3
import threading
from collections import Counter
from pathlib import Path

import pytest

from modules.optimization.async_db import JOURNAL_NAME, STORE_NAME, Journal, ObserverLog, ObserverStore, spool_event
from tests.mounts import fill, tiny_tmpfs

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "claude-code-2.1.329"


def event(i, tool="Bash"):
    return {
        "session_id": "s-1",
        "hook_event_name": "PostToolUse",
        "tool_name": tool,
        "tool_input": {"command": f"echo {i}"},
        "tool_response": {"stdout": str(i)},
    }


def stored_seqs(state_dir):
    with sqlite3.connect(state_dir / STORE_NAME) as conn:
        return [row[0] for row in conn.execute("SELECT seq FROM events ORDER BY seq")]


# -- Journal


def test_journal_seq_survives_reopen(tmp_path):
    path = tmp_path / "j.jsonl"
    journal = Journal(path)
    assert [journal.append({"n": n}) for n in range(3)] == [1, 2, 3]
    journal.close()
    journal = Journal(path)
    assert journal.append({"n": 3}) == 4
    assert list(journal.entries_after(2)) == [(3, {"n": 2}), (4, {"n": 3})]
    journal.close()


def test_journal_ignores_and_cuts_a_torn_last_line(tmp_path):
    path = tmp_path / "j.jsonl"
    journal = Journal(path, fsync=False)
    journal.append({"n": 0})
    journal.append({"n": 1})
    journal.close()
    with open(path, "ab") as fh:
        fh.write(b'{"seq": 3, "record": {"n"')  # the crash hit mid-write
    journal = Journal(path, fsync=False)
    assert [seq for seq, _ in journal.entries_after(0)] == [1, 2]
    assert journal.append({"n": 2}) == 3  # the torn entry was never acknowledged
    journal.close()
    lines = path.read_bytes().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [1, 2, 3]


def test_journal_compact_keeps_only_uncommitted_entries_and_the_seq(tmp_path):
    path = tmp_path / "j.jsonl"
    journal = Journal(path, fsync=False)
    for n in range(5):
        journal.append({"n": n})
    journal.compact(3)
    assert list(journal.entries_after(0)) == [(4, {"n": 3}), (5, {"n": 4})]
    assert journal.append({"n": 5}) == 6  # appends still work after the file was replaced
    journal.compact(6)
    assert list(journal.entries_after(0)) == []
    assert not (tmp_path / "j.jsonl.tmp").exists()
    journal.close()
    journal = Journal(path, fsync=False)
    assert journal.append({"n": 6}) == 7  # the marker line keeps the seq across an empty journal
    journal.close()


def test_journal_refuses_records_json_cannot_hold_without_using_a_seq(tmp_path):
    journal = Journal(tmp_path / "j.jsonl", fsync=False)
    with pytest.raises(TypeError):
        journal.append({"bad": object()})
    assert journal.append({"ok": True}) == 1
    journal.close()


# -- ObserverStore


def test_store_uses_wal(tmp_path):
    store = ObserverStore(tmp_path / "o.db")
    with sqlite3.connect(tmp_path / "o.db") as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()


def test_write_batch_is_one_transaction(tmp_path):
    db = tmp_path / "o.db"
    store = ObserverStore(db)
    with sqlite3.connect(db) as conn:
        # Fails the second insert, after the first has already gone in.
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.tool_name = 'Poison' "
            "BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
    batch = [
        (1, {"ts": 1.0, "event": event(1)}),
        (2, {"ts": 2.0, "event": event(2, "Poison")}),
        (3, {"ts": 3.0, "event": event(3)}),
    ]
    with pytest.raises(sqlite3.IntegrityError, match="refused"):
        store.write_batch(batch)
    assert (store.count(), store.last_seq()) == (0, 0)
    store.write_batch([batch[0], batch[2]])  # the connection is usable again
    assert (store.count(), store.last_seq()) == (2, 3)
    store.close()


def test_write_batch_replayed_never_duplicates_or_lowers_last_seq(tmp_path):
    store = ObserverStore(tmp_path / "o.db")
    batch = [(seq, {"ts": float(seq), "event": event(seq)}) for seq in (1, 2, 3)]
    store.write_batch(batch)
    store.write_batch(batch)
    store.write_batch(batch[:1])
    assert (store.count(), store.last_seq()) == (3, 3)
    store.close()


# -- ObserverLog


def test_record_stores_columns_and_the_whole_event(tmp_path):
    payload = json.loads((FIXTURES / "04-PostToolUse-Bash.json").read_text())
    log = ObserverLog(tmp_path, background=False)
    seq = log.record(payload)
    log.close()
    with sqlite3.connect(tmp_path / STORE_NAME) as conn:
        row = conn.execute("SELECT seq, ts, session_id, event, tool_name, payload FROM events").fetchone()
    assert row[0] == seq == 1
    assert isinstance(row[1], float)
    assert row[2:5] == (payload["session_id"], "PostToolUse", "Bash")
    assert json.loads(row[5]) == payload


def test_event_without_tool_name_stores_null(tmp_path):
    log = ObserverLog(tmp_path, background=False)
    log.record({"session_id": "s", "hook_event_name": "SessionStart", "source": "startup"})
    log.close()
    with sqlite3.connect(tmp_path / STORE_NAME) as conn:
        assert conn.execute("SELECT event, tool_name FROM events").fetchall() == [("SessionStart", None)]


def test_replay_after_a_crash_stores_every_event_exactly_once(tmp_path):
    n = 50
    crashed = ObserverLog(tmp_path, background=False)
    seqs = [crashed.record(event(i)) for i in range(n)]
    assert stored_seqs(tmp_path) == []  # nothing reached SQLite: only the journal has them
    # No close(): the process "died" here.
    reopened = ObserverLog(tmp_path, background=False)
    assert stored_seqs(tmp_path) == seqs == list(range(1, n + 1))
    assert reopened.stats()["replayed"] == n
    # Crash again before compaction, reopen: the replay finds nothing new to add.
    again = ObserverLog(tmp_path, background=False)
    assert stored_seqs(tmp_path) == seqs
    assert again.stats()["replayed"] == 0
    assert again.record(event(n)) == n + 1
    again.close()
    # Even the first instance flushing its stale batch late adds no duplicate.
    crashed.close()
    reopened.close()
    assert stored_seqs(tmp_path) == list(range(1, n + 2))


def test_replay_after_a_crash_with_part_already_committed(tmp_path):
    crashed = ObserverLog(tmp_path, background=False, fsync=False)
    for i in range(10):
        crashed.record(event(i))
    crashed.flush()
    for i in range(10, 25):
        crashed.record(event(i))
    reopened = ObserverLog(tmp_path, background=False, fsync=False)
    assert stored_seqs(tmp_path) == list(range(1, 26))
    assert reopened.stats()["replayed"] == 15
    reopened.close()
    crashed.close()  # release its files; its stale batch adds nothing
    assert stored_seqs(tmp_path) == list(range(1, 26))


def test_close_compacts_the_journal_to_what_sqlite_lacks(tmp_path):
    log = ObserverLog(tmp_path, background=False, fsync=False)
    for i in range(20):
        log.record(event(i))
    log.close()
    journal = Journal(tmp_path / JOURNAL_NAME)
    assert list(journal.entries_after(0)) == []
    journal.close()
    log = ObserverLog(tmp_path, background=False, fsync=False)
    assert log.record(event(20)) == 21  # seqs carry on after compaction
    log.close()
    assert stored_seqs(tmp_path) == list(range(1, 22))


def test_overflow_spills_and_still_lands_exactly_once(tmp_path):
    log = ObserverLog(tmp_path, batch_size=4, background=False, fsync=False, capacity=5)
    for i in range(30):
        log.record(event(i))
    assert log.stats()["on_disk"] == 25
    log.close()
    assert stored_seqs(tmp_path) == list(range(1, 31))


def test_a_thousand_records_through_the_background_thread(tmp_path):
    log = ObserverLog(tmp_path, batch_size=50, max_wait_s=0.005, fsync=False)

    def producer(base):
        for i in range(250):
            log.record(event(base + i))

    threads = [threading.Thread(target=producer, args=(n * 250,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    assert stored_seqs(tmp_path) == list(range(1, 1001))
    with sqlite3.connect(tmp_path / STORE_NAME) as conn:
        commands = {json.loads(p)["tool_input"]["command"] for (p,) in conn.execute("SELECT payload FROM events")}
    assert commands == {f"echo {i}" for i in range(1000)}


def test_record_after_close_is_refused(tmp_path):
    log = ObserverLog(tmp_path, background=False)
    log.close()
    log.close()  # idempotent
    with pytest.raises(RuntimeError):
        log.record(event(0))


def test_journal_on_a_full_disk_keeps_exactly_the_acknowledged_entries(tmp_path):
    """An append that fails for lack of space must leave no trace, even once space is back:
    a buffered writer would keep its bytes and write them later under a reused seq."""
    with tiny_tmpfs(tmp_path / "fs", 64 * 1024) as fs:
        journal = Journal(fs / "journal.jsonl", fsync=False)
        acked = {journal.append({"i": i, "pad": "x" * 300}): i for i in range(3)}
        filler = fill(fs)
        failed = 0
        for i in range(3, 40):
            try:
                acked[journal.append({"i": i, "pad": "x" * 300})] = i
            except OSError:
                failed += 1
        assert failed
        filler.unlink()
        for i in range(40, 45):
            acked[journal.append({"i": i, "pad": "x" * 300})] = i
        journal.close()
        reopened = Journal(fs / "journal.jsonl", fsync=False)
        entries = [(seq, record["i"]) for seq, record in reopened.entries_after(0)]
        reopened.close()
    assert entries == sorted(acked.items())


def test_spool_ingest_interrupted_by_a_full_disk_records_each_event_once(tmp_path):
    with tiny_tmpfs(tmp_path / "fs", 256 * 1024) as fs:
        for i in range(60):
            spool_event(fs, {"hook_event_name": "PostToolUse", "tool_use_id": f"t{i}", "pad": "x" * 200})
        log = ObserverLog(fs, background=False, fsync=False)
        log.record({"hook_event_name": "PostToolUse", "tool_use_id": "first"})  # the journal's page has room left
        filler = fill(fs)
        for _ in range(3):  # the daemon retries every tick
            with pytest.raises(OSError):
                log.ingest_spool()
        filler.unlink()
        log.ingest_spool()
        log.close()
        counts = stored_ids_in(fs / "observer.db")
    assert counts == Counter({"first": 1, **{f"t{i}": 1 for i in range(60)}})


def stored_ids_in(path):
    db = sqlite3.connect(path)
    try:
        return Counter(r[0] for r in db.execute("SELECT json_extract(payload, '$.tool_use_id') FROM events"))
    finally:
        db.close()
