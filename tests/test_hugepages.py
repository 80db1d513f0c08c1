"""The daemon's heap on huge pages, in real processes: a malloc heap moves onto transparent
huge pages as it grows and the interpreter carries on (forks included); the daemon a client
starts runs on huge pages while neither the hooks it runs (command and http transports)
nor their fork servers see the variable that put it there; HOOKOPT_HUGEPAGES=0, or an
allocator the user chose, keeps Python's own."""

import json
import os
import platform
import posix
import subprocess
import sys
from pathlib import Path

from modules.optimization.hugepages import ADDED_ENV, SWITCH, anon_huge_kb, startup_env, take_back
from modules.optimization.installer import install
from tests.daemon_helpers import ROOT, decision, http_post, pre_event, project_with_hook, wait_for


def _thp_mode() -> str:
    try:
        return Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return "[never]"


def _thp_usable() -> bool:
    """THP may be asked for (madvise or always) and MADV_COLLAPSE exists (Linux 6.1+)."""
    major, minor = (int(x) for x in platform.release().split(".")[:2])
    return "[never]" not in _thp_mode() and (major, minor) >= (6, 1)


# Runs HeapPages in a fresh interpreter, then uses it hard (a big heap, a fork) and reports
# what moved, what the kernel says is on huge pages, and that every answer is right.
PROBE = r"""
import json, os, re, sys
sys.path.insert(0, os.environ["ROOT"])
from modules.optimization.hugepages import HeapPages, anon_huge_kb

pages = HeapPages(on_malloc=os.environ.get("PYTHONMALLOC") == "malloc")
import ctypes
sbrk = ctypes.CDLL(None).sbrk
sbrk.restype, sbrk.argtypes = ctypes.c_void_p, (ctypes.c_ssize_t,)
top = sbrk(0)
for _ in range(3):  # a 16 MB event (the largest), freed, then another: mapped apart, never the heap's for good
    big = bytearray(16 << 20)
    del big
grown = sbrk(0) - top
heap = [{"n": i, "s": str(i) * 3} for i in range(200_000)]  # ~40 MB on the heap (when malloc's)
collapsed = pages.collapse()
again = pages.collapse()  # nothing grew since
huge_kb = anon_huge_kb()  # before the fork: a page written by both sides after it is split
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    total = sum(d["n"] for d in heap) + len(re.findall(r"\d+", "a1b22c333"))
    os.write(w, json.dumps({"total": total, "dump": json.dumps(heap[12345])}).encode())
    os._exit(7)
os.close(w)
child = json.loads(os.read(r, 65536))
_, status = os.waitpid(pid, 0)
print(json.dumps({"grown": grown, "collapsed": collapsed, "again": again, "huge_kb": huge_kb, "child": child, "child_exit": os.waitstatus_to_exitcode(status)}))
"""


def _probe(**env):
    proc = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120,
        env={k: v for k, v in os.environ.items() if k != "PYTHONMALLOC"} | {"ROOT": str(ROOT)} | env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _answers_right(report):
    assert report["child_exit"] == 7
    assert report["child"] == {"total": sum(range(200_000)) + 3, "dump": json.dumps({"n": 12345, "s": "123451234512345"})}


def test_a_malloc_heap_moves_onto_huge_pages_and_the_interpreter_and_its_forks_carry_on():
    report = _probe(PYTHONMALLOC="malloc")
    _answers_right(report)
    assert report["again"] == 0  # nothing grew: nothing to do
    assert report["grown"] < 8 << 20  # large blocks went back to the system
    if not _thp_usable():  # nothing to gain here: nothing may have moved either
        assert report["collapsed"] == 0
        return
    assert report["collapsed"] >= 30 << 20 and report["collapsed"] % (2 << 20) == 0  # the 40 MB heap, in whole blocks
    assert report["huge_kb"] * 1024 >= report["collapsed"]


def test_an_interpreter_on_pymalloc_is_left_as_it_was():
    report = _probe()
    _answers_right(report)
    assert report["collapsed"] == 0
    assert report["huge_kb"] == 0 or "[always]" in _thp_mode()  # nothing asked for huge pages


