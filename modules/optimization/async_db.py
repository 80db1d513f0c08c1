"""The observer log: every event goes to a journal first, then in batches into SQLite.

An event is acknowledged once its journal line is written (and fsynced, by default). The
batcher then writes it into SQLite, one transaction per batch; the store records the
highest committed journal sequence in the same transaction. On start, journal entries
above that sequence are replayed, and INSERT OR IGNORE on the sequence makes a replay
that overlaps a committed batch harmless. close() compacts the journal down to what
SQLite does not hold yet; so does maintain() once the journal passes its size limit,
and maintain() also prunes SQLite to the newest rows within an age (Retention).

Committed sequences are a watermark only because batches commit in journal order:
ObserverLog journals and enqueues under one lock, uses a single priority, and spills
(rather than blocks or drops) when the batcher's memory is full.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Final

from .intelligent_batcher import Batcher

__all__ = ["JOURNAL_NAME", "SPOOL_NAME", "STORE_NAME", "Journal", "ObserverLog", "ObserverStore", "spool_event"]

JOURNAL_NAME: Final = "journal.jsonl"
STORE_NAME: Final = "observer.db"
# Events a client evaluated in-process (no daemon answered) wait here for the daemon.
SPOOL_NAME: Final = "spool.jsonl"

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS events(
    seq INTEGER PRIMARY KEY, ts REAL, session_id TEXT, event TEXT, tool_name TEXT, payload TEXT
);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value);
"""
# meta keeps the highest committed seq; max() so a replayed older batch never lowers it.
_SET_LAST_SEQ: Final = (
    "INSERT INTO meta(key, value) VALUES ('last_seq', ?) "
    "ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)"
)


_WAL_LIMIT_BYTES: Final = 64 << 20


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _parse(line: bytes) -> tuple[int, dict[str, Any] | None] | None:
    """Return (seq, record) from one journal line, record None for a marker, None if unreadable."""
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if not isinstance(data, dict) or type(data.get("seq")) is not int:
        return None
    record = data.get("record")
    return data["seq"], record if isinstance(record, dict) else None


def spool_event(state_dir: Path, event: Mapping[str, Any]) -> None:
    """Append one event for the daemon to ingest: the client fallback's journal."""
    line = (_dumps({"ts": time.time(), "event": dict(event)}) + "\n").encode()
    fd = os.open(state_dir / SPOOL_NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        # The lock keeps a line whole against the daemon truncating after ingest.
        fcntl.flock(fd, fcntl.LOCK_EX)
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """Append-only JSONL of {"seq": int, "record": {...}} lines; seqs survive restarts.

    A line without its final newline is a write torn by a crash: it was never
    acknowledged, so recovery cuts it off. compact() leaves a {"seq": N} marker line so
    the next seq is still known once every entry has been compacted away.
    """

    def __init__(self, path: Path, *, fsync: bool = True, first_seq: int = 1) -> None:
        self._path = path
        self._fsync = fsync
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        last, good_end = 0, 0
        if path.exists():
            with open(path, "rb") as fh:
                for line in fh:
                    if not line.endswith(b"\n"):
                        break
                    good_end += len(line)
                    if (parsed := _parse(line)) is not None:
                        last = max(last, parsed[0])
        # Unbuffered: a buffered writer keeps the bytes of a failed write (disk full) and
        # writes them later, under a seq that the next append reuses.
        self._fh: IO[bytes] = open(path, "ab", buffering=0)
        if self._fh.tell() > good_end:
            # Cut the torn tail, or the next append would be glued onto it and lost too.
            self._fh.truncate(good_end)
        self._size = good_end
        # first_seq guards against reusing seqs the store already holds if the file was lost.
        self._next = max(last + 1, first_seq)

    @property
    def size(self) -> int:
        """Return the file's size in bytes (whole lines only)."""
        with self._lock:
            return self._size

    @property
    def last_seq(self) -> int:
        """Return the seq of the newest entry (0 before the first)."""
        with self._lock:
            return self._next - 1

    def append(self, record: Mapping[str, Any]) -> int:
        """Write one record durably and return its seq."""
        return self.append_many([record])[0]

    @property
    def fsyncs(self) -> bool:
        """Whether appends wait for the disk (else they survive the process, not a power cut)."""
        return self._fsync

    def append_many(self, records: Sequence[Mapping[str, Any]]) -> list[int]:
        """Write records durably, in order, with one fsync for all; return their seqs.
        All or none: a failed write takes back every line of the call."""
        with self._lock:
            return self._append_locked(records)

    def try_append_many(self, records: Sequence[Mapping[str, Any]]) -> list[int] | None:
        """append_many, or None (nothing written) when another thread holds the journal (a compaction)."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            return self._append_locked(records)
        finally:
            self._lock.release()

    def _append_locked(self, records: Sequence[Mapping[str, Any]]) -> list[int]:
        """append_many's work, the lock held."""
        first = self._next
        seqs = list(range(first, first + len(records)))
        lines = (_dumps({"seq": seq, "record": record}).encode() + b"\n" for seq, record in zip(seqs, records, strict=True))
        data = b"".join(lines)  # raises before any write
        try:
            view = memoryview(data)
            while view:
                view = view[self._fh.write(view) :]
            if self._fsync:
                os.fsync(self._fh.fileno())
        except BaseException:
            # A half-written line (disk full) would hide the next append; take it back.
            os.ftruncate(self._fh.fileno(), self._size)
            raise
        self._size += len(data)
        self._next = first + len(records)
        return seqs

    def entries_after(self, seq: int) -> Iterator[tuple[int, dict[str, Any]]]:
        """Yield (seq, record) for every entry above seq, oldest first."""
        for entry_seq, record, _ in self._read():
            if record is not None and entry_seq > seq:
                yield entry_seq, record

    def compact(self, committed_seq: int) -> None:
        """Atomically rewrite the file keeping only entries above committed_seq."""
        with self._lock:
            tmp = self._path.with_name(self._path.name + ".tmp")
            with open(tmp, "wb") as out:
                out.write(_dumps({"seq": self._next - 1}).encode() + b"\n")
                for seq, record, raw in self._read():
                    if record is not None and seq > committed_seq:
                        out.write(raw)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self._path)
            _fsync_dir(self._path.parent)
            self._fh.close()
            self._fh = open(self._path, "ab", buffering=0)
            self._size = self._fh.tell()

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._fh.close()

    def _read(self) -> Iterator[tuple[int, dict[str, Any] | None, bytes]]:
        # A separate handle: a reader sees whole lines only, and a concurrent compact()
        # replaces the file without disturbing it.
        with open(self._path, "rb") as fh:
            for line in fh:
                if not line.endswith(b"\n"):
                    return
                if (parsed := _parse(line)) is not None:
                    yield parsed[0], parsed[1], line


