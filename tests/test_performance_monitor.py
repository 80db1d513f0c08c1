from __future__ import annotations

import json
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from wsgiref.simple_server import WSGIServer

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from modules.optimization.performance_monitor import Monitor


class FakeClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def samples(body: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Flatten an exposition into {(sample name, labels): value}."""
    out = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(flat: dict, name: str, **labels: str) -> float:
    return flat[(name, frozenset(labels.items()))]


@pytest.fixture
def served() -> Iterator[tuple[Monitor, WSGIServer, int]]:
    monitor = Monitor()
    server, port = monitor.serve(port=0)
    yield monitor, server, port
    server.shutdown()
    server.server_close()


def record_some(m: Monitor) -> None:
    m.observe_event("PreToolUse", "allow", 0.0003)
    m.observe_event("PreToolUse", "allow", 0.002)
    m.observe_event("PreToolUse", "deny", 0.02)
    m.observe_event("PostToolUse", "pass", 0.7)
    m.observe_validator("rm_rf", 0.001)
    m.observe_validator("secrets", 0.3, "timeout")
    m.observe_validator("secrets", 0.0, "skipped")
    m.cache_hit()
    m.cache_hit()
    m.cache_hit()
    m.cache_miss()
    m.breaker_changed("secrets", "closed", "open")
    m.breaker_changed("rm_rf", "closed", "open")
    m.breaker_changed("rm_rf", "open", "half-open")
    m.observe_batch(3)
    m.observe_batch(40)
    m.set_queue_depth("observers", 7)
    m.fallback("daemon_down")
    m.fallback("daemon_down")
    m.fallback("timeout")
    m.set_profile("balanced")
    m.set_profile("latency", "p95 over budget")


def test_real_scrape_reports_what_was_recorded(served):
    monitor, _server, port = served
    record_some(monitor)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert resp.status == 200
        content_type = resp.headers["Content-Type"]
        body = resp.read().decode()
    assert content_type.startswith("text/plain; version=0.0.4")
    flat = samples(body)

    assert value(flat, "hookopt_events_total", event="PreToolUse", outcome="allow") == 2
    assert value(flat, "hookopt_events_total", event="PreToolUse", outcome="deny") == 1
    assert value(flat, "hookopt_events_total", event="PostToolUse", outcome="pass") == 1
    # Histogram buckets are cumulative: 0.3 ms lands in le=0.0005, 2 ms in le=0.0025, 20 ms in le=0.025.
    assert value(flat, "hookopt_event_latency_seconds_count", event="PreToolUse") == 3
    assert value(flat, "hookopt_event_latency_seconds_bucket", event="PreToolUse", le="0.0001") == 0
    assert value(flat, "hookopt_event_latency_seconds_bucket", event="PreToolUse", le="0.0005") == 1
    assert value(flat, "hookopt_event_latency_seconds_bucket", event="PreToolUse", le="0.0025") == 2
    assert value(flat, "hookopt_event_latency_seconds_bucket", event="PreToolUse", le="0.025") == 3
    assert value(flat, "hookopt_event_latency_seconds_bucket", event="PreToolUse", le="5.0") == 3
    assert value(flat, "hookopt_event_latency_seconds_sum", event="PreToolUse") == pytest.approx(0.0223)
    assert value(flat, "hookopt_event_latency_seconds_bucket", event="PostToolUse", le="0.5") == 0
    assert value(flat, "hookopt_event_latency_seconds_bucket", event="PostToolUse", le="1.0") == 1

    # The skipped run is an error of kind "skipped" but has no latency.
    assert value(flat, "hookopt_validator_latency_seconds_count", validator="secrets") == 1
    assert value(flat, "hookopt_validator_latency_seconds_count", validator="rm_rf") == 1
    assert value(flat, "hookopt_validator_errors_total", validator="secrets", kind="timeout") == 1
    assert value(flat, "hookopt_validator_errors_total", validator="secrets", kind="skipped") == 1
    assert ("hookopt_validator_errors_total", frozenset({("validator", "rm_rf"), ("kind", "ok")})) not in flat

    assert value(flat, "hookopt_cache_hits_total") == 3
    assert value(flat, "hookopt_cache_misses_total") == 1
    assert value(flat, "hookopt_breaker_state", validator="secrets") == 2
    assert value(flat, "hookopt_breaker_state", validator="rm_rf") == 1
    assert value(flat, "hookopt_breaker_transitions_total", validator="secrets", to="open") == 1
    assert value(flat, "hookopt_breaker_transitions_total", validator="rm_rf", to="half-open") == 1
    assert value(flat, "hookopt_batch_size_count") == 2
    assert value(flat, "hookopt_batch_size_bucket", le="4.0") == 1
    assert value(flat, "hookopt_batch_size_bucket", le="64.0") == 2
    assert value(flat, "hookopt_queue_depth", queue="observers") == 7
    assert value(flat, "hookopt_fallbacks_total", reason="daemon_down") == 2
    assert value(flat, "hookopt_fallbacks_total", reason="timeout") == 1
    assert value(flat, "hookopt_profile_info", profile="latency", reason="p95 over budget") == 1
    assert value(flat, "hookopt_profile_switches_total") == 1


def test_breaker_gauge_follows_a_full_cycle():
    m = Monitor()
    for old, new, level in [("closed", "open", 2), ("open", "half-open", 1), ("half-open", "closed", 0)]:
        m.breaker_changed("net", old, new)
        assert value(samples(m.exposition().decode()), "hookopt_breaker_state", validator="net") == level
    assert m.snapshot()["breakers"] == {"net": "closed"}


def test_unknown_breaker_state_is_counted_without_raising():
    m = Monitor()
    m.breaker_changed("net", "closed", "open")
    m.breaker_changed("net", "open", "melted")
    flat = samples(m.exposition().decode())
    assert value(flat, "hookopt_breaker_state", validator="net") == 2
    assert value(flat, "hookopt_breaker_transitions_total", validator="net", to="melted") == 1


def test_server_listens_on_loopback_only(served):
    _monitor, server, port = served
    host, bound_port = server.socket.getsockname()[:2]
    assert (host, bound_port) == ("127.0.0.1", port)
    assert server.server_address[0] == "127.0.0.1"
    # Nothing answers on the machine's other addresses.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(2)
        other = _non_loopback_address()
        if other is not None:
            assert probe.connect_ex((other, port)) != 0


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent for a UDP connect
            addr = s.getsockname()[0]
        except OSError:
            return None
    return None if addr.startswith("127.") else addr


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1", "localhost", "example.com", ""])
def test_serve_refuses_non_loopback_host(host):
    with pytest.raises(ValueError, match="not a loopback") as info:
        Monitor().serve(host=host)
    assert repr(host) in str(info.value)


def test_percentiles_on_known_data():
    m = Monitor()
    for ms in range(100, 0, -1):  # order must not matter
        m.observe_validator("rm_rf", ms / 1000)
    assert m.percentiles("validator:rm_rf") == pytest.approx({"p50": 50.0, "p95": 95.0, "p99": 99.0})
    assert m.percentiles("event:PreToolUse") == {}
    m.observe_event("PreToolUse", "allow", 0.004)
    assert m.percentiles("event:PreToolUse") == pytest.approx({"p50": 4.0, "p95": 4.0, "p99": 4.0})


def test_window_is_bounded_to_recent_observations():
    m = Monitor(window=10)
    for ms in range(1, 101):
        m.observe_event("Stop", "pass", ms / 1000)
    # Only 91..100 remain.
    assert m.percentiles("event:Stop") == pytest.approx({"p50": 95.0, "p95": 100.0, "p99": 100.0})
    assert len(m._samples["event:Stop"]) == 10
    with pytest.raises(ValueError):
        Monitor(window=0)


def test_no_anomalies_for_steady_data():
    m = Monitor()
    for i in range(300):
        m.observe_validator("secrets", (10 + i % 7) / 1000)
    assert m.anomalies() == []


def test_one_note_for_a_spike_with_its_numbers():
    clock = FakeClock(42.5)
    m = Monitor(clock=clock)
    for _ in range(30):
        m.observe_validator("secrets", 0.015)
    m.observe_validator("secrets", 0.120)
    assert m.anomalies() == ["t=42.500s validator secrets: last 120.0 ms is 8.0x its p50 of 15.0 ms"]
    clock.now = 50.0
    m.observe_event("PreToolUse", "allow", 0.001)
    m.observe_validator("secrets", 0.016)
    assert len(m.anomalies()) == 1


def test_spike_must_clear_both_the_ratio_and_the_margin():
    m = Monitor()
    for _ in range(25):
        m.observe_validator("fast", 0.001)
    m.observe_validator("fast", 0.030)  # 30x p50, but under p50 + 50 ms
    for _ in range(25):
        m.observe_validator("slow", 0.200)
    m.observe_validator("slow", 0.400)  # p50 + 200 ms, but only 2x
    assert m.anomalies() == []
    m.observe_validator("fast", 0.052)  # over both 5 ms and 51 ms
    assert len(m.anomalies()) == 1 and "validator fast: last 52.0 ms" in m.anomalies()[0]


def test_no_anomaly_under_twenty_samples():
    m = Monitor()
    for _ in range(19):
        m.observe_event("PreToolUse", "allow", 0.002)
    m.observe_event("PreToolUse", "allow", 2.0)
    assert m.anomalies() == []
    # The 20-sample rule counts what came before the spike: now there are 20.
    m.observe_event("PreToolUse", "allow", 2.0)
    assert [n.split(" ", 1)[1] for n in m.anomalies()] == ["event PreToolUse: last 2000.0 ms is 1000.0x its p50 of 2.0 ms"]


def test_anomaly_notes_are_bounded_and_keep_the_latest():
    clock = FakeClock(0.0)
    m = Monitor(clock=clock)
    for _ in range(20):
        m.observe_validator("v", 0.001)
    for i in range(200):
        clock.now = float(i)
        m.observe_validator("v", 1.0 if i % 2 else 0.001)
    notes = m.anomalies()
    assert len(notes) == 50  # 100 spikes, each over a 1 ms p50; only the last 50 kept
    assert notes[-1].startswith("t=199.000s ")


def test_two_monitors_do_not_collide():
    a, b = Monitor(), Monitor()
    a.observe_event("PreToolUse", "deny", 0.01)
    a.cache_hit()
    b.cache_miss()
    fa, fb = samples(a.exposition().decode()), samples(b.exposition().decode())
    assert value(fa, "hookopt_events_total", event="PreToolUse", outcome="deny") == 1
    assert ("hookopt_events_total", frozenset({("event", "PreToolUse"), ("outcome", "deny")})) not in fb
    assert (value(fa, "hookopt_cache_hits_total"), value(fa, "hookopt_cache_misses_total")) == (1, 0)
    assert (value(fb, "hookopt_cache_hits_total"), value(fb, "hookopt_cache_misses_total")) == (0, 1)
    assert a.registry is not b.registry


def test_given_registry_is_used_and_cannot_be_shared_twice():
    registry = CollectorRegistry()
    m = Monitor(registry=registry)
    m.fallback("x")
    assert b"hookopt_fallbacks_total" in m.exposition()
    # A second monitor on the same registry would publish duplicate series: prometheus refuses.
    with pytest.raises(ValueError, match="Duplicated"):
        Monitor(registry=registry)


def test_snapshot_is_json_able_summary():
    m = Monitor()
    record_some(m)
    snap = json.loads(json.dumps(m.snapshot()))
    assert snap["events"] == {"PostToolUse": {"pass": 1}, "PreToolUse": {"allow": 2, "deny": 1}}
    assert snap["cache"] == {"hits": 3, "misses": 1, "hit_rate": 0.75}
    assert snap["breakers"] == {"rm_rf": "half-open", "secrets": "open"}
    assert snap["profile"] == {"name": "latency", "reason": "p95 over budget"}
    assert set(snap["latency_ms"]) == {"event:PreToolUse", "event:PostToolUse", "validator:rm_rf", "validator:secrets"}
    assert snap["latency_ms"]["event:PreToolUse"]["p50"] == pytest.approx(2.0)
    assert snap["latency_ms"]["validator:secrets"]["p95"] == pytest.approx(300.0)
    assert Monitor().snapshot()["cache"]["hit_rate"] == 0.0


def test_profile_switch_counts_only_changes():
    m = Monitor()
    m.set_profile("balanced")
    m.set_profile("balanced", "again")
    m.set_profile("throughput", "queue deep")
    m.set_profile("balanced", "calm")
    flat = samples(m.exposition().decode())
    assert value(flat, "hookopt_profile_switches_total") == 2
    assert value(flat, "hookopt_profile_info", profile="balanced", reason="calm") == 1
    assert sum(1 for name, _ in flat if name == "hookopt_profile_info") == 1


def test_promtool_accepts_the_exposition():
    # .ci/run installs Debian's prometheus package for promtool; without it this fails, not skips.
    m = Monitor()
    record_some(m)
    result = subprocess.run(["promtool", "check", "metrics"], input=m.exposition(), capture_output=True, timeout=30)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
