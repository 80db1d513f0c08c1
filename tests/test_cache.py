from __future__ import annotations

import json
import os
import random
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from modules.optimization.cache import FILE_TOOLS, ValidatorCache, make_key
from tests.clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


# --- TTL, LRU, counters ----------------------------------------------------


def test_entry_expires_exactly_at_ttl(clock: FakeClock) -> None:
    cache = ValidatorCache(10, ttl=30, timer=clock)
    cache.put("k", {"decision": "deny"})
    clock.tick(29.999)
    assert cache.get("k") == {"decision": "deny"}
    clock.tick(0.001)
    assert cache.get("k") is None
    assert len(cache) == 0


def test_put_again_refreshes_ttl(clock: FakeClock) -> None:
    cache = ValidatorCache(10, ttl=10, timer=clock)
    cache.put("k", 1)
    clock.tick(8)
    cache.put("k", 2)
    clock.tick(8)
    assert cache.get("k") == 2
    clock.tick(2)
    assert cache.get("k") is None


def test_lru_evicts_least_recently_used(clock: FakeClock) -> None:
    cache = ValidatorCache(3, ttl=60, timer=clock)
    for key in "abc":
        cache.put(key, key.upper())
        clock.tick(1)
    assert cache.get("a") == "A"  # a is now the most recent; b the least
    cache.put("d", "D")
    assert cache.get("b") is None
    assert [cache.get(k) for k in "acd"] == ["A", "C", "D"]
    cache.put("e", "E")  # after those gets, a is the least recently used
    assert cache.get("a") is None
    assert len(cache) == 3


def test_hit_miss_counts_and_rate(clock: FakeClock) -> None:
    cache = ValidatorCache(5, ttl=60, timer=clock)
    assert cache.stats() == {"hits": 0, "misses": 0, "hit_rate": 0.0, "size": 0, "maxsize": 5}
    cache.get("x")
    cache.put("x", True)
    cache.get("x")
    cache.get("x")
    cache.get("y")
    cache.put("y", 7)
    assert (cache.hits, cache.misses) == (2, 2)
    assert cache.stats() == {"hits": 2, "misses": 2, "hit_rate": 0.5, "size": 2, "maxsize": 5}
    cache.clear()
    assert len(cache) == 0 and cache.get("x") is None
    assert (cache.hits, cache.misses) == (2, 3)  # clear keeps the counters


def test_rejects_none_and_values_json_cannot_hold(clock: FakeClock) -> None:
    cache = ValidatorCache(5, ttl=10, timer=clock)
    with pytest.raises(ValueError):
        cache.put("k", None)
    with pytest.raises(TypeError):
        cache.put("k", {1, 2})
    assert len(cache) == 0


def test_maxsize_zero_stores_nothing(clock: FakeClock) -> None:
    cache = ValidatorCache(0, ttl=10, timer=clock)
    cache.put("k", 1)
    assert len(cache) == 0 and cache.get("k") is None


@pytest.mark.parametrize(("maxsize", "ttl"), [(-1, 10), (5, 0), (5, -1), (5, float("inf")), (5, float("nan"))])
def test_bad_arguments_are_refused(maxsize: int, ttl: float) -> None:
    with pytest.raises(ValueError):
        ValidatorCache(maxsize, ttl)


# --- keys --------------------------------------------------------------------


def test_key_is_short_hex_and_covers_each_part() -> None:
    base = make_key("v", "Bash", {"command": "ls"}, "/p")
    assert len(base) == 64 and int(base, 16) >= 0
    assert base == make_key("v", "Bash", {"command": "ls"}, "/p")
    others = {
        make_key("w", "Bash", {"command": "ls"}, "/p"),
        make_key("v", "Grep", {"command": "ls"}, "/p"),
        make_key("v", "Bash", {"command": "ls -a"}, "/p"),
        make_key("v", "Bash", {"command": "ls"}, "/q"),
        make_key("v", "Bash", {"command": "ls"}),
    }
    assert base not in others and len(others) == 5


def test_key_ignores_key_order_nested() -> None:
    a = {"command": "x", "opts": {"b": [1, {"y": 2, "x": 1}], "a": None}}
    b = {"opts": {"a": None, "b": [1, {"x": 1, "y": 2}]}, "command": "x"}
    assert make_key("v", "Bash", a) == make_key("v", "Bash", b)
    # list order is meaningful, unlike dict order
    c = {"command": "x", "opts": {"b": [{"y": 2, "x": 1}, 1], "a": None}}
    assert make_key("v", "Bash", a) != make_key("v", "Bash", c)


