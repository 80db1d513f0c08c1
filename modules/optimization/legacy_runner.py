"""Run hook commands with Claude Code's semantics: Python scripts warm, everything else through sh.

``LegacyRunner.run(command, ...)`` answers exactly what ``/bin/sh -c command`` with the
event on stdin would have produced (exit code, stdout bytes, stderr bytes). Commands of
the form ``python script.py args`` run in a child forked from a ``ForkServer`` (a zygote
started by the user's own interpreter, see forkserver.py) that has already imported what
the script imports; anything else is spawned through /bin/sh.

Known differences of a warm run (tests/test_legacy.py checks everything else byte for
byte): its parent is the zygote and it leads its own session (no controlling tty);
/proc/self/cmdline names forkserver.py; it may have been forked (as a spare) well before
the event, so its start time in /proc/self/stat is older; an audit hook the script adds sees our exit (gc.get_objects,
and the socket that reports the exit status); the script runs one frame below ours (deeper
stacks by one, recursion limit reached two calls sooner, a module-level warning with
stacklevel=2 names forkserver.py instead of "sys:1"); gc.freeze() hides the zygote's
objects from gc.get_objects(); every run of a zygote shares its hash seed; preloaded
modules ran their import-time code once (values computed at import, like a timestamp,
are shared; output, threads, open fds and process-wide changes make us refuse them).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shlex
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from .forkserver_client import _START_TIMEOUT_S, ForkServer, ForkServerUnavailable
from .launch_probe import probe_launch
from .protocol import HookResult
from .sh_plan import Plan, Planner, SpawnInstead, _imports, _mtime, _python_options, _signature
from .spawn import SH, spawn

__all__ = ["LegacyRunner"]

log = logging.getLogger("hookopt.legacy")

_RECHECK_S: Final = 1.0  # how often a zygote's imported files are checked for edits
_RETRY_START_S: Final = 60.0  # after a zygote failed to start (noisy start-up, no ctypes...)
# Variables that change what sh, a version-manager shim or the interpreter's start-up do:
# a launch probed under one value of these is not reused under another.
_LAUNCH_VARS: Final = frozenset({"PWD", "PATH", "HOME", "SHLVL", "IFS", "LANG", "LC_ALL", "LC_CTYPE"})
_LAUNCH_PREFIXES: Final = ("PYTHON", "PYENV", "ASDF", "MISE", "RTX", "UV_", "VIRTUAL_ENV", "CONDA")
# What shapes a fresh interpreter's state before the script's first line (sys.path, user
# site, locale, UTF-8 mode, stdio): one zygote per distinct set of values.
_STARTUP_VARS: Final = frozenset({"HOME", "LANG", "LC_ALL", "LC_CTYPE"})
_LAUNCH_TIMEOUT_S: Final = 300.0  # uv may download and install a script's dependencies the first time
_QUOTING: Final = ("linecache", "tokenize")
# Zygotes kept: one per interpreter and start-up environment a stack uses. uv gives each PEP 723
# script an environment of its own, so a stack of seven such scripts needs seven; fewer makes
# every run start one (a stack of 7 on a limit of 4 measured 82 zygotes for 148 runs).
_MAX_SERVERS: Final = 16
_PROBE: Final = """\
import json, os, sys
try:
    with open('/proc/self/environ', 'rb') as f:
        start = [os.fsdecode(i).partition('=')[::2] for i in f.read().split(b'\\0') if i]
except OSError:
    start = None
sys.stdout.write(json.dumps({'exe': sys.executable, 'argv': getattr(sys, 'orig_argv', None),
    'version': list(sys.version_info[:2]), 'impl': sys.implementation.name,
    'start': start, 'env': list(os.environ.items())}))
