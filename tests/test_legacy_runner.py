"""Legacy hooks run warm must be indistinguishable from `/bin/sh -c command`.

The differential test runs every corpus script both ways with the same command,
event, environment and working directory, and compares exit code, stdout bytes and
stderr bytes. Real interpreters, real forks, real pipes; no mocks.
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from modules.optimization.forkserver_client import ForkServer
from modules.optimization.legacy_runner import LegacyRunner
from modules.optimization.manifest import STUB_MARKER
from modules.optimization.protocol import HookResult
from tests import legacy_helpers
from tests.legacy_helpers import EVENT, HOOKS, NEEDS_SH, PYENV_PY, SYSTEM_PY, H, _env, _event, _native, exits_soon, installed_tool, spare_waiting

pytestmark = NEEDS_SH
loop, runner, project = legacy_helpers.loop, legacy_helpers.runner, legacy_helpers.project  # the shared fixtures


BIG_EVENT = _event("x" * (2 * 1024 * 1024))  # far beyond a pipe's 64 KiB


@dataclass(frozen=True)
class Case:
    id: str
    command: str
    event: bytes = EVENT
    env: dict[str, str | None] = field(default_factory=dict)
    warm: bool = True


CASES = [
    Case("exit2-stderr", f"python3 {HOOKS}/block_exit2.py", _event("rm -rf /")),
    Case("exit2-passes", f"python3 {H}/block_exit2.py"),
    Case("json-deny", f"{PYENV_PY} {H}/json_deny.py"),
    Case("additional-context", f"python3 {H}/additional_context.py", _event(hook_event_name="UserPromptSubmit")),
    Case("deep-exit-code", f"python3 {H}/deep_exit.py 7"),
    Case("deep-exit-message", f"{SYSTEM_PY} {H}/deep_exit.py message"),
    Case("dunder-main", f"python3 {H}/dunder_main.py"),
    Case("dunder-main-relative", f"{PYENV_PY} ./{HOOKS}/../hooks/dunder_main.py"),
    Case("argparse", f"python3 {H}/argparse_flags.py --strict no-rm"),
    Case("argparse-positional", f"python3 {H}/argparse_flags.py 'two words'"),
    Case("argparse-error", f"python3 {H}/argparse_flags.py --bogus"),
    Case("subprocess", f"python3 {H}/subprocess_calls.py"),
    Case("writes-file", f"python3 {H}/writes_file.py"),
    Case("non-utf8", f"python3 {H}/non_utf8.py"),
    Case("non-utf8-c-locale", f"{SYSTEM_PY} {H}/non_utf8.py", env={"LANG": None, "LC_ALL": None, "LC_CTYPE": None}),
    Case("non-utf8-ioencoding", f"python3 {H}/non_utf8.py", env={"PYTHONIOENCODING": "latin-1:replace"}),
    Case("ignores-big-stdin", f"python3 {H}/ignores_stdin.py", BIG_EVENT),
    Case("uncaught", f"python3 {H}/uncaught.py"),
    Case("uncaught-big-stdin", f"{SYSTEM_PY} {H}/uncaught.py", BIG_EVENT),
    Case("env-var", f"python3 {H}/env_var.py", env={"HOOK_MODE": "strict"}),
    Case("env-var-pwd-elsewhere", f"python3 {H}/env_var.py", env={"PWD": "/"}),
    Case("interleaved", f"python3 {H}/interleaved.py"),
    Case("interleaved-unbuffered", f"python3 -u {H}/interleaved.py"),
    Case("atexit", f"python3 {H}/atexit_hook.py"),
    Case("missing-import", f"python3 {H}/missing_import.py"),
    Case("missing-import-system", f"{SYSTEM_PY} {H}/missing_import.py"),
    Case("sibling-module", f"python3 {H}/uses_helper.py"),
    Case("introspect", f"python3 {H}/introspect.py"),
    Case("introspect-absolute", f"{PYENV_PY} {H}/introspect.py", env={"PYTHONUNBUFFERED": "1"}),
    Case("introspect-system-isolated", f"{SYSTEM_PY} -I -B {H}/introspect.py", env={"LANG": None}),
    Case("introspect-env-launcher", f"/usr/bin/env python3 -X utf8 -W error {H}/introspect.py", env={"TZ": "Asia/Tokyo"}),
    Case("signal-death", f"python3 {H}/signal_death.py"),
    Case("signal-death-exec", f"exec python3 {H}/signal_death.py"),
    Case("keyboard-interrupt", f"python3 {H}/keyboard_interrupt.py"),
    Case("keyboard-interrupt-exec", f"exec python3 {H}/keyboard_interrupt.py"),
    Case("warnings", f"python3 {H}/warns.py"),
    *(Case(f"exits-{m}", f"python3 {H}/exits.py {m}") for m in (
        "exit-object", "exit-true", "exit-wide", "exit-none", "custom-hook", "hook-raises", "hook-exits", "no-hook",
        "syntax-error", "plain",
    )),
    *(Case(f"finalizers-{m}", f"python3 {H}/finalizers.py {m}") for m in (
        "del", "generator", "unclosed-file", "closed-file", "weakref-callback", "finalize", "replaced-stdout", "thread", "none",
    )),
    Case("finalizers-dev-mode", f"python3 -X dev {H}/finalizers.py unclosed-file"),
    Case("shebang-direct", f"{H}/shebang_env.py arg1"),
    Case("shebang-relative", f"./{HOOKS}/shebang_env.py"),
    # `python -m package.module` with the package in the project (sys.path[0] is the working directory).
    Case("module-argv-atexit", "python3 -m hookpkg.argv_atexit a 'b c'"),
    Case("module-keyboard-interrupt", "python3 -m hookpkg.interrupted"),
    Case("module-uncaught", "python3 -m hookpkg.fails"),
    Case("module-package-main", "python3 -m hookpkg.sub x"),
    Case("module-introspect", f"{PYENV_PY} -u -m hookpkg.introspect", env={"PYTHONUNBUFFERED": None}),
    Case("module-missing-spawned", "python3 -m hookpkg.no_such_module", warm=False),
    Case("module-installed-elsewhere-spawned", "python3 -m json.tool --help", warm=False),
    Case("bash-spawned", f"{H}/bash_hook.sh", warm=False),
    Case("pipe-spawned", f"python3 {H}/echo_event.py | tr a-z A-Z", warm=False),
    Case("missing-script-spawned", f"python3 {H}/no_such_hook.py", warm=False),
    Case("python-c-spawned", "python3 -c 'print(1)'", warm=False),
    Case("third-party", f"python3 {H}/third_party.py"),  # click: see test_the_corpus_third_party_library_is_installed
]
# Every other CPython the machine has (pyenv here), oldest supported first.
for _python in sorted(Path(os.path.expanduser("~/.pyenv/versions")).glob("3.*/bin/python3")):
    if _python.resolve() != Path(PYENV_PY).resolve() and subprocess.run([_python, "-c", "import sys; assert sys.version_info >= (3, 8)"], capture_output=True, check=False).returncode == 0:
        _version = _python.parent.parent.name
        CASES += [
            Case(f"introspect-{_version}", f"{_python} {H}/introspect.py"),
            Case(f"uncaught-{_version}", f"{_python} {H}/uncaught.py"),
            Case(f"atexit-{_version}", f"{_python} {H}/atexit_hook.py"),
            Case(f"keyboard-interrupt-{_version}", f"{_python} {H}/keyboard_interrupt.py"),
            Case(f"hook-raises-{_version}", f"{_python} {H}/exits.py hook-raises"),
            Case(f"exit-object-{_version}", f"{_python} {H}/exits.py exit-object"),
            Case(f"finalizers-del-{_version}", f"{_python} {H}/finalizers.py del"),
        ]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_identical_to_sh(case: Case, runner: LegacyRunner, loop: asyncio.AbstractEventLoop, project: Path) -> None:
    env = _env(project, case.env)
    plan = runner.plan(case.command, env, str(project))
    assert plan.warm is case.warm, plan.reason
    expected = _native(case.command, case.event, env, project)
    # Twice: the first run compiles the script in its child, later ones run the code the zygote compiled.
    for _ in range(2):
        before = runner.stats()
        got = loop.run_until_complete(runner.run(case.command, stdin=case.event, env=env, cwd=str(project), timeout_s=60))
        after = runner.stats()
        assert got.exit_code == expected.exit_code
        assert got.stdout == expected.stdout
        assert got.stderr == expected.stderr
        assert after["warm_runs"] - before["warm_runs"] == int(case.warm), after
        assert after["spawned_runs"] - before["spawned_runs"] == int(not case.warm), after
    if case.warm:
        # And once more in a spare: forked ahead, its environment applied, waiting under SCHED_BATCH.
        server = runner.servers[-1]  # the zygote used last
        loop.run_until_complete(spare_waiting(server))
        taken = _spy_on_hand_offs(server)
        got = loop.run_until_complete(runner.run(case.command, stdin=case.event, env=env, cwd=str(project), timeout_s=60))
        assert (got.exit_code, got.stdout, got.stderr) == (expected.exit_code, expected.stdout, expected.stderr)
        assert taken and taken[-1] is not None, "no spare took the run"


def _spy_on_hand_offs(server: ForkServer) -> list[int | None]:
    """What each hand-off of the server returns from now on: the spare's pid, or None (no spare)."""
    taken: list[int | None] = []
    hand_off = server._hand_to_spare

    async def spy(*args: Any, **kwargs: Any) -> int | None:
        taken.append(await hand_off(*args, **kwargs))
        return taken[-1]

    server._hand_to_spare = spy  # type: ignore[method-assign]
    return taken