def test_startup_env_adds_malloc_unless_switched_off_or_chosen_and_the_daemon_takes_it_back():
    assert startup_env({}) == {"PYTHONMALLOC": "malloc", ADDED_ENV: "PYTHONMALLOC"}
    assert startup_env({SWITCH: "0"}) == {}
    assert startup_env({"PYTHONMALLOC": "debug"}) == {}  # the user's choice stands
    env = {"HOME": "/h", **startup_env({})}
    assert take_back(env) is True and env == {"HOME": "/h"}
    chosen = {"PYTHONMALLOC": "malloc"}  # the user's own: on malloc, and kept
    assert take_back(chosen) is True and chosen == {"PYTHONMALLOC": "malloc"}
    debug = {"PYTHONMALLOC": "debug"}
    assert take_back(debug) is False and debug == {"PYTHONMALLOC": "debug"}


def _environ(pid):
    return dict(item.partition(b"=")[::2] for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if item)


def test_the_daemon_a_client_starts_runs_on_huge_pages(rt):
    assert decision(rt.hook(pre_event(rt.project, "rm -rf /"))) == "deny"  # answered in-process; starts the daemon
    status = wait_for(rt.status, what="the daemon the client started")
    assert _environ(status["pid"]).get(b"PYTHONMALLOC") == b"malloc"  # how it started (its environ no longer has it)
    assert decision(rt.hook(pre_event(rt.project, "rm -rf /"))) == "deny"  # and it answers as before
    assert rt.status()["heap"]["allocator"] == "malloc"
    if _thp_usable():  # collapsed on its first ticks
        wait_for(lambda: anon_huge_kb(status["pid"]) >= 2048, what="the daemon's heap on huge pages")


def test_a_client_with_the_switch_off_starts_a_daemon_on_pymalloc(rt):
    env = {SWITCH: "0"}
    assert decision(rt.hook(pre_event(rt.project, "rm -rf /"), env=env)) == "deny"
    status = wait_for(rt.status, what="the daemon the client started")
    assert b"PYTHONMALLOC" not in _environ(status["pid"])
    assert anon_huge_kb(status["pid"]) == 0 or "[always]" in _thp_mode()  # nothing asked for huge pages
    assert status["heap"]["allocator"] == "pymalloc"
    assert status["heap"]["huge_pages_kb"] == 0 or "[always]" in _thp_mode()


MARK = "import os, sys\nprint('allocator', os.environ.get('PYTHONMALLOC'), file=sys.stderr)\nsys.exit(2)\n"


def _zygotes(daemon_pid):
    found = subprocess.run(["pgrep", "-P", str(daemon_pid), "-f", "forkserver.py"], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in found]


def test_hooks_and_their_fork_servers_never_see_the_daemons_allocator(rt):
    project_with_hook(rt.project, "PreToolUse", "Bash", "mark.py", MARK)
    install(rt.project, consolidate_hooks=True, client="python", say=lambda _: None)
    rt.start()
    for _ in range(3):  # the first runs may be spawned while the fork server starts
        proc = rt.hook(pre_event(rt.project, "ls"), script="stack")
        assert b"allocator None" in proc.stdout + proc.stderr, proc
    status = rt.status()
    assert status["legacy"]["warm_runs"] >= 1
    zygotes = _zygotes(status["pid"])
    assert zygotes and all(b"PYTHONMALLOC" not in _environ(pid) for pid in zygotes)


def test_http_hooks_run_in_the_daemons_environment_without_its_allocator(rt, monkeypatch):
    project_with_hook(rt.project, "PreToolUse", "Bash", "mark.py", MARK)
    monkeypatch.setitem(posix.environ, b"HOOKOPT_RUNTIME_DIR", str(rt.root).encode())  # the install's client starts it there
    install(rt.project, transport="http", say=lambda _: None)
    wait_for(rt.status, what="the daemon the install started")
    endpoint = json.loads((rt.project / ".claude/hookopt/http.json").read_text())
    for _ in range(3):
        status, payload = http_post(endpoint["port"], json.dumps(pre_event(rt.project, "ls")).encode(), endpoint["token"], "/hook/stack")
        assert status == 200 and b"allocator None" in payload, payload
    daemon = rt.status()
    assert daemon["legacy"]["warm_runs"] >= 1
    zygotes = _zygotes(daemon["pid"])
    assert zygotes and all(b"PYTHONMALLOC" not in _environ(pid) for pid in zygotes)
