"""A project's own hook stack, as installed: which command hooks run for an event.

`hookopt install` keeps the original ``hooks`` block of ``.claude/settings.json`` in
its manifest. The daemon (warm) and the thin client's fallback (spawned) both
select commands here, exactly as Claude Code would: every group whose matcher
matches, identical command strings once; hooks it cannot reproduce exactly (see
``left_reason``) are left to Claude Code.

Each settings scope (project, local, user: see scopes.py) has its own manifest and
its own client command, so the daemon serves a client only its scope's hooks. A
command string that hooks of several scopes share runs once in Claude Code; so
a scope's client leaves out a command that another scope already runs (natively,
or through a client of a scope Claude Code ranks higher).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from .consolidation import CONSOLIDATED_EVENTS, combine_stack
from .manifest import load_manifest_at
from .observers import marks, refusal
from .protocol import HookResult, matcher_matches, matcher_subject
from .scopes import PRECEDENCE, Scope, scope
from .spawn import spawn

__all__ = [
    "DEFAULT_TIMEOUT_S", "ScopeStack", "StackHook", "Stacks", "combine_selected", "consolidated",
    "is_observer", "left_reason", "load_stacks", "run_selected", "run_spawned", "select",
]

DEFAULT_TIMEOUT_S: Final = 600.0  # Claude Code's default for command hooks


@dataclass(frozen=True, slots=True)
class StackHook:
    """One command hook of the original stack."""

    command: str
    timeout_s: float = DEFAULT_TIMEOUT_S
    observer: bool = False  # run after the answer, its output not shown (see observers.py)


# The hook fields a consolidated run reproduces exactly; any other field (if, asyncRewake,
# args, shell, once, statusMessage, one we do not know) leaves the hook to Claude Code,
# which alone knows what it means. async: true only for a hook the user marked as an
# observer (see observers.py: Claude Code shows an async hook's context to the model later).
_REPRODUCED_FIELDS: Final = frozenset({"type", "command", "timeout", "async"})


def left_reason(event_name: str, hook: Mapping[str, Any], observers: Sequence[str] = ()) -> str | None:
    """Why Claude Code keeps running this hook itself, or None when it is consolidated.

    observers are the install's observer globs (a marked async hook is consolidated).
    """
    if event_name not in CONSOLIDATED_EVENTS:
        return f"{event_name} hooks are not consolidated"
    if hook.get("type") != "command" or not isinstance(hook.get("command"), str):
        return f"a {hook.get('type')!r} hook, not a command"
    if extra := sorted(set(hook) - _REPRODUCED_FIELDS):
        return f"it sets {', '.join(extra)}"
    timeout = hook.get("timeout", DEFAULT_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        return f"its timeout {timeout!r} is not a positive number"
    if "async" in hook and not isinstance(hook["async"], bool):
        return f"its async {hook['async']!r} is not a boolean"
    if hook.get("async") is True and not marks(hook["command"], observers):
        return (
            "it sets async: Claude Code shows an async hook's additionalContext and systemMessage to the model "
            "on a later turn, which hookopt cannot; mark it with --observers to run it warm without that output"
        )
    return None


def consolidated(event_name: str, hook: Mapping[str, Any], observers: Sequence[str] = ()) -> bool:
    """Whether a hook runs through the consolidated client."""
    return left_reason(event_name, hook, observers) is None


def is_observer(event_name: str, hook: Mapping[str, Any], observers: Sequence[str]) -> bool:
    """Whether a consolidated hook runs after the answer: marked, and allowed to be (see observers.refusal)."""
    return marks(hook["command"], observers) and refusal(event_name, hook) is None


def select(hooks: Mapping[str, Any], event: Mapping[str, Any], observers: Sequence[str] = ()) -> list[StackHook]:
    """The command hooks Claude Code would run for this event, deduplicated by command."""
    subject = matcher_subject(event)
    name = str(event.get("hook_event_name"))
    chosen: dict[str, StackHook] = {}
    for group in hooks.get(name, []) or []:
        if not isinstance(group, dict) or not matcher_matches(group.get("matcher"), subject):
            continue
        for hook in group.get("hooks", []) or []:
            if isinstance(hook, dict) and consolidated(name, hook, observers):
                timeout = float(hook.get("timeout", DEFAULT_TIMEOUT_S))
                chosen.setdefault(hook["command"], StackHook(hook["command"], timeout, is_observer(name, hook, observers)))
    return list(chosen.values())


def _matched_commands(hooks: Mapping[str, Any], event: Mapping[str, Any], observers: Sequence[str] = ()) -> Iterator[tuple[str, bool]]:
    """(command, consolidated) for every command hook whose group matches the event."""
    subject = matcher_subject(event)
    name = str(event.get("hook_event_name"))
    for group in hooks.get(name, []) or []:
        if not isinstance(group, dict) or not matcher_matches(group.get("matcher"), subject):
            continue
        for hook in group.get("hooks", []) or []:
            if isinstance(hook, dict) and hook.get("type") == "command" and isinstance(hook.get("command"), str):
                yield hook["command"], consolidated(name, hook, observers)


@dataclass(frozen=True, slots=True)
class ScopeStack:
    """One scope's hooks as Claude Code would run them without hookopt, and how they are installed."""

    scope: Scope
    hooks: Mapping[str, Any]  # the original hooks: from the manifest when installed, else the settings file
    manifest: Mapping[str, Any] | None = None

    @property
    def observers(self) -> list[str]:
        """The install's observer globs."""
        return list((self.manifest or {}).get("observers") or [])

    @property
    def consolidated(self) -> bool:
        """Whether a client of this scope runs its consolidated hooks (else Claude Code runs them all)."""
        return bool(self.manifest and self.manifest.get("consolidate"))


