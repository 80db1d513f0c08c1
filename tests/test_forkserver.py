"""The fork server (forkserver.py, driven through forkserver_client.py and the legacy
runner): its zygotes preload, restart when killed, and pick up edited scripts and
libraries; each run stays identical to `/bin/sh -c command`."""
from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from modules.optimization.forkserver_client import ForkServer
from modules.optimization.legacy_runner import LegacyRunner
from modules.optimization.protocol import HookResult
from tests import legacy_helpers
from tests.clock import FakeClock
from tests.legacy_helpers import EVENT, NEEDS_SH, PYENV_PY, WAIT, H, _env, _native, spare_waiting

pytestmark = NEEDS_SH
loop, runner, project = legacy_helpers.loop, legacy_helpers.runner, legacy_helpers.project  # the shared fixtures


def test_dead_zygote_is_restarted(runner: LegacyRunner, loop: asyncio.AbstractEventLoop, project: Path) -> None:
    env, command = _env(project), f"python3 {H}/dunder_main.py"
    expected = _native(command, EVENT, env, project)
    first = loop.run_until_complete(runner.run(command, stdin=EVENT, env=env, cwd=str(project)))
    assert first.stdout == expected.stdout
    victims = [s for s in runner.servers if s.alive]
    for server in victims:
        assert server.pid is not None
        os.kill(server.pid, signal.SIGKILL)
        deadline = time.monotonic() + WAIT
        while server.alive and time.monotonic() < deadline:  # the loop notices the zygote's socket close
            loop.run_until_complete(asyncio.sleep(0.01))
        assert not server.alive
    before = runner.stats()
    again = loop.run_until_complete(runner.run(command, stdin=EVENT, env=env, cwd=str(project)))
    after = runner.stats()
    assert (again.exit_code, again.stdout, again.stderr) == (expected.exit_code, expected.stdout, expected.stderr)
    assert after["warm_runs"] == before["warm_runs"] + 1
    assert after["servers_started"] == before["servers_started"] + 1
    assert after["restarts"] >= before["restarts"] + 1


def _library(tmp_path: Path, **modules: str) -> Path:
    lib = tmp_path / "lib"
    lib.mkdir(exist_ok=True)
    for name, source in modules.items():
        (lib / f"{name}.py").write_text(source)
    return lib


def test_a_module_that_prints_at_import_is_not_preloaded(loop: asyncio.AbstractEventLoop, tmp_path: Path) -> None:
    lib = _library(tmp_path, noisy_mod="import sys\nprint('noisy import')\nsys.stderr.write('warning at import\\n')\n")
    (tmp_path / "hook.py").write_text("import json, noisy_mod\nprint('body')\n")
    env = _env(tmp_path, {"PYTHONPATH": str(lib)})
    expected = _native("python3 hook.py", EVENT, env, tmp_path)
    assert expected.stdout == b"noisy import\nbody\n"
    runner = LegacyRunner()
    try:
        for _ in range(3):
            got = loop.run_until_complete(runner.run("python3 hook.py", stdin=EVENT, env=env, cwd=str(tmp_path)))
            assert (got.exit_code, got.stdout, got.stderr) == (expected.exit_code, expected.stdout, expected.stderr)
        assert runner.stats()["warm_runs"] == 3
        assert all("noisy_mod" not in s.modules for s in runner.servers)
    finally:
        loop.run_until_complete(runner.close())


def test_a_module_reading_the_environment_at_import_sees_each_runs_value(loop: asyncio.AbstractEventLoop, tmp_path: Path) -> None:
    lib = _library(tmp_path, flavour_mod="import os\nFLAVOUR = os.environ.get('HOOK_FLAVOUR', 'plain')\n")
    (tmp_path / "hook.py").write_text("import flavour_mod\nprint(flavour_mod.FLAVOUR)\n")
    runner = LegacyRunner()
    try:
        for flavour in ("salty", "sweet", "salty", None):
            env = _env(tmp_path, {"PYTHONPATH": str(lib), "HOOK_FLAVOUR": flavour})
            got = loop.run_until_complete(runner.run("python3 hook.py", stdin=EVENT, env=env, cwd=str(tmp_path)))
            assert got.stdout == _native("python3 hook.py", EVENT, env, tmp_path).stdout == f"{flavour or 'plain'}\n".encode()
        assert runner.stats()["warm_runs"] == 4
    finally:
        loop.run_until_complete(runner.close())


