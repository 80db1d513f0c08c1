"""A project's own hook stack, as installed: which command hooks run for an event.

`hookopt install` keeps the original ``hooks`` block of ``.claude/settings.json`` in
its manifest. The daemon (warm) and the thin client's fallback (spawned) both
select commands here, exactly as Claude Code would: every group whose matcher
matches, identical command strings once, ``async`` hooks left to Claude Code.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Mapping

from .hook_pool import spawn
from .paths import state_dir
from .protocol import HookResult, combine, matcher_matches, matcher_subject

__all__ = ["DEFAULT_TIMEOUT_S", "MANIFEST_NAME", "StackHook", "load_manifest", "run_spawned", "select"]

MANIFEST_NAME: Final = "install.json"
DEFAULT_TIMEOUT_S: Final = 600.0  # Claude Code's default for command hooks


@dataclass(frozen=True, slots=True)
class StackHook:
    """One command hook of the original stack."""

    command: str
    timeout_s: float = DEFAULT_TIMEOUT_S


def load_manifest(project: Path) -> dict[str, Any] | None:
    """The install manifest of a project, or None when hookopt is not installed there."""
    path = state_dir(project, create=False) / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable install manifest ({exc}); run `hookopt uninstall --force`") from None
    return data if isinstance(data, dict) else None


def consolidated(group: Mapping[str, Any], hook: Mapping[str, Any]) -> bool:
    """Whether a hook runs through the consolidated client (synchronous command hooks only)."""
    return hook.get("type") == "command" and isinstance(hook.get("command"), str) and not hook.get("async")


def select(hooks: Mapping[str, Any], event: Mapping[str, Any]) -> list[StackHook]:
    """The command hooks Claude Code would run for this event, deduplicated by command."""
    subject = matcher_subject(event)
    chosen: dict[str, StackHook] = {}
    for group in hooks.get(str(event.get("hook_event_name")), []) or []:
        if not isinstance(group, dict) or not matcher_matches(group.get("matcher"), subject):
            continue
        for hook in group.get("hooks", []) or []:
            if isinstance(hook, dict) and consolidated(group, hook):
                timeout = hook.get("timeout")
                seconds = float(timeout) if isinstance(timeout, (int, float)) and timeout > 0 else DEFAULT_TIMEOUT_S
                chosen.setdefault(hook["command"], StackHook(hook["command"], seconds))
    return list(chosen.values())


def run_spawned(hooks: Mapping[str, Any], event: Mapping[str, Any], raw: bytes, env: Mapping[str, str], cwd: str) -> HookResult:
    """Run the event's stack the slow way, each hook spawned in parallel as Claude Code would."""
    selected = select(hooks, event)
    if not selected:
        return HookResult(0)

    async def all_hooks() -> list[HookResult]:
        runs = (spawn(h.command, stdin=raw, env=env, cwd=cwd, timeout_s=h.timeout_s) for h in selected)
        return list(await asyncio.gather(*runs))

    return combine(str(event["hook_event_name"]), asyncio.run(all_hooks()))