def _text(value: Any) -> str | None:
    return value if value is None or isinstance(value, str) else str(value)


def _row(seq: int, record: Mapping[str, Any]) -> tuple[int, Any, str | None, str | None, str | None, str]:
    event = record.get("event")
    if not isinstance(event, Mapping):
        event = {}
    return (
        seq,
        record.get("ts"),
        _text(event.get("session_id")),
        _text(event.get("hook_event_name")),
        _text(event.get("tool_name")),
        _dumps(event),
    )


class ObserverStore:
    """The SQLite side of the observer log: WAL, one transaction per batch.

    Records have the shape ObserverLog journals: {"ts": float, "event": {...}}.
    The connection is shared between threads and guarded by one lock.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit transactions; write_batch opens its own.
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._conn.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL can lose the last commits on power loss, never corrupt;
        # the journal covers those commits.
        self._conn.execute("PRAGMA synchronous=NORMAL")
        # After a checkpoint, SQLite truncates a WAL file that grew past this (it is reused, never shrunk, otherwise).
        self._conn.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT_BYTES}")
        self._conn.executescript(_SCHEMA)

    def write_batch(self, entries: Sequence[tuple[int, Mapping[str, Any]]]) -> None:
        """Insert entries and advance last_seq in one transaction; known seqs are skipped."""
        if not entries:
            return
        rows = [_row(seq, record) for seq, record in entries]
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany("INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?)", rows)
                self._conn.execute(_SET_LAST_SEQ, (max(row[0] for row in rows),))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def last_seq(self) -> int:
        """Return the highest journal seq committed (0 when empty)."""
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
        return int(row[0]) if row else 0

    def prune(self, max_rows: int, min_ts: float) -> int:
        """Delete all but the newest max_rows events, and any older than min_ts; return how many went."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                cursor = self._conn.execute(
                    "DELETE FROM events WHERE seq <= (SELECT seq FROM events ORDER BY seq DESC LIMIT 1 OFFSET ?) OR ts < ?",
                    (max_rows, min_ts),
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            return cursor.rowcount

    def count(self) -> int:
        """Return how many events are stored."""
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()


def _records(events: Sequence[Mapping[str, Any]], ts: float | None) -> list[dict[str, Any]]:
    now = time.time() if ts is None else ts
    return [{"ts": now, "event": dict(event)} for event in events]


