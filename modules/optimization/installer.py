"""Drop-in install and exact uninstall of hookopt over a project's existing hooks.

Install keeps every Python hook script it replaces as ``NAME.original`` (renamed, so
bytes, permissions and times are untouched), writes a small stub in its place,
backs up the scope's settings file byte for byte, and rewrites only the hook
commands (absolute interpreter, ``-S``: no version-manager shim per call). All
checks run before anything is written; a failure half-way rolls back. Uninstall
puts every file back exactly. What it does not understand, it refuses.

Every settings scope installs on its own (see scopes.py): project
(``.claude/settings.json``, the default), local (``.claude/settings.local.json``)
and user (``~/.claude/settings.json``, scripts under ``~/.claude``).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from . import client, native_client, wire
from .integrated_optimizer import PROFILE_NAMES, ConfigError, load_settings
from .manifest import STUB_TEMPLATE, is_stub, load_manifest_at
from .native_client import ClientChoice, NativeClientError
from .observers import marks, refusal, validate_globs
from .paths import state_dir
from .protocol import matcher_matches
from .resources import package_root, shipped
from .scopes import SCOPE_NAMES, Scope, ScopeName, scope
from .stack import DEFAULT_TIMEOUT_S, consolidated, is_observer, left_reason, load_stacks

__all__ = ["SCOPE_NAMES", "InstallError", "install", "uninstall"]

Transport = Literal["command", "http"]
BACKUP_NAME: Final = "settings.json.backup"
# In the state dir when install made .claude (or only the state dir): the last uninstall takes it away.
CREATED_MARKER: Final = "created-claude-dir"
CREATED_STATE_MARKER: Final = "created-state-dir"
ROOT: Final = package_root()  # where the stubs import the client from: the checkout or site-packages
HOOKS_DIR: Final = shipped("hooks")
# `python3 script.py`, `/usr/bin/env python3 script.py`, `/abs/python3.11 script.py ...`
_PYTHON_COMMAND: Final = re.compile(r"\s*(?:(?:/usr)?/bin/env\s+)?((?:\S*/)?python[0-9.]*)\s+(?!-)(.*)", re.S)
_PLAIN_MATCHER: Final = re.compile(r"[A-Za-z0-9_ ,|-]*")
_PROJECT_VAR: Final = re.compile(r"\$\{CLAUDE_PROJECT_DIR\}|\$CLAUDE_PROJECT_DIR\b")
_HOME_VAR: Final = re.compile(r"\$\{HOME\}|\$HOME\b")


class InstallError(Exception):
    """A state install or uninstall does not understand; nothing was changed."""


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Script:
    """A Python hook script the install replaces with a stub."""

    path: Path  # as the command names it, resolved against the project
    rel: str
    interpreter: str
    stub: bytes = b""
    original_sha256: str = ""


@dataclass
class Plan:
    """Everything install will write, computed before anything is touched."""

    scope: Scope
    settings_path: Path
    settings_raw: bytes | None
    settings: dict[str, Any]
    scripts: dict[str, Script] = field(default_factory=dict)
    commands: dict[str, str] = field(default_factory=dict)  # original command -> the rest after its interpreter
    claude_dir_existed: bool = True
    state_existed: bool = True


def _inside(project: Path, path: Path) -> bool:
    root = os.path.realpath(project)
    return os.path.commonpath([root, os.path.realpath(path)]) == root


def _read_settings(where: Scope) -> tuple[Path, bytes | None, dict[str, Any]]:
    claude = where.claude_dir
    if claude.is_symlink() and not _inside(where.base, claude):
        raise InstallError(f"{claude} is a symlink leading out of {'the project' if where.name != 'user' else where.base}; refusing to write through it")
    path = where.settings_path
    if path.is_symlink():
        raise InstallError(f"{path} is a symlink; refusing to write through it")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return path, None, {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InstallError(f"{path} is not valid JSON ({exc}); fix it first, nothing was changed") from None
    if not isinstance(data, dict) or not isinstance(data.get("hooks", {}), dict):
        raise InstallError(f"{path}: expected an object with a 'hooks' object; nothing was changed")
    return path, raw, data


def _command_hooks(settings: Mapping[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(event, group, hook) for every command hook in the settings."""
    found = []
    for event, groups in (settings.get("hooks") or {}).items():
        for group in groups if isinstance(groups, list) else []:
            for hook in (group.get("hooks") or []) if isinstance(group, dict) else []:
                if isinstance(hook, dict) and hook.get("type") == "command" and isinstance(hook.get("command"), str):
                    found.append((event, group, hook))
    return found


