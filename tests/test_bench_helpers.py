"""The benchmarks' own measuring helpers: a wrong one would misreport every figure quietly."""

import subprocess
import sys

from bench.conftest import tree_cpu_ms

# Burns 0.3 s of its own processor time, forks a child that burns 0.3 s and reaps it,
# then says so and waits to be told to go: its tree has used 0.6 s by then.
BURN = r"""
import os, sys, time
def burn(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
burn(0.3)
pid = os.fork()
if pid == 0:
    burn(0.3)
    os._exit(0)
os.waitpid(pid, 0)
print("done", flush=True)
sys.stdin.read()
"""


def test_tree_cpu_counts_a_process_and_the_children_it_reaped():
    proc = subprocess.Popen([sys.executable, "-c", BURN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "done\n"
        # 0.6 s burned in all; clock ticks are 10 ms, the interpreter's start-up adds a little
        assert 560 <= tree_cpu_ms(proc.pid) <= 2000
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def test_tree_cpu_counts_live_descendants_and_nothing_else():
    # A sleeping parent whose child burns: the child's time counts while it is still alive.
    code = "import os, sys, time\nif os.fork() == 0:\n    e = time.process_time() + 0.3\n    while time.process_time() < e: pass\n    print('burnt', flush=True)\n    time.sleep(60)\n    os._exit(0)\ntime.sleep(60)\n"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "burnt\n"
        assert tree_cpu_ms(proc.pid) >= 280
        idle = subprocess.Popen(["sleep", "60"])
        try:
            assert tree_cpu_ms(idle.pid) <= 20  # another tree's time is not counted
        finally:
            idle.kill()
            idle.wait()
    finally:
        subprocess.run(["pkill", "-KILL", "-P", str(proc.pid)], check=False)
        proc.kill()
        proc.wait()


def test_each_configuration_is_judged_against_the_floor_of_its_transport():
    """Claude Code reaches the daemon's http installs and the naive servers over http: their
    floor is one instant http hook; the command installs' is one `true` command hook."""
    from bench.test_e2e_claude import floor_of

    over_http = ("http", "http-observers", "http-true", "uv-http", "naive-http", "naive-observers", "floor-http-close")
    assert {name: floor_of(name) for name in over_http} == dict.fromkeys(over_http, "floor-http")
    over_command = ("native", "stubs", "consolidate", "uv-native", "uv-consolidate", "consolidate-py")
    assert {name: floor_of(name) for name in over_command} == dict.fromkeys(over_command, "floor-command")
    assert [floor_of(name) for name in ("none", "floor-command", "floor-http")] == [None, None, None]