def test_an_edited_library_is_picked_up(loop: asyncio.AbstractEventLoop, tmp_path: Path) -> None:
    lib = _library(tmp_path, versioned_mod="VERSION = 1\n")
    (tmp_path / "hook.py").write_text("import versioned_mod\nprint(versioned_mod.VERSION)\n")
    env = _env(tmp_path, {"PYTHONPATH": str(lib)})
    clock = FakeClock()
    runner = LegacyRunner(clock=clock)
    try:
        assert loop.run_until_complete(runner.run("python3 hook.py", stdin=EVENT, env=env, cwd=str(tmp_path))).stdout == b"1\n"
        module = lib / "versioned_mod.py"
        module.write_text("VERSION = 2\n")
        os.utime(module, ns=(1, 1))  # a different mtime whatever the clock's granularity
        clock.now += 5
        assert loop.run_until_complete(runner.run("python3 hook.py", stdin=EVENT, env=env, cwd=str(tmp_path))).stdout == b"2\n"
        assert runner.stats()["warm_runs"] == 2
    finally:
        loop.run_until_complete(runner.close())


def test_a_script_shadowing_a_zygote_module_is_spawned(runner: LegacyRunner, loop: asyncio.AbstractEventLoop, tmp_path: Path) -> None:
    (tmp_path / "json.py").write_text("def dumps(obj):\n    return 'local json'\n")
    (tmp_path / "hook.py").write_text("import json\nprint(json.dumps({}))\n")
    env = _env(tmp_path)
    before = runner.stats()
    got = loop.run_until_complete(runner.run("python3 hook.py", stdin=EVENT, env=env, cwd=str(tmp_path)))
    assert got.stdout == _native("python3 hook.py", EVENT, env, tmp_path).stdout == b"local json\n"
    assert runner.stats()["fallbacks"] == before["fallbacks"] + 1


def test_an_edited_script_is_recompiled(runner: LegacyRunner, loop: asyncio.AbstractEventLoop, tmp_path: Path) -> None:
    hook = tmp_path / "hook.py"
    env = _env(tmp_path)
    for version in ("one", "two", "six"):  # same size each time: only the stat tells them apart
        hook.write_text(f"print('{version}')\n")
        for _ in range(3):
            got = loop.run_until_complete(runner.run("python3 hook.py", stdin=EVENT, env=env, cwd=str(tmp_path)))
            assert got == HookResult(0, f"{version}\n".encode(), b"")


def test_the_zygote_compiles_an_edited_script_again(tmp_path: Path) -> None:
    """Scripts are compiled in the zygote, ahead of the spares that inherit the code. After an
    edit, the children of the old code would compile the script themselves, every run: the
    zygote compiles it again before its next spare (and leaves a broken file to the children
    until it changes)."""
    from modules.optimization import forkserver  # the zygote's own code, in this process

    codes = vars(forkserver)["_CODES"]  # read into forkserver's namespace from forkserver_child.py
    script = tmp_path / "s.py"
    key = (str(script), str(script))
    scripts = {key: None}

    def compiled() -> Any:
        forkserver._recompile_edited(scripts)
        entry = codes.get(key)
        return None if entry is None else entry[1]

    try:
        script.write_text("x = 1\n")
        first = compiled()
        assert first is not None and 1 in first.co_consts
        assert compiled() is first  # unchanged: not compiled again
        script.write_text("x = 22\n")
        assert 22 in compiled().co_consts
        script.write_text("x = (\n")
        assert compiled() is None  # the child compiles it and reports the SyntaxError itself
        script.write_text("x = 333\n")
        assert 333 in compiled().co_consts
    finally:
        codes.pop(key, None)


SPY = """import os, sys

def _compiled(event, args):  # every compile of target.py in this process and its forks, by pid
    if event == "compile" and str(args[1]).endswith("target.py"):
        with open(os.environ["SPY_LOG"], "a") as log:
            log.write(f"{os.getpid()}\\n")

sys.addaudithook(_compiled)
"""