def python_script(command: str, project: Path | None) -> tuple[str, Path, str] | None:
    """(interpreter, script path, rest of the command) if the command runs a Python script.

    Without a project (user-scope hooks run in whichever project is open), a script named
    through $CLAUDE_PROJECT_DIR or a relative path is a different file in every project: None.
    """
    match = _PYTHON_COMMAND.fullmatch(command)
    interpreter, rest = (match.group(1), match.group(2)) if match else ("", command)
    if project is None and _PROJECT_VAR.search(rest):
        return None
    try:
        expanded = _HOME_VAR.sub(lambda _: os.path.expanduser("~"), _PROJECT_VAR.sub(lambda _: str(project), rest))
        words = shlex.split(expanded)
    except ValueError:
        return None
    if not words or not words[0].endswith(".py"):
        return None
    path = Path(os.path.expanduser(words[0]))
    if not path.is_absolute():
        if project is None:
            return None
        path = project / path
    if not interpreter:  # run directly: its shebang names the interpreter
        try:
            first = path.read_bytes()[:256].split(b"\n", 1)[0].decode()
        except (OSError, UnicodeDecodeError):
            return None
        shebang = first[2:].split() if first.startswith("#!") else []
        shebang = shebang[1:] if shebang[:1] in (["/usr/bin/env"], ["/bin/env"]) else shebang
        if len(shebang) != 1 or "python" not in Path(shebang[0]).name:
            return None
        interpreter = shebang[0]
    return interpreter, path, rest


def _other_scopes(where: Scope, project: Path) -> tuple[set[str], set[str]]:
    """The command strings of the project's other scopes (as Claude Code runs them), and the
    real paths of the scripts their installs already replaced with stubs."""
    try:
        stacks = load_stacks(project, where.base if where.name == "user" else None)
    except ValueError as exc:
        raise InstallError(f"{exc}; nothing changed") from None
    others = [s for s in stacks.scopes if s.scope.name != where.name]
    commands = {hook["command"] for s in others for _, _, hook in _command_hooks({"hooks": s.hooks})}
    stubbed = {
        os.path.realpath(Path(str(s.manifest.get("root") or s.scope.root)) / entry["path"])
        for s in others
        if s.manifest is not None
        for entry in s.manifest.get("scripts", [])
    }
    return commands, stubbed


def _plan(where: Scope, project: Path, python: str, *, stubs: bool = True) -> Plan:
    """What install will change. Without stubs (a consolidated install) scripts stay as they
    are: the daemon runs them warm in place, and hooks left to Claude Code run untouched."""
    settings_path, raw, settings = _read_settings(where)
    root = where.root
    plan = Plan(where, settings_path, raw, settings, claude_dir_existed=where.claude_dir.exists(), state_existed=where.state.exists())
    # Claude Code runs a command string once however many scopes hold it. A user-scope command
    # may be repeated in any project, so user-scope commands are never rewritten; another
    # scope's command is not rewritten when a scope of this project repeats it.
    shared, stubbed_elsewhere = _other_scopes(where, project) if stubs else (set(), set())
    for _, _, hook in _command_hooks(settings) if stubs else []:
        found = python_script(hook["command"], project if where.name != "user" else None)
        if found is None:
            continue
        interpreter, path, rest = found
        if not _inside(root, path):
            if path.is_symlink() or _inside(root, path.parent):
                raise InstallError(f"{path} is a symlink leading out of {where.root_label}; refusing to replace it")
            continue  # a script kept outside the scope's root (e.g. ~/.claude/hooks for a project) is left alone
        if not path.is_file():
            continue  # missing or a dead link: Claude Code reports it itself; nothing to keep
        if os.path.realpath(path) in stubbed_elsewhere:
            # Another scope's install already put a stub there, which runs it warm from any command;
            # the command stays as it is (an -S rewrite would outlive that install's uninstall).
            continue
        rel = os.path.relpath(path, root)
        if where.name != "user" and hook["command"] not in shared:
            plan.commands[hook["command"]] = rest
        if rel in plan.scripts:
            if plan.scripts[rel].interpreter != interpreter:
                raise InstallError(f"{rel} is run by two interpreters ({plan.scripts[rel].interpreter}, {interpreter}); refusing")
            continue
        original = path.with_name(path.name + ".original")
        if original.exists() or original.is_symlink():
            raise InstallError(f"{original} already exists and is not hookopt's; move it away first, nothing was changed")
        content = path.read_bytes()
        if is_stub(content):
            raise InstallError(f"{path} is a hookopt stub but {where.label} has no install manifest; restore it by hand")
        stub = STUB_TEMPLATE.format(python=python, name=path.name, root=str(ROOT), interpreter=interpreter).encode()
        plan.scripts[rel] = Script(path, rel, interpreter, stub, _sha(content))
    return plan