def test_the_corpus_third_party_library_is_installed() -> None:
    """The third-party case needs click where the hooks' `python3` finds it (scripts/test-setup
    installs python3-click): without it, both sides would fail alike and prove nothing."""
    done = subprocess.run([PYENV_PY, "-c", "import click"], capture_output=True, check=False)
    assert done.returncode == 0, f"{PYENV_PY} cannot import click: install python3-click (scripts/test-setup does)"


def test_second_run_is_identical_too(runner: LegacyRunner, loop: asyncio.AbstractEventLoop, project: Path) -> None:
    # The first run of a script preloads its imports; later runs fork from a zygote that holds them.
    env = _env(project)
    command = f"python3 {H}/third_party.py"
    expected = _native(command, EVENT, env, project)
    for _ in range(3):
        got = loop.run_until_complete(runner.run(command, stdin=EVENT, env=env, cwd=str(project)))
        assert (got.exit_code, got.stdout, got.stderr) == (expected.exit_code, expected.stdout, expected.stderr)


OTHER_PYTHONS = [c.command.split()[0] for c in CASES if c.id.startswith("introspect-3.")]


@pytest.mark.parametrize("python", ["python3", *OTHER_PYTHONS[-1:]])
def test_stub_runs_its_original_under_the_stub_path(python: str, runner: LegacyRunner, loop: asyncio.AbstractEventLoop, tmp_path: Path) -> None:
    hook = tmp_path / "guard.py"
    original = (
        b"import sys, traceback, warnings\n"
        b"print('original at', __file__, sys.argv)\n"
        b"warnings.warn('quoted from the original')\n"
        b"try:\n"
        b"    {}['missing']\n"
        b"except KeyError:\n"
        b"    traceback.print_exc()\n"
        b"\n"
        b"def fail():\n"
        b"    raise ValueError(sys.stdin.read()[:20])\n"
        b"\n"
        b"fail()\n"
    )
    hook.write_bytes(original)
    env = _env(tmp_path)
    command = f"{python} {hook} --flag"
    expected = _native(command, EVENT, env, tmp_path)
    hook.write_bytes(b"#!/usr/bin/env python3\n" + STUB_MARKER + b"\nraise SystemExit('the stub itself must not run')\n")
    hook.with_name("guard.py.original").write_bytes(original)
    plan = runner.plan(command, env, str(tmp_path))
    assert plan.warm and plan.code_path == f"{hook}.original" and plan.script == str(hook), plan
    got = loop.run_until_complete(runner.run(command, stdin=EVENT, env=env, cwd=str(tmp_path)))
    assert (got.exit_code, got.stdout, got.stderr) == (expected.exit_code, expected.stdout, expected.stderr)
    assert b"original at " + str(hook).encode() in got.stdout
    assert b"    raise ValueError(sys.stdin.read()[:20])" in got.stderr


