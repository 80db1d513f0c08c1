"""Built-in PreToolUse guards: destructive deletes, secret files, downloads piped into a
shell, writes outside the project and runaway resource use.

Each guard is a plain function of the event returning a Verdict. Bash commands are read
as bash would read them (bash_reading.py), so a quoted string such as
``echo "rm -rf /"`` is data, not a command.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final, Literal

from ..paths import project_dir
from .base import PASS, Validator, Verdict, collect_validators, validator
from .bash_reading import (
    DOWNLOADERS,
    WRITE_REDIRECTS,
    Cmd,
    bash_command,
    is_interpreter,
    operands,
    options,
    parse,
    runs_stdin,
    show,
    upstream,
    walk,
)

__all__ = [
    "BUILTIN_PRE",
    "outside_project",
    "pipe_to_shell",
    "recursive_delete",
    "resource_heavy",
    "secret_files",
]

Level = Literal["deny", "ask"]


def _verdict(findings: list[tuple[Level, str]]) -> Verdict:
    """Return the strongest finding (deny over ask), or PASS."""
    for level in ("deny", "ask"):
        reasons = [r for lv, r in findings if lv == level]
        if reasons:
            return Verdict(level, "; ".join(dict.fromkeys(reasons)))
    return PASS


# ---------------------------------------------------------------------------
# recursive_delete

_SYSTEM_DIRS: Final = frozenset(
    "/bin /boot /dev /etc /home /lib /lib32 /lib64 /libx32 /media /mnt /opt /proc /root /run "
    "/sbin /snap /srv /sys /usr /var /Applications /Library /System /Users /Volumes /private".split()
)
_VAR_PREFIX: Final = re.compile(r"\$(?:\{(\w+)(:?\?)?[^}]*\}|(\w+))")
_FIND_FILTERS: Final = frozenset(
    "-name -iname -path -ipath -wholename -iwholename -regex -iregex -type -newer -mtime -mmin "
    "-atime -amin -ctime -cmin -size -user -group -empty -perm -links -inum -samefile -lname".split()
)


def _normalise(path: str, home: str) -> str:
    """Spell a target one way: $HOME and ~ as the home path, "X/*" as X, no repeated slashes or dot segments."""
    for var in ("${HOME}", "$HOME"):
        if path == var or path.startswith(var + "/"):
            path = "~" + path[len(var) :]
    path = re.sub(r"/{2,}", "/", path)
    # Everything inside a directory is as bad as the directory itself.
    for tail in ("/*", "/.*"):
        if path.endswith(tail):
            path = path[: -len(tail)] or "/"
    path = posixpath.normpath(path) if path else path
    if home and (path == "~" or path.startswith("~/")):
        path = posixpath.normpath(home + path[1:])
    return path


def _target_risk(arg: str, *, cwd: str, root: str, home: str, here_counts: bool = True) -> Level | None:
    """Say how bad it is to recursively delete (or chmod) arg."""
    var = _VAR_PREFIX.match(arg)
    if var and (var.group(1) or var.group(3)) != "HOME":
        if var.group(2):
            return None  # ${X:?}: the shell stops if X is empty
        # `rm -rf $DIR/*` becomes `rm -rf /*` when DIR is empty: let a human look.
        rest = arg[var.end() :].lstrip("\"'")
        if rest.startswith("/") and _target_risk(rest, cwd=cwd, root=root, home=home) == "deny":
            return "ask"
        return None
    if arg in ("*", ".*", "./*", "./.*"):
        return "deny" if here_counts else None
    path = _normalise(arg, home)
    if path in (".", "./") and not here_counts:
        return None
    if re.fullmatch(r"~[\w.-]*", path) or path in (".", ".."):
        return "deny"  # a home directory, here, or a parent
    if "$" in path or path.startswith("~"):
        return None  # unknown at this point
    full = posixpath.normpath(posixpath.join(cwd, path)) if cwd else path
    if full == "/" or full in _SYSTEM_DIRS:
        return "deny"
    for keep in (root, home):
        # The project root, the home directory, or anything that contains them.
        if keep and keep.startswith(full.rstrip("/") + "/"):
            return "deny"
        if keep == full and (here_counts or keep != root):
            return "deny"
    return None


def _delete_findings(cmd: Cmd, cwd: str, root: str, home: str) -> Iterator[tuple[Level, str]]:
    name, args = cmd.name, cmd.args
    shown = show(" ".join(cmd.argv))
    opts = options(args)
    if name == "rm" and any("--recursive" == o or (o[1] != "-" and ("r" in o or "R" in o)) for o in opts):
        targets, what = operands(args), "recursively delete"
        here = True
    elif name in ("chmod", "chown", "chgrp") and any(o == "--recursive" or (o[1] != "-" and "R" in o) for o in opts):
        targets, what = operands(args)[1:], f"recursively {name}"
        here = False  # `chmod -R u+w .` inside the project is ordinary
    elif name == "find":
        starts = []
        for a in args:
            if a.startswith(("-", "(", "!")):
                if a in ("-L", "-H", "-P"):
                    continue
                break
            starts.append(a)
        deletes = "-delete" in args or any(
            a in ("-exec", "-execdir", "-ok") and i + 1 < len(args) and posixpath.basename(args[i + 1]) == "rm"
            for i, a in enumerate(args)
        )
        if not deletes:
            return
        filtered = any(a in _FIND_FILTERS for a in args)
        for start in starts or ["."]:
            risk = _target_risk(start, cwd=cwd, root=root, home=home, here_counts=not filtered)
            if risk:
                # With a filter (-name '*.pyc') it deletes some files under a big tree: ask.
                level: Level = "ask" if filtered or risk == "ask" else "deny"
                yield level, f"`{shown}` would delete files under `{start}`; narrow it to a project subdirectory"
        return
    else:
        return
    for target in targets:
        risk = _target_risk(target, cwd=cwd, root=root, home=home, here_counts=here)
        if risk == "deny":
            yield (
                "deny",
                (
                    f"`{shown}` would {what} `{target}` (the filesystem root, a system directory, a home "
                    "directory or the project itself); name the specific subdirectory instead"
                ),
            )
        elif risk == "ask":
            yield "ask", f"`{shown}` would {what} `/` contents if the variable in `{target}` is empty"


def _locations(event: Mapping[str, Any]) -> tuple[str, str]:
    """Return (cwd, project root) for the event, as normalised absolute paths."""
    root = posixpath.normpath(str(project_dir(event)))
    cwd = event.get("cwd")
    return (posixpath.normpath(cwd) if isinstance(cwd, str) and cwd.startswith("/") else root), root


@validator(matcher="Bash")
def recursive_delete(event: Mapping[str, Any]) -> Verdict:
    """Deny recursive deletes (and recursive chmod/chown) of /, ~, the project, parents or system dirs."""
    command = bash_command(event)
    if command is None:
        return PASS
    cwd, root = _locations(event)
    home = posixpath.normpath(os.environ.get("HOME") or "/nonexistent-home")
    findings = [f for cmd in walk(parse(command)) for f in _delete_findings(cmd, cwd, root, home)]
    return _verdict(findings)


# ---------------------------------------------------------------------------
# secret_files

_SSH_KEYS: Final = frozenset({"id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", "id_ecdsa_sk", "id_ed25519_sk"})
_SSH_PUBLIC: Final = frozenset({"known_hosts", "known_hosts.old", "config", "authorized_keys", "authorized_keys2"})
_ENV_TEMPLATES: Final = frozenset({"example", "sample", "template", "dist"})
_KEY_SUFFIXES: Final = (".pem", ".key", ".p12", ".pfx")
# Plain-text credential files: package-registry tokens, netrc passwords, git and postgres passwords.
_CREDENTIAL_FILES: Final = frozenset({".npmrc", ".pypirc", ".netrc", "_netrc", ".git-credentials", ".pgpass"})
_CLOUD_FILES: Final = frozenset(
    {"credentials", "credentials.json", "credentials.db", "access_tokens.db", "application_default_credentials.json"}
)
# What a glob like ".env*" or "*.pem" is tested against.
_SECRET_SAMPLES: Final = (".env", ".env.local", "id_rsa", "id_ed25519", "server.pem", "server.key")
# Commands that print, copy or send a file's bytes (first operand of the pattern tools is the pattern).
_READERS: Final = frozenset(
    "cat less more head tail bat batcat nl tac strings xxd od hexdump base64 base32 scp rsync "
    "cp sort uniq cut diff tar zip gzip openssl".split()
)
_PATTERN_READERS: Final = frozenset({"grep", "egrep", "fgrep", "rg", "ag", "awk", "sed"})
_FILE_TOOLS: Final = {"Read": "read", "Edit": "edit", "MultiEdit": "edit", "Write": "write", "NotebookEdit": "edit"}


def _secret_kind(path: str) -> str | None:
    """Say what kind of secret path names, or None if it does not look like one."""
    parts = [p.lower() for p in re.split(r"[/\\]", path.strip()) if p]
    if not parts:
        return None
    name, parents = parts[-1], parts[:-1]
    if ".ssh" in parents and not name.endswith(".pub") and name not in _SSH_PUBLIC:
        return "an SSH private key"
    if any(c in name for c in "*?["):
        literal = name.strip("*?[]")
        if literal and any(
            fnmatch.fnmatchcase(s, name) for s in _SECRET_SAMPLES if not s.startswith(".") or name.startswith(".")
        ):
            return "a pattern matching secret files"
        return None
    if name == ".env" or (name.startswith(".env.") and not _ENV_TEMPLATES & set(name.split(".")[2:])):
        return "an environment file with secrets"
    if name in _SSH_KEYS:
        return "an SSH private key"
    if name.endswith(_KEY_SUFFIXES):
        return "a private key or certificate"
    if name in _CREDENTIAL_FILES:
        return "a credentials file"
    if name in _CLOUD_FILES and (".aws" in parents or "gcloud" in parents):
        return "cloud credentials"
    return None


def _sent_files(args: list[str]) -> Iterator[str]:
    """Yield the files curl/wget/httpie would upload: -T FILE, @FILE, name=@FILE, name=<FILE."""
    for i, arg in enumerate(args):
        if arg in ("-T", "--upload-file", "--post-file", "--body-file") and i + 1 < len(args):
            yield args[i + 1]
        elif arg.startswith("@"):
            yield arg[1:]
        elif "=@" in arg or "=<" in arg:
            yield re.split(r"=[@<]", arg, maxsplit=1)[1].split(";")[0]
        elif arg.startswith("-") and "@" in arg:
            yield arg.split("@", 1)[1]
        elif arg.startswith(("--post-file=", "--body-file=")):
            yield arg.split("=", 1)[1]


def _bash_secrets(cmd: Cmd) -> Iterator[str]:
    """Yield the secret-looking files one command reads or sends."""
    name, args = cmd.name, cmd.args
    files: list[str] = [t for op, t in cmd.redirects if op in ("<", "<>")]
    if name in _READERS:
        words = operands(args)
        # Copying a template *to* .env.local leaks nothing; the destination is not read.
        files += words[:-1] if name in ("cp", "scp", "rsync") else words
    elif name in _PATTERN_READERS:
        files += operands(args)[1:]
    elif name in DOWNLOADERS:
        files += _sent_files(args)
    for path in files:
        if _secret_kind(path):
            yield path


def _file_path(tool_input: Mapping[str, Any]) -> str | None:
    for key in ("file_path", "notebook_path", "path"):
        value = tool_input.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _resolve(path: str, cwd: str) -> str | None:
    """Return path made absolute against cwd with ~, .. and symlinks resolved, or None if impossible."""
    try:
        return os.path.realpath(os.path.join(cwd, os.path.expanduser(path)))
    except (ValueError, OSError):  # an embedded NUL, a path too long
        return None


# Reads the filesystem (symlink targets), so its answer is not cached.
@validator(matcher="Read|Edit|Write|MultiEdit|NotebookEdit|Grep|Bash", cacheable=False)
def secret_files(event: Mapping[str, Any]) -> Verdict:
    """Deny reading, editing or sending secret files (.env, private keys, credentials)."""
    tool = event.get("tool_name")
    tool_input = event.get("tool_input")
    if not isinstance(tool_input, Mapping):
        return PASS
    if tool in _FILE_TOOLS or tool == "Grep":
        path = _file_path(tool_input)
        if path is None:
            return PASS
        cwd, _ = _locations(event)
        # A harmless-looking name may be a symlink to a key: judge the target too.
        for candidate in (path, _resolve(path, cwd)):
            kind = candidate and _secret_kind(candidate)
            if kind:
                verb = _FILE_TOOLS.get(str(tool), "search")
                return Verdict(
                    "deny",
                    f"`{candidate}` looks like {kind}; Claude may not {verb} it. Ask the user to handle secrets.",
                )
        return PASS
    command = bash_command(event)
    if command is None:
        return PASS
    for cmd in walk(parse(command)):
        for path in _bash_secrets(cmd):
            return Verdict(
                "deny",
                f"`{show(' '.join(cmd.argv))}` reads or sends `{path}`, which looks like "
                f"{_secret_kind(path)}; ask the user to handle secrets.",
            )
    return PASS


# ---------------------------------------------------------------------------
# pipe_to_shell


def _downloads(cmds: Iterable[Cmd]) -> bool:
    return any(c.name in DOWNLOADERS for c in walk(cmds))


@validator(matcher="Bash")
def pipe_to_shell(event: Mapping[str, Any]) -> Verdict:
    """Deny running a download unread: ``curl | sh``, ``bash <(curl ...)``, ``sh -c "$(curl ...)"``."""
    command = bash_command(event)
    if command is None:
        return PASS
    for cmd in walk(parse(command)):
        name = cmd.name
        if not (is_interpreter(name) or name in ("eval", "source", ".")):
            continue
        # The downloaded text is the program: piped to an interpreter that reads stdin, or
        # substituted into its command line (bash <(curl), sh -c "$(curl)", eval "$(curl)").
        piped = is_interpreter(name) and runs_stdin(name, cmd.args) and _downloads(cmd.stdin)
        if piped or _downloads(cmd.substs):
            return Verdict(
                "deny",
                f"`{show(command)}` runs downloaded code with `{name}` without anyone reading it; "
                "download it to a file, inspect it, then run it.",
            )
    return PASS


# ---------------------------------------------------------------------------
# outside_project

_WRITE_TOOLS: Final = frozenset({"Write", "Edit", "MultiEdit", "NotebookEdit"})
_DEVICES: Final = frozenset({"/dev/null", "/dev/stdout", "/dev/stderr", "/dev/tty", "/dev/zero"})


def _allowed_roots(root: str) -> list[str]:
    """Return the real paths writes may go to: the project, temp dirs, and Claude Code's plan files."""
    dirs = [root, "/tmp", "/var/tmp", os.environ.get("TMPDIR") or "/tmp"]
    # Plan mode saves its plan under ~/.claude/plans with the Write tool.
    dirs.append(os.path.join(os.path.expanduser("~"), ".claude", "plans"))
    return [os.path.realpath(d) for d in dirs if d]


