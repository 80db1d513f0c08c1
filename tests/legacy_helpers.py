"""Shared by test_legacy_runner.py and test_forkserver.py: the corpus project, the
interpreters, an event, the environment a hook sees, running a command under /bin/sh as
the reference, and the module-scoped runner and event loop."""
from __future__ import annotations

import asyncio
import json
import os
import select
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from modules.optimization.forkserver_client import ForkServer
from modules.optimization.legacy_runner import LegacyRunner
from modules.optimization.protocol import HookResult
from modules.optimization.wire import LEGACY_ENV

NEEDS_SH = pytest.mark.skipif(shutil.which("python3") is None or not os.path.exists("/bin/sh"), reason="needs sh and python3")


CORPUS = Path(__file__).parent / "legacy_corpus"


HOOKS = ".claude/hooks"


WAIT = 30.0  # bound for things that finish at once when all is well


def _event(command: str = "ls -la", **extra: object) -> bytes:
    event = {
        "session_id": "5e55-1on",
        "transcript_path": "/tmp/transcript.jsonl",
        "cwd": "/tmp/project",
        "hook_event_name": "PreToolUse",
        "tool_name": "Bash",
        "tool_input": {"command": command},
        "tool_use_id": "toolu_01",
        **extra,
    }
    return json.dumps(event).encode()


EVENT = _event()


def _interpreter_of(command: list[str]) -> str:
    return subprocess.run([*command, "-c", "import sys; print(sys.executable)"], capture_output=True, text=True, check=True).stdout.strip()


PYENV_PY = _interpreter_of(["python3"]) if shutil.which("python3") else sys.executable  # what `python3` on PATH (a pyenv shim here) runs


SYSTEM_PY = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else PYENV_PY


def installed_tool(name: str) -> str:
    """A tool the tests need (uv, poetry, pipenv: test dependencies): on PATH or beside our interpreter.
    A missing one fails the test rather than skipping it."""
    path = shutil.which(name) or os.path.join(os.path.dirname(sys.executable), name)
    if not os.access(path, os.X_OK):
        pytest.fail(f"{name} is a test dependency: pip install -e '.[test]'", pytrace=False)
    return path


H = f'"$CLAUDE_PROJECT_DIR"/{HOOKS}'


def _env(project: Path, changes: dict[str, str | None] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONUNBUFFERED", LEGACY_ENV)}
    env["CLAUDE_PROJECT_DIR"] = str(project)
    for key, value in (changes or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def _native(command: str, event: bytes, env: dict[str, str], cwd: Path) -> HookResult:
    done = subprocess.run(["/bin/sh", "-c", command], input=event, env=env, cwd=cwd, capture_output=True, timeout=120, check=False)
    return HookResult(done.returncode, done.stdout, done.stderr)


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def runner(loop: asyncio.AbstractEventLoop) -> Iterator[LegacyRunner]:
    runner = LegacyRunner(max_servers=8)
    yield runner
    loop.run_until_complete(runner.close())


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("project")
    shutil.copytree(CORPUS, root / HOOKS)
    shutil.copytree(CORPUS / "hookpkg", root / "hookpkg")  # for `python -m hookpkg.X` from the project root
    shutil.copy(CORPUS / "introspect.py", root / "hookpkg" / "introspect.py")
    return root


async def spare_waiting(server: ForkServer) -> None:
    """Once the zygote has a spare waiting (more may come while the next run starts)."""
    for _ in range(int(WAIT * 100)):
        if server._spares:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no spare was forked")


def exits_soon(pid: int) -> bool:
    """Whether pid exits within WAIT seconds (waits on a pidfd: an event, not a sleep)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], WAIT)[0])
    finally:
        os.close(fd)
