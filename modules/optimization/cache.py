"""The validator-result cache: TTL + LRU on cachetools, keyed by tool, input and file state.

Results survive a daemon restart through a JSON file (never pickle: the file sits in
the project, and loading it must not run code).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, NamedTuple

from cachetools import Cache, TLRUCache

__all__ = ["FILE_TOOLS", "ValidatorCache", "make_key"]

# Tools whose verdict depends on a file on disk, and the tool_input keys naming it.
FILE_TOOLS: Final = frozenset({"Read", "Write", "Edit", "MultiEdit", "NotebookEdit"})
_PATH_KEYS: Final = ("file_path", "notebook_path")
_ABSENT: Final = "absent"
_FORMAT_VERSION: Final = 1


def _file_state(tool_input: Mapping[str, Any], cwd: str | None) -> list[int] | str | None:
    """Return (mtime_ns, size) of the file the tool names, "absent", or None if it names none."""
    raw = next((v for k in _PATH_KEYS if isinstance(v := tool_input.get(k), str) and v), None)
    if raw is None:
        return None
    path = Path(raw)
    if cwd and not path.is_absolute():
        path = Path(cwd) / path
    try:
        st = os.stat(path)
    except (OSError, ValueError):  # ValueError: a NUL in the path, which cannot exist either
        return _ABSENT
    return [st.st_mtime_ns, st.st_size]


def make_key(validator: str, tool_name: str, tool_input: Mapping[str, Any], cwd: str | None = None) -> str:
    """Return a short canonical key for one validator's verdict on one tool call.

    Key order in tool_input does not matter; for FILE_TOOLS the file's mtime and size
    are part of the key, so an edited file misses. Input that cannot be put in
    canonical form (keys of mixed types, cycles) gets a one-off key: it always
    misses rather than risk a wrong hit.
    """
    material: dict[str, Any] = {"validator": validator, "tool": tool_name, "cwd": cwd, "input": tool_input}
    if tool_name in FILE_TOOLS:
        material["file"] = _file_state(tool_input, cwd)
    try:
        text = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    except (TypeError, ValueError, RecursionError):
        text = "uncacheable:" + os.urandom(16).hex()
    # surrogatepass: json.loads accepts lone surrogates ("\ud800"), plain UTF-8 does not.
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class _Entry(NamedTuple):
    value: Any
    expires: float  # on the cache's timer


def _expires(_key: str, entry: _Entry, _now: float) -> float:
    # Each entry carries its own expiry, so one loaded from disk keeps only what was left.
    return entry.expires


class ValidatorCache:
    """A thread-safe TTL + LRU cache of validator results, optionally persisted.

    Locking lives here, in this class: one lock guards the cachetools TLRUCache
    (which is not thread-safe) and the hit/miss counters. Validators run outside
    it: the engine looks up, runs the misses in parallel, then stores.
    """

    def __init__(
        self,
        maxsize: int,
        ttl: float,
        *,
        timer: Callable[[], float] = time.monotonic,
        path: Path | None = None,
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        if maxsize < 0:
            raise ValueError(f"maxsize must be 0 or more, not {maxsize}")
        if not (ttl > 0 and math.isfinite(ttl)):
            raise ValueError(f"ttl must be a positive number of seconds, not {ttl}")
        self._maxsize = maxsize
        self._ttl = float(ttl)
        self._timer = timer
        self._wallclock = wallclock
        self._path = path
        self._lock = threading.Lock()
        self._cache: TLRUCache[str, _Entry, float] = TLRUCache(maxsize, _expires, timer)
        self._hits = 0
        self._misses = 0
        if path is not None:
            self._load(path)

    @property
    def hits(self) -> int:
        return self._hits

    @property
    def misses(self) -> int:
        return self._misses

    def _lookup(self, key: str) -> _Entry | None:
        with self._lock:
            try:
                entry = self._cache[key]
            except KeyError:
                self._misses += 1
                return None
            self._hits += 1
            return entry

    def get(self, key: str) -> Any | None:
        """Return the cached value for key, or None if it is missing or expired."""
        entry = self._lookup(key)
        return None if entry is None else entry.value

    def _entry(self, value: Any) -> _Entry:
        if value is None:
            raise ValueError("None cannot be cached: get() uses it to mean a miss")
        json.dumps(value)  # fail now with TypeError, not later in save()
        return _Entry(value, self._timer() + self._ttl)

    def put(self, key: str, value: Any) -> None:
        """Store a JSON-serialisable, non-None value under key for ttl seconds."""
        entry = self._entry(value)
        if self._maxsize == 0:
            return  # cachetools refuses every value at maxsize 0: the cache is off
        with self._lock:
            self._cache[key] = entry

    def stats(self) -> dict[str, float | int]:
        """Return hits, misses, hit_rate, size and maxsize."""
        with self._lock:
            hits, misses, size = self._hits, self._misses, len(self._cache)
        total = hits + misses
        return {"hits": hits, "misses": misses, "hit_rate": hits / total if total else 0.0, "size": size, "maxsize": self._maxsize}

    def __len__(self) -> int:
        with self._lock:
            return len(self._cache)

    def clear(self) -> None:
        """Drop every entry; the hit and miss counters keep counting."""
        with self._lock:
            self._cache.clear()

    def save(self) -> None:
        """Write the live entries to path atomically, with wall-clock expiry; no-op without path."""
        if self._path is None:
            return
        with self._lock:
            now, wall = self._timer(), self._wallclock()
            # Cache.__getitem__ peeks without the LRU reordering TLRUCache's own would do.
            rows = [(key, Cache.__getitem__(self._cache, key)) for key in self._cache]
        rows.sort(key=lambda row: row[1].expires)
        data = {
            "version": _FORMAT_VERSION,
            "entries": [{"key": k, "expires": wall + (e.expires - now), "value": e.value} for k, e in rows],
        }
        # ensure_ascii (the default) keeps lone surrogates in values writable as UTF-8.
        text = json.dumps(data, separators=(",", ":"))
        fd, tmp = tempfile.mkstemp(prefix=f".{self._path.name}.", suffix=".tmp", dir=self._path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _load(self, path: Path) -> None:
        """Fill the cache from path, skipping anything expired or malformed; never raise."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):  # ValueError covers bad UTF-8 and bad JSON
            return
        if not isinstance(data, dict) or data.get("version") != _FORMAT_VERSION or not isinstance(data.get("entries"), list):
            return
        now, wall = self._timer(), self._wallclock()
        live: list[tuple[float, str, Any]] = []
        for row in data["entries"]:
            if not isinstance(row, dict):
                continue
            key, expires, value = row.get("key"), row.get("expires"), row.get("value")
            if not isinstance(key, str) or value is None:
                continue
            if isinstance(expires, bool) or not isinstance(expires, (int, float)) or not math.isfinite(expires):
                continue
            # min(): a clock set back, or an older longer ttl, must not stretch an entry's life.
            remaining = min(expires - wall, self._ttl)
            if remaining > 0:
                live.append((remaining, key, value))
        if self._maxsize == 0:
            return
        # Soonest-expiring first, so if the file holds more than maxsize, LRU drops those.
        for remaining, key, value in sorted(live, key=lambda row: row[0]):
            self._cache[key] = _Entry(value, now + remaining)