def union_matcher(matchers: list[Any]) -> str:
    """One matcher that matches exactly what any of these matchers match."""
    if any(m is None or str(m).strip() in ("", "*") for m in matchers):
        return "*"
    texts = [str(m) for m in matchers]
    if all(_PLAIN_MATCHER.fullmatch(t) for t in texts):
        return "|".join(dict.fromkeys(n.strip() for t in texts for n in re.split(r"[|,]", t) if n.strip()))
    parts = []
    names = [n.strip() for t in texts if _PLAIN_MATCHER.fullmatch(t) for n in re.split(r"[|,]", t) if n.strip()]
    if names:
        parts.append("^(?:" + "|".join(re.escape(n) for n in dict.fromkeys(names)) + ")$")
    parts += [f"(?:{t})" for t in texts if not _PLAIN_MATCHER.fullmatch(t)]
    return "|".join(parts)


def _quote(path: Path | str) -> str:
    return shlex.quote(str(path))


def _client_hook(
    event: str, transport: Transport, python: str, endpoint: Mapping[str, Any], timeout: float, scope_name: ScopeName = "project",
    native: Path | None = None,
) -> dict[str, Any]:
    # Each scope's client names its scope, so the daemon serves it only that scope's hooks
    # (and Claude Code, which runs an identical command once, runs every scope's client).
    suffix = "" if scope_name == "project" else f"/{scope_name}"
    # SessionStart stays a command hook in both transports: it is what brings the daemon up.
    if transport == "http" and event != "SessionStart":
        return {
            "type": "http",
            "url": f"http://127.0.0.1:{endpoint['port']}/hook/stack{suffix}",
            "headers": {"X-Hookopt-Token": endpoint["token"]},
            "timeout": timeout,
        }
    python_argv = [python, "-S", str(HOOKS_DIR / "stack.py")] + ([] if scope_name == "project" else [scope_name])
    return {"type": "command", "command": native_client.command(native, "stack", scope_name, python_argv), "timeout": timeout}


def consolidate(
    hooks: Mapping[str, Any], transport: Transport, python: str, endpoint: Mapping[str, Any], scope_name: ScopeName = "project",
    observers: Sequence[str] = (), native: Path | None = None,
) -> dict[str, Any]:
    """The hooks block with every hook we reproduce exactly behind one client per event.

    Hooks left to Claude Code (see ``left_hooks``) stay where they are, byte for byte.
    native is the native client's path when the install has one (see native_client.py).
    """
    new: dict[str, Any] = {}
    events = list(hooks) + (["SessionStart"] if transport == "http" and "SessionStart" not in hooks else [])
    for event in events:
        kept, matchers, timeouts, has_matcher = [], [], [], False
        for group in hooks.get(event) or []:
            moved = [h for h in group.get("hooks", []) if consolidated(event, h, observers)]
            rest = [h for h in group.get("hooks", []) if not consolidated(event, h, observers)]
            if moved:
                matchers.append(group.get("matcher"))
                has_matcher = has_matcher or "matcher" in group
                timeouts += [float(h.get("timeout", DEFAULT_TIMEOUT_S)) for h in moved]
            if rest:
                kept.append({**group, "hooks": rest} if moved else group)
        if matchers:
            group = {"matcher": union_matcher(matchers)} if has_matcher else {}
            # The client waits for the slowest hook, plus a moment for the round trip.
            group["hooks"] = [_client_hook(event, transport, python, endpoint, max(timeouts) + 5, scope_name, native)]
            kept.insert(0, group)
        elif event == "SessionStart" and transport == "http":
            # A command hook that only brings the daemon up (it answers SessionStart with nothing).
            kept.insert(0, {"hooks": [_client_hook(event, "command", python, endpoint, 65.0, scope_name, native)]})
        new[event] = kept
    return new


