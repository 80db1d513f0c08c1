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
unguarded only for the calls in flight when it died.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import fcntl
import json
import logging
import os
import py_compile
import signal
import socket
import sqlite3
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from . import wire
from .dispatch import SECTION_LIMITS, Dispatcher
from .hook_integration import Engine
from .http_transport import http_endpoint, no_delay, serve_http
from .hugepages import take_back
from .integrated_optimizer import DEFAULTS_PATH, AdaptiveSwitcher, ConfigError, LoadSample, Retention, Settings, load_settings
from .kept_connections import Keeper
from .logfile import log_to
from .paths import state_dir, write_private
from .protocol import MAX_EVENT_BYTES
from .stream_server import StreamServer
from .supervisor import Policy, Supervisor, WorkerContext
from .unix_server import serve_unix

__all__ = ["Daemon", "main"]

log = logging.getLogger("hookopt.daemon")

EXIT_OK, EXIT_RUNNING, EXIT_CONFIG, EXIT_INSECURE, EXIT_PROJECT_GONE = 0, 0, 3, 4, 6
# Exits a worker chooses: the supervisor ends rather than respawning (5 is its own "gave up").
FINAL_EXITS: Final = frozenset({EXIT_OK, EXIT_CONFIG, EXIT_INSECURE, EXIT_PROJECT_GONE})
TOKEN_HEADER: Final = "x-hookopt-token"
_TICK_S: Final = 1.0
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
    write_private(Path(wire.runtime_path(str(project), wire.DISABLED_SUFFIX)), "enabled: false\n")




@dataclasses.dataclass(frozen=True, slots=True)
class Listeners:
    """The daemon's listening sockets; the supervisor keeps them open across worker restarts."""

    unix: socket.socket
    http: socket.socket
    sock_path: Path
    kept: Keeper | None = None  # under the supervisor: it accepts the http connections and keeps them

    def close(self) -> None:
        """Close both (and the kept connections) and remove the socket file."""
        if self.kept is not None:
            self.kept.close()
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


class Daemon(Dispatcher):
    """Serve hook events for one project until idle, told to stop, or killed."""

    def __init__(
        self, project: Path, settings: Settings, *, clock: Callable[[], float] = time.monotonic, on_malloc: bool = False
    ) -> None:
        super().__init__(project, settings, clock=clock, on_malloc=on_malloc)
        self._watched = self._stamps()
        self.switcher = AdaptiveSwitcher(settings) if settings.adaptive else None
        self._sampled = (self.clock(), 0)
        self._streams: list[StreamServer] = []
        self._metrics: Any = None
        self._ingest_error = ""
        self.heartbeat: Callable[[], None] = _no_beat  # a supervised worker tells its supervisor it lives
        self.exit_code = EXIT_OK
        self._identity = _identity(project)

    def _stamps(self) -> dict[str, int]:
        stamps = {}
        for path in (self.project / ".claude" / "settings.json", DEFAULTS_PATH, *self.stacks.watched(), *self.settings.validator_files):
            try:
                stamps[str(path)] = path.stat().st_mtime_ns
            except OSError:
                stamps[str(path)] = 0
        return stamps

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
        write_private(Path(wire.runtime_path(str(self.project), ".timeout")), str(self.settings.profile.client_timeout_ms))

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
            self.heap_pages.collapse()
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
        self._streams = [serve_unix(listeners.unix, self.answer_frame, SECTION_LIMITS), serve_http(self, listeners.http, listeners.kept)]
        self._metrics, metrics_port = self.monitor.serve(int(self.endpoint.get("metrics_port") or 0))
        self.endpoint.update(port=listeners.http.getsockname()[1], metrics_port=metrics_port)
        write_private(self.state / "http.json", json.dumps(self.endpoint))
        self._write_timeout()
        write_private(Path(wire.runtime_path(str(self.project), ".pid")), str(os.getpid()))
        log.info("serving %s (pid %d, http %s, metrics %s)", self.project, os.getpid(), self.endpoint["port"], metrics_port)
        self.observer_runs.start()  # first what an earlier worker journaled and did not run
        self.heartbeat()  # the first beat: booted and listening
        try:
            await self._tick()
        finally:
            await self.shutdown(listeners.sock_path if own else None)

    async def shutdown(self, sock_path: Path | None) -> None:
        """Stop listening, flush observers and the cache, remove runtime files (the socket file if ours)."""
        for server in self._streams:
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
        self.journal.close()  # what it has queued is written first
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
    write_private(Path(wire.runtime_path(str(project), ".failed")), f"{message}\n")
    return EXIT_CONFIG


def _state_error(project: Path, exc: Exception) -> str:
    return str(exc) if isinstance(exc, ConfigError) else f"cannot keep state in {state_dir(project, create=False)}: {exc}"


def work(project: Path, listeners: Listeners, ctx: WorkerContext, started_with: Settings | None, on_malloc: bool = False) -> int:
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
        daemon = Daemon(project, settings, on_malloc=on_malloc)
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
    on_malloc = take_back(os.environ)  # what the client added to start us is not the hooks' to see
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
            listeners = dataclasses.replace(listeners, kept=Keeper(listeners.http, no_delay))
        except OSError as exc:
            return _boot_failed(project, _state_error(project, exc))
        compile_client()
        supervisor = Supervisor(
            lambda ctx: work(project, listeners, ctx, started_with, on_malloc), Policy(final_codes=FINAL_EXITS), keeper=listeners.kept
        )
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
