"""spawn(): `/bin/sh -c command` as Claude Code runs it, its exit awaited on a pidfd.

Real processes, real pipes. What the daemon must never leave behind: a zombie per
timed-out hook, or a thread per run.
"""
from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from modules.optimization.spawn import spawn
from modules.optimization.wire import LEGACY_ENV
from tests.legacy_helpers import NEEDS_SH, exits_soon

pytestmark = NEEDS_SH

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C"}


def run(command: str, stdin: bytes = b"{}", timeout_s: float = 30.0, cwd: str = "/"):
    return asyncio.run(spawn(command, stdin=stdin, env=ENV, cwd=cwd, timeout_s=timeout_s))


def test_exit_code_stdout_stderr_and_stdin_as_sh_gives_them(tmp_path: Path) -> None:
    big = b"x" * (1 << 20)  # far beyond a pipe's 64 KiB: fed while the command reads
    got = run(f'wc -c; echo "to stderr $PWD ${LEGACY_ENV}" >&2; exit 3', stdin=big, cwd=str(tmp_path))
    assert (got.exit_code, got.stdout.strip(), got.stderr) == (3, str(len(big)).encode(), f"to stderr {tmp_path} 1\n".encode())


def test_a_signal_death_is_its_negative_number() -> None:
    assert run("kill -TERM $$").exit_code == -15


def test_a_timed_out_command_is_killed_with_its_group_and_reaped() -> None:
    got = run("echo $$; sleep 100 & echo $!; wait", timeout_s=0.5)
    assert got.exit_code is None
    sh, sleeper = (int(pid) for pid in got.stdout.split())
    with pytest.raises(ChildProcessError):  # sh is ours and already reaped: no zombie left
        os.waitpid(sh, os.WNOHANG)
    assert not Path(f"/proc/{sh}").exists()
    assert exits_soon(sleeper)  # its group was killed too (it is init's to reap)



def test_no_thread_is_left_or_started_per_run(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    os.mkfifo(gate)

    async def many() -> list[int]:
        seen = []
        for _ in range(20):
            task = asyncio.ensure_future(spawn(f"cat {gate}", stdin=b"", env=ENV, cwd="/"))
            for _ in range(3):
                await asyncio.sleep(0)  # started: it waits on the gate until we open it
            seen.append(threading.active_count())
            os.close(os.open(gate, os.O_WRONLY))  # opened once cat has it open: then it sees EOF
            assert (await task).exit_code == 0
        return seen

    before = threading.active_count()
    assert set(asyncio.run(many())) == {before}
    assert threading.active_count() == before