def _inside(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _bash_write_targets(cmd: Cmd) -> Iterator[str]:
    for op, target in cmd.redirects:
        if op in WRITE_REDIRECTS and not (op == ">&" and (target.isdigit() or target == "-")):
            yield target
    if cmd.name == "tee":
        yield from operands(cmd.args)


# Depends on symlinks and CLAUDE_PROJECT_DIR at call time: never cached.
@validator(matcher="Write|Edit|MultiEdit|NotebookEdit|Bash", cacheable=False)
def outside_project(event: Mapping[str, Any]) -> Verdict:
    """Deny file edits outside the project (temp dirs allowed); ask about shell writes there."""
    tool = event.get("tool_name")
    tool_input = event.get("tool_input")
    if not isinstance(tool_input, Mapping):
        return PASS
    cwd, root = _locations(event)
    if tool in _WRITE_TOOLS:
        path = _file_path(tool_input)
        if path is None:
            return PASS
        real = _resolve(path, cwd)
        if real is None:
            return Verdict("deny", f"cannot resolve the path `{show(path)}`")
        if _inside(real, _allowed_roots(os.path.realpath(root))):
            return PASS
        shown = f"`{path}`" if real == path else f"`{path}` (really `{real}`)"
        return Verdict("deny", f"{shown} is outside the project `{root}`; only files inside it may be changed.")
    command = bash_command(event)
    if command is None:
        return PASS
    findings: list[tuple[Level, str]] = []
    roots: list[str] = []  # resolved on the first write target: most commands write none
    for cmd in walk(parse(command)):
        for target in _bash_write_targets(cmd):
            expanded = os.path.expandvars(target)
            if "$" in expanded or expanded in _DEVICES or expanded.startswith("/dev/fd/"):
                continue  # a variable we cannot know, or a harmless device
            roots = roots or _allowed_roots(os.path.realpath(root))
            real = _resolve(expanded, cwd)
            if real is not None and not _inside(real, roots):
                findings.append(("ask", f"`{show(' '.join(cmd.argv))}` writes to `{target}`, outside the project"))
    return _verdict(findings)


# ---------------------------------------------------------------------------
# resource_heavy
#
# deny: what cannot be undone or takes the machine down at once: a fork bomb, a new
#       filesystem or raw dd onto a block device, killing every process (kill -9 -1).
# ask:  what is sometimes meant (a stress test, a reboot of a throwaway VM, filling a file
#       with zeros) but usually a mistake: a human decides.

_FORK_BOMB: Final = re.compile(r"([\w:.]+)\s*\(\s*\)\s*\{[^}]*\1\s*\|\s*&?\s*\1\s*&")
_ENDLESS: Final = re.compile(r"\b(?:while\s+(?:true|:|\[\s*1\s*\])|until\s+false)\s*;?\s*do\b")
_LOOP_EXITS: Final = re.compile(r"\b(?:sleep|break|exit|return|read|wait)\b")
_INFINITE_DEVICES: Final = frozenset({"/dev/urandom", "/dev/zero", "/dev/random"})
_INFINITE_READERS: Final = frozenset({"cat", "base64", "xxd", "od", "hexdump", "strings", "pv", "tr"})
_POWER: Final = frozenset({"shutdown", "reboot", "halt", "poweroff"})
_DISK: Final = re.compile(r"/dev/(?:sd|hd|vd|xvd|nvme|mmcblk|disk|rdisk|md|dm-|mapper/|loop)")


def _resource_findings(cmd: Cmd, limited: set[int]) -> Iterator[tuple[Level, str]]:
    name, args = cmd.name, cmd.args
    shown = show(" ".join(cmd.argv))
    words = operands(args)
    if name.startswith("mkfs") or name in ("mke2fs", "mkswap", "wipefs"):
        if any(a.startswith("/dev/") for a in words):
            yield "deny", f"`{shown}` would erase a disk device"
        else:
            yield "ask", f"`{shown}` creates a filesystem"
    elif name == "dd":
        opts = {k: v for k, _, v in (a.partition("=") for a in args if "=" in a)}
        if _DISK.match(opts.get("of", "")):
            yield "deny", f"`{shown}` would overwrite a disk device"
        elif opts.get("if") in _INFINITE_DEVICES and "count" not in opts:
            yield "ask", f"`{shown}` copies an endless device with no count= and can fill the disk"
    elif name == "yes" and any(op in WRITE_REDIRECTS for op, _ in cmd.redirects):
        yield "ask", f"`{shown}` writes to a file until the disk is full"
    elif name in ("stress", "stress-ng"):
        yield "ask", f"`{shown}` deliberately loads the machine"
    elif name in _POWER or (name == "systemctl" and {"reboot", "poweroff", "halt", "kexec"} & set(args)):
        yield "ask", f"`{shown}` shuts down or restarts the machine"
    elif name in ("init", "telinit") and words[:1] in (["0"], ["6"]):
        yield "ask", f"`{shown}` shuts down or restarts the machine"
    elif name == "kill":
        if "--" in args:
            pids = args[args.index("--") + 1 :]
        else:
            rest = args[1:] if args[:1] and args[0].startswith("-") else args
            pids = rest[1:] if args[:1] in (["-s"], ["-n"]) else rest
        if "-1" in pids:
            yield "deny", f"`{shown}` signals every process you can reach"
    sources = [t for op, t in cmd.redirects if op == "<"]
    if name in _INFINITE_READERS:
        sources += words
    if name not in ("head", "dd") and id(cmd) not in limited and _INFINITE_DEVICES & set(sources):
        yield "ask", f"`{shown}` reads an endless device with nothing (such as head) to stop it"


@validator(matcher="Bash")
def resource_heavy(event: Mapping[str, Any]) -> Verdict:
    """Deny fork bombs and disk wipes; ask about stress tests, endless loops and shutdowns."""
    command = bash_command(event)
    if command is None:
        return PASS
    findings: list[tuple[Level, str]] = []
    if _FORK_BOMB.search(command):
        findings.append(("deny", "this is a fork bomb: it starts processes until the machine stops"))
    if _ENDLESS.search(command) and not _LOOP_EXITS.search(command):
        findings.append(("ask", "an endless loop with no sleep, break or exit will spin a CPU until killed"))
    cmds = list(walk(parse(command)))
    # A reader of /dev/urandom is fine when a head (or dd count=) downstream stops it.
    limited = {
        id(up)
        for cmd in cmds
        if cmd.name == "head" or (cmd.name == "dd" and any(a.startswith("count=") for a in cmd.args))
        for up in upstream(cmd)
    }
    for cmd in cmds:
        findings.extend(_resource_findings(cmd, limited))
    return _verdict(findings)


# The guards above, marked with @validator, in the order they are defined.
BUILTIN_PRE: Final[tuple[Validator, ...]] = collect_validators(globals())
