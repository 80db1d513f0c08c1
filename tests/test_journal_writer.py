"""The daemon's journal writer: group commits from one thread, real files and SQLite."""

import asyncio
import os
import sqlite3
import threading

import pytest

from modules.optimization import async_db
from modules.optimization.async_db import JOURNAL_NAME, STORE_NAME, Journal, ObserverLog
from modules.optimization.journal_writer import JournalWriter
from tests.mounts import fill, tiny_tmpfs


def _event(i, pad=""):
    return {"session_id": "s", "hook_event_name": "PostToolUse", "tool_name": "Bash", "tool_use_id": f"toolu_{i}", "pad": pad}


def test_concurrent_events_share_fsyncs_and_keep_one_order(tmp_path, monkeypatch):
    """Many events at once: each gets its own seq, the journal and SQLite hold them in seq
    order exactly once, and they were written with fewer fsyncs than events."""
    fsyncs = []
    real_fsync = os.fsync
    monkeypatch.setattr(async_db.os, "fsync", lambda fd: (fsyncs.append(fd), real_fsync(fd))[1])
    log = ObserverLog(tmp_path)
    writer = JournalWriter(log)

    async def burst():
        return await asyncio.gather(*(writer.record(_event(i)) for i in range(200)))

    seqs = asyncio.run(burst())
    writer.close()
    log.close()
    assert sorted(seqs) == list(range(1, 201)) and seqs == sorted(seqs)  # queued in order, written in order
    assert 0 < len(fsyncs) < 200, len(fsyncs)
    db = sqlite3.connect(tmp_path / STORE_NAME)
    rows = db.execute("SELECT seq, json_extract(payload, '$.tool_use_id') FROM events ORDER BY seq").fetchall()
    db.close()
    assert rows == [(seq, f"toolu_{i}") for i, seq in enumerate(seqs)]


def test_one_event_alone_is_journaled_before_its_await_returns(tmp_path):
    log = ObserverLog(tmp_path)
    writer = JournalWriter(log)
    seq = asyncio.run(writer.record(_event(1)))
    journal = Journal(tmp_path / JOURNAL_NAME, fsync=False)  # what a crash now would find
    entries = list(journal.entries_after(0))
    journal.close()
    writer.close()
    log.close()
    assert [(s, r["event"]["tool_use_id"]) for s, r in entries] == [(seq, "toolu_1")]


def test_an_error_reaches_every_waiter_of_its_batch_and_later_ones(tmp_path):
    log = ObserverLog(tmp_path)
    writer = JournalWriter(log)
    log.close()  # every record is refused now

    async def burst():
        return await asyncio.gather(*(writer.record(_event(i)) for i in range(5)), return_exceptions=True)

    outcomes = asyncio.run(burst())
    writer.close()
    assert all(isinstance(o, RuntimeError) and "closed ObserverLog" in str(o) for o in outcomes), outcomes
    with pytest.raises(RuntimeError, match="journal writer is closed"):
        asyncio.run(writer.record(_event(9)))


def test_a_full_disk_fails_the_whole_group_and_leaves_no_trace(tmp_path):
    """A group commit is all or none: acknowledged events are exactly the journal's entries."""
    with tiny_tmpfs(tmp_path / "fs", 128 * 1024) as fs:
        log = ObserverLog(fs, fsync=False, background=False)
        writer = JournalWriter(log)
        acked = [asyncio.run(writer.record(_event(i, "x" * 300))) for i in range(3)]
        filler = fill(fs)

        async def burst():
            return await asyncio.gather(*(writer.record(_event(i, "x" * 2000)) for i in range(3, 60)), return_exceptions=True)

        outcomes = asyncio.run(burst())
        assert any(isinstance(o, OSError) for o in outcomes)
        acked += [o for o in outcomes if isinstance(o, int)]
        filler.unlink()
        acked.append(asyncio.run(writer.record(_event(99))))
        writer.close()
        journal = Journal(fs / JOURNAL_NAME, fsync=False)
        entries = [seq for seq, _ in journal.entries_after(0)]
        journal.close()
    assert entries == sorted(acked)


def test_without_fsync_a_lone_event_is_written_at_once_and_order_holds(tmp_path):
    """The daemon's journal (no fsync): events are written on the loop, no thread hand-off,
    in the order they came, and a crash right after the await would find them."""
    log = ObserverLog(tmp_path, fsync=False)
    writer = JournalWriter(log)

    async def events():
        first = await writer.record(_event(0))
        return [first, *await asyncio.gather(*(writer.record(_event(i)) for i in range(1, 50)))]

    seqs = asyncio.run(events())
    journal = Journal(tmp_path / JOURNAL_NAME, fsync=False)
    entries = [(s, r["event"]["tool_use_id"]) for s, r in journal.entries_after(0)]
    journal.close()
    batches = writer.batches
    writer.close()
    log.close()
    assert seqs == list(range(1, 51)) and entries == [(seq, f"toolu_{i}") for i, seq in enumerate(seqs)]
    assert batches == 0  # none needed the thread


def test_without_fsync_a_busy_journal_sends_the_event_to_the_thread_and_the_loop_runs_on(tmp_path):
    """While another thread holds the journal (a compaction), recording must not stall the
    loop: the event waits in the writer thread, behind nothing, and is written after."""
    log = ObserverLog(tmp_path, fsync=False)
    writer = JournalWriter(log)
    held = threading.Event()
    release = threading.Event()

    def compaction():
        with log._journal._lock:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=compaction)
    holder.start()
    held.wait(10)

    async def scenario():
        ticks = 0
        record = asyncio.ensure_future(writer.record(_event(1)))
        while ticks < 20:  # the loop keeps running while the journal is held
            await asyncio.sleep(0.01)
            ticks += 1
        assert not record.done()
        release.set()
        return await asyncio.wait_for(record, 10), ticks

    seq, ticks = asyncio.run(scenario())
    holder.join()
    batches = writer.batches
    writer.close()
    log.close()
    assert seq == 1 and ticks == 20 and batches == 1
