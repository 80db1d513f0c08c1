"""Settings and metrics that must do something: `enabled`, `debug`, the batch-size metric,
and one percentile definition shared by `hookopt status` and `hookopt bench`."""

import json
import random
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from modules.optimization import benchmark
from modules.optimization.installer import install
from modules.optimization.performance_monitor import Monitor, nearest_rank
from tests.daemon_helpers import post_event, pre_event, wait_for


def set_optimization(project, **values):
    path = project / ".claude" / "settings.json"
    settings = json.loads(path.read_text()) if path.exists() else {}
    settings.setdefault("optimization", {}).update(values)
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(settings))


def scrape(rt):
    port = json.loads((rt.project / ".claude/hookopt/http.json").read_text())["metrics_port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return {f.name: f for f in text_string_to_metric_families(response.read().decode())}


def daemon_log(rt):
    path = rt.project / ".claude" / "hookopt" / "daemon.log"
    return path.read_text() if path.exists() else ""


def test_batch_size_metric_counts_what_the_observers_wrote(rt):
    rt.start()
    for i in range(7):
        proc = rt.hook(post_event(rt.project, f"echo {i}", tool_use_id=f"toolu_{i}"), script="post_tool_use")
        assert proc.returncode == 0, proc.stderr

    def written():
        samples = {s.name: s.value for s in scrape(rt)["hookopt_batch_size"].samples}
        return samples if samples.get("hookopt_batch_size_sum") == 7 else None

    samples = wait_for(written, what="7 observer events written in batches")
    assert 1 <= samples["hookopt_batch_size_count"] <= 7
    # The daemon's periodic tick publishes the depth of its queues (one gauge after the
    # other: a scrape from the metrics thread may come between the two on the first tick).
    def depths():
        depth = {s.labels["queue"]: s.value for s in scrape(rt)["hookopt_queue_depth"].samples}
        return depth if set(depth) == {"pool", "observers"} else None

    depth = wait_for(depths, what="both queue depths")
    assert depth["observers"] == 0


def test_enabled_false_runs_the_original_hooks_without_a_daemon(example_rt):
    rt = example_rt
    install(rt.project, consolidate_hooks=True, say=lambda _: None)
    dangerous = pre_event(rt.project, "rm -rf /")
    rt.start()
    warm = rt.hook(dangerous, script="stack")
    assert b'"deny"' in warm.stdout and rt.status()["events"] == 1
    set_optimization(rt.project, enabled=False)
    # The running daemon sees the change, leaves a marker for the clients and exits.
    wait_for(lambda: rt.path(".disabled").exists() and not rt.daemons(), what="the daemon to stop on enabled: false")

    for _ in range(3):  # the guards still decide: the original hooks, spawned as Claude Code would
        proc = rt.hook(dangerous, script="stack")
        assert (proc.returncode, proc.stdout, proc.stderr) == (warm.returncode, warm.stdout, warm.stderr)
    assert not rt.daemons() and rt.status() is None
    assert daemon_log(rt).count("optimization disabled") == 1  # no client tried to start one again

    set_optimization(rt.project, enabled=True)
    first = rt.hook(dangerous, script="stack")  # starts the daemon again (and answers in-process)
    assert first.stdout == warm.stdout
    status = wait_for(rt.status, what="the daemon to come back once enabled")
    second = rt.hook(dangerous, script="stack")
    assert second.stdout == warm.stdout
    assert wait_for(rt.status)["events"] == status["events"] + 1  # answered by the daemon this time
    assert not rt.path(".disabled").exists()


def test_enabled_false_at_start_serves_nothing(rt):
    set_optimization(rt.project, enabled=False)
    proc = rt.hook(pre_event(rt.project, "rm -rf /"))
    assert proc.returncode == 0 and b'"deny"' in proc.stdout  # hookopt's own guards, in-process
    wait_for(lambda: rt.path(".disabled").exists(), what="the disabled marker")
    wait_for(lambda: not rt.daemons(), what="the daemon to exit")
    assert "optimization disabled" in daemon_log(rt) and rt.status() is None


def test_debug_setting_logs_each_request_in_daemon_log(rt):
    set_optimization(rt.project, debug=False)
    rt.start()
    rt.hook(pre_event(rt.project, "ls"))
    assert "DEBUG" not in daemon_log(rt)
    set_optimization(rt.project, debug=True)  # the daemon reloads it

    def logged():
        rt.hook(pre_event(rt.project, "ls"))
        return "DEBUG request op=event" in daemon_log(rt)

    wait_for(logged, what="a DEBUG line for a request")
    set_optimization(rt.project, debug=False)
    wait_for(lambda: "profile" in daemon_log(rt).rsplit("DEBUG", 1)[-1], what="the reload turning debug off")
    before = daemon_log(rt).count("DEBUG")
    rt.hook(pre_event(rt.project, "ls"))
    assert daemon_log(rt).count("DEBUG") == before


@pytest.mark.parametrize("n", range(1, 13))
def test_status_and_bench_agree_on_percentiles(n):
    samples = [random.uniform(0.1, 50.0) for _ in range(n)]
    monitor = Monitor()
    for ms in samples:
        monitor.observe_event("PreToolUse", "pass", ms / 1000)
    status = monitor.percentiles("event:PreToolUse")
    for q in (50, 95, 99):
        assert benchmark.percentile(samples, q) == pytest.approx(status[f"p{q}"])


def test_nearest_rank_at_even_counts_and_float_edges():
    assert nearest_rank([1.0, 2.0], 0.5) == 1.0  # the lower middle value, never an average
    assert nearest_rank([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0
    assert nearest_rank([float(i) for i in range(1, 101)], 0.07) == 7.0  # 0.07 * 100 is not exactly 7
    assert benchmark.percentile([4.0, 3.0, 2.0, 1.0], 50) == 2.0


def test_isolated_validator_from_a_project_file_runs_in_a_worker_process(rt):
    (rt.project / ".claude").mkdir()
    (rt.project / ".claude" / "validators.py").write_text(
        "import os\n"
        "from modules.optimization.hook_integration import validator\n"
        "from modules.optimization.validators.base import Verdict\n\n"
        "@validator(events=['PreToolUse'], matcher='Bash', isolated=True, cacheable=False)\n"
        "def where(event):\n"
        "    return Verdict('deny', f'checked in pid {os.getpid()}')\n"
    )
    set_optimization(rt.project, validators=[".claude/validators.py"])
    daemon_pid = rt.start()["pid"]
    proc = rt.hook(pre_event(rt.project, "echo hi"))
    reason = json.loads(proc.stdout)["hookSpecificOutput"]["permissionDecisionReason"]
    pid = int(reason.rsplit("checked in pid ", 1)[1].split()[0].strip(".;,)"))
    assert pid > 0 and pid != daemon_pid  # not the daemon: one of its limited worker processes