def test_a_run_forked_at_once_inherits_its_script_compiled(loop: asyncio.AbstractEventLoop, tmp_path: Path) -> None:
    """With no spare waiting (runs back to back), the zygote forks the run when it comes: it
    compiles the script first (when first seen or edited), so the child does not compile it
    again. An audit hook, preloaded into the zygote, logs which process compiles the script."""
    (tmp_path / "spy_compiles.py").write_text(SPY)
    script, log = tmp_path / "target.py", tmp_path / "compiles.log"
    env = {**_env(tmp_path), "PYTHONPATH": str(tmp_path), "SPY_LOG": str(log)}

    async def go() -> tuple[int, list[bytes], list[str]]:
        server = ForkServer(PYENV_PY, env=env, cwd=str(tmp_path))
        await server.start()
        try:
            assert await server.preload(["spy_compiles"]) == ["spy_compiles"]
            outputs = []
            for version in ("one", "two"):  # written, run twice, then edited (same size) and run twice
                script.write_text(f"print('{version}')\n")
                for _ in range(2):
                    server._drop_spares()  # none left: the zygote forks this run when it comes
                    result = await server.run(str(script), str(script), [], stdin=b"", env=env, cwd=str(tmp_path), timeout_s=WAIT)
                    outputs.append(result.stdout)
            assert server.pid is not None
            return server.pid, outputs, log.read_text().split()
        finally:
            await server.close()

    zygote, outputs, compilers = loop.run_until_complete(go())
    assert outputs == [b"one\n", b"one\n", b"two\n", b"two\n"]
    assert compilers == [str(zygote)] * 2  # once per version, in the zygote only


SPY_ENV = """import sys

changes = []  # every change to the process environment, in this process and its forks

def _changed(event, args):
    if event in ("os.putenv", "os.unsetenv"):
        changes.append(event)

sys.addaudithook(_changed)
"""


def test_a_run_forked_at_once_keeps_the_zygotes_environment_when_it_is_the_jobs(loop: asyncio.AbstractEventLoop, tmp_path: Path) -> None:
    """With no spare waiting, a run whose environment is the zygote's own, in the same order,
    starts with it as it is (as a spare does), instead of clearing and refilling it; another
    environment is still applied. An audit hook, preloaded into the zygote, counts the changes."""
    (tmp_path / "spy_env.py").write_text(SPY_ENV)
    script = tmp_path / "env.py"
    script.write_text("import os, spy_env\nprint(len(spy_env.changes), os.environ.get('MARK'))\n")
    env = {**_env(tmp_path), "PYTHONPATH": str(tmp_path), "MARK": "zygote"}

    async def go() -> list[list[bytes]]:
        server = ForkServer(PYENV_PY, env=env, cwd=str(tmp_path))
        await server.start()
        try:
            assert await server.preload(["spy_env"]) == ["spy_env"]
            outputs = []
            for job_env in (env, {**env, "MARK": "job"}, env):
                server._drop_spares()  # none left: the zygote forks this run when it comes
                result = await server.run(str(script), str(script), [], stdin=b"", env=job_env, cwd=str(tmp_path), timeout_s=WAIT)
                outputs.append(result.stdout.split())
            return outputs
        finally:
            await server.close()

    ours, other, ours_again = loop.run_until_complete(go())
    assert ours == ours_again == [b"0", b"zygote"]  # nothing cleared or set
    assert other[1] == b"job" and int(other[0]) > 0


def test_fork_server_directly(loop: asyncio.AbstractEventLoop, tmp_path: Path) -> None:
    script = tmp_path / "s.py"
    script.write_text("import sys, json\nprint(sys.argv[1:], 'json' in sys.modules)\nsys.exit(len(sys.stdin.read()))\n")

    async def go() -> tuple[list[str], HookResult]:
        server = ForkServer(PYENV_PY, env=_env(tmp_path), cwd=str(tmp_path))
        await server.start()
        try:
            loaded = await server.preload(["json", "hookopt_no_such_module"])
            result = await server.run(str(script), str(script), ["a"], stdin=b"12345", env=_env(tmp_path), cwd=str(tmp_path), timeout_s=WAIT)
            return loaded, result
        finally:
            await server.close()

    loaded, result = loop.run_until_complete(go())
    assert loaded == ["json"]
    assert result == HookResult(5, b"['a'] True\n", b"")


