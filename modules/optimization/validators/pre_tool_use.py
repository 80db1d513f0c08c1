"""Built-in PreToolUse guards: destructive deletes, secret files, downloads piped into a
shell, writes outside the project and runaway resource use.

Each guard is a plain function of the event returning a Verdict. Bash commands are read
with shlex into a small tree of simple commands (pipelines, ``$(...)``, ``<(...)``,
``bash -c`` scripts), so a quoted string such as ``echo "rm -rf /"`` is data, not a
command. A command shlex cannot split (unbalanced quotes) is still judged, read both
with its quotes dropped and with every quote as a command break.
"""

from __future__ import annotations

import bisect
import fnmatch
import functools
import os
import posixpath
import re
import shlex
from dataclasses import dataclass, field
from typing import Any, Final, Iterable, Iterator, Literal, Mapping

from ..paths import project_dir
from .base import PASS, Validator, Verdict

__all__ = [
    "BUILTIN_PRE",
    "outside_project",
    "pipe_to_shell",
    "recursive_delete",
    "resource_heavy",
    "secret_files",
]

Level = Literal["deny", "ask"]

# ---------------------------------------------------------------------------
# Reading a Bash command

_PUNCT: Final = "();<>|&\n"
# Longest first, so a run like ")|" or ">>" splits into the operators bash sees.
_OPERATORS: Final = (
    "&>>", "<<<", "&&", "||", ";;", "|&", ">>", ">|", "&>", ">&", "<&", "<<", "<(", ">(", "<>",
    ";", "|", "&", "(", ")", "<", ">", "\n",
)  # fmt: skip
_WRITE_REDIRECTS: Final = frozenset({">", ">>", ">|", "&>", "&>>", "<>", ">&"})
_REDIRECTS: Final = _WRITE_REDIRECTS | {"<", "<&", "<<", "<<<"}
_MAX_DEPTH: Final = 8  # nesting of (...), $(...) and bash -c kept apart; deeper is read flat
_SHOWN: Final = 200  # characters of a command quoted back in a reason

_ASSIGNMENT: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_HEREDOC: Final = re.compile(r"(?<!<)<<(?!<)-?\s*(['\"]?)([A-Za-z_][\w.-]*)\1")
# Words that run the command after them (and their options that take a value).
_WRAPPERS: Final = {
    "sudo": {"-u", "-g", "-C", "-D", "-h", "-p", "-r", "-t", "-U", "-T"},
    "doas": {"-u", "-C"},
    "env": {"-u", "-C", "-S"},
    "nice": {"-n"},
    "ionice": {"-c", "-n", "-p"},
    "timeout": {"-s", "-k", "--signal", "--kill-after"},
    "xargs": {"-I", "-n", "-P", "-d", "-L", "-s", "-E", "-a"},
    "stdbuf": {"-i", "-o", "-e"},
    "nohup": set(),
    "time": set(),
    "exec": set(),
    "command": set(),
    "builtin": set(),
    "busybox": set(),
    "unbuffer": set(),
    # Shell keywords that may start a simple command.
    "if": set(), "then": set(), "elif": set(), "else": set(), "while": set(), "until": set(),
    "do": set(), "!": set(), "{": set(),
}  # fmt: skip
_SHELLS: Final = frozenset({"sh", "bash", "zsh", "dash", "ksh", "mksh", "ash", "fish", "csh", "tcsh", "su"})
_INTERPRETER: Final = re.compile(r"(?:python|pypy)[\d.]*|perl|ruby|node|nodejs|php|pwsh")
# Options that give an interpreter its program on the command line instead of stdin.
_CODE_OPTIONS: Final = frozenset({"-c", "-e", "-E", "-m", "-r", "--eval", "--print", "--command"})
_DOWNLOADERS: Final = frozenset({"curl", "wget", "fetch", "http", "https", "xh"})


