"""The per-project daemon: one warm process that answers every hook event.

Started lazily by the first thin client (detached, a single instance under a lock),
it serves a unix socket in a 0700 directory (socket 0600, peers of another uid
refused), Claude Code's ``type: "http"`` hooks on 127.0.0.1 (token checked), and
``/metrics`` on loopback. It reloads its configuration when the files change,
exits after the profile's idle timeout, and on SIGTERM flushes batches and the
journal before it goes.

``main`` runs the daemon under a supervisor (supervisor.py): the parent holds the lock
and the listening sockets, and forks the worker that serves them; a worker that crashes
or hangs is replaced on the same socket, port and token, so Claude Code's http hooks are
unguarded only for the calls in flight when it died (issue 13).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import fcntl
import hmac
import json
import logging
import os
import py_compile
import secrets
import shlex
import signal
import socket
import sqlite3
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from . import wire
from .async_db import ObserverLog
from .hook_integration import GUARDED_EVENTS, Engine, bad_input, not_recorded
from .integrated_optimizer import DEFAULTS_PATH, AdaptiveSwitcher, ConfigError, LoadSample, Retention, Settings, load_settings
from .legacy_runner import LegacyRunner
from .logfile import log_to
from .observers import ObserverHook, ObserverRuns
from .paths import state_dir
from .performance_monitor import Monitor
from .pipeline import Pipeline, Stage
from .protocol import MAX_EVENT_BYTES, HookResult, ProtocolError, http_reply, parse_event
from .stack import StackHook, combine_selected, load_stacks
from .supervisor import Policy, Supervisor, WorkerContext
from .unix_server import FrameProtocol

__all__ = ["Daemon", "main"]

log = logging.getLogger("hookopt.daemon")

EXIT_OK, EXIT_RUNNING, EXIT_CONFIG, EXIT_INSECURE, EXIT_PROJECT_GONE = 0, 0, 3, 4, 6
# Exits a worker chooses: the supervisor ends rather than respawning (5 is its own "gave up").
FINAL_EXITS: Final = frozenset({EXIT_OK, EXIT_CONFIG, EXIT_INSECURE, EXIT_PROJECT_GONE})
TOKEN_HEADER: Final = "x-hookopt-token"
MAX_HTTP_HEADERS: Final = 100
_TICK_S: Final = 1.0
_RECORD_TIMEOUT_S: Final = 5.0  # journaling an observer event; a stalled disk must not hold the answer longer
_SAMPLE_EVERY: Final = 10  # ticks between load samples for the adaptive mode
_OBSERVER_DRAIN_S: Final = 10.0  # a stop waits this long for queued observer hooks; the rest run at the next start
_PRUNE_EVERY: Final = 30  # ticks between pruning passes over observer.db (the journal's size is checked every tick)
_SECTION_LIMITS: Final = {"body": MAX_EVENT_BYTES + 1, "env": 1 << 20, "argv": 1 << 20, "project": 4096, "cwd": 4096, "script": 4096}


def ensure_runtime_dir() -> Path:
    """Create the per-user runtime directory 0700, or refuse one we do not own."""
    path = Path(wire.runtime_dir())
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    if not wire.secure_dir(str(path)):
        raise PermissionError(f"{path} is not a private directory owned by uid {os.getuid()} (mode 0700, no symlink)")
    return path


def apply_debug(settings: Settings) -> None:
    """Log at DEBUG (every request) when the settings say debug, else at INFO."""
    logging.getLogger().setLevel(logging.DEBUG if settings.debug else logging.INFO)


def mark_disabled(project: Path) -> None:
    """Tell the project's clients that optimization is off (enabled: false): they run the
    hooks without a daemon until the project's settings change."""
    _write_private(Path(wire.runtime_path(str(project), wire.DISABLED_SUFFIX)), "enabled: false\n")


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


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
    _write_private(path, json.dumps(data))
    return data


@dataclasses.dataclass(frozen=True, slots=True)
class Listeners:
    """The daemon's listening sockets; the supervisor keeps them open across worker restarts."""

    unix: socket.socket
    http: socket.socket
    sock_path: Path

    def close(self) -> None:
        """Close both and remove the socket file."""
        self.unix.close()
        self.http.close()
        self.sock_path.unlink(missing_ok=True)