def _exited(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"  # a zombie until its zygote reaps it
    except (FileNotFoundError, ProcessLookupError):  # reaped (the second: while we read it)
        return True


@pytest.mark.parametrize(("word", "hold_max_s"), [(True, 60.0), (False, 60.0), (False, None)])
def test_a_child_that_reported_its_exit_waits_for_the_daemons_word(
    word: bool, hold_max_s: float | None, loop: asyncio.AbstractEventLoop, tmp_path: Path
) -> None:
    """After its report a child waits (its teardown and reaping would take a processor from the
    event's other hooks and reply) until the daemon lets it go after the event, or until its
    limit: 50 ms by default; a minute here, so that only the word can end the wait in the test."""
    script = tmp_path / "pid.py"
    script.write_text("import os\nprint(os.getpid())\n")

    async def go() -> tuple[int, bool, float, list[bytes]]:
        server = ForkServer(PYENV_PY, env=_env(tmp_path), cwd=str(tmp_path), hold_max_s=hold_max_s)
        await server.start()
        if not word:
            server._release = lambda: None  # type: ignore[method-assign]
        try:
            await spare_waiting(server)  # its pid known before the run: a direct fork's may come after its report
            called = time.monotonic()
            result = await server.run(str(script), str(script), [], stdin=b"", env=_env(tmp_path), cwd=str(tmp_path), timeout_s=WAIT)
            held = list(server._held)
            pid = int(result.stdout)
            deadline = time.monotonic() + (1.0 if hold_max_s and not word else WAIT)
            while not _exited(pid) and time.monotonic() < deadline:
                await asyncio.sleep(0.001)
            return pid, _exited(pid), time.monotonic() - called, held
        finally:
            await server.close()

    pid, gone, waited, held = loop.run_until_complete(go())
    assert len(held) == 1, held  # the address its word goes to
    try:
        if hold_max_s is None:
            assert gone and waited >= 0.05  # no word: it went at its own limit, not before
        else:
            assert gone is word  # let go by the word; without it, still waiting
    finally:
        if not gone:
            os.kill(pid, signal.SIGKILL)


def test_nothing_of_the_script_runs_while_its_child_waits(loop: asyncio.AbstractEventLoop, tmp_path: Path) -> None:
    """A script that leaves a thread running exits at once, as a fresh interpreter would (the
    thread could otherwise run on while the child waits); one that set a signal handler waits
    with signals blocked, so the handler never runs after the script has ended, and with its
    fds closed, so a lock it never let go of is free as soon as the run is over."""
    (tmp_path / "threaded.py").write_text("import os, threading\nthreading.Thread(target=threading.Event().wait, daemon=True).start()\nprint(os.getpid())\n")
    (tmp_path / "handler.py").write_text(
        "import fcntl, os, signal\n"
        f"signal.signal(signal.SIGUSR1, lambda *a: open({str(tmp_path / 'handled')!r}, 'w').close())\n"
        f"fcntl.flock(os.open({str(tmp_path / 'lock')!r}, os.O_CREAT | os.O_RDWR), fcntl.LOCK_EX)  # never closed\n"
        "print(os.getpid())\n"
    )

    async def go() -> tuple[bool, bool]:
        server = ForkServer(PYENV_PY, env=_env(tmp_path), cwd=str(tmp_path), hold_max_s=60.0)
        await server.start()
        server._release = lambda: None  # type: ignore[method-assign]  # no word: only the rules above end a wait
        try:
            outcome = []
            for name in ("threaded.py", "handler.py"):
                await spare_waiting(server)
                script = str(tmp_path / name)
                result = await server.run(script, script, [], stdin=b"", env=_env(tmp_path), cwd=str(tmp_path), timeout_s=WAIT)
                pid = int(result.stdout)
                if name == "handler.py":
                    os.kill(pid, signal.SIGUSR1)
                    with open(tmp_path / "lock", "rb") as lock:
                        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # its lock went with its fds
                deadline = time.monotonic() + (WAIT if name == "threaded.py" else 1.0)
                while not _exited(pid) and time.monotonic() < deadline:
                    await asyncio.sleep(0.001)
                outcome.append(_exited(pid))
                if not _exited(pid):
                    os.kill(pid, signal.SIGKILL)
            return outcome[0], outcome[1]
        finally:
            await server.close()

    threaded_gone, handler_gone = loop.run_until_complete(go())
    assert threaded_gone  # did not wait for a word that never came
    assert not handler_gone and not (tmp_path / "handled").exists()  # still waiting; its handler never ran


def test_a_spare_takes_the_jobs_environment_in_its_order(loop: asyncio.AbstractEventLoop, tmp_path: Path) -> None:
    """A spare keeps the zygote's environment when the job's is the same, in the same order; the
    same variables in another order are another environment (os.environ and what a child inherits)."""
    script = tmp_path / "order.py"
    script.write_text("import os\nprint([k for k in os.environ if k.startswith('ORDER_')])\nimport subprocess\nprint([l.split('=')[0] for l in subprocess.run(['env'], capture_output=True, text=True).stdout.splitlines() if l.startswith('ORDER_')])\n")
    ours = [(f"ORDER_{i}", str(i)) for i in range(5)]
    theirs = dict(reversed(ours))

    async def go() -> list[bytes]:
        server = ForkServer(PYENV_PY, env={**_env(tmp_path), **dict(ours)}, cwd=str(tmp_path))
        await server.start()
        try:
            outputs = []
            for env in ({**_env(tmp_path), **theirs}, {**_env(tmp_path), **theirs}):
                await spare_waiting(server)  # the second one made after the first run: it applied that run's environment ahead
                result = await server.run(str(script), str(script), [], stdin=b"", env=env, cwd=str(tmp_path), timeout_s=WAIT)
                outputs.append(result.stdout)
            return outputs
        finally:
            await server.close()

    expected = (str(list(theirs)) + "\n") * 2
    assert loop.run_until_complete(go()) == [expected.encode()] * 2


class _Notes(list[bytes]):
    """The "took" notes a ForkServer queues for its zygote, kept as they are sent."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[bytes] = []

    def append(self, note: bytes) -> None:
        self.seen.append(note)
        super().append(note)


def test_the_zygote_is_shown_each_script_and_environment_once(loop: asyncio.AbstractEventLoop, tmp_path: Path) -> None:
    """A spare's "took" note carries its run's whole message (the environment included) only when
    the zygote has not seen that script or that environment yet; every run still gets its own."""
    scripts = []
    for name in ("a", "b"):
        scripts.append(tmp_path / f"{name}.py")
        scripts[-1].write_text(f"import os\nprint('{name}', os.environ['SHOWN'])\n")
    runs = [(0, "one"), (1, "one"), (0, "one"), (1, "one"), (0, "two"), (1, "two"), (0, "one")]

    async def go() -> tuple[list[bytes], list[bool]]:
        server = ForkServer(PYENV_PY, env=_env(tmp_path), cwd=str(tmp_path))
        await server.start()
        server._took = notes = _Notes()
        try:
            outputs = []
            for index, value in runs:
                await spare_waiting(server)
                env = {**_env(tmp_path), "SHOWN": value}
                result = await server.run(str(scripts[index]), str(scripts[index]), [], stdin=b"", env=env, cwd=str(tmp_path), timeout_s=WAIT)
                outputs.append(result.stdout)
            return outputs, [b'"run"' in note for note in notes.seen]
        finally:
            await server.close()

    outputs, shown = loop.run_until_complete(go())
    assert outputs == [f"{'ab'[i]} {value}\n".encode() for i, value in runs]
    # New script, new script, known, known, new environment, known in it, the first environment again.
    assert shown == [True, True, False, False, True, False, True]


def test_an_exit_report_from_a_pid_not_known_yet_is_let_go_at_once(loop: asyncio.AbstractEventLoop, tmp_path: Path) -> None:
    """A direct fork may report before the zygote has told its pid: nothing to hold it for (its
    exit comes from the zygote once reaped), so it must not wait out its limit. Here the report
    comes from this test process, a pid the server does not know."""

    async def go() -> bytes:
        server = ForkServer(PYENV_PY, env=_env(tmp_path), cwd=str(tmp_path))
        await server.start()
        try:
            assert server._exits is not None
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.bind(b"")
                sock.setblocking(False)
                sock.sendto(b"\0", server._exits.getsockname())
                return await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, 16), WAIT)
        finally:
            await server.close()

    assert loop.run_until_complete(go()) == b""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two processors to spread spares over")
def test_zygotes_spread_their_first_spares_over_the_processors(loop: asyncio.AbstractEventLoop, tmp_path: Path) -> None:
    """Each zygote's spares try a different processor first (the runner gives each new zygote
    the next one): two hooks of one event in two zygotes (uv gives each PEP 723 script its own
    interpreter) would otherwise both wait on the first processor and run one after the other."""
    cpus = sorted(os.sched_getaffinity(0))

    async def first_spares() -> list[set[int]]:
        servers = [ForkServer(PYENV_PY, env=_env(tmp_path), cwd=str(tmp_path), cpu_first=i) for i in range(2)]
        try:
            for server in servers:
                await server.start()
                await server.preload(["json"])
            pinned = []
            for server in servers:
                for _ in range(500):
                    if server._spares:
                        break
                    await asyncio.sleep(0.01)
                pid = server._spares[0][0]
                for _ in range(500):  # announced at its fork, pinned once it has set itself up
                    if len(os.sched_getaffinity(pid)) == 1:
                        break
                    await asyncio.sleep(0.01)
                pinned.append(os.sched_getaffinity(pid))
            return pinned
        finally:
            for server in servers:
                await server.close()

    assert loop.run_until_complete(first_spares()) == [{cpus[0]}, {cpus[1]}]
