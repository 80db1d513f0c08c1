"""Keep the daemon's heap on transparent huge pages.

The daemon sits idle between tool calls, then touches a few MB of Python objects to
answer one event. Where each 4 KiB page costs a TLB miss and a page-table walk after
idle (a virtual machine's nested paging makes each walk dear: on the machine we measure
on, a page touched after 0.3 s idle costs 6-13 us, 2,000 of them 12 ms, the same 8 MB
on huge pages 0.24 ms), a heap on 2 MiB pages costs a few walks instead.

Python's own allocator puts objects in 1 MiB arenas mapped wherever the kernel finds a
gap, which no 2 MiB page can back. Started with PYTHONMALLOC=malloc (startup_env: the
clients start it so; it removes the variable from its environment at once), the
daemon's objects come from glibc's heap instead: one
contiguous region that madvise(MADV_HUGEPAGE) and MADV_COLLAPSE (Linux 6.1+) put on
huge pages, block by block as it grows. Anything refused (THP "never", an older kernel,
no ctypes) leaves the heap as it was. The fork servers are left alone: a hook runs
under its interpreter's own allocator, as natively.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["ADDED_ENV", "SWITCH", "HeapPages", "anon_huge_kb", "startup_env", "take_back"]

SWITCH: Final = "HOOKOPT_HUGEPAGES"  # "0": start the daemon on Python's own allocator, pages untouched
ADDED_ENV: Final = "HOOKOPT_ADDED_ENV"  # the names startup_env added, which the daemon takes back out

_MALLOC: Final = ("PYTHONMALLOC", "malloc")
_HUGE: Final = 2 << 20
_MADV_HUGEPAGE: Final = 14
_MADV_COLLAPSE: Final = 25
_M_TRIM_THRESHOLD: Final = -1
_M_TOP_PAD: Final = -2


def startup_env(environ: Mapping[str, str]) -> dict[str, str]:
    """What to add to environ to start a daemon on glibc's malloc (nothing when switched off,
    or when environ chooses an allocator itself)."""
    name, value = _MALLOC
    if environ.get(SWITCH) == "0" or name in environ:
        return {}
    return {name: value, ADDED_ENV: name}


def take_back(environ: os._Environ[str]) -> bool:
    """Remove what startup_env added from the daemon's own environment, before anything can
    inherit it (the http transport's hooks run in it); whether objects are on malloc's heap."""
    name, value = _MALLOC
    on_malloc = environ.get(name) == value
    if name in environ.pop(ADDED_ENV, "").split(","):  # ours, not the user's own
        environ.pop(name, None)
    return on_malloc


class HeapPages:
    """This process's malloc heap on huge pages, as it grows (on_malloc False: a no-op, the
    objects being in pymalloc's arenas or a debug allocator's)."""

    def __init__(self, on_malloc: bool) -> None:
        self.on_malloc = on_malloc
        self.libc: Any = None
        self.start: int | None = None
        self.collapsed_to = 0  # the heap's end at the last collapse
        if not on_malloc:
            return
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
            libc.sbrk.restype = ctypes.c_void_p
            libc.sbrk.argtypes = (ctypes.c_ssize_t,)
        except (ImportError, OSError, AttributeError):
            return
        # Grow in 2 MiB steps and never give the top back: each trim would split a huge page.
        # Setting these also fixes glibc's mmap threshold at 128 KiB (it would otherwise rise to
        # the largest block freed), so a large event's blocks are still mapped on their own and
        # returned when freed, never the heap's for good.
        libc.mallopt(_M_TOP_PAD, _HUGE)
        libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
        self.libc = libc
        self.start = _heap_start()

    def collapse(self) -> int:
        """Advise and collapse the heap grown since the last call; bytes newly on huge pages.

        Each 2 MiB block is tried once: one that cannot be collapsed now (memory too
        fragmented, a kernel without MADV_COLLAPSE) keeps the advice, which lets the
        kernel's background scan do it later, and is not scanned again on every call.
        """
        if self.libc is None or self.start is None:
            return 0
        end = self.libc.sbrk(0) or 0
        base = max(self.start, self.collapsed_to)
        lo, hi = (base + _HUGE - 1) & ~(_HUGE - 1), end & ~(_HUGE - 1)
        if hi <= lo:
            return 0
        # The advice covers all that grew (a heap that grows again becomes a new, unadvised
        # region: the next call takes it); the collapse, the whole 2 MiB blocks within.
        self.libc.madvise(base, end - base, _MADV_HUGEPAGE)
        done = sum(_HUGE for block in range(lo, hi, _HUGE) if self.libc.madvise(block, _HUGE, _MADV_COLLAPSE) == 0)
        self.collapsed_to = hi
        return done

    def stats(self) -> dict[str, Any]:
        """For `hookopt status`: the allocator, and how much of the process the kernel holds on huge pages."""
        return {"allocator": "malloc" if self.on_malloc else "pymalloc", "huge_pages_kb": anon_huge_kb()}


def anon_huge_kb(pid: int | str = "self") -> int | None:
    """How much of a process's anonymous memory the kernel holds on huge pages (None: unknown)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("AnonHugePages:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _heap_start() -> int | None:
    """Where the brk heap begins (None: none mapped, or /proc unreadable)."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                if line.rstrip().endswith("[heap]"):
                    return int(line.split("-", 1)[0], 16)
    except OSError:
        pass
    return None
