"""Per-validator circuit breakers: counting, recovery, policy and concurrency."""

from __future__ import annotations

import pickle
import threading
from concurrent.futures import ThreadPoolExecutor

import pybreaker
import pytest

from modules.optimization.circuit_breaker import BreakerBoard, CircuitOpenError, Guarded


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds


class Boom(Exception):
    pass


def boom() -> None:
    raise Boom("disk on fire")


def ok() -> str:
    return "fine"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def fail(board: BreakerBoard, name: str, times: int) -> None:
    for _ in range(times):
        with pytest.raises(Boom):
            board.call(name, boom)


def test_opens_after_exactly_fail_max_failures_then_refuses_without_running(clock):
    board = BreakerBoard(fail_max=3, reset_timeout=30, clock=clock)
    fail(board, "v", 2)
    assert board.state("v") == "closed"
    assert board.breaker("v").fail_counter == 2
    fail(board, "v", 1)
    assert board.state("v") == "open"

    ran = []
    clock.tick(10)
    with pytest.raises(CircuitOpenError) as refused:
        board.call("v", ran.append, 1)
    assert ran == []
    assert refused.value.name == "v"
    assert refused.value.retry_in_s == pytest.approx(20)
    assert "'v'" in str(refused.value) and "Boom: disk on fire" in str(refused.value)


def test_success_resets_the_consecutive_failure_count(clock):
    board = BreakerBoard(fail_max=2, clock=clock)
    fail(board, "v", 1)
    assert board.call("v", ok) == "fine"
    assert board.breaker("v").fail_counter == 0
    fail(board, "v", 1)
    assert board.state("v") == "closed"


def test_fn_exception_propagates_unchanged_after_being_counted(clock):
    board = BreakerBoard(fail_max=5, clock=clock)
    error = Boom("x")

    def raise_it() -> None:
        raise error

    with pytest.raises(Boom) as caught:
        board.call("v", raise_it)
    assert caught.value is error
    assert board.breaker("v").fail_counter == 1


def test_args_and_kwargs_reach_fn(clock):
    board = BreakerBoard(clock=clock)
    assert board.call("v", lambda a, *, b: a + b, 2, b=3) == 5


def test_half_opens_after_reset_timeout_and_closes_after_success_threshold(clock):
    board = BreakerBoard(fail_max=1, reset_timeout=30, success_threshold=2, clock=clock)
    fail(board, "v", 1)
    clock.tick(29.9)
    with pytest.raises(CircuitOpenError):
        board.call("v", ok)
    clock.tick(0.1)
    assert board.call("v", ok) == "fine"
    assert board.state("v") == "half-open"
    assert board.breaker("v").success_counter == 1
    assert board.call("v", ok) == "fine"
    assert board.state("v") == "closed"


def test_failure_in_half_open_reopens_for_a_full_timeout(clock):
    board = BreakerBoard(fail_max=2, reset_timeout=30, success_threshold=2, clock=clock)
    fail(board, "v", 2)
    clock.tick(30)
    assert board.call("v", ok) == "fine"
    fail(board, "v", 1)
    assert board.state("v") == "open"
    clock.tick(29)
    with pytest.raises(CircuitOpenError) as refused:
        board.call("v", ok)
    assert refused.value.retry_in_s == pytest.approx(1)


def test_state_changes_reach_the_callback_in_order(clock):
    seen: list[tuple[str, str, str]] = []
    board = BreakerBoard(fail_max=2, reset_timeout=5, clock=clock, on_state_change=lambda *change: seen.append(change))
    fail(board, "v", 2)
    clock.tick(5)
    board.call("v", ok)
    assert seen == [("v", "closed", "open"), ("v", "open", "half-open"), ("v", "half-open", "closed")]


def test_a_failing_callback_does_not_break_the_breaker(clock):
    def broken(name: str, old: str, new: str) -> None:
        raise RuntimeError("metrics down")

    board = BreakerBoard(fail_max=1, reset_timeout=5, clock=clock, on_state_change=broken)
    fail(board, "v", 1)
    assert board.state("v") == "open"
    clock.tick(5)
    assert board.call("v", ok) == "fine"
    assert board.state("v") == "closed"


@pytest.mark.parametrize(
    ("policy", "expected_skipped", "expected_denied"),
    [("fail_open", True, False), ("fail_closed", False, True)],
)
def test_policy_for_an_open_breaker(clock, policy, expected_skipped, expected_denied):
    board = BreakerBoard(fail_max=1, reset_timeout=30, clock=clock)
    fail(board, "secrets", 1)
    ran = []
    result = board.guarded("secrets", policy, lambda: ran.append(1))
    assert ran == []
    assert (result.skipped, result.denied, result.value) == (expected_skipped, expected_denied, None)
    assert "'secrets'" in result.reason and "open" in result.reason and "Boom: disk on fire" in result.reason