def bind_listeners(project: Path, endpoint: Mapping[str, Any]) -> Listeners:
    """Listen on the project's unix socket (0600) and on its saved http port (another if taken)."""
    sock_path = Path(wire.runtime_path(str(project), ".sock"))
    sock_path.unlink(missing_ok=True)  # we hold the lock, so any socket there is stale
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        unix.bind(str(sock_path))
    finally:
        os.umask(old_umask)
    os.chmod(sock_path, 0o600)
    unix.listen(128)
    http = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    http.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    port = int(endpoint.get("port") or 0)
    try:
        http.bind(("127.0.0.1", port))
    except OSError as exc:
        # The saved port is taken: take a new one (install writes it into the hooks again).
        log.warning("http port %d unavailable (%s); choosing another", port, exc)
        http.bind(("127.0.0.1", 0))
    http.listen(128)
    return Listeners(unix, http, sock_path)


def _no_beat() -> None:
    pass


def _claude_pid(raw: bytes) -> dict[str, str]:
    """Just CLAUDE_PID from a NUL-separated environment."""
    start = raw.find(b"CLAUDE_PID=")
    if start < 0 or (start and raw[start - 1] != 0):
        return {}
    end = raw.find(b"\0", start)
    return {"CLAUDE_PID": raw[start + 11 : end if end >= 0 else len(raw)].decode("ascii", "replace")}