def left_hooks(hooks: Mapping[str, Any], observers: Sequence[str] = ()) -> list[str]:
    """A line for each hook a consolidated install leaves to Claude Code, and why."""
    lines = []
    for event, groups in hooks.items():
        for group in groups if isinstance(groups, list) else []:
            for hook in group.get("hooks", []) if isinstance(group, dict) else []:
                if isinstance(hook, dict) and (why := left_reason(event, hook, observers)):
                    label = hook.get("command") or hook.get("url") or hook.get("prompt") or hook.get("type")
                    lines.append(f"{event} {str(label)[:80]!r}: {why}")
    return lines


def observer_globs(settings: Mapping[str, Any], given: Sequence[str], where: Path) -> list[str]:
    """The observer globs: the command line's, then the settings' ``optimization.observers``."""
    block = settings.get("optimization")
    from_settings = block.get("observers", []) if isinstance(block, dict) else []
    try:
        return list(dict.fromkeys([*validate_globs(list(given), "--observers"), *validate_globs(from_settings, f"{where}: optimization")]))
    except ValueError as exc:
        raise InstallError(f"{exc}; nothing changed") from None


def check_observers(hooks: Mapping[str, Any], globs: Sequence[str]) -> list[str]:
    """The hooks the globs make observers, as lines; InstallError for a glob that marks a guard or nothing."""
    if not globs:
        return []
    marked: list[str] = []
    used: set[str] = set()
    for event, _, hook in _command_hooks({"hooks": hooks}):
        hit = [g for g in globs if marks(hook["command"], [g])]
        if not hit:
            continue
        used.update(hit)
        if why := refusal(event, hook):
            raise InstallError(
                f"--observers {hit[0]!r} marks the {event} hook {hook['command']!r}, but {why}. "
                "Observers are for hooks whose output only informs (loggers, metrics); nothing changed"
            )
        if is_observer(event, hook, globs) and consolidated(event, hook, globs):
            marked.append(f"{event} {hook['command'][:80]!r}")
    if unused := [g for g in globs if g not in used]:
        raise InstallError(f"--observers {unused[0]!r} marks no command hook of this scope; nothing changed")
    return marked


def _rewrite_commands(settings: dict[str, Any], plan: Plan, python: str, native: Path | None) -> None:
    """Point each replaced script's command at the absolute interpreter, with -S (behind the
    native client when the install has one and the command is plain enough; see native_client)."""
    for _, _, hook in _command_hooks(settings):
        if (rest := plan.commands.get(hook["command"])) is not None:
            hook["command"] = native_client.stub_command(native, python, rest)


def _write_atomic(path: Path, data: bytes, mode: int | None = None) -> None:
    tmp = path.with_name(f".{path.name}.hookopt-tmp")
    tmp.write_bytes(data)
    if mode is not None:
        os.chmod(tmp, mode)
    os.replace(tmp, path)


def _start_daemon_for_http(project: Path) -> dict[str, Any]:
    """Bring the daemon up so its http port is known, and return the endpoint."""
    client.start_daemon(str(project))
    path = state_dir(project) / "http.json"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            endpoint = json.loads(path.read_text(encoding="utf-8"))
            if endpoint.get("port") and os.path.exists(wire.runtime_path(str(project), ".sock")):
                return dict(endpoint)
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise InstallError(f"the daemon did not start within 30 s; see {state_dir(project) / 'daemon.log'}")


