"""ruff and mypy, as configured in pyproject.toml, run with the suite and are clean."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)


def test_ruff_is_clean():
    proc = _run("ruff", "check", "--output-format", "concise", "modules", "hooks", "tests", "bench")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_is_clean():
    proc = _run("mypy")  # files and strictness from [tool.mypy]
    assert proc.returncode == 0, proc.stdout + proc.stderr
