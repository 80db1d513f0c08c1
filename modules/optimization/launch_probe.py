"""Find out what interpreter, options and environment a launcher (uv, poetry, pipenv) gives a script.

The hook's own command runs once, exactly as sh would run it, with a ``sitecustomize``
of ours first on PYTHONPATH: the interpreter the launcher starts imports it during
start-up, it runs the real sitecustomize/usercustomize (if any), writes what a warm run
must reproduce (sys.executable, sys.orig_argv, the environment it was exec'd with and the
one it sees), and exits before the script's first line. So uv resolves, syncs and caches
the very environment it will use for this script, with the same dependencies.

Only the interpreter about to run the hook's script (its sys.argv is the script and its
arguments) reports. poetry and pipenv are Python programs themselves: their own
interpreter imports our sitecustomize too, and goes on as if it were not there, so the
report comes from the project environment they start, not from the tool's.

A launcher that writes anything on its own stdout or stderr once its environment is in
place (a warning on every run, pipenv's "Loading .env") cannot be reproduced by a warm
run: such a command is spawned. So is one whose interpreter never imported our
sitecustomize (-I, -E or -S: the planner refuses those options for poetry and pipenv);
the probe then ran the script itself once, with an empty stdin.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any, Final

__all__ = ["PROBE_VARS", "probe_launch"]

SH: Final = "/bin/sh"
_OUT_VAR: Final = "HOOKOPT_LAUNCH_PROBE_OUT"
_ARGV_VAR: Final = "HOOKOPT_LAUNCH_PROBE_ARGV"  # the script and its arguments, as JSON: who reports
PROBE_VARS: Final = frozenset({_OUT_VAR, _ARGV_VAR})
_SITECUSTOMIZE: Final = """\
import json, os, sys
_here = os.path.dirname(os.path.abspath(__file__))
_out = os.environ.get(%(out)r)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
_ours = sys.modules.pop("sitecustomize")
for _name in ("sitecustomize", "usercustomize"):  # what the interpreter would run next
    try:
        __import__(_name)
    except ImportError:
        pass
sys.modules.setdefault("sitecustomize", _ours)  # what the import of this one returns, when there is no other
if _out and sys.argv == json.loads(os.environ.get(%(argv)r, "null")):  # else a launcher written in Python
    try:
        with open("/proc/self/environ", "rb") as f:
            _start = [os.fsdecode(i).partition("=")[::2] for i in f.read().split(b"\\0") if i]
    except OSError:
        _start = None
    with open(_out, "w") as f:
        json.dump({"exe": sys.executable, "argv": getattr(sys, "orig_argv", None),
                   "version": list(sys.version_info[:2]), "impl": sys.implementation.name,
                   "start": _start, "env": list(os.environ.items())}, f)
    os._exit(0)
"""


async def probe_launch(command: str, argv: Sequence[str], env: Mapping[str, str], cwd: str, *, timeout_s: float) -> dict[str, Any] | None:
    """Run command with the probe; the report of the interpreter whose sys.argv is argv (the script
    and its arguments), with our variables taken out of its environments; or None."""
    folder = tempfile.mkdtemp(prefix="hookopt-probe-")
    try:
        out = os.path.join(folder, "report.json")
        with open(os.path.join(folder, "sitecustomize.py"), "w", encoding="utf-8") as f:
            f.write(_SITECUSTOMIZE % {"out": _OUT_VAR, "argv": _ARGV_VAR})
        before = env.get("PYTHONPATH")
        probe_env = {**env, _OUT_VAR: out, _ARGV_VAR: json.dumps(list(argv)), "PYTHONPATH": folder + (":" + before if before else "")}
        for _attempt in range(2):  # the first run may create the environment, and say so
            proc = await asyncio.create_subprocess_exec(
                SH, "-c", command, env=probe_env, cwd=cwd, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            try:
                async with asyncio.timeout(timeout_s):
                    stdout, stderr = await proc.communicate()
            except TimeoutError:
                proc.kill()
                await proc.wait()
                return None
            if proc.returncode != 0 or not os.path.exists(out):
                return None
            if not stdout and not stderr:
                break
            os.unlink(out)
        else:
            return None  # the launcher talks on every run: a warm run could not say the same
        with open(out, encoding="utf-8") as f:
            info: dict[str, Any] = json.load(f)
        for key in ("start", "env"):
            if info.get(key) is not None:
                info[key] = _restore(info[key], before)
        return info
    except (OSError, ValueError):
        return None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _restore(items: list[list[str]], pythonpath: str | None) -> list[list[str]]:
    """The environment without our variables, PYTHONPATH as the client had it (in its place)."""
    restored = []
    for key, value in items:
        if key in PROBE_VARS:
            continue
        if key == "PYTHONPATH":
            if pythonpath is None:
                continue
            value = pythonpath
        restored.append([key, value])
    return restored
