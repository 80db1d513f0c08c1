"""daemon.log: size-rotated, and safe to share between the supervisor and its worker.

Both processes write through the handler the supervisor set up before forking. When
one rotates, the other's stream still points at the renamed file; each record first
checks that the path still names the file it holds (as WatchedFileHandler does) and
reopens it if not, so no process keeps writing into a backup that nobody reads. Logging
never raises: when the path cannot be opened (its directory was renamed away) the
handler keeps the file it holds, which moved with the directory.
"""

from __future__ import annotations

import logging
import os
from logging.handlers import RotatingFileHandler
from pathlib import Path

__all__ = ["SharedRotatingHandler", "log_to"]

FORMAT = "%(asctime)s %(process)d %(levelname)s %(message)s"


class SharedRotatingHandler(RotatingFileHandler):
    """RotatingFileHandler that reopens its file when another process rotated it away."""

    def __init__(self, path: Path, *, max_bytes: int, backups: int) -> None:
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        self._ident = self._stat_stream()

    def _stat_stream(self) -> tuple[int, int] | None:
        if self.stream is None:
            return None
        st = os.fstat(self.stream.fileno())
        return (st.st_dev, st.st_ino)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            st = os.stat(self.baseFilename)
            current: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except OSError:
            current = None
        if current != self._ident and self.stream is not None:
            try:
                stream = self._open()
            except OSError:
                stream = None  # the directory itself is gone (project renamed): keep the file we hold
            if stream is not None:
                self.stream.close()
                self.stream = stream
                self._ident = self._stat_stream()
        super().emit(record)

    def doRollover(self) -> None:  # noqa: N802 (the stdlib's name)
        super().doRollover()
        self._ident = self._stat_stream()


def log_to(path: Path, *, max_bytes: int, backups: int, level: int = logging.INFO) -> SharedRotatingHandler:
    """Send the root logger to path, rotated at max_bytes with that many backups."""
    handler = SharedRotatingHandler(path, max_bytes=max_bytes, backups=backups)
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    return handler