def _file_stamps(paths: Sequence[Path]) -> list[tuple[int, int, int] | None]:
    """Identity, size and mtime of each file (None when missing): a cheap test for a change."""
    stamps: list[tuple[int, int, int] | None] = []
    for path in paths:
        try:
            st = path.stat()
            stamps.append((st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            stamps.append(None)
    return stamps


def _parse_env(raw: bytes) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep and key:
            env[os.fsdecode(key)] = os.fsdecode(value)
    return env


class Daemon:
    """Serve hook events for one project until idle, told to stop, or killed."""

    def __init__(self, project: Path, settings: Settings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.project = project
        self.settings = settings
        self.clock = clock
        self.started = clock()
        self.last_activity = self.started
        self.monitor = Monitor()
        self.monitor.set_profile(settings.profile.name, "start")
        self.engine = Engine(project, settings, monitor=self.monitor)
        profile = settings.profile
        self.state = state_dir(project)
        self.observers = ObserverLog(
            self.state, batch_size=profile.batch_size, max_wait_s=profile.batch_wait_ms / 1000, fsync=False,
            on_batch=self.monitor.observe_batch,
        )
        self.observers.ingest_spool()
        self.post = self._post_pipeline()
        self.sessions: set[int] = set()  # Claude Code pids seen; the daemon stays while one lives
        self.events = 0
        self.stop_event = asyncio.Event()
        self.endpoint = http_endpoint(project)
        self.runner = LegacyRunner()
        # Hooks marked as observers: journaled before the answer, run after it (observers.py).
        self.observer_runs = ObserverRuns(self.state, self._run_observers)
        self.stacks = load_stacks(project)  # every scope's install that applies here (the user scope's too)
        self._stack_stamps = _file_stamps(self.stacks.watched())
        self._watched = self._stamps()
        self.switcher = AdaptiveSwitcher(settings) if settings.adaptive else None
        self._sampled = (self.clock(), 0)
        self._servers: list[asyncio.AbstractServer] = []
        self._metrics: Any = None
        self._ingest_error = ""
        self.heartbeat: Callable[[], None] = _no_beat  # a supervised worker tells its supervisor it lives
        self.supervision: dict[str, object] | None = None
        self.exit_code = EXIT_OK
        self._identity = _identity(project)
        self._env_raw, self._env = b"", _parse_env(b"")  # the last client environment, decoded (never mutated)

    # -- evaluation ---------------------------------------------------------

    def _record(self, ctx: dict[str, Any]) -> dict[str, Any]:
        return {"seq": self.observers.record(ctx["event"])}

    async def _analyze(self, ctx: dict[str, Any]) -> dict[str, Any]:
        # On the daemon's own loop: each thread hand-off costs more CPU than the analysis itself.
        return {"result": await self.engine.evaluate_async(ctx["event"])}

    def _post_pipeline(self) -> Pipeline:
        """Observers: journal (on a pool thread, so a stalled disk costs its timeout, not the loop), then analyze."""
        return Pipeline(
            [
                Stage("record", self._record, timeout_s=_RECORD_TIMEOUT_S),
                Stage("analyze", self._analyze, timeout_s=self.settings.profile.deadline_ms / 1000),
            ]
        )

    async def dispatch(self, raw: bytes, env: Mapping[str, str] | None = None) -> HookResult:
        """Evaluate one raw event: guards run at once; observers are journaled first."""
        self.last_activity = self.clock()
        self.events += 1
        self._track_session(env or {})
        try:
            event = parse_event(raw)
        except ProtocolError as exc:
            return HookResult(*bad_input(raw, exc))
        if event["hook_event_name"] in GUARDED_EVENTS:
            return await self.engine.evaluate_async(event)
        # The engine's pool now, not the one at construction: a reload replaces the engine.
        outcome = await self.post.run_async({"event": event}, executor=self.engine.pool)
        record, analyze = outcome.results
        for stage in (record, analyze):
            if not stage.ok:
                log.error("%s stage %s: %s %s", event["hook_event_name"], stage.name, stage.status, stage.error)
                self.monitor.fallback(f"{stage.name}_{stage.status}")
        result = outcome.context.get("result")
        result = result if isinstance(result, HookResult) else HookResult(0)
        if record.status == "error":
            # Not journaled (state directory full or read-only): tell the user, never drop it silently.
            note = not_recorded(event, f"cannot journal it in {self.state}: {record.error}")
            result = dataclasses.replace(result, stderr=result.stderr + note)
        return result

    def _active(self, env: Mapping[str, str]) -> None:
        """An event arrived: restart the idle clock and remember its Claude Code session."""
        self.last_activity = self.clock()
        self._track_session(env)

    def _track_session(self, env: Mapping[str, str]) -> None:
        if (pid := env.get("CLAUDE_PID", "")).isdigit():
            self.sessions.add(int(pid))

    # -- unix socket ----------------------------------------------------------

    async def answer_frame(self, reader: asyncio.StreamReader, size: int) -> bytes:
        if size > wire.MAX_HEADER_BYTES:
            raise ProtocolError(f"frame header of {size} bytes")
        raw_header = await reader.readexactly(size)
        try:
            header = json.loads(raw_header)
        except (ValueError, RecursionError) as exc:
            raise ProtocolError(f"unreadable frame header: {exc}") from None
        if not isinstance(header, dict) or header.get("v") != wire.VERSION:
            raise ProtocolError(f"unsupported frame header {raw_header[:200]!r}")
        lengths: list[int] = []
        for name in wire.SECTIONS:
            length = header.get(name, 0)
            if not isinstance(length, int) or not 0 <= length <= _SECTION_LIMITS.get(name, 65536):
                raise ProtocolError(f"frame section {name} of {length!r} bytes")
            lengths.append(length)
        # The sections follow one another: one read for all of them, then slices.
        data = await reader.readexactly(sum(lengths))
        sections: dict[str, bytes] = {}
        offset = 0
        for name, length in zip(wire.SECTIONS, lengths, strict=True):
            sections[name] = data[offset : offset + length]
            offset += length
        for name in ("project", "cwd", "script"):
            if b"\0" in sections[name]:  # a path: the OS would refuse it deeper down, with a ValueError
                raise ProtocolError(f"frame section {name} holds a NUL byte")
        project = sections["project"].decode("utf-8", "surrogateescape")
        if project != str(self.project):
            return _reply_error(f"this daemon serves {self.project}, not {project}")
        op = header.get("op")
        if log.isEnabledFor(logging.DEBUG):
            log.debug("request op=%s body=%d bytes cwd=%s", op, len(sections["body"]), sections["cwd"].decode("utf-8", "replace"))
        if op == "status":
            return _reply(HookResult(0, json.dumps(self.status()).encode()))
        if op == "stop":
            self.stop_event.set()
            return _reply(HookResult(0, b"stopping\n"))
        cwd = sections["cwd"].decode("utf-8", "surrogateescape") or str(self.project)
        if op == "event":
            # Built-in validators read no client environment: decoding it all would cost every event.
            return _reply(await self.dispatch(sections["body"], _claude_pid(sections["env"])))
        if sections["env"] != self._env_raw:
            # One dict per distinct environment (a session's hooks send the same bytes): the
            # legacy runner derives what it needs from it once, not per hook and event.
            self._env_raw, self._env = sections["env"], _parse_env(sections["env"])
        env = self._env
        if op == "stack":  # argv: the client's scope (project when empty)
            scope = sections["argv"].decode("utf-8", "replace") or "project"
            return _reply(await self.dispatch_stack(sections["body"], env, cwd, scope))
        if op == "legacy":
            self._active(env)  # a stub's call is activity too: a stubs-only daemon must not idle out under traffic
            script = sections["script"].decode("utf-8", "surrogateescape")
            argv = [os.fsdecode(a) for a in sections["argv"].split(b"\0")] if sections["argv"] else []
            command = self.legacy_command(script, argv, cwd)
            if command is None:
                return _reply_error(f"{script} is not an installed hook of {self.project}")
            # One stubbed hook: its own result, untouched, as if Claude Code had spawned it.
            (result,) = await self.run_legacy([StackHook(command)], sections["body"], env, cwd)
            return _reply(result)
        raise ProtocolError(f"unknown op {op!r}")

    # -- the project's own hooks, warm ----------------------------------------

    def legacy_command(self, script: str, argv: Sequence[str], cwd: str) -> str | None:
        """The command an installed stub stands for: its original interpreter on the script."""
        path = os.path.realpath(os.path.join(cwd, script))
        interpreter = self.stacks.legacy_command(path)
        if interpreter is None:  # installed since the last look?
            self._refresh_stacks()
            interpreter = self.stacks.legacy_command(path)
        return None if interpreter is None else shlex.join([interpreter, script, *argv])

    async def run_legacy(self, hooks: Sequence[StackHook], raw: bytes, env: Mapping[str, str], cwd: str) -> list[HookResult]:
        """Run hooks warm in parallel, as Claude Code runs them; their results in the same order."""

        async def one(hook: StackHook) -> HookResult:
            start = time.perf_counter()
            result = await self.runner.run(hook.command, stdin=raw, env=env, cwd=cwd, timeout_s=hook.timeout_s)
            status = "timeout" if result.timed_out else "ok"
            self.monitor.observe_validator(f"hook:{hook.command[-60:]}", time.perf_counter() - start, status)
            return result

        return list(await asyncio.gather(*(one(h) for h in hooks)))

    async def _run_observers(self, hooks: Sequence[ObserverHook], raw: bytes, env: Mapping[str, str], cwd: str) -> list[HookResult]:
        return await self.run_legacy([StackHook(h.command, h.timeout_s, observer=True) for h in hooks], raw, env, cwd)

    async def dispatch_stack(self, raw: bytes, env: Mapping[str, str], cwd: str, scope: str = "project") -> HookResult:
        """Answer one event with a scope's installed stack; observers journaled first."""
        self.last_activity = self.clock()
        self.events += 1
        self._track_session(env)
        try:
            event = parse_event(raw)
        except ProtocolError as exc:
            return HookResult(*bad_input(raw, exc))
        self._refresh_stacks()
        installed = self.stacks.get(scope)
        if installed is None or installed.manifest is None:
            return HookResult(*bad_input(raw, ConfigError(f"hookopt is not installed in the {scope} scope of {self.project}")))
        note = b""
        if event["hook_event_name"] not in GUARDED_EVENTS:
            try:
                self.observers.record(event)  # journaled before the answer: an observer event is never lost
            except OSError as exc:
                log.error("%s event not recorded: %s", event["hook_event_name"], exc)
                note = not_recorded(event, f"cannot journal it in {self.state}: {exc}")
        start = time.perf_counter()
        hooks = self.stacks.select(scope, event)
        if observers := [ObserverHook(h.command, h.timeout_s) for h in hooks if h.observer]:
            try:
                self.observer_runs.submit(event["hook_event_name"], observers, raw, env, cwd)
            except (OSError, ValueError) as exc:
                # Not journaled: run them now, as part of the answer, rather than lose them.
                log.error("observer hooks of a %s event not journaled, run inline: %s", event["hook_event_name"], exc)
            else:
                hooks = [h for h in hooks if not h.observer]
        result = combine_selected(event, hooks, await self.run_legacy(hooks, raw, env, cwd))
        self.monitor.observe_event(event["hook_event_name"], "stack", time.perf_counter() - start)
        return dataclasses.replace(result, stderr=result.stderr + note) if note else result

    # -- http transport -------------------------------------------------------

    async def handle_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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
                if not hmac.compare_digest(token.encode(), str(self.endpoint["token"]).encode()):
                    response = _http(403, b"bad or missing x-hookopt-token\n", close=not keep)
                elif method != "POST" or not path.startswith("/hook"):
                    response = _http(404, b"POST /hook with the event as JSON\n", close=not keep)
                else:
                    if path.startswith("/hook/stack"):
                        scope = path[len("/hook/stack/"):] or "project"
                        result = await self.dispatch_stack(body, os.environ, str(self.project), scope)
                    else:
                        result = await self.dispatch(body)
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

    # -- lifecycle ------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """A JSON-able summary for `hookopt status`."""
        return {
            "pid": os.getpid(),
            "project": str(self.project),
            "profile": self.settings.profile.name,
            "uptime_s": round(self.clock() - self.started, 3),
            "events": self.events,
            "pool": self.engine.pool.stats(),
            "cache": self.engine.cache.stats(),
            "breakers": self.engine.breakers.states(),
            "observers": self.observers.stats(),
            "observer_hooks": self.observer_runs.stats(),
            "legacy": self.runner.stats(),
            "installed": bool(self.stacks.installed()),
            "scopes": [s.scope.name for s in self.stacks.installed()],
            "http_port": self.endpoint.get("port"),
            "metrics_port": self.endpoint.get("metrics_port"),
            "monitor": self.monitor.snapshot(),
            "supervisor": self.supervision,
        }

    def _stamps(self) -> dict[str, int]:
        stamps = {}
        for path in (self.project / ".claude" / "settings.json", DEFAULTS_PATH, *self.stacks.watched(), *self.settings.validator_files):
            try:
                stamps[str(path)] = path.stat().st_mtime_ns
            except OSError:
                stamps[str(path)] = 0
        return stamps

    def _refresh_stacks(self) -> None:
        """Reload the installs if a scope's manifest or settings changed: an install of another
        scope (the user scope serves every project's daemon) counts from its first event."""
        stamps = _file_stamps(self.stacks.watched())
        if stamps != self._stack_stamps:
            try:
                self.stacks = load_stacks(self.project)
            except ValueError as exc:
                log.error("install manifest unreadable, keeping the previous one: %s", exc)
            self._stack_stamps = _file_stamps(self.stacks.watched())

    def reload_if_changed(self) -> bool:
        """Rebuild the engine when a configuration file changed; keep the old one if the new is invalid."""
        stamps = self._stamps()
        if stamps == self._watched:
            return False
        self._watched = stamps
        self._refresh_stacks()
        try:
            settings = load_settings(self.project, os.environ)
            if not settings.enabled:
                log.info("optimization disabled (enabled: false): stopping; hooks run without the daemon")
                mark_disabled(self.project)
                self.stop_event.set()
                return True
            self._use(settings, "configuration reloaded")
        except ConfigError as exc:
            log.error("configuration changed but is invalid, keeping the previous one: %s", exc)
            return False
        self.switcher = AdaptiveSwitcher(settings) if settings.adaptive else None
        return True

    def _use(self, settings: Settings, reason: str) -> None:
        """Swap in an engine built for these settings; the old one finishes and saves its cache."""
        old, self.engine = self.engine, Engine(self.project, settings, monitor=self.monitor)
        self.settings = settings
        apply_debug(settings)
        self.post = self._post_pipeline()  # the analyze stage's timeout follows the profile
        self.monitor.set_profile(settings.profile.name, reason)
        self._write_timeout()
        old.close()
        log.info("profile %s: %s", settings.profile.name, reason)

    def sample_load(self) -> LoadSample:
        """Load since the last sample: event rate, p95 latency, queue depth, free memory."""
        now, events = self.clock(), self.events
        since, before = self._sampled
        self._sampled = (now, events)
        p95 = max((self.monitor.percentiles(f"event:{name}").get("p95", 0.0) for name in ("PreToolUse", "PostToolUse")), default=0.0)
        return LoadSample((events - before) / max(now - since, 1e-9), p95, self.engine.pool.queue_depth, _available_mb())

    def adapt(self) -> None:
        """Feed the adaptive switcher one sample and follow its decision."""
        if self.switcher is None:
            return
        switch = self.switcher.observe(self.sample_load())
        if switch is not None:
            self._use(self.switcher.settings, f"adaptive: {switch.reason}")

    def idle(self) -> bool:
        """Whether the daemon has been idle past its timeout with no live Claude Code session."""
        for pid in list(self.sessions):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                self.sessions.discard(pid)
            except PermissionError:
                pass
        quiet = self.clock() - self.last_activity
        return not self.sessions and not self.observer_runs.busy and quiet >= self.settings.profile.idle_timeout_s

    def _write_timeout(self) -> None:
        _write_private(Path(wire.runtime_path(str(self.project), ".timeout")), str(self.settings.profile.client_timeout_ms))

    async def _tick(self) -> None:
        ticks = 0
        while not self.stop_event.is_set():
            ticks += 1
            try:
                await asyncio.wait_for(self.stop_event.wait(), _TICK_S)
            except TimeoutError:
                pass
            self.reload_if_changed()
            self._ingest_spool()
            self.engine.pool.reap_idle()  # workers idle past the profile's timeout leave, down to its minimum
            self.monitor.set_queue_depth("pool", self.engine.pool.queue_depth)
            self.monitor.set_queue_depth("observers", self.observers.stats()["pending"])
            for name, state in self.engine.breakers.states().items():
                self.monitor.set_breaker_state(name, state)
            if ticks % _SAMPLE_EVERY == 0:
                self.adapt()
            self.maintain(prune=ticks % _PRUNE_EVERY == 0)
            self.heartbeat()
            if self.project_moved():
                log.error("project directory %s was moved or removed; exiting (clients answer in-process)", self.project)
                self.exit_code = EXIT_PROJECT_GONE
                self.stop_event.set()
            elif self.idle():
                log.info("idle for %ss, exiting", self.settings.profile.idle_timeout_s)
                self.stop_event.set()

    def maintain(self, *, prune: bool = True) -> None:
        """Apply the retention settings to the journal and, with prune, observer.db (daemon.log rotates by itself)."""
        keep = self.settings.retention
        try:
            done = self.observers.maintain(
                keep.observer_max_rows, keep.observer_max_age_days * 86400.0, keep.journal_max_bytes, prune=prune
            )
        except (OSError, sqlite3.Error) as exc:
            log.error("retention pass failed (tried again later): %s", exc)
            return
        if any(done.values()):
            log.info("retention: %s", done)

    def project_moved(self) -> bool:
        """Whether the project directory is gone, or the path now names another directory."""
        return _identity(self.project) != self._identity

    def _ingest_spool(self) -> None:
        try:
            self.observers.ingest_spool()
        except OSError as exc:
            # A read-only or full state directory must not stop the daemon: the spool keeps
            # what is not ingested yet, and the next tick tries again. Logged once per cause.
            if str(exc) != self._ingest_error:
                log.error("cannot ingest the clients' spool yet (kept for the next try): %s", exc)
            self._ingest_error = str(exc)
        else:
            self._ingest_error = ""

    async def serve(self, listeners: Listeners | None = None) -> None:
        """Serve the listeners (bound here when None), http and metrics until stopped, then shut down."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop_event.set)
        own = listeners is None
        if listeners is None:
            listeners = bind_listeners(self.project, self.endpoint)
        self._servers.append(await loop.create_unix_server(lambda: FrameProtocol(self.answer_frame, _SECTION_LIMITS), sock=listeners.unix))
        http = await asyncio.start_server(self.handle_http, sock=listeners.http)
        self._servers.append(http)
        self._metrics, metrics_port = self.monitor.serve(int(self.endpoint.get("metrics_port") or 0))
        self.endpoint.update(port=http.sockets[0].getsockname()[1], metrics_port=metrics_port)
        _write_private(self.state / "http.json", json.dumps(self.endpoint))
        self._write_timeout()
        _write_private(Path(wire.runtime_path(str(self.project), ".pid")), str(os.getpid()))
        log.info("serving %s (pid %d, http %s, metrics %s)", self.project, os.getpid(), self.endpoint["port"], metrics_port)
        self.observer_runs.start()  # first what an earlier worker journaled and did not run
        self.heartbeat()  # the first beat: booted and listening
        try:
            await self._tick()
        finally:
            await self.shutdown(listeners.sock_path if own else None)

    async def shutdown(self, sock_path: Path | None) -> None:
        """Stop listening, flush observers and the cache, remove runtime files (the socket file if ours)."""
        for server in self._servers:
            server.close()
        if sock_path is not None:
            sock_path.unlink(missing_ok=True)
        Path(wire.runtime_path(str(self.project), ".pid")).unlink(missing_ok=True)
        if self._metrics is not None:
            self._metrics.shutdown()
            self._metrics.server_close()
        if not await self.observer_runs.drain(_OBSERVER_DRAIN_S):
            log.warning("stopping with %d observer entries not run; the next start runs them", self.observer_runs.stats()["pending"])
        await self.observer_runs.close()
        await self.runner.close()
        try:
            self.observers.close()
        except (OSError, sqlite3.Error) as exc:
            # The journal still holds every entry SQLite lacks; the next start replays it.
            log.error("observer log not closed cleanly; the journal keeps what SQLite lacks for the next start: %s", exc)
        self.engine.close()
        log.info("stopped after %d events", self.events)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _available_mb() -> float:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("inf")  # unknown: never a reason to shrink


def _event_name(body: bytes) -> str:
    try:
        name = json.loads(body).get("hook_event_name")
    except (ValueError, AttributeError):
        return ""
    return name if isinstance(name, str) else ""


def _reply(result: HookResult) -> bytes:
    header = b'{"v":%d,"exit":%d,"out":%d,"err":%d}' % (wire.VERSION, result.exit_code or 0, len(result.stdout), len(result.stderr))
    return len(header).to_bytes(4, "big") + header + result.stdout + result.stderr


def _reply_error(message: str) -> bytes:
    header = json.dumps({"v": wire.VERSION, "error": message}).encode()
    return len(header).to_bytes(4, "big") + header


_REASONS: Final = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 413: "Payload Too Large", 500: "Internal Server Error"}


def _http(status: int, body: bytes, *, close: bool) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        f"Content-Type: {'application/json' if body.startswith(b'{') else 'text/plain; charset=utf-8'}\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n"
    )
    return head.encode("latin-1") + body


def _acquire_lock(project: Path) -> int | None:
    fd = os.open(wire.runtime_path(str(project), ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def compile_client() -> None:
    """Write bytecode for the thin client's modules: nothing else caches it when
    PYTHONDONTWRITEBYTECODE is set, and scripts run as __main__ never are."""
    root = Path(wire.__file__).parent
    for path in (root.parent / "__init__.py", root / "__init__.py", root / "client.py", root / "wire.py"):
        try:
            py_compile.compile(str(path), doraise=True)
        except (OSError, py_compile.PyCompileError) as exc:
            log.warning("cannot precompile %s: %s", path, exc)


def _boot_failed(project: Path, message: str) -> int:
    """Say why once, and let clients answer in-process (guards still decide) instead of respawning per event."""
    if logging.getLogger().handlers:  # else daemon.log could not be opened: stderr only
        log.error("cannot start: %s", message)
    print(f"hookopt daemon: {message}", file=sys.stderr)
    _write_private(Path(wire.runtime_path(str(project), ".failed")), f"{message}\n")
    return EXIT_CONFIG


def _state_error(project: Path, exc: Exception) -> str:
    return str(exc) if isinstance(exc, ConfigError) else f"cannot keep state in {state_dir(project, create=False)}: {exc}"


def work(project: Path, listeners: Listeners, ctx: WorkerContext, started_with: Settings | None) -> int:
    """The supervised worker: build the daemon from the current settings and serve until it stops.

    A worker replacing a crashed one keeps the settings the supervisor started with when the
    project's have become invalid since (as a reload keeps the previous ones): the http
    hooks must not lose their guard because settings.json was mid-edit when a worker died.
    """
    try:
        try:
            settings = load_settings(project, os.environ)
        except ConfigError as exc:
            if ctx.restarts == 0 or started_with is None:
                raise
            log.error("configuration is invalid, keeping the one the daemon started with: %s", exc)
            settings = started_with
        apply_debug(settings)
        if not settings.enabled:
            log.info("optimization disabled (enabled: false): not serving; hooks run without the daemon")
            mark_disabled(project)
            return EXIT_OK
        Path(wire.runtime_path(str(project), wire.DISABLED_SUFFIX)).unlink(missing_ok=True)
        daemon = Daemon(project, settings)
    except (ConfigError, OSError, sqlite3.Error) as exc:
        return _boot_failed(project, _state_error(project, exc))
    Path(wire.runtime_path(str(project), ".failed")).unlink(missing_ok=True)
    daemon.heartbeat = ctx.beat
    daemon.supervision = ctx.info()
    asyncio.run(daemon.serve(listeners))
    return daemon.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    """Supervise the daemon for one project in the foreground; exit 0 at once if one already runs."""
    parser = argparse.ArgumentParser(
        prog="python -m modules.optimization.daemon",
        description="Serve hook events for one project (thin clients start this for you).",
    )
    parser.add_argument("--project", required=True, help="the project root (as the clients name it)")
    args = parser.parse_args(argv)
    project = Path(os.path.abspath(args.project))
    try:
        ensure_runtime_dir()
    except PermissionError as exc:
        print(f"hookopt daemon: {exc}", file=sys.stderr)
        return EXIT_INSECURE
    lock = _acquire_lock(project)
    if lock is None:
        return EXIT_RUNNING
    os.environ["CLAUDE_PROJECT_DIR"] = str(project)  # validators read it at call time
    try:
        if not project.is_dir():
            # Renamed or removed: creating its state directory would resurrect an empty skeleton.
            return _boot_failed(project, f"project directory {project} does not exist (renamed or removed?)")
        started_with: Settings | None = None
        try:
            started_with = load_settings(project, os.environ)
            retention = started_with.retention
        except ConfigError:
            retention = Retention()  # the worker reports the error; the log still rotates
        try:
            log_to(state_dir(project) / "daemon.log", max_bytes=retention.log_max_bytes, backups=retention.log_backups)
            listeners = bind_listeners(project, http_endpoint(project))
        except OSError as exc:
            return _boot_failed(project, _state_error(project, exc))
        compile_client()
        supervisor = Supervisor(lambda ctx: work(project, listeners, ctx, started_with), Policy(final_codes=FINAL_EXITS))
        try:
            code = supervisor.run()
        finally:
            supervisor.close()
            listeners.close()
            Path(wire.runtime_path(str(project), ".pid")).unlink(missing_ok=True)
        if code not in FINAL_EXITS:
            _boot_failed(project, f"the daemon kept crashing right after its start; see {state_dir(project, create=False) / 'daemon.log'}")
        return code
    finally:
        os.close(lock)


if __name__ == "__main__":
    sys.exit(main())
