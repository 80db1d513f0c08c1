"""The wire between the thin clients and the daemon: frames, limits, runtime paths.

Standard library only, and only modules the interpreter has already loaded (``posix``,
``sys``): the thin clients import this on every tool call, under ``python -S``.

Frame format (both directions): a 4-byte big-endian header length, a JSON header,
then raw byte sections whose lengths the header gives. Nothing is pickled.
  request:  {"v":1,"op":OP,"project":N,"env":N,"cwd":N,"script":N,"argv":N,"body":N} + sections in that order
  reply:    {"v":1,"exit":X,"out":N,"err":M} + stdout + stderr, or {"v":1,"error":"..."}
``env`` is the client's environment as NUL-separated KEY=VALUE bytes, exactly; ``argv``
is NUL-separated too. Ops: ``event`` (hookopt's own validators), ``stack`` (the
project's installed hook stack; argv names its settings scope), ``legacy`` (one
installed script), ``status``, ``stop``.
"""

import posix

MYPY = False
if MYPY:  # for the type checker only: importing typing would cost every tool call
    import _socket

VERSION = 1
MAX_EVENT_BYTES = 16 * 1024 * 1024  # matches protocol.MAX_EVENT_BYTES
MAX_HEADER_BYTES = 4096
DEFAULT_TIMEOUT_MS = 3000  # used until the daemon has written its profile's value
BOOT_BACKOFF_S = 30  # after a daemon failed to boot, clients wait this long before trying again
RUNTIME_ROOT = "/tmp"  # $HOOKOPT_RUNTIME_DIR overrides it (tests, unusual systems)
HOOKOPT_BIN = "HOOKOPT_PYTHON"  # override the interpreter that runs the daemon


def runtime_dir() -> str:
    """The per-user directory holding sockets, pid, lock and port files (0700)."""
    root = posix.environ.get(b"HOOKOPT_RUNTIME_DIR")
    return f"{root.decode() if root else RUNTIME_ROOT}/hookopt-{posix.getuid()}"


def project_key(project: str) -> str:
    """A short, stable name for a project path (FNV-1a 64): socket paths must stay short."""
    h = 0xCBF29CE484222325
    for byte in project.encode("utf-8", "surrogateescape"):
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def runtime_path(project: str, suffix: str) -> str:
    """The runtime file of a project's daemon: .sock, .pid, .lock, .timeout, .http, .metrics."""
    return f"{runtime_dir()}/{project_key(project)}{suffix}"


def secure_dir(path: str) -> bool:
    """Whether path is a real directory owned by us that nobody else can enter."""
    try:
        st = posix.lstat(path)
    except OSError:
        return False
    return (st.st_mode & 0o170000) == 0o040000 and st.st_uid == posix.getuid() and not st.st_mode & 0o077


SECTIONS = ("project", "env", "cwd", "script", "argv", "body")
LEGACY_ENV = "HOOKOPT_RUNNING_LEGACY"  # set while a stub's original runs, so it never calls back


def encode_request(op: str, **sections: bytes) -> bytes:
    """Build one request frame from the named byte sections (missing ones are empty)."""
    parts = [sections.get(name, b"") for name in SECTIONS]
    lengths = b",".join(b'"%s":%d' % (name.encode(), len(part)) for name, part in zip(SECTIONS, parts, strict=True))
    header = b'{"v":%d,"op":"%s",%s}' % (VERSION, op.encode(), lengths)
    return len(header).to_bytes(4, "big") + header + b"".join(parts)


def recv_exactly(sock: "_socket.socket", n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise ConnectionError("daemon closed the connection")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def parse_reply_header(header: bytes) -> "tuple[int, int, int] | None":
    """Read (exit, out length, err length) from a reply header; None for a refusal."""
    fields = {}
    for part in header.strip(b"{} ").split(b","):
        key, _, value = part.partition(b":")
        fields[key.strip(b' "')] = value.strip()
    if b"error" in fields or fields.get(b"v") != b"%d" % VERSION:
        return None
    return int(fields[b"exit"]), int(fields[b"out"]), int(fields[b"err"])


DISABLED_SUFFIX = ".disabled"  # written by a daemon that found "enabled": false in the settings
