"""The supervisor (supervisor.py) and the daemon under it: a crashed or hung worker is
replaced on the same socket, port and token; a worker that cannot boot is not respawned.

The loop tests fork real workers from this process and drive the loop a step at a time
with a fake clock, so back-off and heartbeat timeouts are ticked, not slept.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from modules.optimization.supervisor import EXIT_GAVE_UP, Policy, Supervisor
from tests.clock import FakeClock
from tests.daemon_helpers import ROOT, http_post, pre_event, wait_for


def drive(sup, until, steps=400):
    """Step the loop (each step waits at most 50 ms for a signal or a beat) until until() holds."""
    for _ in range(steps):
        if until():
            return
        sup.step(max_wait_s=0.05)
    raise AssertionError("the supervisor loop did not get there")


@pytest.fixture
def supervise():
    made = []

    def make(worker, policy=None, clock=None):
        sup = Supervisor(worker, policy or Policy(), **({"clock": clock} if clock else {}))
        sup.install_signals()
        made.append(sup)
        return sup

    yield make
    for sup in made:
        if sup.pid is not None:
            os.kill(sup.pid, signal.SIGKILL)
            os.waitpid(sup.pid, 0)
        sup.restore_signals()
        sup.close()


def note(tmp_path, ctx):
    (tmp_path / f"worker{ctx.restarts}.json").write_text(json.dumps({**ctx.info(), "pid": os.getpid(), "parent": ctx.supervisor_pid}))


def test_a_crashed_worker_is_replaced_at_once_and_told_how_its_predecessor_died(tmp_path, supervise):
    def worker(ctx):
        note(tmp_path, ctx)
        ctx.beat()
        if ctx.restarts == 0:
            os.kill(os.getpid(), signal.SIGKILL)
        return 0  # the second one exits on purpose: supervision ends

    sup = supervise(worker, Policy(min_uptime_s=0))
    drive(sup, lambda: sup.exit_code is not None)
    assert sup.exit_code == 0 and sup.restarts == 1
    second = json.loads((tmp_path / "worker1.json").read_text())
    assert second["parent"] == os.getpid() and second["restarts"] == 1 and second["last_exit"] == "signal SIGKILL"
    assert not (tmp_path / "worker2.json").exists()


def test_the_loop_waits_on_fds_past_select_s_limit(tmp_path, supervise):
    """A supervisor holding many kept http connections gets pipe fds above 1024 (FD_SETSIZE)."""
    fillers = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:

        def worker(ctx):
            ctx.beat()
            if ctx.restarts == 0:
                os.kill(os.getpid(), signal.SIGKILL)
            return 0

        sup = supervise(worker, Policy(min_uptime_s=0))
        drive(sup, lambda: sup.exit_code is not None)
        assert sup.exit_code == 0 and sup.restarts == 1 and sup._wake_r > 1024
    finally:
        for fd in fillers:
            os.close(fd)


@pytest.mark.parametrize("code", [3, 4])
def test_a_boot_failure_exit_code_is_final_never_respawned(tmp_path, supervise, code):
    def worker(ctx):
        note(tmp_path, ctx)
        return code

    sup = supervise(worker, Policy(final_codes=frozenset({0, 3, 4})))
    drive(sup, lambda: sup.exit_code is not None)
    assert sup.exit_code == code and sup.restarts == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["worker0.json"]


def test_quick_crashes_back_off_exponentially_then_supervision_gives_up(tmp_path, supervise):
    clock = FakeClock(100.0)

    def worker(ctx):
        note(tmp_path, ctx)
        return 1  # dies before its first beat, every time

    sup = supervise(worker, Policy(backoff_s=1.0, max_quick_crashes=4), clock=clock)
    drive(sup, lambda: sup.restarts == 1)
    assert sup._respawn_at == clock()  # the first crash is replaced at once
    delays = []
    for expected in (1.0, 2.0, 4.0):
        spawned = sup.restarts
        drive(sup, lambda spawned=spawned: sup.restarts == spawned + 1)
        delays.append(sup._respawn_at - clock())
        for _ in range(3):
            sup.step(max_wait_s=0.01)
        assert sup.pid is None, "respawned before its back-off was over"
        clock.tick(expected)
    drive(sup, lambda: sup.exit_code is not None)
    assert delays == [1.0, 2.0, 4.0]
    assert sup.exit_code == EXIT_GAVE_UP
    assert len(list(tmp_path.iterdir())) == 5  # the first start and four restarts, then no more


def test_a_hung_worker_gets_sigterm_then_sigkill_and_is_replaced(tmp_path, supervise):
    clock = FakeClock()

    def worker(ctx):
        note(tmp_path, ctx)
        if ctx.restarts == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a worker stuck where SIGTERM cannot reach it
            ctx.beat()
            while True:
                signal.pause()
        ctx.beat()
        return 0

    sup = supervise(worker, Policy(heartbeat_timeout_s=10, kill_grace_s=5, min_uptime_s=0), clock=clock)
    drive(sup, lambda: sup._ready)
    first = sup.pid
    clock.tick(9)
    sup.step(max_wait_s=0.01)
    assert sup._term_at is None  # not yet silent long enough
    clock.tick(1)
    sup.step(max_wait_s=0.01)
    assert sup._term_at is not None and sup.pid == first  # SIGTERM sent, ignored
    clock.tick(5)
    drive(sup, lambda: sup.exit_code is not None)
    assert sup.restarts == 1 and sup.exit_code == 0
    assert sup.last_exit == "signal SIGKILL (hung: no heartbeat for 10s)"
    with pytest.raises(ProcessLookupError):
        os.kill(first, 0)


def test_stop_terminates_the_worker_and_ends_supervision(tmp_path, supervise):
    def worker(ctx):
        ctx.beat()
        while True:
            signal.pause()

    sup = supervise(worker)
    drive(sup, lambda: sup._ready)
    sup.stop()
    drive(sup, lambda: sup.exit_code is not None)
    assert sup.exit_code == 0 and sup.restarts == 0 and sup.pid is None


# ---------------------------------------------------------------------------
# The real daemon


def endpoint(rt):
    return json.loads((rt.project / ".claude" / "hookopt" / "http.json").read_text())


def test_sigkilled_worker_is_back_blocking_rm_rf_over_http_within_a_second(rt):
    """Kill the serving worker three times; each time an http request for `rm -rf /` sent
    right after the kill is answered "deny" (it waits in the listen backlog the supervisor
    keeps open) within 1 s, on the same port with the same token."""
    first = rt.start()
    before = endpoint(rt)
    body = json.dumps(pre_event(rt.project, "rm -rf /")).encode()
    windows = []
    for kill in range(1, 4):
        pid = rt.status()["pid"]
        os.kill(pid, signal.SIGKILL)
        killed_at = time.perf_counter()
        status, payload = http_post(before["port"], body, before["token"])
        windows.append(time.perf_counter() - killed_at)
        assert status == 200 and json.loads(payload)["hookSpecificOutput"]["permissionDecision"] == "deny", payload
        now = rt.status()
        assert now["pid"] != pid and now["supervisor"]["pid"] == first["supervisor"]["pid"]
        assert now["supervisor"]["restarts"] == kill and now["supervisor"]["last_exit"] == "signal SIGKILL"
        assert now["http_port"] == before["port"]
    assert endpoint(rt) == before  # the port and token the installed settings.json hard-codes
    print(f"\nhttp guard back after a SIGKILL in {', '.join(f'{w * 1000:.0f}' for w in windows)} ms")
    assert max(windows) < 1.0


def test_hookopt_status_shows_restarts(rt):
    rt.start()
    os.kill(rt.status()["pid"], signal.SIGKILL)
    wait_for(lambda: (s := rt.status()) and s["supervisor"]["restarts"] == 1, what="the worker to be replaced")
    proc = subprocess.run(
        [sys.executable, "-m", "modules.optimization.cli", "status", "--project", str(rt.project)],
        env=rt.env, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "1 restart (last: signal SIGKILL)" in proc.stdout, proc.stdout


def test_the_supervisor_leaves_with_its_worker_when_idle(rt):
    (rt.project / ".claude").mkdir()
    (rt.project / ".claude" / "settings.json").write_text(json.dumps({"optimization": {"idle_timeout_s": 1}}))
    rt.start()
    wait_for(lambda: not rt.daemons(), what="supervisor and worker to exit")
    assert not rt.path(".sock").exists() and not rt.path(".failed").exists()