class ObserverLog:
    """Record observer events without loss: journal, batch, SQLite, replay on start."""

    def __init__(
        self,
        state_dir: Path,
        *,
        batch_size: int = 100,
        max_wait_s: float = 0.05,
        background: bool = True,
        clock: Callable[[], float] = time.monotonic,
        fsync: bool = True,
        capacity: int = 10_000,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self._on_batch = on_batch  # told the size of each batch written to SQLite
        self._state_dir = state_dir
        self._store = ObserverStore(state_dir / STORE_NAME)
        self._journal = Journal(state_dir / JOURNAL_NAME, fsync=fsync, first_seq=self._store.last_seq() + 1)
        self._replayed = self._replay(batch_size)
        # Spill, not block: record() has already acknowledged the event in the journal,
        # so it must not fail afterwards, and blocking would stall the daemon.
        self._batcher: Batcher[tuple[int, dict[str, Any]]] = Batcher(
            self._write,
            max_size=batch_size,
            max_wait_s=max_wait_s,
            capacity=capacity,
            overflow="spill",
            spill_dir=state_dir,
            clock=clock,
            background=background,
        )
        self._lock = threading.Lock()
        self._closed = False
        self._spool_done = (0, 0)  # (inode, offset) of spool lines recorded but not yet truncated

    def record(self, event: Mapping[str, Any], ts: float | None = None) -> int:
        """Journal one event durably, queue it for SQLite, and return its seq."""
        return self.record_many([event], ts)[0]

    @property
    def fsyncs(self) -> bool:
        """Whether recording waits for the disk (see Journal.fsyncs)."""
        return self._journal.fsyncs

    def record_many(self, events: Sequence[Mapping[str, Any]], ts: float | None = None) -> list[int]:
        """Journal events durably with one fsync (a group commit), queue them, return their seqs."""
        records = _records(events, ts)
        # One lock over both steps keeps batcher order equal to journal order, which is
        # what makes the store's last_seq a safe replay and compaction point.
        with self._lock:
            self._check_open()
            return self._queue(self._journal.append_many(records), records)

    def try_record_many(self, events: Sequence[Mapping[str, Any]], ts: float | None = None) -> list[int] | None:
        """record_many, or None (nothing recorded) when another thread is recording or compacting."""
        records = _records(events, ts)
        if not self._lock.acquire(blocking=False):
            return None
        try:
            self._check_open()
            seqs = self._journal.try_append_many(records)
            return None if seqs is None else self._queue(seqs, records)
        finally:
            self._lock.release()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("record on a closed ObserverLog")

    def _queue(self, seqs: list[int], records: list[dict[str, Any]]) -> list[int]:
        for seq, record in zip(seqs, records, strict=True):
            self._batcher.put((seq, record))
        return seqs

    def ingest_spool(self) -> int:
        """Record the events clients spooled while no daemon answered; return how many.

        A crash between recording and truncating the spool records those events again
        on the next start: at most one duplicate each, never a loss. A record that fails
        (state directory full) raises, and the next call resumes after the lines recorded.
        """
        try:
            fd = os.open(self._state_dir / SPOOL_NAME, os.O_RDWR)
        except FileNotFoundError:
            return 0
        count = 0
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            inode = os.fstat(fd).st_ino
            # Resume after what an earlier, failed ingest (disk full) already recorded.
            offset = self._spool_done[1] if self._spool_done[0] == inode else 0
            with os.fdopen(os.dup(fd), "rb") as spool:
                spool.seek(offset)
                for line in spool:
                    try:
                        entry = json.loads(line)
                        event, ts = entry["event"], float(entry["ts"])
                    except (ValueError, KeyError, TypeError):
                        event = None  # a torn line from a client killed mid-write was never acknowledged
                    if event is not None:
                        try:
                            self.record(event, ts)
                        except OSError:
                            self._spool_done = (inode, offset)
                            raise
                        count += 1
                    offset += len(line)
            os.ftruncate(fd, 0)
            self._spool_done = (0, 0)
        finally:
            os.close(fd)
        return count

    def flush(self) -> None:
        """Write everything queued into SQLite now."""
        self._batcher.flush()

    def close(self) -> None:
        """Flush, compact the journal to what SQLite lacks, and close the files."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._batcher.close()
            self._journal.compact(self._store.last_seq())
        finally:
            # If the flush failed the journal still holds every entry for the next start.
            self._journal.close()
            self._store.close()

    def maintain(
        self, max_rows: int, max_age_s: float, journal_max_bytes: int, *, prune: bool = True, now: float | None = None
    ) -> dict[str, int]:
        """Keep the files bounded: compact the journal to what SQLite lacks once it passes
        journal_max_bytes (a cheap check), and with prune, trim SQLite to the newest max_rows
        events younger than max_age_s."""
        pruned = self._store.prune(max_rows, (time.time() if now is None else now) - max_age_s) if prune else 0
        compacted = 0
        if self._journal.size > journal_max_bytes:
            before = self._journal.size
            self._journal.compact(self._store.last_seq())
            compacted = before - self._journal.size
        return {"pruned_rows": pruned, "journal_bytes_dropped": compacted}

    def stats(self) -> dict[str, Any]:
        """Return batcher counters plus journal and store positions."""
        return {
            **self._batcher.stats(),
            "journal_seq": self._journal.last_seq,
            "committed_seq": self._store.last_seq(),
            "journal_bytes": self._journal.size,
            "replayed": self._replayed,
        }

    def _write(self, batch: list[tuple[int, dict[str, Any]]]) -> None:
        # Spilled items come back from JSON as lists; unpacking handles both.
        self._store.write_batch([(int(seq), record) for seq, record in batch])
        if self._on_batch is not None:
            self._on_batch(len(batch))

    def _replay(self, chunk_size: int) -> int:
        chunk: list[tuple[int, dict[str, Any]]] = []
        total = 0
        for entry in self._journal.entries_after(self._store.last_seq()):
            chunk.append(entry)
            if len(chunk) >= chunk_size:
                self._store.write_batch(chunk)
                total, chunk = total + len(chunk), []
        self._store.write_batch(chunk)
        return total + len(chunk)
