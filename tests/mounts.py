"""Real read-only and full filesystems for fault tests.

As root, file modes do not stop writes, so "read-only" is a read-only bind mount and
"full" is a tiny tmpfs. Where mount(8) is not permitted the test fails (run the suite as
root, as CI does): a fault test must not quietly stand down."""

import contextlib
import subprocess

import pytest


def _mount(*args):
    proc = subprocess.run(["mount", *map(str, args)], capture_output=True, text=True, check=False)
    if proc.returncode:
        pytest.fail(f"mount {' '.join(map(str, args))} is not permitted here: {proc.stderr.strip()}", pytrace=False)


@contextlib.contextmanager
def tiny_tmpfs(path, size):
    """Mount a tmpfs of size bytes on path, so the directory can be filled for real."""
    path.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", path)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@contextlib.contextmanager
def read_only(path):
    """Make path read-only with a read-only bind mount over itself (root ignores file modes).
    Files already open for writing keep working: the mount applies to new opens."""
    _mount("--bind", path, path)
    try:
        _mount("-o", "remount,bind,ro", path)
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory):
    """Take every free block of the filesystem holding directory; return the filler file."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 4096)
    return filler

