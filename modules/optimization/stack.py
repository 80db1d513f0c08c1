"""A project's own hook stack, as installed: which command hooks run for an event.

`hookopt install` keeps the original ``hooks`` block of ``.claude/settings.json`` in
its manifest. The daemon (warm) and the thin client's fallback (spawned) both
select commands here, exactly as Claude Code would: every group whose matcher
matches, identical command strings once; hooks it cannot reproduce exactly (see
``left_reason``) are left to Claude Code.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Mapping, Sequence

from .hook_pool import spawn
from .paths import state_dir
from .consolidation import CONSOLIDATED_EVENTS, combine_stack
from .protocol import HookResult, matcher_matches, matcher_subject

__all__ = [
    "DEFAULT_TIMEOUT_S", "MANIFEST_NAME", "StackHook", "combine_selected", "consolidated", "left_reason",
    "load_manifest", "run_spawned", "select",
]

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


# The hook fields a consolidated run reproduces exactly; any other field (if, async,
# asyncRewake, args, shell, once, statusMessage, one we do not know) leaves the hook to
# Claude Code, which alone knows what it means.
_REPRODUCED_FIELDS: Final = frozenset({"type", "command", "timeout"})


def left_reason(event_name: str, hook: Mapping[str, Any]) -> str | None:
    """Why Claude Code keeps running this hook itself, or None when it is consolidated."""
    if event_name not in CONSOLIDATED_EVENTS:
        return f"{event_name} hooks are not consolidated"
    if hook.get("type") != "command" or not isinstance(hook.get("command"), str):
        return f"a {hook.get('type')!r} hook, not a command"
    if extra := sorted(set(hook) - _REPRODUCED_FIELDS):
        return f"it sets {', '.join(extra)}"
    timeout = hook.get("timeout", DEFAULT_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        return f"its timeout {timeout!r} is not a positive number"
    return None


def consolidated(event_name: str, hook: Mapping[str, Any]) -> bool:
    """Whether a hook runs through the consolidated client."""
    return left_reason(event_name, hook) is None


def select(hooks: Mapping[str, Any], event: Mapping[str, Any]) -> list[StackHook]:
    """The command hooks Claude Code would run for this event, deduplicated by command."""
    subject = matcher_subject(event)
    name = str(event.get("hook_event_name"))
    chosen: dict[str, StackHook] = {}
    for group in hooks.get(name, []) or []:
        if not isinstance(group, dict) or not matcher_matches(group.get("matcher"), subject):
            continue
        for hook in group.get("hooks", []) or []:
            if isinstance(hook, dict) and consolidated(name, hook):
                chosen.setdefault(hook["command"], StackHook(hook["command"], float(hook.get("timeout", DEFAULT_TIMEOUT_S))))
    return list(chosen.values())


def combine_selected(event: Mapping[str, Any], hooks: Sequence[StackHook], results: Sequence[HookResult]) -> HookResult:
    """The one output Claude Code renders as it would render these hooks' results."""
    if not hooks:
        return HookResult(0)
    return combine_stack(str(event["hook_event_name"]), matcher_subject(event) or "", results, [h.command for h in hooks])


def run_spawned(hooks: Mapping[str, Any], event: Mapping[str, Any], raw: bytes, env: Mapping[str, str], cwd: str) -> HookResult:
    """Run the event's stack the slow way, each hook spawned in parallel as Claude Code would."""
    selected = select(hooks, event)
    if not selected:
        return HookResult(0)

    async def all_hooks() -> list[HookResult]:
        runs = (spawn(h.command, stdin=raw, env=env, cwd=cwd, timeout_s=h.timeout_s) for h in selected)
        return list(await asyncio.gather(*runs))

    return combine_selected(event, selected, asyncio.run(all_hooks()))
