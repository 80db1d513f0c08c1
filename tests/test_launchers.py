"""Hooks launched through uv, poetry and pipenv run warm, byte-identical to `/bin/sh -c command`.

Real uv, poetry and pipenv (test dependencies), real PEP 723 dependencies resolved from
the package index into uv's own cache, real project environments, real forks. Each command runs natively and warm, twice warm (the
second from code the zygote compiled), and the outputs are compared byte for byte.
Forms not listed here are spawned exactly as Claude Code would (see test_plan_reasons).
"""
from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from modules.optimization.legacy_runner import LegacyRunner
from modules.optimization.protocol import HookResult
from tests import legacy_helpers
from tests.legacy_helpers import installed_tool

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
    for name in ("uv", "poetry", "pipenv"):  # test dependencies: a missing one fails, not skips
        (bin_dir / name).symlink_to(installed_tool(name))
    hooks = root / ".claude" / "hooks"
    hooks.mkdir(parents=True)
    (hooks / "inline.py").write_text(INLINE)
    (hooks / "plain.py").write_text(PLAIN)
    shebang = hooks / "shebang.py"
    shebang.write_text("#!/usr/bin/env -S uv run --script\n" + INLINE)
    shebang.chmod(0o755)
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
]


@pytest.mark.parametrize("command", COMMANDS)
def test_launched_hooks_run_warm_and_identical(command: str, project: Path, loop: asyncio.AbstractEventLoop) -> None:
    _assert_warm_and_identical(command, _env(project), project, loop)


def _assert_warm_and_identical(command: str, env: dict[str, str], project: Path, loop: asyncio.AbstractEventLoop) -> HookResult:
    """Three warm runs of command, each byte for byte what sh gives; the native result."""
    runner = LegacyRunner()
    try:
        plan = runner.plan(command, env, str(project))
        assert plan.warm and plan.resolver is not None, plan
        # The first native run may create the tool's environment and say so on stderr; after that it is quiet.
        _native(command, env, project)
        expected = _native(command, env, project)
        for _ in range(3):
            got = loop.run_until_complete(runner.run(command, stdin=EVENT, env=env, cwd=str(project)))
            assert (got.exit_code, got.stdout, got.stderr) == (expected.exit_code, expected.stdout, expected.stderr)
        assert runner.stats()["warm_runs"] == 3 and runner.stats()["probes"] == 1, runner.stats()
        return expected
    finally:
        loop.run_until_complete(runner.close())


# A hook of a poetry, pipenv or uv project: it imports a module only the project's environment has.
TOOL_HOOK = """\
import os, sys
import only_here
print(sys.executable, sys.argv, sys.orig_argv[1:], only_here.__file__, getattr(only_here, "BUILD", None))
print(os.environ.get("VIRTUAL_ENV"), os.environ.get("PIPENV_ACTIVE"), os.environ["PATH"].split(":")[0])
print(sys.prefix, sys.path[1:])
raise SystemExit(sys.stdin.read().count("rm"))
"""
TOOL_FILES = {
    "poetry": ("pyproject.toml", '[project]\nname = "hooks"\nversion = "0"\n\n[tool.poetry]\npackage-mode = false\n'),
    "pipenv": ("Pipfile", "[packages]\n"),
    "uv": ("pyproject.toml", '[project]\nname = "hooks"\nversion = "0"\nrequires-python = ">=3.8"\ndependencies = []\n'),
}


def _tool_project(tool: str, root: Path) -> dict[str, str]:
    """A poetry, pipenv or uv project at root with its environment made by the tool; the hooks' environment."""
    (root / "bin").mkdir()
    (root / "bin" / tool).symlink_to(installed_tool(tool))
    (root / H).mkdir(parents=True)
    (root / H / "tool.py").write_text(TOOL_HOOK)
    name, text = TOOL_FILES[tool]
    (root / name).write_text(text)
    env = _env(root)
    # Both tools are Python programs that exec the project's interpreter; the environment stays in the project.
    env.update(POETRY_VIRTUALENVS_IN_PROJECT="true", POETRY_CACHE_DIR=str(root / "poetry-cache"), PIPENV_VENV_IN_PROJECT="1")
    _make_environment(tool, root, env, build=1)
    return env