def test_key_survives_input_json_cannot_hold() -> None:
    odd: dict[str, Any] = {"path": Path("/x"), "s": {3}, "lone": "\ud800", "text": "héllo ✓"}
    assert make_key("v", "Bash", odd) == make_key("v", "Bash", dict(odd))
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    mixed: dict[Any, Any] = {1: "a", "b": 2}
    for weird in (cyclic, mixed):
        # No canonical form: no crash, and never equal to another call's key (always a miss).
        assert make_key("v", "Bash", weird) != make_key("v", "Bash", weird)


_json_leaves = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
_json_values = st.recursive(
    _json_leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)
_json_dicts = st.dictionaries(st.text(max_size=6), _json_values, max_size=6)


def _shuffled(value: Any, rnd: random.Random) -> Any:
    """Return value with every dict's keys (at any depth) in a random insertion order."""
    if isinstance(value, dict):
        items = list(value.items())
        rnd.shuffle(items)
        return {k: _shuffled(v, rnd) for k, v in items}
    if isinstance(value, list):
        return [_shuffled(v, rnd) for v in value]
    return value


@given(_json_dicts, st.randoms(use_true_random=False))
def test_property_key_order_never_matters(tool_input: dict[str, Any], rnd: random.Random) -> None:
    assert make_key("v", "Bash", tool_input, "/p") == make_key("v", "Bash", _shuffled(tool_input, rnd), "/p")


@given(_json_dicts, _json_dicts)
def test_property_different_inputs_give_different_keys(a: dict[str, Any], b: dict[str, Any]) -> None:
    assume(a != b)
    assert make_key("v", "Bash", a) != make_key("v", "Bash", b)


def test_file_tools_are_the_ones_that_touch_files() -> None:
    assert FILE_TOOLS == {"Read", "Write", "Edit", "MultiEdit", "NotebookEdit"}


