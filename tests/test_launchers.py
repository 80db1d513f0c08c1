"""Hooks launched through uv (and tools like it) run warm, byte-identical to `/bin/sh -c command`.

Real uv (a test dependency), real PEP 723 dependencies resolved from the package index
into uv's own cache, real forks. Each command runs natively and warm, twice warm (the
second from code the zygote compiled), and the outputs are compared byte for byte.
Forms not listed here are spawned exactly as Claude Code would (see test_plan_reasons).
"""
from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from modules.optimization.legacy_runner import LegacyRunner
from modules.optimization.protocol import HookResult
from tests import legacy_helpers

UV = shutil.which("uv") or os.path.join(os.path.dirname(sys.executable), "uv")


@pytest.fixture(autouse=True)
def _uv_is_installed():
    """uv is a test dependency: a missing one fails these tests rather than skipping them."""
    if not os.access(UV, os.X_OK):
        pytest.fail("uv is a test dependency: pip install -e '.[test]'", pytrace=False)
EVENT = b'{"hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_input": {"command": "rm -rf /"}}'

INLINE = """\
# /// script
# dependencies = ["six"]
# ///
import json, os, sys
import six
event = json.load(sys.stdin)
print(six.__name__, os.path.basename(sys.executable), sys.argv, sys.orig_argv[1:], os.environ.get("VIRTUAL_ENV", "")[-30:])
print(sorted(k for k in os.environ if k.startswith("UV") or k == "VIRTUAL_ENV"), os.environ["PATH"].split(":")[0][-20:])
print(sys.path[0] == os.path.dirname(os.path.abspath(__file__)), sys.prefix != sys.base_prefix)
if "rm -rf" in event["tool_input"]["command"]:
    print("Blocked by", __file__, file=sys.stderr)
    sys.exit(2)
"""
PLAIN = "import sys\nprint(sys.executable == sys.orig_argv[0], sys.argv)\nraise SystemExit(sys.stdin.read().count('rm'))\n"


loop = legacy_helpers.loop  # the shared module-scoped event loop


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("uvproject")
    bin_dir = root / "bin"
    bin_dir.mkdir()
    (bin_dir / "uv").symlink_to(UV)
    hooks = root / ".claude" / "hooks"
    hooks.mkdir(parents=True)
    (hooks / "inline.py").write_text(INLINE)
    (hooks / "plain.py").write_text(PLAIN)
    shebang = hooks / "shebang.py"
    shebang.write_text("#!/usr/bin/env -S uv run --script\n" + INLINE)
    shebang.chmod(0o755)
    # A stand-in for poetry/pipenv: `X run python ...` runs a project venv's python (both exec it).
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True)
    for tool in ("poetry", "pipenv"):
        (bin_dir / tool).write_text(f'#!/bin/sh\n[ "$1" = run ] && shift\nshift\nexport TOOL_ENV={tool}\nexec {root}/venv/bin/python "$@"\n')
        (bin_dir / tool).chmod(0o755)
    return root


def _env(project: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "VIRTUAL_ENV", "PYTHON"))}
    env.update(PATH=f"{project / 'bin'}:{os.environ['PATH']}", CLAUDE_PROJECT_DIR=str(project), UV_CACHE_DIR=str(project / "uv-cache"))
    return env


def _native(command: str, env: dict[str, str], cwd: Path) -> HookResult:
    done = subprocess.run(["/bin/sh", "-c", command], input=EVENT, env=env, cwd=cwd, capture_output=True, timeout=300, check=False)
    return HookResult(done.returncode, done.stdout, done.stderr)


H = ".claude/hooks"
COMMANDS = [
    f"uv run {H}/inline.py --flag",
    f"uv run --script {H}/inline.py",
    f'uv run "$CLAUDE_PROJECT_DIR"/{H}/plain.py x',
    f"{H}/shebang.py arg",
    f"poetry run python {H}/plain.py p",
    f"pipenv run python3 -u {H}/plain.py",
]


@pytest.mark.parametrize("command", COMMANDS)
def test_launched_hooks_run_warm_and_identical(command: str, project: Path, loop: asyncio.AbstractEventLoop) -> None:
    env, runner = _env(project), LegacyRunner()
    try:
        plan = runner.plan(command, env, str(project))
        assert plan.warm and plan.resolver is not None, plan
        # The first native run may create uv's environment and say so on stderr; after that it is quiet.
        _native(command, env, project)
        expected = _native(command, env, project)
        for _ in range(3):
            got = loop.run_until_complete(runner.run(command, stdin=EVENT, env=env, cwd=str(project)))
            assert (got.exit_code, got.stdout, got.stderr) == (expected.exit_code, expected.stdout, expected.stderr)
        assert runner.stats()["warm_runs"] == 3 and runner.stats()["probes"] == 1, runner.stats()
    finally:
        loop.run_until_complete(runner.close())


def test_edited_inline_metadata_is_resolved_again(project: Path, loop: asyncio.AbstractEventLoop) -> None:
    hook = project / H / "deps.py"
    hook.write_text(INLINE)
    env, runner, command = _env(project), LegacyRunner(), f"uv run {H}/deps.py"
    try:
        first = loop.run_until_complete(runner.run(command, stdin=EVENT, env=env, cwd=str(project)))
        assert first.stdout.startswith(b"six ")
        # A new dependency: uv makes another environment; so must we.
        hook.write_text(INLINE.replace('["six"]', '["six", "idna"]').replace("import six", "import six, idna\nprint(idna.__name__)"))
        _native(command, env, project)
        expected = _native(command, env, project)
        got = loop.run_until_complete(runner.run(command, stdin=EVENT, env=env, cwd=str(project)))
        assert (got.exit_code, got.stdout, got.stderr) == (expected.exit_code, expected.stdout, expected.stderr)
        assert b"idna" in got.stdout and runner.stats()["probes"] == 2 and runner.stats()["warm_runs"] == 2
    finally:
        loop.run_until_complete(runner.close())


def test_signal_death_under_uv_is_what_uv_reports(project: Path, loop: asyncio.AbstractEventLoop) -> None:
    (project / H / "dies.py").write_text("import os, signal\nprint('going', flush=True)\nos.kill(os.getpid(), signal.SIGTERM)\n")
    env, runner, command = _env(project), LegacyRunner(), f"uv run {H}/dies.py"
    try:
        expected = _native(command, env, project)
        got = loop.run_until_complete(runner.run(command, stdin=EVENT, env=env, cwd=str(project)))
        assert (got.exit_code, got.stdout, got.stderr) == (expected.exit_code, expected.stdout, expected.stderr) == (143, b"going\n", b"")
        assert runner.stats()["warm_runs"] == 1
    finally:
        loop.run_until_complete(runner.close())


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        (f"uv run --with rich {H}/inline.py", "uv: options other than --script"),
        (f"uv tool run {H}/inline.py", "only `uv run"),
        (f"poetry run pytest {H}/plain.py", "only `poetry run python"),
        (f"pipenv run python -I {H}/plain.py", "-I, -E or -S"),
    ],
)
def test_other_launcher_forms_are_spawned(command: str, reason: str, project: Path) -> None:
    plan = LegacyRunner().plan(command, _env(project), str(project))
    assert not plan.warm and reason in plan.reason, plan