@pytest.mark.parametrize("warm", [True, False], ids=["warm", "spawned"])
def test_timeout_kills_the_hook_and_its_children(warm: bool, runner: LegacyRunner, loop: asyncio.AbstractEventLoop, project: Path) -> None:
    command = f"python3 {H}/hang.py" if warm else f"sh -c 'python3 {H}/hang.py; true'"
    assert runner.plan(command, _env(project), str(project)).warm is warm
    result = loop.run_until_complete(runner.run(command, stdin=EVENT, env=_env(project), cwd=str(project), timeout_s=2.0))
    assert result.exit_code is None
    assert result.stdout.startswith(b"started "), result
    assert exits_soon(int(result.stdout.split()[1]))  # the grandchild `sleep 1000` went with it


def test_concurrent_warm_runs(runner: LegacyRunner, loop: asyncio.AbstractEventLoop, project: Path) -> None:
    env, command = _env(project), f"python3 {H}/echo_event.py"
    before = runner.stats()

    async def all_at_once() -> list[HookResult]:
        return await asyncio.gather(*(runner.run(command, stdin=_event(f"call {i}"), env=env, cwd=str(project)) for i in range(12)))

    results = loop.run_until_complete(all_at_once())
    assert [r.stdout for r in results] == [f"call {i}\n".encode() for i in range(12)]
    assert all(r.exit_code == 0 and r.stderr == b"" for r in results)
    assert runner.stats()["warm_runs"] == before["warm_runs"] + 12