@dataclass(eq=False)
class _Cmd:
    """One simple command, with what feeds it and what it runs."""

    argv: list[str] = field(default_factory=list)
    redirects: list[tuple[str, str]] = field(default_factory=list)
    stdin: list[_Cmd] = field(default_factory=list)  # the pipeline stage before it
    substs: list[_Cmd] = field(default_factory=list)  # $(...), `...`, <(...) within it
    nested: list[_Cmd] = field(default_factory=list)  # what it runs: (subshell), bash -c, eval

    @functools.cached_property
    def name(self) -> str:
        return _unwrap(self.argv)[0]

    @functools.cached_property
    def args(self) -> list[str]:
        return _unwrap(self.argv)[1]


def _unwrap(argv: list[str]) -> tuple[str, list[str]]:
    """Return the command a wrapped argv really runs (``sudo -u x rm`` is rm) and its arguments."""
    i = 0
    while i < len(argv):
        word = argv[i]
        if _ASSIGNMENT.match(word):
            i += 1
            continue
        name = posixpath.basename(word)
        if name not in _WRAPPERS:
            return name, argv[i + 1 :]
        takes_value = _WRAPPERS[name]
        i += 1
        while i < len(argv) and argv[i].startswith("-") and argv[i] != "-":
            if argv[i] == "--":
                i += 1
                break
            i += 2 if argv[i] in takes_value else 1
        if name == "timeout":
            i += 1  # the duration
    return "", []


def _split_heredocs(text: str) -> tuple[str, list[str]]:
    """Drop here-document bodies (data, not commands); return the text and the bodies fed to a shell."""
    if "<<" not in text:
        return text, []
    lines = text.split("\n")
    where: dict[str, list[int]] = {}  # stripped line -> its line numbers, to find delimiters fast
    for n, line in enumerate(lines):
        where.setdefault(line.strip(), []).append(n)
    kept: list[str] = []
    to_shell: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        kept.append(line)
        i += 1
        for match in _HEREDOC.finditer(line):
            found = where.get(match.group(2), [])
            k = bisect.bisect_left(found, i)
            if k == len(found):
                continue  # no delimiter line: "<<x" inside a string, not a here-document
            end = found[k]
            body = "\n".join(lines[i:end])
            i = end + 1
            words = re.split(r"[;&|(]", line[: match.start()])[-1].split()
            if any(posixpath.basename(w) in _SHELLS for w in words):
                to_shell.append(body)
            elif not match.group(1):
                # An unquoted delimiter: bash still runs the $(...) in the body.
                to_shell.extend(_substitutions(body))
    return "\n".join(kept), to_shell


def _split_operators(run: str) -> Iterator[str]:
    i = 0
    while i < len(run):
        op = next(o for o in _OPERATORS if run.startswith(o, i))
        yield op
        i += len(op)


def _tokens(text: str) -> list[tuple[bool, str]]:
    """Split a command into (is_operator, text) tokens; never raise."""
    try:
        lex = shlex.shlex(text, posix=True, punctuation_chars=_PUNCT)
        lex.whitespace = " \t\r"  # a newline separates commands, so it is an operator here
        lex.whitespace_split = True
        lex.commenters = ""  # shlex would end "a#b" at '#' and hide the rest of the line
        words = list(lex)
    except ValueError:
        # Unbalanced quotes. bash runs the complete commands before the bad one, so judge
        # it anyway, twice over: once with quotes dropped (`rm -rf '/` deletes /) and once
        # with every quote as a command break (text hidden in a string is checked as if run).
        spaced, broken = (re.sub(r"[\"'`\\]", sep, text) for sep in (" ", "\n"))
        words = re.findall(r"[();<>|&\n]+|[^\s();<>|&\n]+", f"{spaced}\n{broken}")
    tokens: list[tuple[bool, str]] = []
    for word in words:
        if word and not word.strip(_PUNCT):
            tokens.extend((True, op) for op in _split_operators(word))
        else:
            tokens.append((False, word))
    return tokens