@dataclass(frozen=True, slots=True)
class Stacks:
    """Every scope that applies to a project, highest precedence first."""

    scopes: tuple[ScopeStack, ...]

    def get(self, name: str) -> ScopeStack | None:
        return next((s for s in self.scopes if s.scope.name == name), None)

    def installed(self) -> list[ScopeStack]:
        return [s for s in self.scopes if s.manifest is not None]

    def select(self, name: str, event: Mapping[str, Any]) -> list[StackHook]:
        """The hooks scope name's client runs: its own selection, minus what another scope runs."""
        own = self.get(name)
        if own is None or not own.consolidated:
            return []
        rank = PRECEDENCE.index(own.scope.name)
        taken: set[str] = set()
        for other in self.scopes:
            if other is own:
                continue
            higher = PRECEDENCE.index(other.scope.name) < rank
            for command, moved in _matched_commands(other.hooks, event, other.observers):
                # Claude Code runs it itself, or a client Claude Code ranks higher does.
                if not (other.consolidated and moved) or higher:
                    taken.add(command)
        return [h for h in select(own.hooks, event, own.observers) if h.command not in taken]

    def legacy_command(self, path: str) -> str | None:
        """The interpreter an installed stub's original runs with, for the stub's real path."""
        for stack in self.installed():
            root = Path(str((stack.manifest or {}).get("root") or stack.scope.root))
            for entry in (stack.manifest or {}).get("scripts", []):
                if os.path.realpath(root / entry["path"]) == path:
                    return str(entry["interpreter"])
        return None

    def watched(self) -> list[Path]:
        """The files whose change changes what select returns."""
        return [p for s in self.scopes for p in (s.scope.settings_path, s.scope.manifest_path)]


def _settings_hooks(path: Path) -> Mapping[str, Any]:
    """The hooks of a settings file, or none when it is missing or broken (Claude Code then reports it)."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    hooks = data.get("hooks") if isinstance(data, dict) else None
    return hooks if isinstance(hooks, dict) else {}


def load_stacks(project: Path, home: Path | None = None) -> Stacks:
    """What every scope of a project holds: installs (manifests) and plain settings.

    Raises ValueError when a manifest is unreadable.
    """
    stacks = []
    for name in PRECEDENCE:
        where = scope(name, project, home)
        manifest = load_manifest_at(where.manifest_path)
        hooks = (manifest.get("hooks") or {}) if manifest is not None else _settings_hooks(where.settings_path)
        stacks.append(ScopeStack(where, hooks, manifest))
    return Stacks(tuple(stacks))


def combine_selected(event: Mapping[str, Any], hooks: Sequence[StackHook], results: Sequence[HookResult]) -> HookResult:
    """The one output Claude Code renders as it would render these hooks' results (observers' left out)."""
    shown = [(h, r) for h, r in zip(hooks, results, strict=True) if not h.observer]
    if not shown:
        return HookResult(0)
    return combine_stack(str(event["hook_event_name"]), matcher_subject(event) or "", [r for _, r in shown], [h.command for h, _ in shown])


def run_spawned(hooks: Mapping[str, Any], event: Mapping[str, Any], raw: bytes, env: Mapping[str, str], cwd: str) -> HookResult:
    """Run the event's stack the slow way, each hook spawned in parallel as Claude Code would."""
    return run_selected(select(hooks, event), event, raw, env, cwd)


def run_selected(selected: Sequence[StackHook], event: Mapping[str, Any], raw: bytes, env: Mapping[str, str], cwd: str) -> HookResult:
    """Run these hooks of the event the slow way, each spawned in parallel, and combine them.

    Observers run too (nothing is lost when no daemon answers), before the answer; their output is left out as the daemon leaves it out.
    """
    if not selected:
        return HookResult(0)

    async def all_hooks() -> list[HookResult]:
        runs = (spawn(h.command, stdin=raw, env=env, cwd=cwd, timeout_s=h.timeout_s) for h in selected)
        return list(await asyncio.gather(*runs))

    return combine_selected(event, selected, asyncio.run(all_hooks()))
