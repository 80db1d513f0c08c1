"""The native thin client (hooks/client.c): an event without a Python start.

The Python thin client (a consolidated install's, or an installed stub) costs a Python
start per event (about 10 ms here, against 1-2 ms for a `true` hook); the native one
does the same exchange with the daemon in C and,
whenever anything is unusual, execs the Python client with the event, so it decides
nothing on its own. ``hookopt install`` builds it with the system's C compiler into the
scope's state directory; without a compiler (or off Linux) the install keeps the Python
client and says so. The settings command runs the native client only while it is there
and executable, else the Python client: a deleted state directory costs speed, never a
let-through call.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal

from .resources import shipped

__all__ = [
    "ClientChoice", "NativeClientError", "build", "client_path", "command", "compiler", "findings", "source_sha256", "stub_command",
    "unavailable",
]

ClientChoice = Literal["auto", "native", "python"]
CHOICES: Final = ("auto", "native", "python")
SOURCE: Final = shipped("hooks", "client.c")
CC_ENV: Final = "HOOKOPT_CC"  # the compiler to use; empty: build no native client
FLAGS: Final = ("-O2", "-Wall")
NO_COMPILER: Final = f"no C compiler (cc, gcc or ${CC_ENV}) found"


class NativeClientError(Exception):
    """The native client cannot be built here; the message says why."""


def compiler() -> str | None:
    """The C compiler to build with: $HOOKOPT_CC, else cc or gcc on PATH; None when there is none."""
    if (chosen := os.environ.get(CC_ENV)) is not None:
        return shutil.which(chosen) if chosen else None
    return shutil.which("cc") or shutil.which("gcc")


def source_sha256() -> str:
    return hashlib.sha256(SOURCE.read_bytes()).hexdigest()


def client_path(state: Path, scope_name: str) -> Path:
    """Where a scope's install keeps its native client (each scope its own: uninstalls are separate)."""
    return state / ("hookopt-client" if scope_name == "project" else f"hookopt-client-{scope_name}")


def unavailable() -> str | None:
    """Why no native client can be built here (not Linux, no compiler); None when it can be tried."""
    if not sys.platform.startswith("linux"):
        return f"the native client is for Linux only (this is {sys.platform})"
    if compiler() is None:
        return NO_COMPILER
    return None


def build(target: Path) -> None:
    """Compile the client to target (a path of the caller's, mode 0755) and check that it runs; or raise."""
    cc = compiler()
    if (why := unavailable()) is not None or cc is None:
        raise NativeClientError(why or NO_COMPILER)
    done = subprocess.run([cc, *FLAGS, "-o", str(target), str(SOURCE)], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise NativeClientError(f"{cc} failed to build {SOURCE}: {done.stderr.strip()[-2000:]}")
    # Called without its arguments, it must say how to call it and exit 2 (blocking, never open).
    probe = subprocess.run([str(target)], capture_output=True, text=True, timeout=10)
    if probe.returncode != 2 or "usage: hookopt-client" not in probe.stderr:
        raise NativeClientError(f"the client built by {cc} does not run as expected (exit {probe.returncode})")
    target.chmod(0o755)


def command(client: Path | None, op: str, argument: str, python_argv: list[str]) -> str:
    """The settings command of a client hook: the native client when it is there, else python_argv."""
    python = shlex.join(python_argv)
    if client is None:
        return python
    native = shlex.quote(str(client))
    # `exec` keeps one process; when the binary is gone (a cleaned state directory) the
    # Python client runs instead: slower, never a command-not-found that lets a call through.
    return f"[ -x {native} ] && exec {native} {shlex.quote(op)} {shlex.quote(argument)} {python}; exec {python}"


def stub_command(client: Path | None, python: str, rest: str) -> str:
    """The settings command of an installed stub: `PYTHON -S REST` (REST: the original command
    after its interpreter, script first), behind the native client when REST is plain words.

    REST appears twice and only one copy runs, so anything the shell would read as more than
    one command's words (;, &, |, redirections, a # comment, a newline) keeps the Python form."""
    python_form = f"{shlex.quote(python)} -S {rest}"
    if client is None or not _plain_words(rest):
        return python_form
    native = shlex.quote(str(client))
    return f"[ -x {native} ] && exec {native} legacy - {python_form}; exec {python_form}"


def _plain_words(text: str) -> bool:
    if "#" in text or "\n" in text or "`" in text:
        return False
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.commenters = ""
    try:
        return not any(token and set(token) <= set(lexer.punctuation_chars) for token in lexer)
    except ValueError:  # an unbalanced quote
        return False


def findings(manifest: Mapping[str, Any] | None, state: Path, scope_name: str) -> list[str]:
    """What status and doctor say of a scope's thin client: missing, stale, or a native one to gain."""
    if not manifest:
        return []
    binary = client_path(state, scope_name)
    redo = f"`hookopt uninstall --scope {scope_name}`, then install again"
    if manifest.get("client") == "native":
        if not os.access(binary, os.X_OK):
            return [f"the {scope_name} scope's native client {binary} is gone: every event starts the Python client "
                    f"instead (about 10 ms more); {redo} rebuilds it"]
        if manifest.get("client_sha256") != source_sha256():
            return [f"the {scope_name} scope's native client was built from another hookopt's {SOURCE.name}; {redo} rebuilds it"]
    elif manifest.get("transport") == "command" and unavailable() is None:
        per = "event" if manifest.get("consolidate") else "hook and event"
        return [f"the {scope_name} scope's install starts a Python client per {per}; a native one saves about 10 ms "
                f"each ({redo}, with --client native)"]
    return []
