"""Claude Code's ``type: "http"`` hooks, answered by the daemon on 127.0.0.1.

POST /hook (hookopt's validators) or /hook/stack[/SCOPE] (a consolidated install) with
the event as JSON and the per-project token header (served by stream_server.StreamServer);
each response is written in one send with TCP_NODELAY (split sends meet Nagle plus
delayed ACK: ~40 ms per event). Under the supervisor, connections are kept alive and
outlive the worker (kept_connections.py); a daemon served without one (tests) answers
one request per connection. A request that cannot be framed (no end of head within 64
KiB, a Content-Length that is not a number, EOF mid-body) closes the connection without
a reply; an oversized one gets 413 and a close.
An http request carries no environment: hooks behind it run in the daemon's.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import secrets
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Protocol

from .kept_connections import Keeper, KeptServer
from .paths import state_dir, write_private
from .protocol import MAX_EVENT_BYTES, HookResult, http_reply
from .stream_server import UNFRAMED, StreamServer

__all__ = ["MAX_HTTP_HEADERS", "MAX_HTTP_HEAD_BYTES", "TOKEN_HEADER", "http_endpoint", "no_delay", "serve_http"]

log = logging.getLogger("hookopt.daemon")

TOKEN_HEADER: Final = "x-hookopt-token"
MAX_HTTP_HEADERS: Final = 100
MAX_HTTP_HEAD_BYTES: Final = 65536  # a request line and headers longer than this cannot be framed


class Answers(Protocol):
    """What the http transport needs of the daemon."""

    project: Path
    endpoint: dict[str, Any]

    async def dispatch(self, raw: bytes, env: Mapping[str, str] | None = None) -> HookResult: ...

    async def dispatch_stack(self, raw: bytes, env: Mapping[str, str], cwd: str, scope: str = "project") -> HookResult: ...


def serve_http(daemon: Answers, sock: socket.socket, kept: Keeper | None = None) -> StreamServer:
    """Answer Claude Code's http hooks from the running loop: on the connections the
    supervisor's keeper hands over (kept alive), else on the listening socket sock."""
    if kept is not None and kept.worker_chan is not None:
        return KeptServer(kept.worker_chan, kept.busy, _Requests(daemon, keep_alive=True))
    return StreamServer(sock, _Requests(daemon), admit=no_delay)


def no_delay(conn: socket.socket) -> bool:
    """Admit the peer with replies going out in one send each: no waiting for an ACK (Nagle)."""
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return True


class _Requests:
    """HTTP/1.1 requests: POST /hook with the event JSON, token header checked."""

    def __init__(self, daemon: Answers, keep_alive: bool = False) -> None:
        self.daemon = daemon
        self.keep_alive = keep_alive  # answered requests leave the connection open (refused ones close it)
        # The environment the hooks behind these requests run in: the daemon's own, taken once
        # (read through os.environ, every event would decode each variable again).
        self.env = dict(os.environ)

    def size(self, buf: bytearray) -> int | None:
        end = buf.find(b"\r\n\r\n", 0, MAX_HTTP_HEAD_BYTES)
        if end < 0:
            return UNFRAMED if len(buf) >= MAX_HTTP_HEAD_BYTES else None
        length = _content_length(bytes(buf[:end]))
        if length is None:
            return UNFRAMED
        if not 0 <= length <= MAX_EVENT_BYTES:
            return end + 4  # answered with 413 at once, the body never read
        return end + 4 + length

    async def answer(self, request: bytes) -> tuple[bytes, bool]:
        head, _, body = request.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, _, rest = lines[0].partition(" ")
        path = rest.split(" ", 1)[0]
        headers: dict[str, str] = {}
        for line in lines[1 : 1 + MAX_HTTP_HEADERS]:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        if not 0 <= int(headers.get("content-length", "0")) <= MAX_EVENT_BYTES:
            return _http(413, b"event too large\n"), True
        token = headers.get(TOKEN_HEADER, "")
        daemon = self.daemon
        if not hmac.compare_digest(token.encode(), str(daemon.endpoint["token"]).encode()):
            return _http(403, b"bad or missing x-hookopt-token\n"), True
        if method != "POST" or not path.startswith("/hook"):
            return _http(404, b"POST /hook with the event as JSON\n"), True
        if path.startswith("/hook/stack"):
            scope = path[len("/hook/stack/") :] or "project"
            result = await daemon.dispatch_stack(body, self.env, str(daemon.project), scope)
        else:
            result = await daemon.dispatch(body)
        status, payload = http_reply(_event_name(body), result)
        keep = self.keep_alive and headers.get("connection", "").lower() != "close"
        # One write, one send: split header/body sends meet Nagle + delayed ACK (~40 ms).
        return _http(status, payload, keep), not keep


def _content_length(head: bytes) -> int | None:
    """The head's Content-Length (0 when absent), None when it is not a number."""
    for line in head.split(b"\r\n")[1 : 1 + MAX_HTTP_HEADERS]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"content-length":
            try:
                return int(value.strip())
            except ValueError:
                return None
    return 0


_REASONS: Final = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 413: "Payload Too Large", 500: "Internal Server Error"}


def _http(status: int, body: bytes, keep_alive: bool = False) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        f"Content-Type: {'application/json' if body.startswith(b'{') else 'text/plain; charset=utf-8'}\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    )
    return head.encode("latin-1") + body


def http_endpoint(project: Path) -> dict[str, Any]:
    """The project's http transport port and token, made once and kept across restarts."""
    path = state_dir(project) / "http.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data.get("token"), str) and len(data["token"]) >= 32 and isinstance(data.get("port"), int):
            return data
    except (OSError, ValueError):
        pass
    data = {"port": 0, "metrics_port": 0, "token": secrets.token_urlsafe(32)}
    write_private(path, json.dumps(data))
    return data


def _event_name(body: bytes) -> str:
    try:
        name = json.loads(body).get("hook_event_name")
    except (ValueError, AttributeError):
        return ""
    return name if isinstance(name, str) else ""