"""


@dataclass(frozen=True, slots=True)
class _Interpreter:
    """A probed launch: what sh (and any shim) hand python, and what python then shows the script."""

    executable: str  # sys.executable
    argv0: str  # sys.orig_argv[0]
    flags: tuple[str, ...]
    start: tuple[tuple[str, str | None], ...]  # environment python was exec'd with (None: the client's value)
    visible: tuple[tuple[str, str | None], ...]  # os.environ once python started (locale coercion...)
    stamp: tuple[int, ...] | None = None  # the executable as it stated when probed: replaced means probe again


def _template(before: Mapping[str, str], after: Iterable[Sequence[str]]) -> tuple[tuple[str, str | None], ...]:
    """Record how a launch turned the environment `before` into `after` (order included)."""
    return tuple((key, None if before.get(key) == value else value) for key, value in after)


def _apply(template: Iterable[tuple[str, str | None]], env: Mapping[str, str]) -> dict[str, str]:
    """The environment the same launch makes of env."""
    return {key: env.get(key, "") if value is None else value for key, value in template}


class LegacyRunner:
    """Run hook commands with Claude Code's semantics: Python scripts warm, everything else through sh."""

    def __init__(self, *, max_servers: int = _MAX_SERVERS, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_servers = max_servers
        self._clock = clock
        self._servers: list[tuple[tuple[Any, ...], ForkServer]] = []  # most recently used last
        self._checked: dict[int, float] = {}
        self._probes: dict[tuple[Any, ...], _Interpreter | None] = {}
        self._preloaded: dict[int, set[tuple[str, int, int]]] = {}
        self._refused: dict[tuple[Any, ...], set[str]] = {}
        self._imports: dict[tuple[str, int, int], tuple[str, ...]] = {}  # per script version
        self.planner = Planner()
        # Derived once per environment object (the daemon passes one per session, see Daemon):
        self._env_shape: tuple[object, tuple[Any, ...]] = (None, ())
        self._views: dict[int, tuple[Mapping[str, str], _Interpreter, dict[str, str], dict[str, str]]] = {}
        self._signals: dict[int, tuple[int, bytes]] = {}
        self._unusable: dict[tuple[Any, ...], float] = {}  # zygotes that would not start: spawn until then
        self._lock = asyncio.Lock()
        self._counts = {
            "warm_runs": 0,
            "spawned_runs": 0,
            "fallbacks": 0,
            "servers_started": 0,
            "restarts": 0,
            "probes": 0,
            "preloads": 0,
        }

    @property
    def servers(self) -> list[ForkServer]:
        return [server for _, server in self._servers]

    def stats(self) -> dict[str, int]:
        """Counters, plus how many zygotes are up."""
        return {**self._counts, "servers": sum(server.alive for _, server in self._servers)}

    def plan(self, command: str, env: Mapping[str, str], cwd: str) -> Plan:
        """How command runs: warm in a fork server, or spawned through sh (see sh_plan)."""
        return self.planner.plan(command, env, cwd)

    # -- running --------------------------------------------------------------------

    async def run(
        self, command: str, *, stdin: bytes, env: Mapping[str, str], cwd: str, timeout_s: float = 600.0, nice: int = 0
    ) -> HookResult:
        """Run one hook command; the result is what `/bin/sh -c command` would have given.
        nice: added to the run's niceness (observers run in the background)."""
        plan = self.plan(command, env, cwd)
        if plan.warm:
            deadline = asyncio.get_running_loop().time() + timeout_s
            try:
                result = await self._run_warm(command, plan, stdin=stdin, env=env, cwd=cwd, deadline=deadline, nice=nice)
            except Exception as exc:  # the fork server must never fail a hook: spawn instead
                log.warning("warm run of %s failed before it started, spawning: %r", plan.script, exc)
                result = None
            if result is not None:
                self._counts["warm_runs"] += 1
                return result
            self._counts["fallbacks"] += 1
        self._counts["spawned_runs"] += 1
        return await spawn(command, stdin=stdin, env=env, cwd=cwd, timeout_s=timeout_s, nice=nice)

    async def _run_warm(
        self, command: str, plan: Plan, *, stdin: bytes, env: Mapping[str, str], cwd: str, deadline: float, nice: int = 0
    ) -> HookResult | None:
        assert plan.script is not None and plan.code_path is not None
        interp = await self._interpreter(command, plan, env, cwd)
        if interp is None:
            return None
        view = self._views.get(id(interp))
        if view is None or view[0] is not env or view[1] is not interp:  # once per environment, not per hook
            view = self._views[id(interp)] = (env, interp, _apply(interp.visible, env), _apply(interp.start, env))
        visible, start_env = view[2], view[3]
        local = set(plan.local)
        server = await self._ready_server(interp, plan, start_env, visible, cwd, local)
        if server is None or local & server.modules:
            return None  # a module next to the script would shadow one the zygote already holds
        timeout_s = max(0.0, deadline - asyncio.get_running_loop().time())
        result = await server.run(
            plan.script, plan.code_path, plan.argv, stdin=stdin, env=visible, cwd=cwd, timeout_s=timeout_s, module=plan.module, nice=nice
        )
        if result.exit_code is not None and result.exit_code < 0 and plan.resolver == "uv":
            result = HookResult(128 - result.exit_code, result.stdout, result.stderr)  # uv exits 128+N itself, quietly
        elif result.exit_code is not None and result.exit_code < 0 and not plan.replaces_shell:
            # sh reports a signal death as 128+N and prints its own message ("Terminated").
            code, message = await self._sh_signal(-result.exit_code)
            result = HookResult(code, result.stdout, result.stderr + message)
        return result

    async def _ready_server(
        self, interp: _Interpreter, plan: Plan, start_env: Mapping[str, str], visible: Mapping[str, str], cwd: str, local: set[str]
    ) -> ForkServer | None:
        """A live zygote for this interpreter and environment, with the script's imports preloaded."""
        key = self._server_key(interp, start_env, cwd)
        imports = self._script_imports(plan.code_path or "")
        async with self._lock:
            for _ in range(3):
                server = await self._server(key, interp, start_env, visible, cwd)
                if server is None:
                    return None
                refused = self._refused.setdefault(key[:2], set())
                stamp = self._stamp(plan.code_path or "")
                done = self._preloaded.setdefault(id(server), set())
                if stamp not in done:
                    # A stub's child fills linecache with its original's lines (forkserver._quote_from):
                    # importing linecache and tokenize there would cost every run 2 ms.
                    quoting = _QUOTING if plan.stub else ("runpy",) if plan.module else ()  # `python -m` loads runpy first
                    wanted = [m for m in (*imports, *quoting) if m.partition(".")[0] not in local | refused]
                    self._counts["preloads"] += 1
                    try:
                        await server.preload(wanted)
                    except ForkServerUnavailable:
                        refused.update(wanted)
                        await self._drop(server)
                        return None
                    if server.tainted:
                        # A module did something at import a shared zygote cannot carry; never again.
                        refused.update(m for m in wanted if m not in server.loaded)
                        await self._drop(server)
                        continue
                    done.add(stamp)
                if server.fits(visible):
                    return server
            return None

    async def _server(
        self, key: tuple[Any, ...], interp: _Interpreter, start_env: Mapping[str, str], visible: Mapping[str, str], cwd: str
    ) -> ForkServer | None:
        now = self._clock()
        if self._unusable.get(key, now) > now:
            return None
        for entry in list(self._servers):
            k, server = entry
            if k != key:
                continue
            if not server.alive:
                self._counts["restarts"] += 1
                await self._drop(server)
                continue
            if now - self._checked.get(id(server), now) >= _RECHECK_S:
                self._checked[id(server)] = now
                if any(_mtime(path) != stamp for path, stamp in server.files.items()):
                    await self._drop(server)  # an imported file changed: a fresh interpreter would see it
                    continue
            if server.fits(visible):
                self._servers.remove(entry)
                self._servers.append(entry)
                return server
        idle = [s for _, s in self._servers if not s.busy]
        while len(self._servers) >= self.max_servers and idle:
            await self._drop(idle.pop(0))
        # Each new zygote's spares start on the next processor: see forkserver.fork_spare.
        first = self._counts["servers_started"]
        server = ForkServer(interp.executable, interp.flags, env=start_env, cwd=cwd, argv0=interp.argv0, cpu_first=first)
        try:
            await server.start()
        except ForkServerUnavailable as exc:
            log.warning("%s; spawning its hooks for a minute", exc)
            self._unusable[key] = now + _RETRY_START_S
            return None
        self._counts["servers_started"] += 1
        self._servers.append((key, server))
        self._checked[id(server)] = now
        return server

    async def _drop(self, server: ForkServer) -> None:
        self._servers = [(k, s) for k, s in self._servers if s is not server]
        self._preloaded.pop(id(server), None)
        self._checked.pop(id(server), None)
        await server.close()

    @staticmethod
    def _server_key(interp: _Interpreter, start_env: Mapping[str, str], cwd: str) -> tuple[Any, ...]:
        shaping = tuple(sorted((k, v) for k, v in start_env.items() if k in _STARTUP_VARS or k.startswith("PYTHON")))
        # Relative PYTHONPATH entries are made absolute against the start-up directory.
        relative = any(not p.startswith("/") for p in start_env.get("PYTHONPATH", "/").split(":"))
        return (interp.executable, interp.flags, shaping, cwd if relative else None)

    def _stamp(self, path: str) -> tuple[str, int, int]:
        try:
            st = os.stat(path)
        except OSError:
            return (path, 0, 0)
        return (path, st.st_mtime_ns, st.st_size)

    def _script_imports(self, path: str) -> tuple[str, ...]:
        stamp = self._stamp(path)
        if stamp not in self._imports:
            try:
                with open(path, "rb") as f:
                    self._imports[stamp] = _imports(f.read())
            except OSError:
                self._imports[stamp] = ()
        return self._imports[stamp]

    async def _interpreter(self, command: str, plan: Plan, env: Mapping[str, str], cwd: str) -> _Interpreter | None:
        """Probe the launch once per launcher, directory and shaping environment (shims never run again).

        A launcher that picks the environment itself (uv, poetry, pipenv) is probed per
        script, again when what it decides by changes (plan.resolve_stamp) or when the
        interpreter it chose is replaced.
        """
        if self._env_shape[0] is not env:
            shaping = tuple((k, v) for k, v in env.items() if k in _LAUNCH_VARS or k.startswith(_LAUNCH_PREFIXES))
            self._env_shape = (env, (tuple(env), shaping))
        key: tuple[Any, ...] = (plan.launcher, plan.interpreter, cwd, *self._env_shape[1])
        if plan.resolver is not None:
            key += (plan.script, tuple(plan.argv), plan.resolve_stamp)
        known = key in self._probes
        interp = self._probes.get(key)
        if known and (interp is None or _signature(interp.executable) == interp.stamp):
            return interp
        async with self._lock:
            if (key in self._probes) == known and self._probes.get(key) is interp:
                self._counts["probes"] += 1
                if plan.resolver is not None:
                    self._probes[key] = await self._probe_launch(command, plan, env, cwd)
                else:
                    self._probes[key] = await self._probe(plan, env, cwd)
        return self._probes[key]

    async def _probe_launch(self, command: str, plan: Plan, env: Mapping[str, str], cwd: str) -> _Interpreter | None:
        """Run the hook's own command once, stopped before the script's first line (see launch_probe)."""
        if plan.script is None:
            return None  # a launched plan always names its script
        info = await probe_launch(command, [plan.script, *plan.argv], env, cwd, timeout_s=_LAUNCH_TIMEOUT_S)
        if info is None or info.get("impl") != "cpython" or tuple(info.get("version", ())) < (3, 8):
            log.info("%s: its environment cannot be reproduced warm", plan.launcher)
            return None
        argv = info.get("argv") or []
        tail = 1 + len(plan.argv)
        if len(argv) < tail + 1 or argv[-tail] != plan.script or argv[len(argv) - tail + 1 :] != list(plan.argv):
            return None  # it does not run the script as `python [options] script args`
        prefix = argv[: len(argv) - tail]
        try:
            _python_options([*prefix[1:], "x"])  # only options a zygote started with them reproduces
        except SpawnInstead:
            return None
        visible = _template(env, info["env"])
        start = _template(env, info["start"]) if info.get("start") is not None else visible
        return _Interpreter(info["exe"], prefix[0], tuple(prefix[1:]), start, visible, _signature(info["exe"]))

    async def _probe(self, plan: Plan, env: Mapping[str, str], cwd: str) -> _Interpreter | None:
        command = shlex.join([*plan.launcher, "-c", _PROBE])
        try:
            proc = await asyncio.create_subprocess_exec(
                SH, "-c", command, env=dict(env), cwd=cwd, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            async with asyncio.timeout(_START_TIMEOUT_S):
                out, err = await proc.communicate()
            info = json.loads(out)
        except (OSError, TimeoutError, ValueError) as exc:
            log.info("%s is not a python we can run warm: %r", plan.launcher, exc)
            return None
        if proc.returncode != 0 or err or info.get("impl") != "cpython" or tuple(info.get("version", ())) < (3, 8):
            return None
        argv = info.get("argv")
        prefix = argv[:-2] if argv else [plan.launcher[-1 - len(plan.flags)], *plan.flags]
        visible = _template(env, info["env"])
        start = _template(env, info["start"]) if info.get("start") is not None else visible
        return _Interpreter(info["exe"], prefix[0], tuple(prefix[1:]), start, visible, _signature(info["exe"]))

    async def _sh_signal(self, signum: int) -> tuple[int, bytes]:
        """What sh reports when its command dies of signum: exit code and message, asked of sh itself."""
        if signum not in self._signals:
            proc = await asyncio.create_subprocess_exec(
                SH, "-c", f"{SH} -c 'kill -{signum} $$'", stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            _, err = await proc.communicate()
            self._signals[signum] = (proc.returncode if proc.returncode is not None else 128 + signum, err)
        return self._signals[signum]

    async def close(self) -> None:
        """Stop every zygote."""
        for _, server in list(self._servers):
            await server.close()
        self._servers.clear()
