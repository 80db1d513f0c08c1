"""hookopt installed from its wheel, not from this checkout: with pip into a fresh venv and with
`uv tool install`. Each installation's own `hookopt install --consolidate` over a copy of the
example project gives, through the real Claude Code CLI, the same blocked calls as the native hooks."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.claude_harness import run_session
from tests.daemon_helpers import private_runtime
from tests.test_e2e_install import BLOCKED, calls, outcome

pytestmark = pytest.mark.claude

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "project"


def _run(cmd, **kwargs):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kwargs)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def _clean_env(**extra):
    """An environment in which nothing points back at this checkout or its venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(ROOT)))
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", out, ROOT])
    (built,) = out.glob("hookopt-*.whl")
    return built


@pytest.fixture(scope="module")
def native(claude_cli, tmp_path_factory):
    """The example project's own hooks under the real CLI: which calls they block and why."""
    project = tmp_path_factory.mktemp("native") / "project"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("hookopt", "logs"))
    result = run_session(claude_cli, project, calls(project.resolve()))
    blocked, reasons = outcome(result)
    assert blocked == BLOCKED
    return project.resolve(), reasons


def _pip_venv(wheel, base):
    venv = base / "venv"
    _run([sys.executable, "-m", "venv", venv])
    _run([venv / "bin" / "python", "-m", "pip", "install", "-q", wheel], env=_clean_env())
    return venv / "bin" / "hookopt"


def _uv_tool(wheel, base):
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv is None:
        pytest.fail("uv is missing: it is a test dependency (pip install -e '.[test]')", pytrace=False)
    env = _clean_env(UV_TOOL_DIR=str(base / "tools"), UV_TOOL_BIN_DIR=str(base / "bin"), UV_CACHE_DIR=str(Path.home() / ".cache" / "uv"))
    _run([uv, "tool", "install", "--python", sys.executable, wheel], env=env)
    return base / "bin" / "hookopt"


@pytest.mark.parametrize("method", [_pip_venv, _uv_tool], ids=["pip-venv", "uv-tool"])
def test_installed_wheel_blocks_what_the_native_hooks_block(method, wheel, native, claude_cli, tmp_path):
    hookopt = method(wheel, tmp_path)
    python = hookopt.read_text().splitlines()[0].removeprefix("#!").strip()  # the entry point's interpreter
    site = Path(_run([python, "-c", "import modules, os; print(os.path.dirname(os.path.dirname(modules.__file__)))"],
                     cwd=tmp_path, env=_clean_env()).stdout.strip())
    assert site != ROOT and site.name == "site-packages", site  # the wheel's copy, not this checkout

    project = tmp_path / "project"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("hookopt", "logs"))
    project = project.resolve()
    with private_runtime(project) as rt:
        env = _clean_env(HOOKOPT_RUNTIME_DIR=str(rt.root))
        _run([hookopt, "install", "--consolidate", "--project", project], cwd=tmp_path, env=env)
        settings = (project / ".claude" / "settings.json").read_text()
        client = site / "modules" / "optimization" / "shipped" / "hooks" / "stack.py"
        assert str(client) in settings and str(ROOT) not in settings
        assert client.is_file()
        # The native client, built from the wheel's copy of its source, answers first.
        assert (site / "modules" / "optimization" / "shipped" / "hooks" / "client.c").is_file()
        assert f"exec {project}/.claude/hookopt/hookopt-client stack project" in settings

        result = run_session(claude_cli, project, calls(project), env={"HOOKOPT_RUNTIME_DIR": str(rt.root)})
        blocked, reasons = outcome(result)
        assert blocked == BLOCKED
        native_project, native_reasons = native
        for step in BLOCKED:  # the same reason reaches Claude
            expected = native_reasons[step].split("]: ")[-1].strip().replace(str(native_project), str(project))
            assert expected in reasons[step], (step, reasons[step])

        # Served warm by a daemon that the installed client started from site-packages.
        status = json.loads(_run([hookopt, "status", "--json", "--project", project], cwd=tmp_path, env=env).stdout)
        assert status["installed"] and status["daemon"]["legacy"]["warm_runs"] > 0, status
        pids = rt.daemons()  # the supervisor and its worker
        assert pids
        for pid in pids:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            assert f"PYTHONPATH={site}".encode() in [e.split(b":")[0] for e in environ], environ

        _run([hookopt, "uninstall", "--project", project], cwd=tmp_path, env=env)
        assert (project / ".claude" / "settings.json").read_bytes() == (EXAMPLE / ".claude" / "settings.json").read_bytes()
