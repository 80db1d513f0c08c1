"""The thin client's slow path: answer an event in-process when no daemon does.

Imported only then, so the fast path never pays for it. Each function turns on
site-packages first (the clients run under ``python -S``) and imports the full
package: slower than the daemon, never wrong.
"""

from __future__ import annotations

import os
import subprocess

from .wire import LEGACY_ENV

__all__ = ["evaluate", "run_stack", "spawn_original"]

Reply = tuple[int, bytes, bytes]


def _site() -> None:
    import site

    site.main()  # the fast path runs under -S; the slow paths need site-packages


def evaluate(raw: bytes, project: str) -> Reply:
    """Evaluate one event with hookopt's own validators, with the daemon's engine."""
    _site()
    from .hook_integration import evaluate_bytes

    return evaluate_bytes(raw, project)


def run_stack(raw: bytes, project: str, scope: str = "project") -> Reply:
    """Run a scope's installed stack the slow way: each hook spawned, as Claude Code would."""
    _site()
    from .hook_integration import run_stack_spawned

    return run_stack_spawned(raw, project, os.getcwd(), scope)


def spawn_original(interpreter: str, script: str, argv: list[str], raw: bytes) -> Reply:
    """Run a stub's original in a fresh interpreter, as Claude Code would run the script."""
    env = dict(os.environb)
    env[LEGACY_ENV.encode()] = b"1"  # the stub it runs is the original itself, never a client again
    proc = subprocess.run([interpreter, script, *argv], input=raw, capture_output=True, env=env, check=False)
    return proc.returncode, proc.stdout, proc.stderr