def test_key_follows_file_size_and_mtime(tmp_path: Path) -> None:
    f = tmp_path / "a.py"
    f.write_text("print(1)\n")
    os.utime(f, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    edit = {"file_path": str(f), "old_string": "1", "new_string": "2"}
    k1 = make_key("v", "Edit", edit)
    assert make_key("v", "Edit", edit) == k1  # nothing changed, same key

    f.write_text("print(12)\n")  # size changes; put the mtime back so only size differs
    os.utime(f, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    k2 = make_key("v", "Edit", edit)
    assert k2 != k1

    os.utime(f, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_001))  # one nanosecond later
    k3 = make_key("v", "Edit", edit)
    assert k3 not in {k1, k2}


def test_key_for_absent_file_changes_once_it_exists(tmp_path: Path) -> None:
    f = tmp_path / "new.txt"
    write = {"file_path": str(f), "content": "x"}
    absent = make_key("v", "Write", write)
    assert make_key("v", "Write", write) == absent
    f.write_text("")
    assert make_key("v", "Write", write) != absent
    # A path that cannot exist (NUL byte) is absent too, not a crash.
    assert make_key("v", "Write", {"file_path": "a\0b"}) == make_key("v", "Write", {"file_path": "a\0b"})


def test_relative_path_is_resolved_against_cwd(tmp_path: Path) -> None:
    (tmp_path / "nb.ipynb").write_text("{}")
    edit = {"notebook_path": "nb.ipynb", "new_source": "x"}
    before = make_key("v", "NotebookEdit", edit, str(tmp_path))
    (tmp_path / "nb.ipynb").write_text('{"cells": []}')
    assert make_key("v", "NotebookEdit", edit, str(tmp_path)) != before


def test_non_file_tool_ignores_file_state(tmp_path: Path) -> None:
    f = tmp_path / "a.txt"
    f.write_text("1")
    tool_input = {"file_path": str(f), "command": "cat a.txt"}
    before = make_key("v", "Bash", tool_input)
    f.write_text("22")
    assert make_key("v", "Bash", tool_input) == before


# --- persistence -------------------------------------------------------------


def _caches(path: Path, maxsize: int = 10, ttl: float = 60) -> tuple[ValidatorCache, FakeClock, FakeClock]:
    mono, wall = FakeClock(500.0), FakeClock(1_700_000_000.0)
    return ValidatorCache(maxsize, ttl, timer=mono, wallclock=wall, path=path), mono, wall


def test_restart_keeps_values_and_only_the_remaining_ttl(tmp_path: Path) -> None:
    path = tmp_path / "cache.json"
    first, mono, wall = _caches(path)
    first.put("k", {"decision": "deny", "reason": "rm -rf ✗"})
    mono.tick(10)
    wall.tick(10)
    first.put("k2", [1, 2])
    first.save()

    # A new process: its monotonic clock starts elsewhere, 5 s of wall time have passed.
    mono2, wall2 = FakeClock(3.0), FakeClock(wall.now + 5)
    second = ValidatorCache(10, 60, timer=mono2, wallclock=wall2, path=path)
    assert len(second) == 2
    assert second.get("k") == {"decision": "deny", "reason": "rm -rf ✗"}
    mono2.tick(44.9)  # k had 60 - 10 - 5 = 45 s left
    assert second.get("k") is not None
    mono2.tick(0.1)
    assert second.get("k") is None
    assert second.get("k2") == [1, 2]  # k2 has 10 s more
    mono2.tick(10)
    assert second.get("k2") is None


def test_expired_on_disk_entries_are_dropped(tmp_path: Path) -> None:
    path = tmp_path / "cache.json"
    first, mono, wall = _caches(path)
    first.put("old", 1)
    mono.tick(30)
    wall.tick(30)
    first.put("new", 2)
    first.save()
    later = ValidatorCache(10, 60, timer=FakeClock(0), wallclock=FakeClock(wall.now + 30), path=path)
    assert later.get("old") is None
    assert later.get("new") == 2
    assert len(later) == 1


def test_load_never_stretches_ttl(tmp_path: Path) -> None:
    path = tmp_path / "cache.json"
    first, _, wall = _caches(path, ttl=600)
    first.put("k", 1)
    first.save()
    # Reopened with a shorter ttl (or a clock set back): at most the new ttl remains.
    mono = FakeClock(0)
    second = ValidatorCache(10, 60, timer=mono, wallclock=FakeClock(wall.now - 1000), path=path)
    mono.tick(59.9)
    assert second.get("k") == 1
    mono.tick(0.1)
    assert second.get("k") is None


def test_load_respects_maxsize_keeping_the_freshest(tmp_path: Path) -> None:
    path = tmp_path / "cache.json"
    first, mono, wall = _caches(path)
    for i in range(5):
        first.put(f"k{i}", i)
        mono.tick(1)
        wall.tick(1)
    first.save()
    small = ValidatorCache(2, 60, timer=FakeClock(0), wallclock=FakeClock(wall.now), path=path)
    assert len(small) == 2
    assert [small.get(f"k{i}") for i in range(5)] == [None, None, None, 3, 4]


def test_save_is_atomic_json_with_wallclock_expiry(tmp_path: Path) -> None:
    path = tmp_path / "cache.json"
    cache, mono, wall = _caches(path)
    cache.put("k", {"lone": "\ud800"})
    mono.tick(20)
    wall.tick(20)
    cache.save()
    data = json.loads(path.read_bytes().decode("utf-8"))
    assert data["version"] == 1
    assert data["entries"] == [{"key": "k", "expires": wall.now + 40, "value": {"lone": "\ud800"}}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache.json"]  # no temp file left
    cache.put("k2", 2)
    cache.save()  # replaces the file in place
    assert len(json.loads(path.read_text("utf-8"))["entries"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache.json"]


def test_save_does_not_disturb_lru_order(tmp_path: Path) -> None:
    cache, mono, _ = _caches(tmp_path / "cache.json", maxsize=3)
    for key in "abc":
        cache.put(key, key)
        mono.tick(1)
    cache.get("a")  # recency now b < c < a; expiry order is a < b < c
    cache.save()
    cache.put("d", "d")
    assert cache.get("b") is None
    assert cache.get("a") == "a"


def test_save_without_path_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cache = ValidatorCache(5, 10)
    cache.put("k", 1)
    cache.save()
    assert list(tmp_path.iterdir()) == []


def test_missing_file_is_an_empty_cache_and_save_creates_it(tmp_path: Path) -> None:
    path = tmp_path / "cache.json"
    cache, _, _ = _caches(path)
    assert len(cache) == 0 and not path.exists()
    cache.save()
    assert json.loads(path.read_text("utf-8")) == {"version": 1, "entries": []}


def test_save_into_missing_directory_raises_and_leaves_nothing(tmp_path: Path) -> None:
    cache, _, _ = _caches(tmp_path / "gone" / "cache.json")
    cache.put("k", 1)
    with pytest.raises(OSError):
        cache.save()
    assert list(tmp_path.iterdir()) == []


_GOOD_EXPIRY = 1_700_000_000.0 + 30
_CORRUPT = {
    "garbage bytes": b"\x00\xff\xfe\x80garbage",
    "not utf-8 but json-ish": b'{"version": 1, "entries": [{"key": "\xff"}]}',
    "empty": b"",
    "truncated": b'{"version":1,"entries":[{"key":"k","expires":1700000030.0,"val',
    "a json list": b"[1, 2, 3]",
    "null": b"null",
    "wrong version": json.dumps({"version": 99, "entries": [{"key": "k", "expires": _GOOD_EXPIRY, "value": 1}]}).encode(),
    "entries not a list": json.dumps({"version": 1, "entries": {"k": 1}}).encode(),
    "bad entry shapes": json.dumps(
        {
            "version": 1,
            "entries": [
                1,
                "k",
                ["k", _GOOD_EXPIRY, 1],
                {"key": 5, "expires": _GOOD_EXPIRY, "value": 1},
                {"key": "k", "expires": "soon", "value": 1},
                {"key": "k", "expires": True, "value": 1},
                {"key": "k", "expires": None, "value": 1},
                {"key": "k", "expires": _GOOD_EXPIRY, "value": None},
                {"key": "k", "expires": _GOOD_EXPIRY},
                {"expires": _GOOD_EXPIRY, "value": 1},
            ],
        }
    ).encode(),
    "non-finite expiry": b'{"version":1,"entries":[{"key":"a","expires":NaN,"value":1},{"key":"b","expires":Infinity,"value":1}]}',
    "nested too deeply": b"[" * 100_000 + b"]" * 100_000,
}


@pytest.mark.parametrize("content", list(_CORRUPT.values()), ids=list(_CORRUPT))
def test_corrupt_file_gives_empty_cache_and_next_save_repairs_it(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "cache.json"
    path.write_bytes(content)
    cache, _, wall = _caches(path)
    assert len(cache) == 0
    assert cache.get("k") is None
    cache.put("k", {"ok": True})
    cache.save()
    reopened = ValidatorCache(10, 60, timer=FakeClock(0), wallclock=FakeClock(wall.now), path=path)
    assert reopened.get("k") == {"ok": True}


def test_good_entries_survive_beside_bad_ones(tmp_path: Path) -> None:
    path = tmp_path / "cache.json"
    good = {"key": "good", "expires": _GOOD_EXPIRY, "value": [1]}
    path.write_text(json.dumps({"version": 1, "entries": [{"key": 1}, good, "junk"]}), "utf-8")
    cache, _, _ = _caches(path)
    assert len(cache) == 1 and cache.get("good") == [1]


def test_directory_in_place_of_the_file_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "cache.json"
    path.mkdir()
    cache, _, _ = _caches(path)
    assert len(cache) == 0


# --- threads -----------------------------------------------------------------


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Switch threads as often as possible, so unguarded read-modify-writes interleave."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


@pytest.mark.usefixtures("fast_switching")
def test_threads_hammering_get_and_put_keep_counts_consistent() -> None:
    cache = ValidatorCache(16, ttl=60)
    keys = [f"k{i}" for i in range(24)]  # more keys than room, so eviction runs too
    n_threads, n_calls = 8, 2000
    errors: list[str] = []
    start = threading.Barrier(n_threads, timeout=10)

    def worker(seed: int) -> None:
        rnd = random.Random(seed)
        start.wait()
        for _ in range(n_calls):
            key = rnd.choice(keys)
            value = cache.get(key)
            if value is None:
                cache.put(key, key.upper())
            elif value != key.upper():
                errors.append(key)
            len(cache)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert cache.hits + cache.misses == n_threads * n_calls
    assert cache.misses >= len(keys)  # each key missed at least once
    assert len(cache) == 16
    stats = cache.stats()
    assert stats["hit_rate"] == pytest.approx(cache.hits / (n_threads * n_calls))