def _make_environment(tool: str, root: Path, env: dict[str, str], build: int) -> None:
    """(Re)make the project's environment with the tool, with a module only it has."""
    shutil.rmtree(root / ".venv", ignore_errors=True)
    subprocess.run(["/bin/sh", "-c", f"{tool} run python -c pass"], env=env, cwd=root, check=True, capture_output=True, timeout=300)
    venv_python = root / ".venv" / "bin" / "python"
    site = subprocess.run([venv_python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True, check=True)
    (Path(site.stdout.strip()) / "only_here.py").write_text(f"BUILD = {build}\n")


@pytest.mark.parametrize(
    ("tool", "command"),
    [("poetry", f"poetry run python {H}/tool.py p"), ("pipenv", f"pipenv run python3 -u {H}/tool.py"), ("uv", f"uv run {H}/tool.py p")],
)
def test_project_tools_run_hooks_warm_in_the_project_environment(
    tool: str, command: str, tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    env = _tool_project(tool, tmp_path)
    expected = _assert_warm_and_identical(command, env, tmp_path, loop)
    # What the tool gave the script natively, now reproduced warm: its environment, not the tool's own.
    assert expected.exit_code == 1 and str(tmp_path / ".venv") in expected.stdout.decode(), expected
    assert f"{tmp_path / '.venv'} {'1' if tool == 'pipenv' else 'None'} {tmp_path / '.venv' / 'bin'}\n".encode() in expected.stdout, expected


def test_a_new_lock_or_a_remade_environment_is_resolved_again(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> None:
    env, runner, command = _tool_project("poetry", tmp_path), LegacyRunner(), f"poetry run python {H}/tool.py"

    def same_as_native() -> bytes:
        expected = _native(command, env, tmp_path)
        got = loop.run_until_complete(runner.run(command, stdin=EVENT, env=env, cwd=str(tmp_path)))
        assert (got.exit_code, got.stdout, got.stderr) == (expected.exit_code, expected.stdout, expected.stderr)
        return got.stdout

    try:
        assert b" 1\n" in same_as_native() and runner.stats()["probes"] == 1
        (tmp_path / "poetry.lock").write_text("# a lock file appears: poetry may pick another environment\n")
        same_as_native()
        assert runner.stats()["probes"] == 2, runner.stats()
        _make_environment("poetry", tmp_path, env, build=2)  # a new interpreter, a new module
        assert b" 2\n" in same_as_native() and runner.stats()["probes"] == 3, runner.stats()
        assert runner.stats()["warm_runs"] == 3, runner.stats()
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


def test_a_launcher_that_talks_on_every_run_is_spawned(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> None:
    """pipenv says "Loading .env environment variables..." on every run when the project has a
    .env: a warm run could not say the same, so the hook is spawned, exactly as sh runs it."""
    env = _tool_project("pipenv", tmp_path)
    (tmp_path / ".env").write_text("FROM_DOTENV=yes\n")
    command, runner = f"pipenv run python {H}/tool.py", LegacyRunner()
    try:
        expected = _native(command, env, tmp_path)
        assert b".env" in expected.stderr, expected  # what makes it talk
        got = loop.run_until_complete(runner.run(command, stdin=EVENT, env=env, cwd=str(tmp_path)))
        assert (got.exit_code, got.stdout, got.stderr) == (expected.exit_code, expected.stdout, expected.stderr)
        assert runner.stats()["warm_runs"] == 0 and runner.stats()["probes"] == 1, runner.stats()
    finally:
        loop.run_until_complete(runner.close())
