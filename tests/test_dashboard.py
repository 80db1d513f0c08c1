"""The shipped Grafana dashboard speaks valid PromQL about metrics a running daemon really
exports, and `hookopt status --watch` gives a live view."""

import json
import re
import signal
import subprocess
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from modules.optimization.resources import shipped
from tests.daemon_helpers import ROOT, post_event, pre_event, wait_for

DASHBOARD = shipped("config", "dashboards", "hookopt.json")
REQUIRED = ("Events per second", "Event latency p50 / p95", "Hook latency p50 / p95", "Cache hit rate", "Circuit breakers", "Queue depth")


def expressions(dashboard):
    found = []
    for panel in dashboard["panels"]:
        found += [target["expr"] for target in panel.get("targets", [])]
        for inner in panel.get("panels", []):  # panels inside a collapsed row
            found += [target["expr"] for target in inner.get("targets", [])]
    return found


def hookopt(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "modules.optimization.cli", *args], capture_output=True, text=True, cwd=ROOT, timeout=60, **kwargs)


def test_dashboard_is_shipped_and_printed_by_the_cli():
    proc = hookopt("dashboard")
    assert proc.returncode == 0 and json.loads(proc.stdout) == json.loads(DASHBOARD.read_text())
    assert hookopt("dashboard", "--path").stdout.strip() == str(DASHBOARD)
    titles = [panel["title"] for panel in json.loads(DASHBOARD.read_text())["panels"]]
    for title in REQUIRED:
        assert any(t.startswith(title) for t in titles), title


def test_every_dashboard_expression_passes_promtool(tmp_path):
    exprs = expressions(json.loads(DASHBOARD.read_text()))
    assert len(exprs) >= 10
    # A rules file is YAML, and JSON is YAML: one recording rule per panel query.
    rules = {"groups": [{"name": "hookopt-dashboard", "rules": [{"record": f"hookopt:dashboard:{i}", "expr": e} for i, e in enumerate(exprs)]}]}
    path = tmp_path / "rules.yml"
    path.write_text(json.dumps(rules, indent=1))
    check = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in check.stdout
    # And a broken expression is caught the same way, so the check above means something.
    path.write_text(json.dumps({"groups": [{"name": "g", "rules": [{"record": "x:y", "expr": "sum by (event (rate(hookopt_events_total[1m]))"}]}]}))
    assert subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, timeout=60).returncode != 0


def test_every_metric_the_dashboard_uses_is_in_a_real_scrape(rt):
    rt.start()
    for command in ("ls", "ls", "rm -rf /"):
        rt.hook(pre_event(rt.project, command))
    rt.hook(post_event(rt.project), script="post_tool_use")
    port = json.loads((rt.project / ".claude/hookopt/http.json").read_text())["metrics_port"]

    def scraped():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
        samples = {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}
        # Breaker states and queue depths are published by the daemon's tick, observer batches by the batcher.
        if not {"hookopt_breaker_state", "hookopt_queue_depth", "hookopt_batch_size_count"} <= samples:
            return None
        declared = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
        return samples, declared

    samples, declared = wait_for(scraped, what="a scrape with breaker states, queue depths and batches")
    used = {m for e in expressions(json.loads(DASHBOARD.read_text())) for m in re.findall(r"\bhookopt_[a-z_]+\b", e)}
    assert len(used) >= 10
    # Counters of rare things (fallbacks, errors, breaker transitions) have no series until the first
    # one happens, but the daemon declares them: a misspelt name is neither.
    assert used - samples - declared == set(), f"the dashboard queries metrics the daemon does not export: {sorted(used - samples - declared)}"
    for core in ("hookopt_events_total", "hookopt_event_latency_seconds_bucket", "hookopt_validator_latency_seconds_bucket",
                 "hookopt_cache_hits_total", "hookopt_cache_misses_total", "hookopt_breaker_state", "hookopt_queue_depth"):
        assert core in used and core in samples, core

def test_status_watch_redraws_with_events_per_second_until_its_count(rt):
    rt.start()
    rt.hook(pre_event(rt.project, "ls"))
    proc = hookopt("status", "--watch", "--interval", "0.2", "--count", "3", "--project", str(rt.project), env=rt.env)
    assert proc.returncode == 0, proc.stderr
    frames = proc.stdout.split("hookopt status of ")[1:]
    assert len(frames) == 3 and all("daemon: running" in f for f in frames)
    assert "events/s: (from the next frame)" in frames[0] and re.search(r"events/s: \d+\.\d", frames[2])

    lines = hookopt("status", "--watch", "--json", "--interval", "0.1", "--count", "2", "--project", str(rt.project), env=rt.env)
    docs = [json.loads(line) for line in lines.stdout.splitlines()]
    assert [d["running"] for d in docs] == [True, True] and docs[0]["events_per_s"] is None and docs[1]["events_per_s"] >= 0


def test_status_watch_stops_cleanly_on_ctrl_c(rt):
    rt.start()
    watch = subprocess.Popen(
        [sys.executable, "-m", "modules.optimization.cli", "status", "--watch", "--interval", "0.1", "--project", str(rt.project)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=rt.env,
    )
    seen = 0
    while seen < 2:  # two frames drawn, then interrupt it as a terminal would
        line = watch.stdout.readline()
        assert line, watch.stderr.read()
        seen += line.startswith("hookopt status of ")
    watch.send_signal(signal.SIGINT)
    out, err = watch.communicate(timeout=20)
    assert watch.returncode == 0 and err == "", err  # no traceback, no error message


def test_status_watch_rejects_bad_intervals_and_counts():
    for args in (["--interval", "0"], ["--interval", "-1"], ["--interval", "x"], ["--count", "0"]):
        proc = hookopt("status", "--watch", *args)
        assert proc.returncode == 2 and "hookopt status: error: argument --" in proc.stderr, (args, proc.stderr)
    proc = hookopt("status", "--count", "2")
    assert proc.returncode == 1 and "--count only applies with --watch" in proc.stderr
