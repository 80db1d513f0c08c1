"""The hookopt command line."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from . import benchmark, client, native_client, wire
from .hook_integration import Engine, run_hook
from .installer import InstallError, install, matchers_matching_nothing, python_script, uninstall
from .integrated_optimizer import PROFILE_NAMES, ConfigError, load_settings
from .manifest import load_manifest, load_manifest_at
from .native_client import CC_ENV, ClientChoice
from .native_client import CHOICES as CLIENT_CHOICES
from .observers import load_ledger, lost_output_lines
from .paths import state_dir
from .protocol import ProtocolError, interpret, parse_event
from .resources import shipped
from .scopes import SCOPE_NAMES
from .scopes import scope as settings_scope

__all__ = ["main"]

EXAMPLE_PROJECT = shipped("example")
RECORDED_ROOT = "/home/user/project"  # the project path recorded in example events

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NOT_RUNNING, EXIT_FINDINGS = 0, 1, 2, 3, 3
KNOWN_TOOLS = [
    "Bash", "Read", "Write", "Edit", "MultiEdit", "Glob", "Grep", "LS", "WebFetch", "WebSearch", "Task",
    "TodoWrite", "NotebookEdit", "NotebookRead", "BashOutput", "KillShell", "ExitPlanMode", "SlashCommand",
    "mcp__server__tool",
]  # fmt: skip
SLOW_HOOK_MS = 100.0


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


def cmd_bench(project: Path, events: Path | None, rounds: int, chart_path: Path) -> int:
    """Replay recorded events through the project's hooks natively and optimized; compare."""
    project = project.resolve()
    events = events or project / "events.jsonl"
    print(f"Benchmarking the hooks of {project} on {events.name}: native (spawned) vs hookopt (warm daemon), {rounds} rounds")

    tty = sys.stderr.isatty()

    def progress(done: int, total: int) -> None:
        if tty:  # one line redrawn in place
            bar = "#" * (30 * done // total)
            sys.stderr.write(f"\r  [{bar:<30}] {done}/{total} event runs" + ("\n" if done == total else ""))
        elif done == total or done * 4 // total != (done - 1) * 4 // total:  # a line per quarter
            sys.stderr.write(f"  {done}/{total} event runs\n")
        sys.stderr.flush()

    try:
        result = benchmark.run_bench(project, events, rounds=rounds, progress=progress)
    except benchmark.BenchError as exc:
        raise CommandError(str(exc)) from None
    print()
    benchmark.report(result, sys.stdout)
    for line in result.mismatches:
        print(f"  MISMATCH {line}")
    if benchmark.chart(result, chart_path):
        print(f"Chart written to {chart_path}")
    else:
        print("Chart skipped: matplotlib is not installed (pip install matplotlib)")
    return EXIT_ERROR if result.mismatches else EXIT_OK


def _daemon_status(project: Path) -> dict[str, Any] | None:
    reply = client.ask_daemon(str(project), wire.encode_request("status", project=str(project).encode()), 5.0)
    return json.loads(reply[1]) if reply and reply[0] == 0 else None


def _observer_findings(project: Path, installs: Mapping[str, Mapping[str, Any] | None]) -> list[str]:
    """Observers whose output or exit code never reached Claude (the project's daemon runs every scope's, and keeps one ledger)."""
    if not any(installs.values()):
        return []
    return lost_output_lines(load_ledger(state_dir(project, create=False)))


def _client_findings(project: Path, installs: Mapping[str, Mapping[str, Any] | None]) -> list[str]:
    found = []
    for name, manifest in installs.items():
        found += native_client.findings(manifest, settings_scope(name, project).state, name)
    return found


def cmd_install(
    project: Path, profile: str | None, transport: str, consolidate: bool, scope: str = "project", observers: Sequence[str] = (),
    client: str = "auto",
) -> int:
    """Install hookopt over the existing hooks of one settings scope."""
    install(
        project, profile=profile, transport="http" if transport == "http" else "command", consolidate_hooks=consolidate,
        scope_name=scope, observers=observers, client=cast(ClientChoice, client),
    )
    return EXIT_OK


def cmd_uninstall(project: Path, force: bool, scope: str = "project") -> int:
    """Restore every replaced script and the scope's settings file, byte for byte."""
    uninstall(project, force=force, scope_name=scope)
    return EXIT_OK


def _installs(project: Path, scopes: Sequence[str]) -> dict[str, dict[str, Any] | None]:
    """The install manifest of each scope (None where hookopt is not installed)."""
    found = {}
    for name in scopes:
        try:
            found[name] = load_manifest_at(settings_scope(name, project).manifest_path)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
    return found


def _enabled_in_settings(project: Path) -> bool:
    try:
        return load_settings(project, os.environ).enabled
    except ConfigError:
        return True  # the daemon reports broken settings itself


_ASK = object()


def _heap_line(heap: Mapping[str, Any]) -> str:
    huge = heap.get("huge_pages_kb")
    pages = "" if huge is None else f", {huge / 1024:.0f} MB on huge pages"
    if heap.get("allocator") == "malloc":
        return f"glibc malloc{pages}"
    return f"Python's allocator{pages} (started with HOOKOPT_HUGEPAGES=0 or the user's own PYTHONMALLOC)"


def cmd_status(project: Path, as_json: bool, *, status: Any = _ASK, scope: str | None = None) -> int:
    """Show the installs, the daemon, profile, pool, cache, breakers and per-hook latency.

    scope limits the install lines to one settings scope (default: every scope that applies).
    """
    project = project.resolve()
    if status is _ASK:
        status = _daemon_status(project)
    installs = _installs(project, [scope] if scope else SCOPE_NAMES)
    if as_json:
        scopes = {name: manifest is not None for name, manifest in installs.items()}
        print(json.dumps({"running": status is not None, "daemon": status, "installed": any(scopes.values()), "scopes": scopes}, indent=2))
        return EXIT_OK if status else EXIT_NOT_RUNNING
    for name, manifest in installs.items():
        where = settings_scope(name, project).settings_path
        if manifest:
            client_kind = manifest.get("client", "python")
            kind = f"one {client_kind} client per event" if manifest.get("consolidate") else f"stubs, {client_kind} client"
            print(
                f"installed ({name}, {where}): yes ({kind}, transport {manifest.get('transport')}, "
                f"{len(manifest.get('scripts', []))} script(s) kept as .original)"
            )
        else:
            print(f"installed ({name}, {where}): no (hookopt install --scope {name} adds it over its hooks)")
    lost = _observer_findings(project, installs) + _client_findings(project, installs)
    for line in lost:
        print(f"warning: {line}")
    if status is None:
        if not _enabled_in_settings(project):
            print('daemon: not running: optimization is off ("enabled": false); the hooks run without it')
        else:
            print("daemon: not running (the next hook event starts it)")
        return EXIT_NOT_RUNNING
    pool, cache = status["pool"], status["cache"]
    print(f"daemon: running, pid {status['pid']}, up {status['uptime_s']:.0f} s, {status['events']} events")
    if sup := status.get("supervisor"):
        restarts = sup["restarts"]
        last = f" (last: {sup['last_exit']})" if sup.get("last_exit") else ""
        print(f"supervisor: pid {sup['pid']}, {restarts} restart{'' if restarts == 1 else 's'}{last}")
    if heap := status.get("heap"):
        print(f"heap: {_heap_line(heap)}")
    print(f"profile: {status['profile']}")
    print(f"pool: {pool.get('workers')} workers ({pool.get('idle')} idle), queue {pool.get('queue_depth')}")
    print(f"cache: {cache['size']} entries, hit rate {cache['hit_rate']:.0%} ({cache['hits']} hits, {cache['misses']} misses)")
    breakers = status["breakers"]
    opened = {k: v for k, v in breakers.items() if v != "closed"}
    print("breakers: " + (", ".join(f"{k} {v}" for k, v in opened.items()) if opened else f"all {len(breakers)} closed"))
    if (hooks := status.get("observer_hooks")) and (hooks["ran"] or hooks["pending"] or hooks["replayed"]):
        print(
            f"observer hooks: {hooks['ran']} run after their answer, {hooks['pending']} pending, "
            f"{hooks['replayed']} replayed at start, {hooks['lost_output']} with output Claude did not see"
        )
    latency = status["monitor"].get("latency_ms", {})
    if latency:
        print("latency (ms)            p50      p95")
        for key, values in sorted(latency.items()):
            print(f"  {key[:40]:<40} {values.get('p50', 0):8.1f} {values.get('p95', 0):8.1f}")
    return EXIT_OK


def cmd_status_watch(
    project: Path, as_json: bool, interval_s: float, count: int | None, *, clock: Callable[[], float] = time.monotonic
) -> int:
    """Redraw the status every interval_s seconds, count times or until Ctrl-C; events/s between frames."""
    project = project.resolve()
    clear = "\x1b[H\x1b[2J" if sys.stdout.isatty() and not as_json else ""
    code, frame = EXIT_NOT_RUNNING, 0
    last: tuple[dict[str, Any] | None, float] | None = None
    try:
        while count is None or frame < count:
            if frame:
                time.sleep(interval_s)
            frame += 1
            status, now = _daemon_status(project), clock()
            rate = None
            if status is not None and last is not None and last[0] is not None and last[0]["pid"] == status["pid"]:
                rate = (status["events"] - last[0]["events"]) / max(now - last[1], 1e-9)
            last = (status, now)
            if as_json:
                print(json.dumps({"running": status is not None, "events_per_s": rate, "daemon": status}), flush=True)
                code = EXIT_OK if status else EXIT_NOT_RUNNING
                continue
            sys.stdout.write(clear)
            print(f"hookopt status of {project}, {time.strftime('%H:%M:%S')}, every {interval_s:g} s (Ctrl-C to stop)")
            code = cmd_status(project, False, status=status)
            if status is not None:
                print("events/s: " + (f"{rate:.1f}" if rate is not None else "(from the next frame)"))
            print(flush=True)
    except KeyboardInterrupt:
        pass  # the way to leave a live view: not an error
    return code


def cmd_profile(project: Path, name: str | None) -> int:
    """Show the profile in force, or set it in the project's settings (the daemon reloads)."""
    project = project.resolve()
    if name is None:
        settings = load_settings(project, os.environ)
        for profile in settings.profiles.values():
            mark = "*" if profile.name == settings.profile.name else " "
            print(f"{mark} {profile.name:<21} {profile.description}")
        return EXIT_OK
    if name not in PROFILE_NAMES:
        raise CommandError(f"unknown profile {name!r}; choose one of {', '.join(PROFILE_NAMES)}")
    path = project / ".claude" / "settings.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    except ValueError as exc:
        raise CommandError(f"{path} is not valid JSON ({exc}); nothing changed") from None
    data["optimization"] = {**(data.get("optimization") or {}), "profile": name}
    load_settings(project, {}, project_settings=data)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = (json.dumps(data, indent=2) + "\n").encode()
    path.write_bytes(payload)
    manifest = load_manifest(project)
    if manifest is not None:  # our own change: uninstall still restores the original bytes
        manifest["settings_after_sha256"] = hashlib.sha256(payload).hexdigest()
        manifest["profile"] = name
        (project / ".claude" / "hookopt" / "install.json").write_text(json.dumps(manifest, indent=2))
    print(f"profile {name} set in {path}; a running daemon picks it up within a second")
    return EXIT_OK


def _is_shim(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError:
        return False
    return head == b"#!" and any(part in path for part in ("/shims/", "/.asdf/", "/.pyenv/", "/mise/"))


def cmd_doctor(project: Path) -> int:
    """Find what makes hooks slow or wrong: shims, slow hooks, matchers that match nothing."""
    project = project.resolve()
    path = project / ".claude" / "settings.json"
    try:
        settings = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    except ValueError as exc:
        raise CommandError(f"{path} is not valid JSON ({exc})") from None
    manifest = load_manifest(project)
    hooks_source = (manifest or {}).get("hooks") or settings.get("hooks") or {}
    findings: list[str] = []
    # Shims cost per call only in the commands Claude Code runs now: an install's clients
    # and stubs name an absolute interpreter, and its daemon resolves a shim once.
    for event, groups in (settings.get("hooks") or {}).items():
        for group in groups if isinstance(groups, list) else []:
            for hook in group.get("hooks", []) if isinstance(group, dict) else []:
                command = hook.get("command") if isinstance(hook, dict) else None
                found = python_script(command, project) if isinstance(command, str) else None
                resolved = shutil.which(found[0]) if found else None
                if found and resolved and _is_shim(resolved):
                    findings.append(
                        f"{event} hook `{command}` starts {found[0]} through the version-manager shim {resolved}, "
                        "which costs tens of milliseconds per call; `hookopt install` writes an absolute interpreter"
                    )
    findings += matchers_matching_nothing({"hooks": hooks_source}, KNOWN_TOOLS)
    installs = _installs(project, SCOPE_NAMES)
    findings += _observer_findings(project, installs) + _client_findings(project, installs)
    status = _daemon_status(project)
    if status is not None:
        for key, values in status["monitor"].get("latency_ms", {}).items():
            if values.get("p95", 0) > SLOW_HOOK_MS:
                findings.append(f"{key} is slow: p95 {values['p95']:.0f} ms (p50 {values.get('p50', 0):.0f} ms)")
    else:
        print("note: the daemon is not running, so hook latencies are unknown (run a session, then doctor again)")
    for finding in findings:
        print(f"- {finding}")
    if not findings:
        print(f"no problems found in {path}")
        return EXIT_OK
    return EXIT_FINDINGS


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text}")
    return value


def _project_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--project", type=Path, default=Path.cwd(), help="project directory (default: the current one)")


def _scope_option(parser: argparse.ArgumentParser, default: str | None, what: str) -> None:
    parser.add_argument(
        "--scope", choices=SCOPE_NAMES, default=default,
        help=f"{what}: project = PROJECT/.claude/settings.json, local = PROJECT/.claude/settings.local.json, "
        "user = ~/.claude/settings.json (scripts under ~/.claude; applies to every project)"
        + (f" (default: {default})" if default else " (default: every scope)"),
    )


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
    bench = sub.add_parser(
        "bench",
        help="replay recorded events through a project's hooks, natively and optimized, and compare",
        description="Replay recorded hook events (JSON lines) through the project's own hook stack twice, on "
        "throw-away copies of the project: natively (every matching hook spawned, as Claude Code does) and "
        "optimized (installed with --consolidate, one thin client per event, hooks run warm). Runs alternate "
        "event by event. Prints p50/p95/p99 per event kind and the speed-up, writes a PNG chart, and exits 1 "
        "if any outcome (exit code, stdout, stderr) differs.",
    )
    bench.add_argument("--project", type=Path, default=EXAMPLE_PROJECT, help="project directory (default: the bundled example)")
    bench.add_argument("--events", type=Path, help="recorded events, one JSON object a line (default: PROJECT/events.jsonl)")
    bench.add_argument("--rounds", type=int, default=3, help="timed passes over the events after one warm-up pass (default: 3)")
    bench.add_argument("--chart", type=Path, default=Path("hookopt-bench.png"), help="where to write the PNG chart (default: ./hookopt-bench.png)")
    config = sub.add_parser("config", help="print the resolved settings", description="Print the settings in force for a project and where they came from.")
    _project_option(config)

    inst = sub.add_parser(
        "install",
        help="speed up a project's existing hooks, keeping every original",
        description="Install hookopt over the hooks of one settings scope (--scope; default "
        "PROJECT/.claude/settings.json). Each Python hook script is "
        "kept byte for byte as NAME.original and replaced by a stub that runs it warm in the project's daemon; "
        "settings.json is backed up first and only hook commands change (absolute interpreter, no shim; "
        "with a C compiler, a native client first: see --client). "
        "Running it twice changes nothing. It refuses, changing nothing, on a foreign NAME.original, a "
        "settings file that is not valid JSON, or a symlink leading out of the scope's root (the project, "
        "or ~/.claude for --scope user). Each scope installs and uninstalls on its own, with its own backup; "
        "Claude Code runs the hooks of every scope together, and so does hookopt. Exit 0 on success "
        "(also when already installed), 1 on refusal.",
    )
    _project_option(inst)
    _scope_option(inst, "project", "the settings file whose hooks to install over")
    inst.add_argument("--profile", choices=PROFILE_NAMES, help="profile to write into the project's settings")
    inst.add_argument(
        "--transport", choices=("command", "http"), default="command",
        help="command: thin clients (never fail open); http: Claude Code posts to the daemon, no process per "
        "event, but a dead daemon lets tool calls through (implies --consolidate)",
    )
    inst.add_argument(
        "--consolidate", action="store_true",
        help="run each PreToolUse/PostToolUse/PostToolUseFailure event's plain command hooks through one "
        "client; the daemon applies the matchers, runs the scripts warm in place and answers with what Claude "
        "Code would show for them. Hooks it cannot reproduce exactly (if, async, args, other events...) are "
        "left to Claude Code, and listed",
    )
    inst.add_argument(
        "--observers", action="append", default=[], metavar="GLOB",
        help="mark the hooks whose command, script path or script name matches GLOB (repeatable; also "
        '"optimization": {"observers": [...]} in the settings) as observers: their event is answered once it is '
        "journaled and they run after, in order, never lost, their output no longer reaching Claude (status and "
        "doctor report any). PostToolUse, PostToolUseFailure and async hooks only: a synchronous PreToolUse hook "
        "decides, and marking one is refused. Implies --consolidate",
    )
    inst.add_argument(
        "--client", choices=CLIENT_CHOICES, default="auto",
        help="the thin client Claude Code starts per event (consolidated) or per hook and event (stubs): native "
        f"(built now with the system's C compiler, cc or ${CC_ENV}, into .claude/hookopt/; about 1-2 ms instead of "
        "a Python start's ~10; it hands anything unusual to the Python client, and the settings fall back to the "
        "Python client if the binary is deleted; a stub whose command is more than plain words keeps the Python "
        "client), python, or auto: native when it builds, else python with a note (default: auto)",
    )
    uninst = sub.add_parser(
        "uninstall",
        help="put every original hook and settings.json back, byte for byte",
        description="Restore each NAME.original over its stub and settings.json from its backup. Refuses "
        "(exit 1, nothing changed) if a stub or settings.json changed since install, unless --force.",
    )
    _project_option(uninst)
    _scope_option(uninst, "project", "the settings scope to restore")
    uninst.add_argument("--force", action="store_true", help="restore even if files changed since install")
    status = sub.add_parser(
        "status",
        help="daemon, profile, pool, cache hit rate, breakers, p50/p95 per hook",
        description="Ask the project's daemon how it is doing. Exit 0 when it runs, 3 when it does not. "
        "With --watch, redraw it every --interval seconds with the events per second since the last frame, "
        "until Ctrl-C (or --count frames); the exit code is that of the last frame.",
    )
    _project_option(status)
    _scope_option(status, None, "which scope's install to report")
    status.add_argument("--json", action="store_true", help="print the raw status as JSON (with --watch: one object a line)")
    status.add_argument("--watch", action="store_true", help="keep redrawing the status, with events/s, until Ctrl-C")
    status.add_argument("--interval", type=_positive_float, default=2.0, metavar="S", help="seconds between --watch frames (default: 2)")
    status.add_argument("--count", type=_positive_int, metavar="N", help="with --watch, stop after N frames")
    dash = sub.add_parser(
        "dashboard",
        help="print the Grafana dashboard for the daemon's /metrics",
        description="Print the Grafana dashboard JSON shipped with hookopt (events/s, p50/p95 per event and per "
        "hook, cache hit rate, breaker states, queue depths, batch sizes) for a Prometheus data source that "
        "scrapes the daemon's /metrics (the port is metrics_port in PROJECT/.claude/hookopt/http.json). "
        "Import it in Grafana: Dashboards > New > Import.",
    )
    dash.add_argument("--path", action="store_true", help="print where the file is instead of its content")
    prof = sub.add_parser(
        "profile",
        help="show or set the optimization profile",
        description="Without NAME, list the profiles and mark the one in force. With NAME, write it into the "
        "project's .claude/settings.json (an 'optimization' block Claude Code ignores); a running daemon "
        "reloads within a second.",
    )
    prof.add_argument("name", nargs="?", choices=PROFILE_NAMES, help="profile to use")
    _project_option(prof)
    doctor = sub.add_parser(
        "doctor",
        help="find version-manager shims, slow hooks and matchers that match nothing",
        description="Check a project's hooks. Exit 0 when nothing is wrong, 3 when it found problems "
        "(each printed as a line starting with '- '), 1 on error.",
    )
    _project_option(doctor)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run the command, map failures to one line and an exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            return cmd_demo(args.project, args.events)
        if args.command == "check":
            return cmd_check()
        if args.command == "bench":
            if args.rounds < 1:
                raise CommandError("--rounds must be at least 1")
            return cmd_bench(args.project, args.events, args.rounds, args.chart)
        if args.command == "install":
            return cmd_install(
                args.project, args.profile, args.transport, args.consolidate, args.scope, args.observers, args.client
            )
        if args.command == "uninstall":
            return cmd_uninstall(args.project, args.force, args.scope)
        if args.command == "status":
            if args.watch:
                return cmd_status_watch(args.project, args.json, args.interval, args.count)
            if args.count is not None:
                raise CommandError("--count only applies with --watch")
            return cmd_status(args.project, args.json, scope=args.scope)
        if args.command == "dashboard":
            path = shipped("config", "dashboards", "hookopt.json")
            print(path if args.path else path.read_text(encoding="utf-8"), end="\n" if args.path else "")
            return EXIT_OK
        if args.command == "profile":
            return cmd_profile(args.project, args.name)
        if args.command == "doctor":
            return cmd_doctor(args.project)
        return cmd_config(args.project)
    except (CommandError, ConfigError, InstallError) as exc:
        print(f"hookopt: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("hookopt: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`hookopt status | head`): stop quietly, as other tools do, and
        # point stdout at /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
