"""Metrics for the daemon: prometheus-client counters and histograms, exact recent percentiles, anomaly notes.

One process (the daemon) owns the registry; each ``Monitor`` has its own
``CollectorRegistry`` rather than the global default, so several can coexist (tests,
embedded use) and nothing needs ``PROMETHEUS_MULTIPROC_DIR``.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import Counter as Tally
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Final
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest, start_http_server

__all__ = ["BREAKER_LEVELS", "LATENCY_BUCKETS", "Monitor", "nearest_rank"]

# 0.1 ms (a cache hit) up to 5 s (a slow legacy hook); Claude Code's own timeouts are far longer.
LATENCY_BUCKETS: Final = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
BREAKER_LEVELS: Final = {"closed": 0, "half-open": 1, "open": 2}
ANOMALY_MIN_SAMPLES: Final = 20
ANOMALY_RATIO: Final = 5.0
ANOMALY_MARGIN_MS: Final = 50.0
_MAX_NOTES: Final = 50


def nearest_rank(ordered: Sequence[float], q: float) -> float:
    """Return the nearest-rank q-quantile (0 < q <= 1) of an already sorted, non-empty sequence.

    The smallest value with at least q of the samples at or below it: for an even count
    the p50 is the lower middle value, never an average. `hookopt status` and `hookopt
    bench` both use this one definition.
    """
    # round(): 0.07 * 100 is 7.000000000000001 in binary floating point, whose ceil is 8.
    return ordered[max(0, math.ceil(round(q * len(ordered), 9)) - 1)]


class Monitor:
    """Record hook events, validator timings, cache, breaker, batch and profile activity."""

    def __init__(
        self,
        *,
        registry: CollectorRegistry | None = None,
        window: int = 512,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, not {window}")
        self.registry = registry if registry is not None else CollectorRegistry()
        self._window = window
        self._clock = clock
        r = self.registry
        self._events = Counter("hookopt_events", "Hook events answered, by outcome.", ["event", "outcome"], registry=r)
        self._event_latency = Histogram(
            "hookopt_event_latency_seconds", "Time to answer one hook event.", ["event"], buckets=LATENCY_BUCKETS, registry=r
        )
        self._validator_latency = Histogram(
            "hookopt_validator_latency_seconds", "Time one validator took.", ["validator"], buckets=LATENCY_BUCKETS, registry=r
        )
        self._validator_errors = Counter(
            "hookopt_validator_errors", "Validator runs that did not end ok, by kind.", ["validator", "kind"], registry=r
        )
        self._cache_hits = Counter("hookopt_cache_hits", "Validator results served from the cache.", registry=r)
        self._cache_misses = Counter("hookopt_cache_misses", "Validator results not in the cache.", registry=r)
        self._breaker_state = Gauge(
            "hookopt_breaker_state", "Circuit breaker state: 0 closed, 1 half-open, 2 open.", ["validator"], registry=r
        )
        self._breaker_transitions = Counter(
            "hookopt_breaker_transitions", "Circuit breaker state changes, by new state.", ["validator", "to"], registry=r
        )
        self._batch_size = Histogram("hookopt_batch_size", "Items per flushed batch.", buckets=BATCH_BUCKETS, registry=r)
        self._queue_depth = Gauge("hookopt_queue_depth", "Items waiting in a queue.", ["queue"], registry=r)
        self._fallbacks = Counter("hookopt_fallbacks", "Events evaluated by a fallback path, by reason.", ["reason"], registry=r)
        self._profile = Info("hookopt_profile", "The optimisation profile in use.", registry=r)
        self._profile_switches = Counter("hookopt_profile_switches", "Profile changes.", registry=r)
        # Children by label values, with their window keys: prometheus' labels() costs a few
        # microseconds per call (kwargs, a lock), paid for every event and validator run. It
        # returns the same child each time (nothing here removes labels), so keep it. Plain
        # dicts: a race only builds the same entry twice.
        self._event_children: dict[tuple[str, str], tuple[Any, Any, str]] = {}
        self._validator_children: dict[str, tuple[Any, str]] = {}
        # The prometheus objects are thread-safe; this lock guards only the plain state below,
        # which validator threads and the event loop both touch.
        self._lock = threading.Lock()
        self._samples: dict[str, deque[float]] = {}
        self._notes: deque[str] = deque(maxlen=_MAX_NOTES)
        self._outcomes: dict[str, Tally[str]] = {}
        self._hits = 0
        self._misses = 0
        self._breakers: dict[str, str] = {}
        self._profile_name = ""
        self._profile_reason = ""

    def _record(self, key: str, seconds: float) -> None:
        """Add one observation to key's window, first noting it if it is far above the window's p50."""
        ms = seconds * 1000.0
        with self._lock:
            samples = self._samples.setdefault(key, deque(maxlen=self._window))
            # Judge against the window before this sample joins it, so a spike cannot raise its own bar.
            # The bar is at least p50 + the margin, so anything under the margin cannot clear it:
            # that skips sorting the window for nearly every observation.
            if ms > ANOMALY_MARGIN_MS and len(samples) >= ANOMALY_MIN_SAMPLES:
                p50 = nearest_rank(sorted(samples), 0.50)
                if ms > max(ANOMALY_RATIO * p50, p50 + ANOMALY_MARGIN_MS):
                    ratio = f"{ms / p50:.1f}x" if p50 > 0 else "far above"
                    kind, _, name = key.partition(":")
                    self._notes.append(
                        f"t={self._clock():.3f}s {kind} {name}: last {ms:.1f} ms is {ratio} its p50 of {p50:.1f} ms"
                    )
            samples.append(ms)

    def observe_event(self, event: str, outcome: str, seconds: float) -> None:
        """Count one answered hook event and record how long it took."""
        children = self._event_children.get((event, outcome))
        if children is None:
            children = self._event_children[(event, outcome)] = (
                self._events.labels(event=event, outcome=outcome),
                self._event_latency.labels(event=event),
                f"event:{event}",
            )
        count, latency, key = children
        count.inc()
        latency.observe(seconds)
        with self._lock:
            self._outcomes.setdefault(event, Tally())[outcome] += 1
        self._record(key, seconds)

    def observe_validator(self, name: str, seconds: float, status: str = "ok") -> None:
        """Record one validator run; any status but "ok" also counts as an error of that kind."""
        if status != "ok":
            self._validator_errors.labels(validator=name, kind=status).inc()
        # A skipped validator did not run, so its near-zero time would drag the percentiles down.
        if status == "skipped":
            return
        children = self._validator_children.get(name)
        if children is None:
            children = self._validator_children[name] = (self._validator_latency.labels(validator=name), f"validator:{name}")
        latency, key = children
        latency.observe(seconds)
        self._record(key, seconds)

    def cache_hit(self) -> None:
        """Count one cache hit."""
        self._cache_hits.inc()
        with self._lock:
            self._hits += 1

    def cache_miss(self) -> None:
        """Count one cache miss."""
        self._cache_misses.inc()
        with self._lock:
            self._misses += 1

    def breaker_changed(self, name: str, old: str, new: str) -> None:
        """Publish a breaker's new state; shaped as the circuit-breaker module's on_state_change callback."""
        state = new.lower().replace("_", "-")
        self._breaker_transitions.labels(validator=name, to=state).inc()
        # An unknown state name is counted but leaves the gauge alone: this runs inside the
        # breaker's callback, where raising would disturb the call being guarded.
        if state in BREAKER_LEVELS:
            self._breaker_state.labels(validator=name).set(BREAKER_LEVELS[state])
        with self._lock:
            self._breakers[name] = state

    def set_breaker_state(self, name: str, state: str) -> None:
        """Publish a breaker's current state (no transition counted): breakers that never changed show too."""
        state = state.lower().replace("_", "-")
        if state in BREAKER_LEVELS:
            self._breaker_state.labels(validator=name).set(BREAKER_LEVELS[state])

    def observe_batch(self, size: int) -> None:
        """Record the size of one flushed batch."""
        self._batch_size.observe(size)

    def set_queue_depth(self, queue: str, depth: int) -> None:
        """Set how many items wait in the named queue."""
        self._queue_depth.labels(queue=queue).set(depth)

    def fallback(self, reason: str) -> None:
        """Count one event that took a fallback path."""
        self._fallbacks.labels(reason=reason).inc()

    def set_profile(self, name: str, reason: str = "") -> None:
        """Publish the profile in use; a change of name counts as a switch."""
        with self._lock:
            switched = bool(self._profile_name) and name != self._profile_name
            self._profile_name, self._profile_reason = name, reason
        self._profile.info({"profile": name, "reason": reason})
        if switched:
            self._profile_switches.inc()

    def percentiles(self, key: str) -> dict[str, float]:
        """Return p50/p95/p99 in ms over key's recent window ("event:NAME" or "validator:NAME"); {} if unseen."""
        with self._lock:
            ordered = sorted(self._samples.get(key, ()))
        if not ordered:
            return {}
        return {"p50": nearest_rank(ordered, 0.50), "p95": nearest_rank(ordered, 0.95), "p99": nearest_rank(ordered, 0.99)}

    def anomalies(self) -> list[str]:
        """Return the most recent anomaly notes, oldest first."""
        with self._lock:
            return list(self._notes)

    def snapshot(self) -> dict[str, Any]:
        """Return a JSON-able summary for ``hookopt status``."""
        with self._lock:
            lookups = self._hits + self._misses
            keys = sorted(self._samples)
            summary: dict[str, Any] = {
                "events": {event: dict(tally) for event, tally in sorted(self._outcomes.items())},
                "cache": {
                    "hits": self._hits,
                    "misses": self._misses,
                    "hit_rate": self._hits / lookups if lookups else 0.0,
                },
                "breakers": dict(sorted(self._breakers.items())),
                "profile": {"name": self._profile_name, "reason": self._profile_reason},
                "anomalies": list(self._notes),
            }
        summary["latency_ms"] = {key: self.percentiles(key) for key in keys}
        return summary

    def exposition(self) -> bytes:
        """Return the registry in the Prometheus text format."""
        return generate_latest(self.registry)

    def serve(self, port: int = 0, host: str = "127.0.0.1") -> tuple[WSGIServer, int]:
        """Serve /metrics from a daemon thread on a loopback address; return the server and its port.

        Only a literal loopback address is accepted: the metrics name validators and
        profiles, which are nobody else's business, and a hostname could resolve elsewhere.
        The caller stops it with ``server.shutdown()`` and ``server.server_close()``.
        """
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(f"refusing to serve metrics on {host!r}: not a loopback address")
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server, server.server_port