def install(
    project: Path,
    *,
    profile: str | None = None,
    transport: Transport = "command",
    consolidate_hooks: bool = False,
    observers: Sequence[str] = (),
    scope_name: str = "project",
    home: Path | None = None,
    python: str = sys.executable,
    client: ClientChoice = "auto",
    say: Callable[[str], None] = print,
) -> bool:
    """Install over one scope's hooks; return False when it was already installed (nothing changed).

    project is the project the command runs for (the user scope applies to every project);
    home is where the user scope lives (default: the home directory). client picks the
    consolidated install's thin client: native (built here, see native_client.py), python,
    or auto (native when it builds, else python).
    """
    project = project.resolve()
    where = _scope(scope_name, project, home)
    if profile is not None and profile not in PROFILE_NAMES:
        raise InstallError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILE_NAMES)}")
    if profile is not None and where.name != "project":
        raise InstallError("--profile is read from the project's .claude/settings.json only; use `hookopt profile NAME` (nothing changed)")
    if transport == "http" and where.name == "user":
        raise InstallError(
            "--transport http cannot serve the user scope: an http hook names one daemon's port, and every "
            "project has its own daemon; use --consolidate (command transport). Nothing changed"
        )
    if transport == "http" and not consolidate_hooks:
        say("note: --transport http runs each event's hooks behind one http hook, so it implies --consolidate")
        consolidate_hooks = True
    globs = observer_globs(_read_settings(where)[2], observers, where.settings_path)
    if globs and not consolidate_hooks:
        say("note: observers run behind the consolidated client, so --observers implies --consolidate")
        consolidate_hooks = True
    existing = _load_manifest(where)
    if existing is not None:
        same = existing.get("transport") == transport and existing.get("consolidate") == consolidate_hooks
        same = same and (existing.get("observers") or []) == globs
        same = same and client in ("auto", existing.get("client", "python"))
        if same and (profile is None or existing.get("profile") == profile):
            say(f"hookopt is already installed in {where.label}; nothing changed")
            return False
        raise InstallError(
            f"hookopt is already installed in {where.label} with transport {existing.get('transport')}"
            f"{' (consolidated)' if existing.get('consolidate') else ''}, {existing.get('client', 'python')} client;"
            " run `hookopt uninstall` first"
            " (or `hookopt profile NAME` to change only the profile)"
        )
    if client not in native_client.CHOICES:
        raise InstallError(f"unknown client {client!r}; choose one of {', '.join(native_client.CHOICES)}")
    plan = _plan(where, project, python, stubs=not consolidate_hooks)
    marked = check_observers(plan.settings.get("hooks") or {}, globs)
    with tempfile.TemporaryDirectory(prefix="hookopt-client-") as tmp:
        built = _build_client(Path(tmp), client, say)
        return _install_planned(
            plan, where, project, profile, transport, consolidate_hooks, globs, marked, python, built, say
        )


def _build_client(tmp: Path, client: ClientChoice, say: Callable[[str], None]) -> Path | None:
    """The native client built in tmp, or None when the install keeps the Python client."""
    if client == "python":
        return None
    try:
        native_client.build(tmp / "hookopt-client")
    except NativeClientError as exc:
        if client == "native":
            raise InstallError(f"{exc}; nothing changed") from None
        say(f"note: {exc}, so the thin client runs in Python (about 10 ms more per event; see `hookopt install --help`)")
        return None
    return tmp / "hookopt-client"