def _backquotes_as_dollar(text: str) -> str:
    """Rewrite `cmd` as $(cmd) where bash would run it (not inside single quotes)."""
    if "`" not in text:
        return text
    out: list[str] = []
    quote = ""
    opened = False
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and quote != "'":
            out.append(text[i : i + 2])
            i += 2
            continue
        if c == "`" and quote != "'":
            out.append(")" if opened else "$(")
            opened = not opened
        else:
            if c == "'" and quote != '"':
                quote = "" if quote else "'"
            elif c == '"' and quote != "'":
                quote = "" if quote else '"'
            out.append(c)
        i += 1
    return "".join(out)


def _substitutions(word: str) -> Iterator[str]:
    """Yield the bodies of the ``$(...)`` substitutions inside one word."""
    i = word.find("$(")
    while i >= 0:
        depth, j = 1, i + 2
        while j < len(word) and depth:
            depth += {"(": 1, ")": -1}.get(word[j], 0)
            j += 1
        yield word[i + 2 : j - 1 if depth == 0 else j]
        i = word.find("$(", j)


def _inline_script(name: str, args: list[str]) -> str | None:
    """Return the script a shell runs from its command line (``bash -c SCRIPT``, ``eval ...``)."""
    if name == "eval":
        return " ".join(args)
    if name not in _SHELLS:
        return None
    seen_c = False
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("-o", "+o"):
            skip = True
        elif arg in ("-c", "--command") or (arg[:1] == "-" and arg[:2] != "--" and "c" in arg[1:]):
            seen_c = True
        elif not arg.startswith("-") or arg == "-":
            return arg if seen_c else None
    return None


def _runs_stdin(name: str, args: list[str]) -> bool:
    """Say whether an interpreter called with args reads its program from stdin."""
    for arg in args:
        if arg in ("-", "-s"):
            return True
        if arg.startswith("-") and len(arg) > 1:
            if arg in _CODE_OPTIONS or (name in _SHELLS and arg[:2] != "--" and "c" in arg[1:]):
                return False
            continue
        return False  # a script file
    return True


def _is_interpreter(name: str) -> bool:
    return name in _SHELLS or _INTERPRETER.fullmatch(name) is not None


class _Parser:
    """Build the command tree from tokens (recursive descent over parentheses)."""

    def __init__(self, tokens: list[tuple[bool, str]], depth: int) -> None:
        self.tokens = tokens
        self.pos = 0
        self.base = depth

    def commands(self, depth: int) -> list[_Cmd]:
        """Read commands up to the ')' closing this level, or to the end."""
        out: list[_Cmd] = []
        cur = _Cmd()
        while self.pos < len(self.tokens):
            is_op, tok = self.tokens[self.pos]
            self.pos += 1
            if not is_op:
                cur.argv.append(tok)
            elif tok == ")":
                if depth > self.base:
                    break
                self._finish(cur, out, depth)  # a stray ')': end the command
                cur = _Cmd()
            elif tok in ("(", "<(", ">("):
                if depth >= _MAX_DEPTH:
                    continue
                inner = self.commands(depth + 1)
                if tok == "(" and cur.argv and cur.argv[-1].endswith("$"):
                    cur.argv[-1] = cur.argv[-1][:-1]  # "$(": a command substitution
                    if not cur.argv[-1]:
                        cur.argv.pop()
                    cur.substs.extend(inner)
                elif tok == "(":
                    cur.nested.extend(inner)  # a subshell runs as part of this command
                else:
                    cur.substs.extend(inner)
            elif tok in _REDIRECTS:
                if self.pos < len(self.tokens) and not self.tokens[self.pos][0]:
                    cur.redirects.append((tok, self.tokens[self.pos][1]))
                    self.pos += 1
            elif tok in ("|", "|&"):
                kept = self._finish(cur, out, depth)
                cur = _Cmd(stdin=[cur] if kept else [])
            else:
                self._finish(cur, out, depth)
                cur = _Cmd()
        self._finish(cur, out, depth)
        return out

    def _finish(self, cmd: _Cmd, out: list[_Cmd], depth: int) -> bool:
        """Complete cmd (substitutions in its words, scripts it runs); add it to out unless empty."""
        if depth < _MAX_DEPTH:
            for word in (*cmd.argv, *(target for _, target in cmd.redirects)):
                for body in _substitutions(word):
                    cmd.substs.extend(_parse_text(body, depth + 1))
            script = _inline_script(cmd.name, cmd.args)
            if script is None and cmd.name in _SHELLS and _runs_stdin(cmd.name, cmd.args):
                # `echo 'rm -rf /' | bash` runs the echoed text.
                script = " ".join(" ".join(c.args) for c in cmd.stdin if c.name in ("echo", "printf"))
            if script:
                cmd.nested.extend(_parse_text(script, depth + 1))
        if cmd.argv or cmd.redirects or cmd.substs or cmd.nested or cmd.stdin:
            out.append(cmd)
            return True
        return False


