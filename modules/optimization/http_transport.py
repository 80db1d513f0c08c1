"""Claude Code's ``type: "http"`` hooks, answered by the daemon on 127.0.0.1.

POST /hook (hookopt's validators) or /hook/stack[/SCOPE] (a consolidated install) with
the event as JSON and the per-project token header; each response is written in one
send with TCP_NODELAY (split sends meet Nagle plus delayed ACK: ~40 ms per event).
An http request carries no environment: hooks behind it run in the daemon's.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import secrets
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Protocol

from .paths import state_dir, write_private
from .protocol import MAX_EVENT_BYTES, HookResult, http_reply

__all__ = ["MAX_HTTP_HEADERS", "TOKEN_HEADER", "http_endpoint", "serve_http"]

log = logging.getLogger("hookopt.daemon")

TOKEN_HEADER: Final = "x-hookopt-token"
MAX_HTTP_HEADERS: Final = 100


class Answers(Protocol):
    """What the http transport needs of the daemon."""

    project: Path
    endpoint: dict[str, Any]

    async def dispatch(self, raw: bytes, env: Mapping[str, str] | None = None) -> HookResult: ...

    async def dispatch_stack(self, raw: bytes, env: Mapping[str, str], cwd: str, scope: str = "project") -> HookResult: ...


async def serve_http(daemon: Answers, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer Claude Code's http hooks: POST /hook with the event JSON, token header checked."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while True:
            request = await reader.readline()
            if not request:
                return
            method, _, rest = request.decode("latin-1").partition(" ")
            path = rest.split(" ", 1)[0]
            headers: dict[str, str] = {}
            for _ in range(MAX_HTTP_HEADERS):
                line = (await reader.readline()).decode("latin-1").strip()
                if not line:
                    break
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            if not 0 <= length <= MAX_EVENT_BYTES:
                writer.write(_http(413, b"event too large\n", close=True))
                return
            body = await reader.readexactly(length)
            keep = headers.get("connection", "").lower() != "close"
            token = headers.get(TOKEN_HEADER, "")
            if not hmac.compare_digest(token.encode(), str(daemon.endpoint["token"]).encode()):
                response = _http(403, b"bad or missing x-hookopt-token\n", close=not keep)
            elif method != "POST" or not path.startswith("/hook"):
                response = _http(404, b"POST /hook with the event as JSON\n", close=not keep)
            else:
                if path.startswith("/hook/stack"):
                    scope = path[len("/hook/stack/"):] or "project"
                    result = await daemon.dispatch_stack(body, os.environ, str(daemon.project), scope)
                else:
                    result = await daemon.dispatch(body)
                status, payload = http_reply(_event_name(body), result)
                response = _http(status, payload, close=not keep)
            # One write, one send: split header/body sends meet Nagle + delayed ACK (~40 ms).
            writer.write(response)
            await writer.drain()
            if not keep:
                return
    except (ConnectionError, asyncio.IncompleteReadError, ValueError) as exc:
        log.warning("bad http request: %s", exc)
    finally:
        writer.close()


_REASONS: Final = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 413: "Payload Too Large", 500: "Internal Server Error"}


def _http(status: int, body: bytes, *, close: bool) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        f"Content-Type: {'application/json' if body.startswith(b'{') else 'text/plain; charset=utf-8'}\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n"
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