def _install_planned(
    plan: Plan, where: Scope, project: Path, profile: str | None, transport: Transport, consolidate_hooks: bool,
    globs: list[str], marked: list[str], python: str, built: Path | None, say: Callable[[str], None],
) -> bool:
    native = native_client.client_path(where.state, where.name) if built is not None else None

    def build_settings() -> bytes:
        settings = json.loads(json.dumps(plan.settings))
        if profile is not None:
            settings["optimization"] = {**(settings.get("optimization") or {}), "profile": profile}
        if consolidate_hooks:
            endpoint = _start_daemon_for_http(project) if transport == "http" else {}
            settings["hooks"] = consolidate(plan.settings.get("hooks") or {}, transport, python, endpoint, where.name, globs, native)
        else:
            _rewrite_commands(settings, plan, python, native)
        return (json.dumps(settings, indent=2) + "\n").encode()

    if where.name == "project":
        try:
            load_settings(project, {}, project_settings={"optimization": {"profile": profile}} if profile else {})
        except ConfigError as exc:
            raise InstallError(str(exc)) from None
    options = {
        "transport": transport, "consolidate": consolidate_hooks, "profile": profile, "observers": globs,
        "client": "native" if native else "python", "client_sha256": native_client.source_sha256() if native else None,
    }
    _apply(plan, build_settings, options, (built, native) if built and native else None)
    if consolidate_hooks:
        for line in left_hooks(plan.settings.get("hooks") or {}, globs):
            say(f"left to Claude Code: {line}")
        for line in marked:
            say(f"observer (runs after the answer; its output no longer reaches Claude): {line}")
    how = f"{len(plan.scripts)} script(s) kept as .original behind stubs{', native client' if native else ''}"
    if consolidate_hooks:
        how = f"one {'native' if native else 'Python'} client per event, scripts untouched"
    say(
        f"hookopt installed in {where.label}: {how}, transport {transport}; "
        f"{where.settings_path.name} backed up to {where.backup_path}"
    )
    return True


def _scope(name: str, project: Path, home: Path | None) -> Scope:
    try:
        return scope(name, project, home)
    except ValueError as exc:
        raise InstallError(f"{exc}; nothing changed") from None


def _load_manifest(where: Scope) -> dict[str, Any] | None:
    try:
        return load_manifest_at(where.manifest_path)
    except ValueError as exc:
        raise InstallError(str(exc)) from None


def _apply(
    plan: Plan, build_settings: Callable[[], bytes], options: Mapping[str, Any], client_copy: tuple[Path, Path] | None = None
) -> None:
    """Back up, swap scripts for stubs, put the native client (built, target) in place, write the
    manifest and settings; undo all on failure."""
    where = plan.scope
    state = state_dir(where.base)
    manifest_path = where.manifest_path
    manifest: dict[str, Any] = {
        "version": 1,
        "scope": where.name,
        "root": str(where.root),
        **options,
        "python": sys.executable,
        "settings_existed": plan.settings_raw is not None,
        "claude_dir_existed": plan.claude_dir_existed,
        "settings_before_sha256": _sha(plan.settings_raw) if plan.settings_raw is not None else None,
        "hooks": plan.settings.get("hooks") or {},
        "scripts": [
            {"path": s.rel, "interpreter": s.interpreter, "original_sha256": s.original_sha256, "stub_sha256": _sha(s.stub)}
            for s in plan.scripts.values()
        ],
    }
    done: list[Callable[[], None]] = []
    try:
        if not plan.claude_dir_existed:
            (state / CREATED_MARKER).touch()
        elif not plan.state_existed:
            (state / CREATED_STATE_MARKER).touch()
        if plan.settings_raw is not None:
            shutil.copy2(plan.settings_path, where.backup_path)
            done.append(functools.partial(where.backup_path.unlink, missing_ok=True))
        if client_copy is not None:
            built, target = client_copy
            shutil.copy2(built, target)
            done.append(functools.partial(target.unlink, missing_ok=True))
        for script in plan.scripts.values():
            original = script.path.with_name(script.path.name + ".original")
            mode = script.path.lstat().st_mode & 0o7777 if not script.path.is_symlink() else 0o755
            os.rename(script.path, original)
            done.append(functools.partial(os.replace, original, script.path))
            _write_atomic(script.path, script.stub, mode | 0o500)
        # The manifest first: the daemon serves the stack from it as soon as settings point there.
        _write_atomic(manifest_path, json.dumps(manifest, indent=2).encode())
        done.append(functools.partial(manifest_path.unlink, missing_ok=True))
        settings_bytes = build_settings()
        manifest["settings_after_sha256"] = _sha(settings_bytes)
        _write_atomic(manifest_path, json.dumps(manifest, indent=2).encode())
        plan.settings_path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(plan.settings_path, settings_bytes)
    except BaseException:
        for undo in reversed(done):
            undo()
        if plan.settings_raw is not None:
            _write_atomic(plan.settings_path, plan.settings_raw)
        _remove_state_if_ours(where, plan.claude_dir_existed)
        raise


