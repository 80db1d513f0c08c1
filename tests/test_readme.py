"""Every fenced code block of README.md is checked, so the docs cannot drift from the code:
the two setup commands are what CI runs, other shell blocks run (on a copy of the example
project), python blocks load into a real daemon and decide, json blocks are valid settings,
and every `hookopt COMMAND --flag` the README mentions exists."""

import json
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from modules.optimization.integrated_optimizer import load_settings
from tests.daemon_helpers import ROOT, pre_event, private_runtime

README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"^```(\w*)\n(.*?)^```$", README, re.S | re.M)
SETUP_COMMANDS = [body.strip() for lang, body in BLOCKS[:2]]  # the README opens with its two commands
HOOK_EVENTS = {
    "PreToolUse", "PostToolUse", "PostToolUseFailure", "UserPromptSubmit", "SessionStart", "SessionEnd", "Stop",
    "SubagentStop", "SubagentStart", "Notification", "PreCompact", "PostCompact", "PermissionRequest",
}  # fmt: skip


def blocks(lang):
    return [body for kind, body in BLOCKS if kind == lang]


def hookopt(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "modules.optimization.cli", *args], capture_output=True, text=True, cwd=ROOT, timeout=120, **kwargs)


def test_every_block_has_a_known_language():
    assert BLOCKS and {lang for lang, _ in BLOCKS} <= {"sh", "json", "python", "text"}, [lang for lang, _ in BLOCKS]


