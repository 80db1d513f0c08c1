"""Planning a hook command: what would `/bin/sh -c command` run, and can it run warm?

Only simple commands are read (quotes, backslashes, $VAR, ~); anything else (pipes,
redirections, globs, substitutions, assignments) is spawned exactly as Claude Code would.
A plan is cached while every file and directory it read stats the same.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import re
import threading
import tomllib
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from .manifest import is_stub

__all__ = ["Plan", "Planner"]

_PYTHON_NAME: Final = re.compile(r"python(\d+(\.\d+)?)?")
_ASSIGNMENT: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_VAR_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SH_OWN_VARS: Final = frozenset({"PPID", "OPTIND", "LINENO", "IFS", "PS1", "PS2", "PS4", "OPTARG"})  # sh sets these itself
_MODULE_SUFFIXES: Final = (".py", ".pyc", ".pyw", ".so")
_MODULE_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_PEP723: Final = re.compile(r"(?m)^# /// script\s*$\s(?P<content>(^#(| .*)$\s)+)^# ///\s*$")
# Interpreter options a zygote started with the same options reproduces. -i, -c, -m, -x,
# -v, -d and the rest change what runs or print per import, so those commands spawn.
_FLAG_LETTERS: Final = frozenset("bBEIOPqsSu")
_X_OPTIONS: Final = frozenset(
    {"utf8", "dev", "warn_default_encoding", "int_max_str_digits", "no_debug_ranges", "frozen_modules", "pycache_prefix"}
)


class SpawnInstead(Exception):
    """Why a command is spawned rather than run warm."""


@dataclass(frozen=True, slots=True)
class Plan:
    """How a hook command will run: warm in a fork server, or spawned through sh, and why."""

    warm: bool
    reason: str
    interpreter: str | None = None  # the interpreter (or shim) sh would find on the client's PATH
    script: str | None = None  # as python sees it in sys.argv[0]
    code_path: str | None = None  # where its code is read from (<stub>.original for our stubs)
    argv: tuple[str, ...] = ()
    launcher: tuple[str, ...] = ()  # the words before the script: ("python3", "-u"), ("/usr/bin/env", "python3")
    flags: tuple[str, ...] = ()  # interpreter options among them
    replaces_shell: bool = False  # `exec python ...`: no sh waits for it, so a signal death is reported as is
    local: frozenset[str] = frozenset()  # modules the script's folder (sys.path[0]) holds
    module: str | None = None  # `python -m module`: script is "-m", argv[0] the module
    resolver: str | None = None  # "uv", "poetry", "pipenv": the launcher picks the interpreter (probed by running it)
    resolve_stamp: tuple[tuple[str, Any], ...] = ()  # what that choice depends on, as it stats now

    @property
    def stub(self) -> bool:
        """Whether the script is our stub, run as its .original (tracebacks quote the original's lines)."""
        return self.code_path is not None and self.code_path.endswith(".original")


class Planner:
    """Decide, as sh would read a hook command, whether it is a Python script that can run warm."""

    def __init__(self) -> None:
        self._plans: dict[tuple[Any, ...], tuple[Plan, tuple[tuple[str, Any], ...]]] = {}  # with what they read
        self._env_key: tuple[object, tuple[tuple[str, str], ...]] = (None, ())

    def plan(self, command: str, env: Mapping[str, str], cwd: str) -> Plan:
        """Decide how command runs; spawn unless it is certainly `python [options] script.py [args]`.

        Planning reads a dozen files and directories; a plan is reused while every one of
        them stats the same (identity, size, mode, mtime and ctime; missing ones still missing).
        """
        if self._env_key[0] is not env:  # one environment for all of an event's hooks (often a session's)
            self._env_key = (env, tuple(env.items()))
        key = (command, cwd, self._env_key[1])
        cached = self._plans.get(key)
        if cached is not None and all(_signature(path) == sig for path, sig in cached[1]):
            return cached[0]
        _planning.paths = []
        try:
            plan = self._plan(command, env, cwd)
        except SpawnInstead as why:
            plan = Plan(False, str(why))
        finally:
            paths, _planning.paths = _planning.paths, None
        if paths is not None and None not in paths:
            if len(self._plans) >= _MAX_PLANS:
                self._plans.clear()
            self._plans[key] = (plan, tuple((path, _signature(path)) for path in dict.fromkeys(paths) if path is not None))
        return plan

    def _plan(self, command: str, env: Mapping[str, str], cwd: str) -> Plan:
        if env.get("PYTHONINSPECT"):
            raise SpawnInstead("PYTHONINSPECT: python would go interactive after the script")
        if "PWD" in command:
            _consult(None)  # $PWD may be sh's realpath of cwd: no stat of one file vouches for every link on the way
        words = _sh_words(command, _sh_vars(env, cwd))
        replaces_shell = words[:1] == ["exec"]
        if replaces_shell:
            words = words[1:]
        if not words:
            raise SpawnInstead("empty command")
        if _ASSIGNMENT.match(words[0]):
            raise SpawnInstead("variable assignment before the command")
        found = _which(words[0], env, cwd)
        if found is None:
            raise SpawnInstead(f"{words[0]}: not found or not executable")
        name = os.path.basename(words[0])
        if name == "uv":
            return dataclasses.replace(self._plan_uv(words, env, cwd), replaces_shell=replaces_shell)
        if name in ("poetry", "pipenv"):
            return dataclasses.replace(self._plan_tool_python(words, env, cwd), replaces_shell=replaces_shell)
        if name == "env":
            if len(words) < 2 or not _PYTHON_NAME.fullmatch(words[1]):
                raise SpawnInstead("env with options or a command that is not python")
            interpreter, head, rest = _which(words[1], env, cwd), words[:2], words[2:]
        elif _PYTHON_NAME.fullmatch(name):
            interpreter, head, rest = found, words[:1], words[1:]
        else:
            # A script run directly: the kernel reads its shebang and passes the path sh found.
            shebang = _shebang(os.path.join(cwd, found))
            if shebang is None:
                raise SpawnInstead("not a python command")
            program, options = shebang[0], shebang[1:]
            if os.path.basename(program) == "env" and options and options[0].startswith("-S"):
                # `#!/usr/bin/env -S uv run --script`: env splits the rest into words itself.
                inner = options[0][2:].split()
                if inner[:1] != ["uv"] or _which("uv", env, cwd) is None:
                    raise SpawnInstead(f"shebang {' '.join(shebang)} is not `env -S uv run`")
                plan = self._plan_uv([*inner, found, *words[1:]], env, cwd)
                return dataclasses.replace(plan, launcher=(*shebang[:1], *plan.launcher), replaces_shell=replaces_shell)
            if os.path.basename(program) == "env":
                if len(options) != 1 or not _PYTHON_NAME.fullmatch(options[0]):
                    raise SpawnInstead(f"shebang {' '.join(shebang)} is not python")
                interpreter, head, options = _which(options[0], env, cwd), shebang, []
            elif _PYTHON_NAME.fullmatch(os.path.basename(program)):
                interpreter, head = _which(program, env, cwd), [program]
            else:
                raise SpawnInstead(f"shebang {program} is not python")
            if options and (len(options[0].split()) != 1 or _python_options(options + ["x"]) != 1):
                raise SpawnInstead(f"shebang option {options[0]!r}")
            rest = [*options, found, *words[1:]]
        if interpreter is None:
            raise SpawnInstead(f"{head[-1]}: not found")
        try:
            at = _python_options(rest)
        except SpawnInstead as why:
            if str(why) != "interpreter option -m":
                raise
            plan = self._plan_module(rest, cwd, interpreter=interpreter, head=head)
            return dataclasses.replace(plan, replaces_shell=replaces_shell)
        plan = self._plan_script(
            rest[at], rest[at + 1 :], cwd, interpreter=interpreter, launcher=(*head, *rest[:at]), flags=tuple(rest[:at])
        )
        return dataclasses.replace(plan, replaces_shell=replaces_shell)

    def _plan_script(
        self, script: str, argv: Sequence[str], cwd: str, *, interpreter: str, launcher: tuple[str, ...], flags: tuple[str, ...]
    ) -> Plan:
        path = os.path.join(cwd, script)
        if not os.path.isfile(_consult(path)):
            raise SpawnInstead(f"{script}: no such file (python's own error is spawned)")
        if zipfile.is_zipfile(path):
            raise SpawnInstead(f"{script} is a zip application")
        with open(path, "rb") as f:
            head = f.read(512)
        code_path, reason = os.path.abspath(path), "python script"
        if is_stub(head):
            code_path, reason = code_path + ".original", "stub of a python script"
            if not os.path.isfile(_consult(code_path)):
                raise SpawnInstead(f"stub {script} has no .original")
        with open(code_path, "rb") as f:
            if b"\0" in f.read():
                # Python refuses such a file with its own SyntaxError: let python say it.
                raise SpawnInstead(f"{script} holds a NUL byte (not Python source)")
        folder = os.path.dirname(os.path.realpath(path))
        _consult(folder)  # a module added next to the script re-plans (its name may shadow a preload)
        return Plan(True, reason, interpreter, script, code_path, tuple(argv), launcher, flags, local=frozenset(_local_modules(folder)))

    def _plan_module(self, rest: Sequence[str], cwd: str, *, interpreter: str, head: Sequence[str]) -> Plan:
        """`python [options] -m package.module args`, warm when the module is a file under cwd.

        sys.path[0] is the working directory then, so that is where python finds it; a
        module installed elsewhere (or missing, with python's own message) is spawned.
        """
        if "-m" not in rest:
            raise SpawnInstead("interpreter option -m among other letters")
        at = rest.index("-m")
        flags = list(rest[:at])
        if _python_options([*flags, "x"]) != len(flags):
            raise SpawnInstead("interpreter option -m after another argument")
        if at + 1 >= len(rest) or not _MODULE_NAME.fullmatch(rest[at + 1]):
            raise SpawnInstead("interpreter option -m without a module name")
        module = rest[at + 1]
        base = os.path.join(cwd, *module.split("."))
        for candidate in (base + ".py", os.path.join(base, "__main__.py")):
            if os.path.isfile(_consult(candidate)):
                break
        else:
            raise SpawnInstead(f"interpreter option -m {module}: not a module file under the working directory")
        folder = os.path.realpath(cwd)
        _consult(folder)
        return Plan(
            True, "python -m module", interpreter, "-m", os.path.abspath(candidate), (module, *rest[at + 2 :]),
            (*head, *flags), tuple(flags), local=frozenset(_local_modules(folder)), module=module,
        )  # fmt: skip

    def _plan_uv(self, words: Sequence[str], env: Mapping[str, str], cwd: str) -> Plan:
        """`uv run [--script] X.py args`: warm in the environment uv itself resolves for X.py.

        Only these forms; any other uv option is spawned. The environment (interpreter,
        dependencies, variables uv sets) is probed once by running the very command (see
        LegacyRunner._probe_launch) and again whenever the script (its PEP 723 metadata),
        a lock or project file above it, or .python-version changes.
        """
        rest = list(words[1:])
        if rest[:1] != ["run"]:
            raise SpawnInstead("uv: only `uv run [--script] X.py` runs warm")
        rest = rest[1:]
        explicit = rest[:1] == ["--script"]
        rest = rest[1:] if explicit else rest
        if not rest or rest[0].startswith("-") or not (explicit or rest[0].endswith(".py")):
            raise SpawnInstead("uv: options other than --script")
        try:
            with open(_consult(os.path.join(cwd, rest[0])), encoding="utf-8") as f:
                _pep723(f.read())  # unreadable metadata: uv's own error, spawned
        except (OSError, UnicodeDecodeError) as exc:
            raise SpawnInstead(f"uv: cannot read {rest[0]}: {exc}") from None
        return self._plan_launched("uv", words[: len(words) - len(rest)], rest, env, cwd)

    def _plan_tool_python(self, words: Sequence[str], env: Mapping[str, str], cwd: str) -> Plan:
        """`poetry run python [options] X.py args` and `pipenv run python ...`: warm in the tool's environment."""
        tool = os.path.basename(words[0])
        if len(words) < 4 or words[1] != "run" or not _PYTHON_NAME.fullmatch(words[2]):
            raise SpawnInstead(f"{tool}: only `{tool} run python X.py` runs warm")
        at = 3 + _python_options(words[3:])
        if any(letter in word for word in words[3:at] for letter in "IES"):
            raise SpawnInstead(f"{tool}: -I, -E or -S: the probe needs site and PYTHONPATH")
        return self._plan_launched(tool, words[:at], words[at:], env, cwd)

    def _plan_launched(self, tool: str, head: Sequence[str], rest: Sequence[str], env: Mapping[str, str], cwd: str) -> Plan:
        # Whatever decides the tool's environment: a change means probing it again.
        stamp = tuple((path, _signature(path)) for path in _project_files(cwd, os.path.join(cwd, rest[0])))
        plan = self._plan_script(rest[0], rest[1:], cwd, interpreter=head[0], launcher=tuple(head), flags=())
        return dataclasses.replace(plan, reason=f"{tool} run: warm in the environment {tool} resolves", resolver=tool, resolve_stamp=stamp)


_PROJECT_FILES: Final = ("uv.lock", "pyproject.toml", "poetry.lock", "Pipfile", "Pipfile.lock", ".python-version", ".venv", ".env")


def _project_files(cwd: str, script: str) -> list[str]:
    """The script, and the files a tool reads to pick its environment, in cwd and every folder above."""
    found = [script]
    folder = os.path.abspath(cwd)
    while True:
        found += [os.path.join(folder, name) for name in _PROJECT_FILES]
        parent = os.path.dirname(folder)
        if parent == folder:
            return [_consult(path) for path in found]
        folder = parent


def _sh_vars(env: Mapping[str, str], cwd: str) -> dict[str, str]:
    """The variables sh expands: the environment, with PWD as sh resets it at start-up."""
    shell = dict(env)
    pwd = env.get("PWD", "")
    try:
        keep = pwd.startswith("/") and os.path.samestat(os.stat(_consult(pwd)), os.stat(_consult(cwd)))
    except OSError:
        keep = False
    if not keep:
        shell["PWD"] = os.path.realpath(cwd)
    return shell


def _sh_words(command: str, env: Mapping[str, str]) -> list[str]:
    """Split a command as sh would, for simple commands only; raise SpawnInstead for anything else.

    Handles quotes, backslashes, $VAR and ${VAR} (quoted, or unquoted when the value
    needs no field splitting or globbing) and a leading ~ or ~/. env is _sh_vars().
    """
    words: list[str] = []
    word: list[str] | None = None
    i, n = 0, len(command)
    while i < n:
        c = command[i]
        if c in " \t":
            if word is not None:
                words.append("".join(word))
                word = None
            i += 1
            continue
        if c in "\n|&;<>()`":
            raise SpawnInstead(f"shell syntax {c!r}")
        if c in "*?[":
            raise SpawnInstead(f"glob {c!r}")
        if word is None:
            if c == "#":
                raise SpawnInstead("comment")
            word = []
            if c == "~":
                end = i + 1
                while end < n and command[end] not in " \t/":
                    end += 1
                if end > i + 1 or "HOME" not in env:
                    raise SpawnInstead("~user or unset HOME")
                word.append(env["HOME"])
                i = end
                continue
        if c == "'":
            end = command.find("'", i + 1)
            if end < 0:
                raise SpawnInstead("unterminated quote")
            word.append(command[i + 1 : end])
            i = end + 1
        elif c == '"':
            i += 1
            while True:
                if i >= n:
                    raise SpawnInstead("unterminated quote")
                c = command[i]
                if c == '"':
                    i += 1
                    break
                if c == "`":
                    raise SpawnInstead("command substitution")
                if c == "\\" and i + 1 < n and command[i + 1] in '$`"\\\n':
                    if command[i + 1] == "\n":
                        raise SpawnInstead("line continuation")
                    word.append(command[i + 1])
                    i += 2
                elif c == "$":
                    value, i = _expand(command, i, env)
                    word.append(value)
                else:
                    word.append(c)
                    i += 1
        elif c == "\\":
            if i + 1 >= n or command[i + 1] == "\n":
                raise SpawnInstead("line continuation")
            word.append(command[i + 1])
            i += 2
        elif c == "$":
            value, i = _expand(command, i, env)
            if not value or any(ch in value for ch in " \t\n*?["):
                raise SpawnInstead("unquoted expansion that sh would split or glob")
            word.append(value)
        else:
            word.append(c)
            i += 1
    if word is not None:
        words.append("".join(word))
    return words


def _expand(command: str, i: int, env: Mapping[str, str]) -> tuple[str, int]:
    """Expand $NAME or ${NAME} at command[i]; return its value (unset: empty) and the index after it."""
    if command.startswith("${", i):
        end = command.find("}", i)
        name = command[i + 2 : end] if end > 0 else ""
        after = end + 1
    else:
        match = _VAR_NAME.match(command, i + 1)
        name = match.group() if match else ""
        after = i + 1 + len(name)
    if not _VAR_NAME.fullmatch(name) or name in _SH_OWN_VARS:
        raise SpawnInstead("parameter expansion beyond $NAME")
    return env.get(name, ""), after


def _which(name: str, env: Mapping[str, str], cwd: str) -> str | None:
    """The path sh would execute for a command word, or None if sh would not find an executable."""
    if "/" in name:
        path = os.path.join(cwd, name)
        return name if os.path.isfile(_consult(path)) and os.access(path, os.X_OK) else None
    for folder in env.get("PATH", "").split(":"):
        if not folder.startswith("/"):
            continue  # relative PATH entries: rare, and sh's handling varies
        path = os.path.join(folder, name)
        if os.path.isfile(_consult(path)) and os.access(path, os.X_OK):
            return path
    return None


def _python_options(words: Sequence[str]) -> int:
    """Index of the script among python's arguments; raise SpawnInstead for options we cannot reproduce."""
    i = 0
    while i < len(words) and words[i].startswith("-") and words[i] != "-":
        word = words[i]
        if word.startswith("--"):
            raise SpawnInstead(f"interpreter option {word}")
        for j, letter in enumerate(word[1:], 1):
            if letter in "WX":
                arg = word[j + 1 :]
                if not arg:
                    i += 1
                    if i >= len(words):
                        raise SpawnInstead(f"-{letter} without a value")
                    arg = words[i]
                if letter == "X" and arg.partition("=")[0] not in _X_OPTIONS:
                    raise SpawnInstead(f"interpreter option -X {arg}")
                break
            if letter not in _FLAG_LETTERS:
                raise SpawnInstead(f"interpreter option -{letter}")
        i += 1
    if i >= len(words) or words[i] == "-":
        raise SpawnInstead("no script file")
    return i


def _shebang(path: str) -> list[str] | None:
    """The interpreter and optional argument the kernel would use, or None without a usable shebang."""
    try:
        with open(_consult(path), "rb") as f:
            head = f.read(256)
    except OSError:
        return None
    line, newline, _ = head.partition(b"\n")
    if not head.startswith(b"#!") or not newline:
        return None
    parts = os.fsdecode(line[2:]).strip().split(None, 1)
    return parts or None


def _pep723(source: str) -> dict[str, Any] | None:
    """The script's inline metadata block (PEP 723), or None if it has none."""
    match = _PEP723.search(source)
    if match is None:
        return None
    toml = "".join(line[2:] if line.startswith("# ") else line[1:] for line in match.group("content").splitlines(True))
    try:
        return tomllib.loads(toml)
    except tomllib.TOMLDecodeError as exc:
        raise SpawnInstead(f"uv: bad inline metadata: {exc}") from None


def _imports(source: bytes) -> tuple[str, ...]:
    """Absolute module names the code imports anywhere (best effort; a syntax error gives none)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return ()
    names: dict[str, None] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update((alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names[node.module] = None
    return tuple(names)


def _local_modules(folder: str) -> set[str]:
    """Top-level module names a script in folder could import from its own directory (sys.path[0])."""
    try:
        entries = os.listdir(folder)
    except OSError:
        return set()
    names = set()
    for entry in entries:
        stem, dot, _ = entry.partition(".")
        if not dot or entry.endswith(_MODULE_SUFFIXES):
            names.add(stem)
    return names


_P = TypeVar("_P", str, None)


class _Planning(threading.local):
    paths: list[str | None] | None = None  # what the plan being made has read (None: cannot be reused)


_planning = _Planning()
_MAX_PLANS: Final = 512


def _consult(path: _P) -> _P:
    """Note that planning depends on this file (None: on something a stat cannot vouch for)."""
    if _planning.paths is not None:
        _planning.paths.append(path)
    return path


def _signature(path: str) -> tuple[int, ...] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    # ctime moves with every write, chmod, chown or rename onto it; mtime alone can be set back.
    return (st.st_dev, st.st_ino, st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _mtime(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return -1