def test_a_shim_runs_once_not_per_event(loop: asyncio.AbstractEventLoop, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "shim-calls"
    shim = bin_dir / "python3"
    shim.write_text(f'#!/bin/sh\necho called >> {calls}\nexport SHIMMED=yes\nexec {SYSTEM_PY} "$@"\n')
    shim.chmod(0o755)
    script = tmp_path / "hook.py"
    script.write_text("import os, sys\nprint(os.environ['SHIMMED'], sys.executable, len(sys.stdin.read()))\n")
    env = _env(tmp_path, {"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    expected = _native("python3 hook.py", EVENT, env, tmp_path)
    calls.unlink()
    runner = LegacyRunner()
    try:
        for _ in range(4):
            got = loop.run_until_complete(runner.run("python3 hook.py", stdin=EVENT, env=env, cwd=str(tmp_path)))
            assert (got.exit_code, got.stdout, got.stderr) == (expected.exit_code, expected.stdout, expected.stderr)
        assert len(calls.read_text().splitlines()) == 1  # the probe; never per event
        assert runner.stats()["warm_runs"] == 4 and runner.stats()["probes"] == 1
    finally:
        loop.run_until_complete(runner.close())


def test_a_virtualenv_interpreter(runner: LegacyRunner, loop: asyncio.AbstractEventLoop, tmp_path: Path) -> None:
    subprocess.run([PYENV_PY, "-m", "venv", "--without-pip", str(tmp_path / "venv")], check=True)
    (tmp_path / "hook.py").write_text("import os, sys\nprint(sys.executable, sys.prefix, sys.base_prefix, sys.path, os.environ.get('VIRTUAL_ENV'))\n")
    for command, changes in (
        ("venv/bin/python hook.py", {}),
        ("python3 hook.py", {"PATH": f"{tmp_path}/venv/bin:{os.environ['PATH']}", "VIRTUAL_ENV": str(tmp_path / "venv")}),
    ):
        env = _env(tmp_path, changes)
        expected = _native(command, EVENT, env, tmp_path)
        before = runner.stats()["warm_runs"]
        got = loop.run_until_complete(runner.run(command, stdin=EVENT, env=env, cwd=str(tmp_path)))
        assert (got.exit_code, got.stdout, got.stderr) == (expected.exit_code, expected.stdout, expected.stderr)
        assert b"/venv" in got.stdout and runner.stats()["warm_runs"] == before + 1


@pytest.mark.parametrize(
    ("command", "warm", "reason"),
    [
        (f"python3 {H}/echo_event.py", True, "python script"),
        (f"python3 {H}/echo_event.py | cat", False, "shell syntax '|'"),
        (f"python3 {H}/echo_event.py > out.txt", False, "shell syntax '>'"),
        (f"python3 {H}/echo_event.py && echo done", False, "shell syntax '&'"),
        (f"python3 {H}/echo_event.py; true", False, "shell syntax ';'"),
        (f"python3 {H}/*.py", False, "glob '*'"),
        ("python3 $(echo x.py)", False, "parameter expansion beyond $NAME"),
        ("python3 `echo x.py`", False, "shell syntax '`'"),
        (f"FOO=1 python3 {H}/echo_event.py", False, "variable assignment"),
        (f"python3 $UNQUOTED_WITH_SPACES/{HOOKS}/echo_event.py", False, "unquoted expansion"),
        ("python3 -c 'print(1)'", False, "interpreter option -c"),
        ("python3 -m json.tool", False, "interpreter option -m"),
        (f"python3 -i {H}/echo_event.py", False, "interpreter option -i"),
        (f"python3 {H}/missing.py", False, "no such file"),
        (f"{H}/bash_hook.sh", False, "shebang /bin/bash is not python"),
        ("hookopt-no-such-runtime hook.js", False, "hookopt-no-such-runtime: not found"),
        ("/bin/true hook.js", False, "not a python command"),
        ("uv run --script hook.py", False, "uv: not found"),
        (f"/usr/bin/env -S python3 {H}/echo_event.py", False, "env with options"),
        (f"exec python3 {H}/echo_event.py", True, "python script"),
        (f"python3 -u -X utf8 -W ignore {H}/echo_event.py", True, "python script"),
    ],
)
def test_plan_reasons(command: str, warm: bool, reason: str, runner: LegacyRunner, project: Path) -> None:
    plan = runner.plan(command, _env(project, {"UNQUOTED_WITH_SPACES": "a b"}), str(project))
    assert plan.warm is warm and reason in plan.reason, plan


def _with_uv(tmp_path: Path) -> dict[str, str]:
    """The hooks' environment with the real uv (a test dependency) first on PATH, offline, its cache here."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "uv").symlink_to(installed_tool("uv"))
    return _env(tmp_path, {"PATH": f"{bin_dir}:{os.environ['PATH']}", "UV_OFFLINE": "1", "UV_CACHE_DIR": str(tmp_path / "uv-cache")})


def test_plan_for_uv_scripts(runner: LegacyRunner, tmp_path: Path) -> None:
    env = _with_uv(tmp_path)
    meta = '# /// script\n# dependencies = ["Click>=8", "python-dateutil"]\n# ///\nprint(1)\n'
    (tmp_path / "deps.py").write_text(meta)
    (tmp_path / "pinned.py").write_text(meta.replace("# dependencies", '# requires-python = ">=3.12"\n# dependencies'))
    plan = runner.plan("uv run --script deps.py x", env, str(tmp_path))
    assert plan.warm and plan.resolver == "uv" and plan.argv == ("x",), plan  # uv itself is asked which environment
    assert runner.plan("uv run pinned.py", env, str(tmp_path)).warm
    assert not runner.plan("uv run --with rich deps.py", env, str(tmp_path)).warm


def test_uv_script_with_missing_dependency_spawns(runner: LegacyRunner, loop: asyncio.AbstractEventLoop, tmp_path: Path) -> None:
    """uv cannot resolve the script's environment: the probe finds no interpreter, so the hook is
    spawned and gives exactly uv's own failure."""
    (tmp_path / "deps.py").write_text('# /// script\n# dependencies = ["hookopt-not-installed"]\n# ///\nprint(1)\n')
    env = _with_uv(tmp_path)
    assert runner.plan("uv run deps.py", env, str(tmp_path)).warm
    expected = _native("uv run deps.py", EVENT, env, tmp_path)
    assert expected.exit_code not in (0, None) and b"hookopt-not-installed" in expected.stderr, expected
    before = runner.stats()
    got = loop.run_until_complete(runner.run("uv run deps.py", stdin=EVENT, env=env, cwd=str(tmp_path)))
    assert (got.exit_code, got.stdout, got.stderr) == (expected.exit_code, expected.stdout, expected.stderr)
    assert runner.stats()["fallbacks"] == before["fallbacks"] + 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