@pytest.mark.parametrize(
    ("policy", "expected_skipped", "expected_denied"),
    [("fail_open", True, False), ("fail_closed", False, True)],
)
def test_policy_for_a_raising_validator(clock, policy, expected_skipped, expected_denied):
    board = BreakerBoard(fail_max=5, clock=clock)
    result = board.guarded("secrets", policy, boom)
    assert (result.skipped, result.denied) == (expected_skipped, expected_denied)
    assert "'secrets'" in result.reason and "Boom: disk on fire" in result.reason
    assert board.breaker("secrets").fail_counter == 1


def test_guarded_passes_a_value_through(clock):
    board = BreakerBoard(clock=clock)
    assert board.guarded("v", "fail_closed", ok) == Guarded(value="fine", skipped=False, denied=False, reason="")


def test_record_failure_counts_toward_opening(clock):
    board = BreakerBoard(fail_max=3, clock=clock)
    board.record_failure("v", TimeoutError("no answer within 50 ms"))
    board.record_failure("v", TimeoutError("no answer within 50 ms"))
    assert board.state("v") == "closed"
    fail(board, "v", 1)
    assert board.state("v") == "open"
    board.record_failure("v", TimeoutError("late"))  # already open: no effect, no error
    assert board.state("v") == "open"


def test_record_failure_in_half_open_reopens(clock):
    board = BreakerBoard(fail_max=1, reset_timeout=10, success_threshold=2, clock=clock)
    board.record_failure("v", TimeoutError("slow"))
    clock.tick(10)
    board.call("v", ok)
    assert board.state("v") == "half-open"
    board.record_failure("v", TimeoutError("slow again"))
    assert board.state("v") == "open"


def test_breakers_are_per_validator(clock):
    board = BreakerBoard(fail_max=1, clock=clock)
    fail(board, "a", 1)
    assert board.call("b", ok) == "fine"
    assert board.states() == {"a": "open", "b": "closed"}
    assert board.breaker("a") is board.breaker("a")
    assert board.breaker("a") is not board.breaker("b")


def test_two_calls_of_one_validator_run_at_once(clock):
    # If the board ran fn inside pybreaker's lock (pybreaker issue #3), the second call
    # could not enter until the first left and the barrier would break.
    board = BreakerBoard(clock=clock)
    barrier = threading.Barrier(2, timeout=5)

    def slow() -> int:
        return barrier.wait()

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(board.call, "v", slow) for _ in range(2)]
        assert sorted(f.result(timeout=10) for f in futures) == [0, 1]
    assert board.state("v") == "closed"


def test_half_open_lets_one_trial_through_at_a_time(clock):
    board = BreakerBoard(fail_max=1, reset_timeout=30, clock=clock)
    fail(board, "v", 1)
    clock.tick(30)
    started, release = threading.Event(), threading.Event()

    def trial() -> str:
        started.set()
        release.wait(5)
        return "recovered"

    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(board.call, "v", trial)
        assert started.wait(5)
        with pytest.raises(CircuitOpenError, match="trial"):
            board.call("v", ok)
        release.set()
        assert future.result(timeout=5) == "recovered"
    assert board.state("v") == "closed"


def test_a_lost_trial_does_not_wedge_the_breaker(clock):
    board = BreakerBoard(fail_max=1, reset_timeout=30, clock=clock)
    fail(board, "v", 1)
    clock.tick(30)
    started, release = threading.Event(), threading.Event()

    def hung() -> None:
        started.set()
        release.wait(5)
        raise Boom("finally gave up")

    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(board.call, "v", hung)
        assert started.wait(5)
        clock.tick(30)
        assert board.call("v", ok) == "fine"  # the hung trial is taken as lost
        assert board.state("v") == "closed"
        release.set()
        with pytest.raises(Boom):
            future.result(timeout=5)
    # The lost trial's late failure belongs to the earlier half-open state: not counted.
    assert board.breaker("v").fail_counter == 0
    assert board.state("v") == "closed"


def test_an_answer_from_before_the_breaker_opened_is_not_counted(clock):
    board = BreakerBoard(fail_max=2, reset_timeout=30, clock=clock)
    started, release = threading.Event(), threading.Event()

    def slow_failure() -> None:
        started.set()
        release.wait(5)
        raise Boom("late")

    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(board.call, "v", slow_failure)
        assert started.wait(5)
        fail(board, "v", 2)
        clock.tick(30)
        board.call("v", ok)
        assert board.state("v") == "closed"
        release.set()
        with pytest.raises(Boom):
            future.result(timeout=5)
    assert board.breaker("v").fail_counter == 0


def test_the_breaker_used_directly_follows_the_injected_clock(clock):
    board = BreakerBoard(fail_max=1, reset_timeout=30, clock=clock)
    fail(board, "v", 1)
    with pytest.raises(pybreaker.CircuitBreakerError):
        board.breaker("v").call(ok)
    clock.tick(30)
    assert board.breaker("v").call(ok) == "fine"
    assert board.state("v") == "closed"


def test_circuit_open_error_survives_pickling():
    error = pickle.loads(pickle.dumps(CircuitOpenError("v", 12.5, "open")))
    assert (error.name, error.retry_in_s, str(error)) == ("v", 12.5, str(CircuitOpenError("v", 12.5, "open")))
