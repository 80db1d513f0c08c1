"""Retention: observer.db keeps the newest rows within an age, the journal is compacted
past its size, daemon.log rotates (also when two processes share it), and the settings
come from config/settings.json with the project's override. Real SQLite files, real forks."""

import json
import logging
import os
import sqlite3

import pytest

from modules.optimization.async_db import ObserverLog
from modules.optimization.integrated_optimizer import ConfigError, Retention, load_settings
from modules.optimization.logfile import SharedRotatingHandler


def seqs(state):
    db = sqlite3.connect(state / "observer.db")
    try:
        return [row[0] for row in db.execute("SELECT seq FROM events ORDER BY seq")]
    finally:
        db.close()


def test_observer_db_keeps_the_newest_rows_and_drops_old_ones(tmp_path):
    log = ObserverLog(tmp_path, background=False, fsync=False)
    try:
        for i in range(250):
            log.record({"hook_event_name": "PostToolUse", "i": i}, ts=1000.0 + i)
        log.flush()
        assert log.maintain(100, 1e9, 1 << 30, now=2000.0)["pruned_rows"] == 150
        assert seqs(tmp_path) == list(range(151, 251))
        # By age: rows with ts below now - max_age go, whatever the row limit.
        assert log.maintain(1000, 1000.0 - 200, 1 << 30, now=2000.0)["pruned_rows"] == 100 - 50
        assert seqs(tmp_path) == list(range(201, 251))
        assert log.maintain(1000, 1e9, 1 << 30, prune=False, now=1e12)["pruned_rows"] == 0
    finally:
        log.close()


def test_journal_is_compacted_past_its_size_and_seqs_continue_after_a_restart(tmp_path):
    log = ObserverLog(tmp_path, background=False, fsync=False)
    for i in range(200):
        log.record({"hook_event_name": "PostToolUse", "i": i})
    log.flush()
    journal = tmp_path / "journal.jsonl"
    big = journal.stat().st_size
    assert log.maintain(10_000, 1e9, big // 2)["journal_bytes_dropped"] > 0
    assert journal.stat().st_size < 100  # only the seq marker: SQLite holds every entry
    log.record({"hook_event_name": "PostToolUse", "i": 200})  # not yet in SQLite: kept by the next compaction
    log.maintain(10_000, 1e9, 10)
    assert b'"i":200' in journal.read_bytes()
    log._journal.close()  # a crash: no close(), no flush of the last record
    log._store.close()
    again = ObserverLog(tmp_path, background=False, fsync=False)
    try:
        assert again.stats()["replayed"] == 1
        assert again.record({"hook_event_name": "PostToolUse"}) == 202
        again.flush()
        assert seqs(tmp_path) == list(range(1, 203))
    finally:
        again.close()


def emit(handler, text):
    handler.emit(logging.LogRecord("t", logging.INFO, __file__, 1, text, None, None))


def test_daemon_log_rotates_and_keeps_its_backups(tmp_path):
    path = tmp_path / "daemon.log"
    handler = SharedRotatingHandler(path, max_bytes=1000, backups=2)
    for i in range(200):
        emit(handler, f"line {i:04d} " + "x" * 40)
    handler.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["daemon.log", "daemon.log.1", "daemon.log.2"]
    assert all(p.stat().st_size <= 1000 for p in tmp_path.iterdir())
    assert "line 0199" in path.read_text()


def test_a_process_writing_after_another_rotated_writes_into_the_live_file(tmp_path):
    """The supervisor and its worker share daemon.log through one inherited handler."""
    path = tmp_path / "daemon.log"
    handler = SharedRotatingHandler(path, max_bytes=1000, backups=2)
    emit(handler, "parent before")
    pid = os.fork()
    if pid == 0:
        try:
            for i in range(40):
                emit(handler, f"worker {i:02d} " + "x" * 40)  # rotates at least once
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert (tmp_path / "daemon.log.1").exists()
    emit(handler, "parent after")
    handler.close()
    assert "parent after" in path.read_text()
    assert "parent after" not in (tmp_path / "daemon.log.1").read_text()


def test_retention_settings_default_from_config_and_take_the_projects_override(tmp_path):
    shipped = load_settings(tmp_path).retention
    assert shipped == Retention()  # config/settings.json states the code's defaults
    assert shipped.observer_max_rows == 1_000_000 and shipped.log_max_bytes == 5 << 20
    (tmp_path / ".claude").mkdir()
    settings = tmp_path / ".claude" / "settings.json"
    settings.write_text(json.dumps({"optimization": {"retention": {"observer_max_rows": 500}}}))
    assert load_settings(tmp_path).retention == Retention(observer_max_rows=500)
    settings.write_text(json.dumps({"optimization": {"retention": {"observer_rows": 500}}}))
    with pytest.raises(ConfigError, match="unknown key 'observer_rows'"):
        load_settings(tmp_path)
    settings.write_text(json.dumps({"optimization": {"retention": {"log_backups": 0}}}))
    with pytest.raises(ConfigError, match="retention.log_backups must be a positive integer"):
        load_settings(tmp_path)


def test_a_log_whose_directory_was_renamed_keeps_writing_where_it_moved(tmp_path):
    (tmp_path / "a").mkdir()
    handler = SharedRotatingHandler(tmp_path / "a" / "daemon.log", max_bytes=1 << 20, backups=1)
    emit(handler, "before")
    (tmp_path / "a").rename(tmp_path / "b")
    emit(handler, "after")  # must not raise: the daemon logs why it exits right after such a rename
    handler.close()
    assert (tmp_path / "b" / "daemon.log").read_text().splitlines()[-1].endswith("after")
    assert not (tmp_path / "a").exists()