def _parse_text(text: str, depth: int) -> list[_Cmd]:
    text, shell_bodies = _split_heredocs(text)
    cmds = _Parser(_tokens(_backquotes_as_dollar(text)), depth).commands(depth)
    for body in shell_bodies:
        if depth < _MAX_DEPTH:
            cmds.extend(_parse_text(body, depth + 1))
    return cmds


@functools.lru_cache(maxsize=256)
def _parse(command: str) -> tuple[_Cmd, ...]:
    """Parse a Bash command into its top-level commands (several guards read the same one)."""
    return tuple(_parse_text(command, 0))


def _walk(cmds: Iterable[_Cmd]) -> Iterator[_Cmd]:
    """Yield every command once, including those in pipelines, substitutions and nested scripts."""
    seen: set[int] = set()
    stack = list(reversed(list(cmds)))
    while stack:
        cmd = stack.pop()
        if id(cmd) in seen:
            continue
        seen.add(id(cmd))
        yield cmd
        stack.extend(reversed([*cmd.stdin, *cmd.substs, *cmd.nested]))


def _upstream(cmd: _Cmd) -> list[_Cmd]:
    """Return every command whose output reaches cmd: earlier pipeline stages, substitutions, subshells."""
    return list(_walk([*cmd.stdin, *cmd.substs]))


def _bash_command(event: Mapping[str, Any]) -> str | None:
    if event.get("tool_name") != "Bash":
        return None
    tool_input = event.get("tool_input")
    command = tool_input.get("command") if isinstance(tool_input, Mapping) else None
    return command if isinstance(command, str) and command.strip() else None