def test_the_two_setup_commands_are_what_ci_runs():
    first, second = SETUP_COMMANDS
    assert first.endswith(".venv/bin/hookopt bench") and second.endswith(".venv/bin/python -m pytest")
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert ci == [first, second]  # verbatim, and nothing else
    # The second installs what the tests need through scripts/test-setup, which is valid bash
    # and finds everything here (the suite itself is not run again from inside the suite).
    assert second.startswith("scripts/test-setup && ")
    assert subprocess.run(["bash", "-n", str(ROOT / "scripts" / "test-setup")]).returncode == 0
    check = subprocess.run([str(ROOT / "scripts" / "test-setup"), "--check"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert check.returncode == 0, check.stderr


def _hookopt_commands(text):
    """(subcommand, flags) for every `hookopt SUB ...` in text."""
    found = []
    for match in re.finditer(r"(?:^|[\s`/])hookopt ([a-z]+)([^`\n#|]*)", text):
        found.append((match.group(1), re.findall(r"(?<![\w-])--[a-z][a-z-]*", match.group(2))))
    return found


def test_every_mentioned_command_and_flag_exists():
    top = hookopt("--help")
    assert top.returncode == 0
    subcommands = set(re.findall(r"^    ([a-z]+)(?:\s{2,}|\n)", top.stdout, re.M))
    assert {"install", "uninstall", "status", "bench", "dashboard"} <= subcommands, top.stdout
    helps = {}
    for sub in subcommands:
        proc = hookopt(sub, "--help")
        assert proc.returncode == 0 and len(proc.stdout) > 200, (sub, proc.stderr)  # a description, not just usage
        helps[sub] = proc.stdout
    prose = re.sub(r"^```.*?^```$", "", README, flags=re.S | re.M)
    code = [body for _, body in BLOCKS] + [span.replace("\n", " ") for span in re.findall(r"`([^`]+)`", prose)]
    mentioned = [m for text in code for m in _hookopt_commands(text)]
    assert {"bench", "install", "uninstall", "status", "dashboard", "config", "check", "demo"} <= {s for s, _ in mentioned}
    for sub, flags in mentioned:
        assert sub in subcommands, f"README mentions `hookopt {sub}`, which does not exist"
        for flag in flags:
            assert re.search(rf"(?<![\w-]){flag}\b", helps[sub]), f"README mentions `hookopt {sub} {flag}`, which does not exist"
    # Flags named on their own in the prose belong to some command.
    for flag in set(re.findall(r"`(--[a-z][a-z-]*)", README)):
        assert any(re.search(rf"(?<![\w-]){flag}\b", h) for h in helps.values()), flag


def _valid_settings(data, where):
    assert isinstance(data, dict) and set(data) <= {"hooks", "optimization", "permissions"}, where
    for event, groups in data.get("hooks", {}).items():
        assert event in HOOK_EVENTS and isinstance(groups, list), (where, event)
        for group in groups:
            assert set(group) <= {"matcher", "hooks"} and isinstance(group["hooks"], list), (where, group)
            for hook in group["hooks"]:
                assert hook["type"] in ("command", "http"), (where, hook)
                assert isinstance(hook["command"] if hook["type"] == "command" else hook["url"], str), (where, hook)


def test_json_blocks_are_valid_settings(tmp_path):
    assert len(blocks("json")) >= 3
    for number, body in enumerate(blocks("json")):
        data = json.loads(body)
        _valid_settings(data, body)
        project = tmp_path / f"p{number}"
        (project / ".claude").mkdir(parents=True)
        for path in data.get("optimization", {}).get("validators", []):
            (project / path).write_text("")  # the validators block names a file; its content is tested below
        (project / ".claude" / "settings.json").write_text(body)
        load_settings(project, {})  # raises ConfigError naming the key for anything it cannot use


@pytest.mark.parametrize("number", range(len(blocks("python"))))
def test_python_blocks_load_into_a_daemon_and_decide(tmp_path, number):
    code = blocks("python")[number]
    compile(code, f"README python block {number}", "exec")
    (settings,) = [b for b in blocks("json") if '"validators"' in b]
    project = tmp_path / "project"
    (project / ".claude").mkdir(parents=True)
    (project / ".claude" / "settings.json").write_text(settings)
    (path,) = json.loads(settings)["optimization"]["validators"]
    (project / path).write_text(code)
    names = re.findall(r"^def (\w+)", code, re.M)
    tool, tool_input = ("Write", {"file_path": str(project / "big.txt"), "content": "x" * 1_000_001}) if "Write" in code else (
        "Bash", {"command": "git push --force origin main"})
    with private_runtime(project) as rt:
        rt.start()
        status = rt.status()
        assert status is not None
        denied = rt.hook(pre_event(project, tool=tool, tool_input=tool_input))
        allowed = rt.hook(pre_event(project, "ls"))
    reason = re.search(r'Verdict\("deny", "([^"]+)"\)', code).group(1)
    decision = json.loads(denied.stdout)["hookSpecificOutput"]
    assert decision["permissionDecision"] == "deny" and reason in decision["permissionDecisionReason"], (names, denied.stdout)
    assert b'"deny"' not in allowed.stdout


def test_shell_blocks_run_as_written(tmp_path):
    """Each other shell block in order, on a fresh copy of the example project standing in for ~/code/myproject."""
    ran = 0
    for number, body in enumerate(b for b in blocks("sh") if b.strip() not in SETUP_COMMANDS):
        project = tmp_path / f"block{number}" / "myproject"
        shutil.copytree(ROOT / "examples" / "project", project, ignore=shutil.ignore_patterns("hookopt", "logs"))
        before = {p: p.read_bytes() for p in project.rglob("*") if p.is_file()}
        home = tmp_path / f"block{number}" / "home"  # `--scope user` writes ~/.claude: never the real one
        home.mkdir()
        with private_runtime(project) as rt:
            rt.env["HOME"] = str(home)
            for line in body.strip().splitlines():
                words = shlex.split(line.split("  #")[0].replace("~/code/myproject", str(project)))
                if words[:3] in (["uv", "tool", "install"], ["pipx", "install", "."]):
                    continue  # installs onto this machine: tests/test_wheel_install.py does it in a sandbox
                assert words[0].endswith("hookopt"), line
                proc = hookopt(*words[1:], env=rt.env)
                assert proc.returncode == 0, (line, proc.stdout, proc.stderr)
                ran += 1
            if (project / ".claude" / "hookopt" / "install.json").exists():  # the block ends installed: put it back
                assert hookopt("uninstall", "--project", str(project), env=rt.env).returncode == 0
        after = {p: p.read_bytes() for p in project.rglob("*") if p.is_file() and "hookopt" not in p.parts}
        assert after == before, number
    assert ran >= 4
