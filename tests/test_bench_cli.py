"""`hookopt bench` on real project copies: identical outcomes, figures, a chart, and a
mismatch that must be caught."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.test_installer import EXAMPLE, IGNORED, snapshot

ROOT = Path(__file__).resolve().parents[1]


def bench(project, tmp_path, *extra, env=None):
    return subprocess.run(
        [sys.executable, "-m", "modules.optimization.cli", "bench", "--project", str(project), "--rounds", "1", "--chart", str(tmp_path / "chart.png"), *extra],
        capture_output=True, text=True, cwd=ROOT, timeout=300, env=env,
    )


def test_bench_on_the_example_leaves_it_untouched(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(EXAMPLE, project, ignore=IGNORED)
    before = snapshot(project)
    proc = bench(project, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "outcomes identical: yes" in proc.stdout
    assert "Thin client: native" in proc.stdout  # a C compiler is a test dependency
    table = {line.split()[0]: line.split() for line in proc.stdout.splitlines() if line.startswith(("PreToolUse", "PostToolUse", "all"))}
    assert set(table) == {"PreToolUse", "PostToolUse", "all"}
    assert table["PreToolUse"][-1].endswith("x")
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "31/31 event runs" in proc.stderr or "62/62" in proc.stderr or "/62 event runs" in proc.stderr
    assert snapshot(project) == before  # the hooks ran on throw-away copies


def test_bench_catches_an_outcome_that_differs(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(EXAMPLE, project, ignore=IGNORED)
    # A hook whose output depends on the process running it cannot be identical.
    (project / ".claude" / "hooks" / "pid.py").write_text("import json, os\nprint(json.dumps({'systemMessage': f'pid {os.getpid()}'}))\n")
    settings = json.loads((project / ".claude" / "settings.json").read_text())
    settings["hooks"]["PreToolUse"][0]["hooks"].append({"type": "command", "command": "python3 .claude/hooks/pid.py"})
    (project / ".claude" / "settings.json").write_text(json.dumps(settings))
    proc = bench(project, tmp_path)
    assert proc.returncode == 1
    assert "outcomes identical: NO" in proc.stdout and "MISMATCH event" in proc.stdout


def test_bench_without_matching_hooks_is_a_clear_error(tmp_path):
    (tmp_path / "events.jsonl").write_text((EXAMPLE / "events.jsonl").read_text())
    proc = bench(tmp_path, tmp_path)
    assert proc.returncode == 1 and "cannot read the project's hooks" in proc.stderr
    (tmp_path / ".claude").mkdir()
    (tmp_path / ".claude" / "settings.json").write_text(json.dumps({"hooks": {"Notification": [{"hooks": [{"type": "command", "command": "true"}]}]}}))
    proc = bench(tmp_path, tmp_path)
    assert proc.returncode == 1 and "no command hook" in proc.stderr and "matches any recorded event" in proc.stderr


def test_bench_runs_back_to_back_and_leaves_no_daemon_behind(tmp_path):
    """Each run stops its copy's daemon and waits for it to be gone before removing the copies."""
    project = tmp_path / "project"
    shutil.copytree(EXAMPLE, project, ignore=IGNORED)
    events = [line for line in (EXAMPLE / "events.jsonl").read_text().splitlines() if '"PreToolUse"' in line or '"PostToolUse"' in line]
    (tmp_path / "few.jsonl").write_text("\n".join(events[:4]) + "\n")
    scratch = tmp_path / "scratch"  # where the throw-away copies go
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch), "HOOKOPT_RUNTIME_DIR": str(tmp_path / "rt")}
    for run in range(3):
        proc = bench(project, tmp_path, "--events", str(tmp_path / "few.jsonl"), env=env)
        assert proc.returncode == 0, (run, proc.stdout + proc.stderr)
        assert "outcomes identical: yes" in proc.stdout
        assert list(scratch.iterdir()) == [], run  # every copy removed, .claude included
        daemons = subprocess.run(["pgrep", "-f", f"modules.optimization.daemon --project {scratch}"], capture_output=True, text=True)
        assert daemons.stdout == "", run  # and its daemon gone before that