def _remove_state_if_ours(where: Scope, claude_dir_existed: bool) -> None:
    """When no install is left, take away the state dir if it holds nothing else, and .claude
    with it when install made .claude only to hold hookopt's state."""
    others = [p for p in where.state.glob("install*.json") if p != where.manifest_path]
    if others:
        return
    if claude_dir_existed is not False and not (where.state / CREATED_MARKER).exists():
        with contextlib.suppress(OSError):
            # Install made the state dir and nothing else was put there since (no daemon state).
            if {p.name for p in where.state.iterdir()} <= {".gitignore", CREATED_STATE_MARKER, CREATED_MARKER}:
                if (where.state / CREATED_STATE_MARKER).exists():
                    shutil.rmtree(where.state)
        return
    shutil.rmtree(where.state, ignore_errors=True)
    with contextlib.suppress(OSError):
        where.claude_dir.rmdir()  # only when empty: a restored settings file keeps it


def uninstall(
    project: Path,
    *,
    force: bool = False,
    scope_name: str = "project",
    home: Path | None = None,
    say: Callable[[str], None] = print,
) -> None:
    """Put every replaced script and the scope's settings file back, byte for byte."""
    project = project.resolve()
    where = _scope(scope_name, project, home)
    manifest = _load_manifest(where)
    if manifest is None:
        raise InstallError(f"hookopt is not installed in {where.label} (no {where.manifest_path}); nothing changed")
    root = Path(str(manifest.get("root") or where.root))
    settings_path = where.settings_path
    backup = where.backup_path
    problems = []
    current = settings_path.read_bytes() if settings_path.exists() else None
    if current is None or _sha(current) != manifest.get("settings_after_sha256"):
        problems.append(f"{settings_path} changed since install")
    if manifest.get("settings_existed") and not backup.is_file():
        problems.append(f"the settings backup {backup} is missing")
    for entry in manifest.get("scripts", []):
        path = root / entry["path"]
        original = path.with_name(path.name + ".original")
        if not original.exists() and not original.is_symlink():
            raise InstallError(f"{original} is missing; cannot restore {path}. Nothing changed")
        if not path.is_file() or _sha(path.read_bytes()) != entry["stub_sha256"]:
            problems.append(f"{path} is no longer hookopt's stub")
    if problems and not force:
        raise InstallError("; ".join(problems) + ". Nothing changed; `hookopt uninstall --force` restores the originals anyway")
    # The user scope serves every project: each daemon drops it when it sees the manifest go.
    _stop_daemon(project)
    for entry in manifest.get("scripts", []):
        path = root / entry["path"]
        os.replace(path.with_name(path.name + ".original"), path)
    if manifest.get("settings_existed") and backup.is_file():
        os.replace(backup, settings_path)
    elif not manifest.get("settings_existed"):
        settings_path.unlink(missing_ok=True)
    where.manifest_path.unlink()
    if manifest.get("client") == "native":
        native_client.client_path(where.state, where.name).unlink(missing_ok=True)
    _remove_state_if_ours(where, manifest.get("claude_dir_existed") is not False)
    say(f"hookopt uninstalled from {where.label}: {len(manifest.get('scripts', []))} script(s) and {settings_path.name} restored")


def _stop_daemon(project: Path) -> None:
    """Ask the project's daemon to stop (it would otherwise keep serving a stack that is gone)."""
    frame = wire.encode_request("stop", project=str(project).encode())
    client.ask_daemon(str(project), frame, 5.0)


def matchers_matching_nothing(settings: Mapping[str, Any], tools: list[str]) -> list[str]:
    """Human notes on tool matchers that match none of the known tools."""
    notes = []
    for event, groups in (settings.get("hooks") or {}).items():
        if event not in ("PreToolUse", "PostToolUse", "PostToolUseFailure", "PermissionRequest"):
            continue
        for group in groups if isinstance(groups, list) else []:
            matcher = group.get("matcher") if isinstance(group, dict) else None
            if matcher and not any(matcher_matches(matcher, tool) for tool in tools):
                notes.append(f"{event} matcher {matcher!r} matches no known tool (names are case-sensitive: {', '.join(tools[:6])}, ...)")
    return notes
