"""hookopt status, profile and doctor against real projects and a real daemon."""

import json
import subprocess
import sys

import pytest

from tests.daemon_helpers import ROOT, pre_event, wait_for


@pytest.fixture
def rt(example_rt):
    return example_rt  # the example project's seven hooks, with a private daemon runtime


def hookopt(rt, *args):
    return subprocess.run([sys.executable, "-m", "modules.optimization.cli", *args, "--project", str(rt.project)], capture_output=True, text=True, env=rt.env, cwd=ROOT, timeout=120)


def test_status_not_running_then_running(rt):
    idle = hookopt(rt, "status")
    assert idle.returncode == 3 and "daemon: not running" in idle.stdout and "installed (project, " in idle.stdout and "): no" in idle.stdout
    rt.start()
    for command in ("rm -rf /", "ls", "rm -rf /"):
        rt.hook(pre_event(rt.project, command))
    running = hookopt(rt, "status")
    assert running.returncode == 0, running.stderr
    out = running.stdout
    assert f"pid {rt.pid()}" in out and "profile: balanced" in out
    assert "cache:" in out and "hit rate" in out and "breakers: all" in out
    assert "heap: glibc malloc, " in out and " MB on huge pages" in out  # started as a client starts it
    assert "event:PreToolUse" in out and "validator:recursive_delete" in out
    as_json = json.loads(hookopt(rt, "status", "--json").stdout)
    assert as_json["running"] and as_json["daemon"]["events"] == 3


def test_profile_lists_sets_and_the_daemon_follows(rt):
    listing = hookopt(rt, "profile")
    assert listing.returncode == 0 and "* balanced" in listing.stdout and "  latency" in listing.stdout
    rt.start()
    changed = hookopt(rt, "profile", "latency")
    assert changed.returncode == 0, changed.stderr
    assert json.loads((rt.project / ".claude" / "settings.json").read_text())["optimization"]["profile"] == "latency"
    wait_for(lambda: rt.status()["profile"] == "latency", what="the daemon to reload the profile")
    assert hookopt(rt, "profile", "warp").returncode == 2  # argparse: not one of the choices


def test_profile_after_install_still_uninstalls_byte_for_byte(rt):
    from tests.test_installer import snapshot

    before = snapshot(rt.project)
    assert hookopt(rt, "install").returncode == 0
    assert hookopt(rt, "profile", "throughput").returncode == 0
    result = hookopt(rt, "uninstall")
    assert result.returncode == 0, result.stderr
    assert snapshot(rt.project) == before


def test_doctor_finds_shims_and_matchers_that_match_nothing(rt):
    settings = json.loads((rt.project / ".claude" / "settings.json").read_text())
    settings["hooks"]["PreToolUse"].append({"matcher": "bash", "hooks": [{"type": "command", "command": "true"}]})
    (rt.project / ".claude" / "settings.json").write_text(json.dumps(settings))
    shim_dir = rt.project / "shims"
    shim_dir.mkdir()
    (shim_dir / "python3").write_text("#!/usr/bin/env bash\nexec /usr/bin/env -S python3 \"$@\"\n")
    (shim_dir / "python3").chmod(0o755)
    rt.env["PATH"] = f"{shim_dir}:{rt.env['PATH']}"
    proc = hookopt(rt, "doctor")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "PreToolUse matcher 'bash' matches no known tool" in proc.stdout
    assert f"through the version-manager shim {shim_dir / 'python3'}" in proc.stdout
    assert proc.stdout.count("version-manager shim") == 7  # all seven hooks start python3
    # Installed, the commands Claude Code runs name no shim any more (the daemon resolves it once).
    assert hookopt(rt, "install", "--consolidate").returncode == 0
    proc = hookopt(rt, "doctor")
    assert "version-manager shim" not in proc.stdout and "PreToolUse matcher 'bash' matches no known tool" in proc.stdout


def test_doctor_on_a_clean_project(tmp_path):
    (tmp_path / ".claude").mkdir()
    (tmp_path / ".claude" / "settings.json").write_text(json.dumps({"hooks": {"PreToolUse": [{"matcher": "Bash|mcp__.*", "hooks": [{"type": "command", "command": "true"}]}]}}))
    proc = subprocess.run([sys.executable, "-m", "modules.optimization.cli", "doctor", "--project", str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0 and "no problems found" in proc.stdout


def test_help_for_every_command_explains_exit_codes():
    for command, text in (("install", "Exit 0 on success"), ("uninstall", "unless --force"), ("status", "3 when it does not"), ("doctor", "3 when it found problems"), ("profile", "reloads within a second")):
        proc = subprocess.run([sys.executable, "-m", "modules.optimization.cli", command, "--help"], capture_output=True, text=True, cwd=ROOT)
        assert proc.returncode == 0 and text in " ".join(proc.stdout.split()), command
