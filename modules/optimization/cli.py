"""The hookopt command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Sequence

from .hook_integration import Engine, run_hook
from .integrated_optimizer import ConfigError, load_settings
from .protocol import ProtocolError, interpret, parse_event

__all__ = ["main"]

EXAMPLE_PROJECT = Path(__file__).resolve().parents[2] / "examples" / "project"
RECORDED_ROOT = "/home/user/project"  # the project path recorded in example events

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


class CommandError(Exception):
    """A failure the user can fix; printed as one line."""


def _replay(path: Path, project: Path) -> Iterator[dict[str, Any]]:
    """Yield the recorded events of a JSONL file, re-rooted at project."""
    if not path.is_file():
        raise CommandError(f"no recorded events at {path}")
    root = json.dumps(str(project))[1:-1]
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield parse_event(line.replace(RECORDED_ROOT, root).encode())
        except ProtocolError as exc:
            raise CommandError(f"{path}:{number}: {exc}") from None


def _describe(event: dict[str, Any]) -> str:
    tool_input = event.get("tool_input") or {}
    detail = tool_input.get("command") or tool_input.get("file_path") or ""
    return f"{event['tool_name']:<5} {detail}"


def cmd_demo(project: Path, events_path: Path | None) -> int:
    """Replay a recorded session through the optimized hooks in-process and print each decision."""
    project = project.resolve()
    events = list(_replay(events_path or project / "events.jsonl", project))
    os.environ["CLAUDE_PROJECT_DIR"] = str(project)
    engine = Engine(project, load_settings(project, os.environ))
    tally: Counter[str] = Counter()
    print(f"Replaying {len(events)} recorded events from {project} (profile {engine.settings.profile.name})\n")
    start = time.perf_counter()
    try:
        for event in events:
            name = event["hook_event_name"]
            result = engine.evaluate(event)
            outcome = interpret(name, result)
            if name == "PreToolUse":
                verdict = outcome.decision or "allow"
                tally[verdict] += 1
                mark = {"deny": "BLOCK", "ask": "ASK  "}.get(verdict, "ok   ")
                print(f"  {mark} {_describe(event)}")
                if outcome.reason:
                    print(f"        -> {outcome.reason}")
            elif outcome.additional_context:
                for note in outcome.additional_context.split("\n\n"):
                    print(f"  note  {' '.join(note.split())}")
    finally:
        engine.close()
    elapsed = time.perf_counter() - start
    stats = engine.cache.stats()
    print(
        f"\n{sum(tally.values())} tool calls checked: {tally['deny']} blocked, {tally['ask']} sent to you to confirm, "
        f"{tally['allow']} let through."
    )
    print(
        f"{len(events)} events in {elapsed * 1000:.0f} ms in-process; validator cache {stats['hits']} hits / "
        f"{stats['misses']} misses (kept in {project / '.claude' / 'hookopt'})."
    )
    return EXIT_OK


def cmd_check() -> int:
    """Evaluate one event from stdin exactly as a hook would."""
    return run_hook()


def cmd_config(project: Path) -> int:
    """Print the resolved settings for a project."""
    settings = load_settings(project.resolve(), os.environ)
    profile = settings.profile
    print(
        json.dumps(
            {
                "enabled": settings.enabled,
                "adaptive": settings.adaptive,
                "debug": settings.debug,
                "profile": {k: getattr(profile, k) for k in profile.__slots__},
                "sources": list(settings.sources),
            },
            indent=2,
        )
    )
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hookopt",
        description="A fast, safe runtime for Claude Code hooks.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="replay a recorded session through the optimized hooks and print each decision",
        description="Replay recorded hook events (JSON lines) through the built-in guards and analyzers, "
        "in-process, and print what each tool call would get. Defaults to the bundled example project.",
    )
    demo.add_argument("--project", type=Path, default=EXAMPLE_PROJECT, help="project directory (default: the bundled example)")
    demo.add_argument("--events", type=Path, help="recorded events, one JSON object a line (default: PROJECT/events.jsonl)")
    sub.add_parser(
        "check",
        help="evaluate one hook event from stdin, as a hook command would",
        description="Read one Claude Code hook event on stdin, evaluate it in-process, write the hook output "
        "and exit with the hook exit code (0, 2 to block, 1 for a non-blocking error).",
    )
    config = sub.add_parser("config", help="print the resolved settings", description="Print the settings in force for a project and where they came from.")
    config.add_argument("--project", type=Path, default=Path.cwd(), help="project directory (default: the current one)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run the command, map failures to one line and an exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            return cmd_demo(args.project, args.events)
        if args.command == "check":
            return cmd_check()
        return cmd_config(args.project)
    except (CommandError, ConfigError) as exc:
        print(f"hookopt: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("hookopt: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
