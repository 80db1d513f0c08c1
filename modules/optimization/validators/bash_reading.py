"""Reading a Bash command the way bash would, for the guards in pre_tool_use.py.

Bash commands are read with shlex into a small tree of simple commands (pipelines,
``$(...)``, ``<(...)``, ``bash -c`` scripts), so a quoted string such as
``echo "rm -rf /"`` is data, not a command. A command shlex cannot split (unbalanced
quotes) is still judged, read both with its quotes dropped and with every quote as a
command break.
"""

from __future__ import annotations

import bisect
import functools
import posixpath
import re
import shlex
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "DOWNLOADERS", "WRITE_REDIRECTS", "Cmd", "bash_command", "is_interpreter", "operands", "options", "parse",
    "runs_stdin", "show", "upstream", "walk",
]

_PUNCT: Final = "();<>|&\n"
# Longest first, so a run like ")|" or ">>" splits into the operators bash sees.
_OPERATORS: Final = (
    "&>>", "<<<", "&&", "||", ";;", "|&", ">>", ">|", "&>", ">&", "<&", "<<", "<(", ">(", "<>",
    ";", "|", "&", "(", ")", "<", ">", "\n",
)  # fmt: skip
WRITE_REDIRECTS: Final = frozenset({">", ">>", ">|", "&>", "&>>", "<>", ">&"})
_REDIRECTS: Final = WRITE_REDIRECTS | {"<", "<&", "<<", "<<<"}
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
DOWNLOADERS: Final = frozenset({"curl", "wget", "fetch", "http", "https", "xh"})


@dataclass(eq=False)
class Cmd:
    """One simple command, with what feeds it and what it runs."""

    argv: list[str] = field(default_factory=list)
    redirects: list[tuple[str, str]] = field(default_factory=list)
    stdin: list[Cmd] = field(default_factory=list)  # the pipeline stage before it
    substs: list[Cmd] = field(default_factory=list)  # $(...), `...`, <(...) within it
    nested: list[Cmd] = field(default_factory=list)  # what it runs: (subshell), bash -c, eval

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


def runs_stdin(name: str, args: list[str]) -> bool:
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


def is_interpreter(name: str) -> bool:
    return name in _SHELLS or _INTERPRETER.fullmatch(name) is not None


class _Parser:
    """Build the command tree from tokens (recursive descent over parentheses)."""

    def __init__(self, tokens: list[tuple[bool, str]], depth: int) -> None:
        self.tokens = tokens
        self.pos = 0
        self.base = depth

    def commands(self, depth: int) -> list[Cmd]:
        """Read commands up to the ')' closing this level, or to the end."""
        out: list[Cmd] = []
        cur = Cmd()
        while self.pos < len(self.tokens):
            is_op, tok = self.tokens[self.pos]
            self.pos += 1
            if not is_op:
                cur.argv.append(tok)
            elif tok == ")":
                if depth > self.base:
                    break
                self._finish(cur, out, depth)  # a stray ')': end the command
                cur = Cmd()
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
                cur = Cmd(stdin=[cur] if kept else [])
            else:
                self._finish(cur, out, depth)
                cur = Cmd()
        self._finish(cur, out, depth)
        return out

    def _finish(self, cmd: Cmd, out: list[Cmd], depth: int) -> bool:
        """Complete cmd (substitutions in its words, scripts it runs); add it to out unless empty."""
        if depth < _MAX_DEPTH:
            for word in (*cmd.argv, *(target for _, target in cmd.redirects)):
                for body in _substitutions(word):
                    cmd.substs.extend(_parse_text(body, depth + 1))
            script = _inline_script(cmd.name, cmd.args)
            if script is None and cmd.name in _SHELLS and runs_stdin(cmd.name, cmd.args):
                # `echo 'rm -rf /' | bash` runs the echoed text.
                script = " ".join(" ".join(c.args) for c in cmd.stdin if c.name in ("echo", "printf"))
            if script:
                cmd.nested.extend(_parse_text(script, depth + 1))
        if cmd.argv or cmd.redirects or cmd.substs or cmd.nested or cmd.stdin:
            out.append(cmd)
            return True
        return False


def _parse_text(text: str, depth: int) -> list[Cmd]:
    text, shell_bodies = _split_heredocs(text)
    cmds = _Parser(_tokens(_backquotes_as_dollar(text)), depth).commands(depth)
    for body in shell_bodies:
        if depth < _MAX_DEPTH:
            cmds.extend(_parse_text(body, depth + 1))
    return cmds


@functools.lru_cache(maxsize=256)
def parse(command: str) -> tuple[Cmd, ...]:
    """Parse a Bash command into its top-level commands (several guards read the same one)."""
    return tuple(_parse_text(command, 0))


def walk(cmds: Iterable[Cmd]) -> Iterator[Cmd]:
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


def upstream(cmd: Cmd) -> list[Cmd]:
    """Return every command whose output reaches cmd: earlier pipeline stages, substitutions, subshells."""
    return list(walk([*cmd.stdin, *cmd.substs]))


def bash_command(event: Mapping[str, Any]) -> str | None:
    if event.get("tool_name") != "Bash":
        return None
    tool_input = event.get("tool_input")
    command = tool_input.get("command") if isinstance(tool_input, Mapping) else None
    return command if isinstance(command, str) and command.strip() else None


def show(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"


def operands(args: list[str]) -> list[str]:
    """Return the arguments that are not options (everything after ``--`` counts)."""
    if "--" in args:
        cut = args.index("--")
        return [a for a in args[:cut] if not a.startswith("-") or a == "-"] + args[cut + 1 :]
    return [a for a in args if not a.startswith("-") or a == "-"]


def options(args: list[str]) -> list[str]:
    return [a for a in (args[: args.index("--")] if "--" in args else args) if a.startswith("-") and a != "-"]
