# Put a long-lived interpreter's heap and code on transparent huge pages.
#
# The daemon and the fork servers sit idle between tool calls, then touch a few MB of
# Python objects to answer one event. Where each 4 KiB page costs a TLB and page-table
# walk after idle (a virtual machine's nested paging makes each walk dear: here a page
# touched after 0.3 s idle costs 6-13 us, 2,000 of them 12 ms), a heap on 2 MiB pages
# costs a few walks instead: the same cold Python path runs 2x faster.
#
# Python's own allocator puts objects in 1 MiB arenas mapped wherever the kernel finds a
# gap, which no 2 MiB page can back. With PYTHONMALLOC=malloc (set for the processes we
# start, see STARTUP_ENV) objects come from glibc's heap instead: one contiguous region
# that madvise(MADV_HUGEPAGE) lets the kernel back with huge pages as it grows, and that
# MADV_COLLAPSE (Linux 6.1+) turns into huge pages at once after a warm-up. The
# interpreter's machine code (libpython's text, or the python executable's) is a file
# mapping the kernel backs with 4 KiB pages: it is copied onto an anonymous huge page
# and moved over the original, block by 2 MiB block, where a block holds nothing but
# that file's read-only and executable pages (those pages then read as executable, and
# /proc/PID/maps names no file for them: perf and py-spy cannot find the interpreter
# in that process; HOOKOPT_HUGEPAGES=0 leaves everything as it was). Anything refused
# (THP "never", an older kernel, no ctypes) leaves the process as it was.
#
# Standard library only: forkserver.py reads this file into its own namespace (a zygote
# must not add a module its hooks could see) and the daemon imports it. So this header is
# a comment: read into forkserver.py's namespace, a docstring would replace its own.

import os

MYPY = False  # true for the type checker only (see forkserver.py)
if MYPY:
    from typing import Any

STARTUP_ENV = {"PYTHONMALLOC": "malloc"}  # for the processes we start: their objects go to glibc's heap
SWITCH = "HOOKOPT_HUGEPAGES"  # "0": leave the allocator and the pages as they are (for perf, py-spy...)

_HUGE = 2 << 20
_MADV_HUGEPAGE = 14
_MADV_COLLAPSE = 25
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_PROT_READ, _PROT_WRITE, _PROT_EXEC = 1, 2, 4
_MAP_PRIVATE_ANONYMOUS = 0x22
_MREMAP_MAYMOVE_FIXED = 3


def startup_env(environ: "dict[str, str]") -> "dict[str, str]":
    """What to add to the environment of a daemon or zygote started from environ."""
    return {} if environ.get(SWITCH) == "0" else STARTUP_ENV


class HugePages:
    """This process's code and malloc heap on huge pages: the code once, the heap as it grows.

    Acts only in an interpreter started with STARTUP_ENV (objects on the malloc heap).
    """

    def __init__(self) -> None:
        self.libc = None
        self.collapsed_to = 0  # the heap's end at the last collapse
        self.start = None
        self.text_bytes = 0
        if os.environ.get("PYTHONMALLOC") != STARTUP_ENV["PYTHONMALLOC"]:
            return  # objects in pymalloc's arenas (or a debug allocator), or switched off
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
            libc.sbrk.restype = ctypes.c_void_p
            libc.sbrk.argtypes = (ctypes.c_ssize_t,)
            libc.mmap.restype = ctypes.c_void_p
            libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
            libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
            libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
            libc.mremap.restype = ctypes.c_void_p
            libc.mremap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p)
            # Grow in 2 MiB steps and never give the top back: each trim would split a huge page.
            libc.mallopt(_M_TOP_PAD, _HUGE)
            libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
            code_at = ctypes.cast(ctypes.pythonapi.Py_Initialize, ctypes.c_void_p).value
            self.libc = libc
            self.memmove = ctypes.memmove
        except (ImportError, OSError, AttributeError):
            return
        # Start the heap's growth on a 2 MiB boundary: what was allocated so far stays on small
        # pages, all that comes next can be collapsed (glibc takes the gap as another's sbrk).
        top = libc.sbrk(0) or 0
        if top and top & (_HUGE - 1):
            libc.sbrk(_HUGE - (top & (_HUGE - 1)))
        maps = _maps()
        self.start = next((lo for lo, _, _, path in maps if path == "[heap]"), None)
        self.text_bytes = self._move_code(libc, maps, code_at or 0)

    def collapse(self) -> int:
        """Advise and collapse the heap grown since the last call; bytes newly on huge pages."""
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
        if self.libc.madvise(lo, hi - lo, _MADV_COLLAPSE) != 0:
            # Not supported here, or memory too fragmented now: the advice still lets the
            # kernel's background scan do it later. Try again from the same place next time.
            return 0
        self.collapsed_to = hi
        return hi - lo

    def _move_code(self, libc: "Any", maps: "list[tuple[int, int, str, str]]", code_at: int) -> int:
        """Move the 2 MiB blocks of the file holding the interpreter's code onto huge pages."""
        path = next((p for lo, hi, _, p in maps if lo <= code_at < hi), "")
        if not path.startswith("/"):
            return 0
        ours = [(lo, hi, perms) for lo, hi, perms, p in maps if p == path]
        blocks = sorted({b for lo, hi, perms in ours if "x" in perms for b in range(lo & ~(_HUGE - 1), hi, _HUGE)})
        moved = 0
        for block in blocks:
            if _wholly_readonly(ours, block, block + _HUGE) and self._move_block(libc, block):
                moved += _HUGE
        return moved

    def _move_block(self, libc: "Any", block: int) -> bool:
        raw = libc.mmap(None, 2 * _HUGE, _PROT_READ | _PROT_WRITE, _MAP_PRIVATE_ANONYMOUS, -1, 0)
        if raw is None or raw == (1 << 64) - 1:
            return False
        new = (raw + _HUGE - 1) & ~(_HUGE - 1)
        if new > raw:
            libc.munmap(raw, new - raw)
        if raw + 2 * _HUGE > new + _HUGE:
            libc.munmap(new + _HUGE, raw + 2 * _HUGE - new - _HUGE)
        libc.madvise(new, _HUGE, _MADV_HUGEPAGE)
        self.memmove(new, block, _HUGE)
        if libc.madvise(new, _HUGE, _MADV_COLLAPSE) != 0 or libc.mprotect(new, _HUGE, _PROT_READ | _PROT_EXEC) != 0:
            libc.munmap(new, _HUGE)  # no huge page to be had: keep the file's pages
            return False
        # The same bytes at the same address: code running there (ours included) cannot tell.
        return libc.mremap(new, _HUGE, _HUGE, _MREMAP_MAYMOVE_FIXED, block) == block


def _maps() -> "list[tuple[int, int, str, str]]":
    """This process's mappings: (start, end, permissions, path or [name] or "")."""
    found = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(None, 5)
                lo, _, hi = fields[0].partition("-")
                found.append((int(lo, 16), int(hi, 16), fields[1], fields[5].rstrip("\n") if len(fields) > 5 else ""))
    except OSError:
        pass
    return found


def _wholly_readonly(mappings: "list[tuple[int, int, str]]", lo: int, hi: int) -> bool:
    """Whether [lo, hi) is covered without a gap by mappings that are read-only or executable."""
    at = lo
    for start, end, perms in sorted(mappings):
        if end <= at or start >= hi:
            continue
        if start > at or perms not in ("r--p", "r-xp"):
            return False
        at = end
        if at >= hi:
            return True
    return False