def _show(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"


def _operands(args: list[str]) -> list[str]:
    """Return the arguments that are not options (everything after ``--`` counts)."""
    if "--" in args:
        cut = args.index("--")
        return [a for a in args[:cut] if not a.startswith("-") or a == "-"] + args[cut + 1 :]
    return [a for a in args if not a.startswith("-") or a == "-"]


def _options(args: list[str]) -> list[str]:
    return [a for a in (args[: args.index("--")] if "--" in args else args) if a.startswith("-") and a != "-"]


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


def _delete_findings(cmd: _Cmd, cwd: str, root: str, home: str) -> Iterator[tuple[Level, str]]:
    name, args = cmd.name, cmd.args
    shown = _show(" ".join(cmd.argv))
    opts = _options(args)
    if name == "rm" and any("--recursive" == o or (o[1] != "-" and ("r" in o or "R" in o)) for o in opts):
        targets, what = _operands(args), "recursively delete"
        here = True
    elif name in ("chmod", "chown", "chgrp") and any(o == "--recursive" or (o[1] != "-" and "R" in o) for o in opts):
        targets, what = _operands(args)[1:], f"recursively {name}"
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


def recursive_delete(event: Mapping[str, Any]) -> Verdict:
    """Deny recursive deletes (and recursive chmod/chown) of /, ~, the project, parents or system dirs."""
    command = _bash_command(event)
    if command is None:
        return PASS
    cwd, root = _locations(event)
    home = posixpath.normpath(os.environ.get("HOME") or "/nonexistent-home")
    findings = [f for cmd in _walk(_parse(command)) for f in _delete_findings(cmd, cwd, root, home)]
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


def _bash_secrets(cmd: _Cmd) -> Iterator[str]:
    """Yield the secret-looking files one command reads or sends."""
    name, args = cmd.name, cmd.args
    files: list[str] = [t for op, t in cmd.redirects if op in ("<", "<>")]
    if name in _READERS:
        operands = _operands(args)
        # Copying a template *to* .env.local leaks nothing; the destination is not read.
        files += operands[:-1] if name in ("cp", "scp", "rsync") else operands
    elif name in _PATTERN_READERS:
        files += _operands(args)[1:]
    elif name in _DOWNLOADERS:
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
    command = _bash_command(event)
    if command is None:
        return PASS
    for cmd in _walk(_parse(command)):
        for path in _bash_secrets(cmd):
            return Verdict(
                "deny",
                f"`{_show(' '.join(cmd.argv))}` reads or sends `{path}`, which looks like "
                f"{_secret_kind(path)}; ask the user to handle secrets.",
            )
    return PASS


# ---------------------------------------------------------------------------
# pipe_to_shell


def _downloads(cmds: Iterable[_Cmd]) -> bool:
    return any(c.name in _DOWNLOADERS for c in _walk(cmds))


def pipe_to_shell(event: Mapping[str, Any]) -> Verdict:
    """Deny running a download unread: ``curl | sh``, ``bash <(curl ...)``, ``sh -c "$(curl ...)"``."""
    command = _bash_command(event)
    if command is None:
        return PASS
    for cmd in _walk(_parse(command)):
        name = cmd.name
        if not (_is_interpreter(name) or name in ("eval", "source", ".")):
            continue
        # The downloaded text is the program: piped to an interpreter that reads stdin, or
        # substituted into its command line (bash <(curl), sh -c "$(curl)", eval "$(curl)").
        piped = _is_interpreter(name) and _runs_stdin(name, cmd.args) and _downloads(cmd.stdin)
        if piped or _downloads(cmd.substs):
            return Verdict(
                "deny",
                f"`{_show(command)}` runs downloaded code with `{name}` without anyone reading it; "
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


def _bash_write_targets(cmd: _Cmd) -> Iterator[str]:
    for op, target in cmd.redirects:
        if op in _WRITE_REDIRECTS and not (op == ">&" and (target.isdigit() or target == "-")):
            yield target
    if cmd.name == "tee":
        yield from _operands(cmd.args)


def outside_project(event: Mapping[str, Any]) -> Verdict:
    """Deny file edits outside the project (temp dirs allowed); ask about shell writes there."""
    tool = event.get("tool_name")
    tool_input = event.get("tool_input")
    if not isinstance(tool_input, Mapping):
        return PASS
    cwd, root = _locations(event)
    roots = _allowed_roots(os.path.realpath(root))
    if tool in _WRITE_TOOLS:
        path = _file_path(tool_input)
        if path is None:
            return PASS
        real = _resolve(path, cwd)
        if real is None:
            return Verdict("deny", f"cannot resolve the path `{_show(path)}`")
        if _inside(real, roots):
            return PASS
        shown = f"`{path}`" if real == path else f"`{path}` (really `{real}`)"
        return Verdict("deny", f"{shown} is outside the project `{root}`; only files inside it may be changed.")
    command = _bash_command(event)
    if command is None:
        return PASS
    findings: list[tuple[Level, str]] = []
    for cmd in _walk(_parse(command)):
        for target in _bash_write_targets(cmd):
            expanded = os.path.expandvars(target)
            if "$" in expanded or expanded in _DEVICES or expanded.startswith("/dev/fd/"):
                continue  # a variable we cannot know, or a harmless device
            real = _resolve(expanded, cwd)
            if real is not None and not _inside(real, roots):
                findings.append(("ask", f"`{_show(' '.join(cmd.argv))}` writes to `{target}`, outside the project"))
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


def _resource_findings(cmd: _Cmd, limited: set[int]) -> Iterator[tuple[Level, str]]:
    name, args = cmd.name, cmd.args
    shown = _show(" ".join(cmd.argv))
    operands = _operands(args)
    if name.startswith("mkfs") or name in ("mke2fs", "mkswap", "wipefs"):
        if any(a.startswith("/dev/") for a in operands):
            yield "deny", f"`{shown}` would erase a disk device"
        else:
            yield "ask", f"`{shown}` creates a filesystem"
    elif name == "dd":
        opts = {k: v for k, _, v in (a.partition("=") for a in args if "=" in a)}
        if _DISK.match(opts.get("of", "")):
            yield "deny", f"`{shown}` would overwrite a disk device"
        elif opts.get("if") in _INFINITE_DEVICES and "count" not in opts:
            yield "ask", f"`{shown}` copies an endless device with no count= and can fill the disk"
    elif name == "yes" and any(op in _WRITE_REDIRECTS for op, _ in cmd.redirects):
        yield "ask", f"`{shown}` writes to a file until the disk is full"
    elif name in ("stress", "stress-ng"):
        yield "ask", f"`{shown}` deliberately loads the machine"
    elif name in _POWER or (name == "systemctl" and {"reboot", "poweroff", "halt", "kexec"} & set(args)):
        yield "ask", f"`{shown}` shuts down or restarts the machine"
    elif name in ("init", "telinit") and operands[:1] in (["0"], ["6"]):
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
        sources += operands
    if name not in ("head", "dd") and id(cmd) not in limited and _INFINITE_DEVICES & set(sources):
        yield "ask", f"`{shown}` reads an endless device with nothing (such as head) to stop it"


def resource_heavy(event: Mapping[str, Any]) -> Verdict:
    """Deny fork bombs and disk wipes; ask about stress tests, endless loops and shutdowns."""
    command = _bash_command(event)
    if command is None:
        return PASS
    findings: list[tuple[Level, str]] = []
    if _FORK_BOMB.search(command):
        findings.append(("deny", "this is a fork bomb: it starts processes until the machine stops"))
    if _ENDLESS.search(command) and not _LOOP_EXITS.search(command):
        findings.append(("ask", "an endless loop with no sleep, break or exit will spin a CPU until killed"))
    cmds = list(_walk(_parse(command)))
    # A reader of /dev/urandom is fine when a head (or dd count=) downstream stops it.
    limited = {
        id(up)
        for cmd in cmds
        if cmd.name == "head" or (cmd.name == "dd" and any(a.startswith("count=") for a in cmd.args))
        for up in _upstream(cmd)
    }
    for cmd in cmds:
        findings.extend(_resource_findings(cmd, limited))
    return _verdict(findings)


BUILTIN_PRE: Final[tuple[Validator, ...]] = (
    Validator("recursive_delete", recursive_delete, matcher="Bash", policy="fail_closed"),
    # Reads the filesystem (symlink targets), so its answer is not cached.
    Validator(
        "secret_files",
        secret_files,
        matcher="Read|Edit|Write|MultiEdit|NotebookEdit|Grep|Bash",
        policy="fail_closed",
        cacheable=False,
    ),
    Validator("pipe_to_shell", pipe_to_shell, matcher="Bash", policy="fail_closed"),
    # Depends on symlinks and CLAUDE_PROJECT_DIR at call time: never cached.
    Validator(
        "outside_project",
        outside_project,
        matcher="Write|Edit|MultiEdit|NotebookEdit|Bash",
        policy="fail_closed",
        cacheable=False,
    ),
    Validator("resource_heavy", resource_heavy, matcher="Bash", policy="fail_closed"),
)
