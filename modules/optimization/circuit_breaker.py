"""One circuit breaker per validator, on pybreaker, without serialising the validators."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar

import pybreaker

from .validators.base import Policy

__all__ = ["BreakerBoard", "CircuitOpenError", "Guarded"]

T = TypeVar("T")
_log: Final = logging.getLogger(__name__)


class CircuitOpenError(Exception):
    """A validator was not run because its breaker is open."""

    def __init__(self, name: str, retry_in_s: float, detail: str = "") -> None:
        self.name = name
        self.retry_in_s = retry_in_s
        self.detail = detail
        super().__init__(f"validator {name!r} not run: circuit breaker {detail}; next trial in {retry_in_s:.1f}s")

    def __reduce__(self) -> tuple[type[CircuitOpenError], tuple[str, float, str]]:
        return type(self), (self.name, self.retry_in_s, self.detail)


@dataclass(frozen=True, slots=True)
class Guarded:
    """What a validator's policy made of one call: its value, or a skip or a denial and why."""

    value: Any = None
    skipped: bool = False
    denied: bool = False
    reason: str = ""


class _ClockStorage(pybreaker.CircuitMemoryStorage):
    """Keep pybreaker's opened_at on an injected clock.

    pybreaker stamps and checks opened_at with datetime.now(UTC), which tests cannot move
    and which jumps with the wall clock. Storage is pybreaker's own seam for this: we record
    the injected clock when it opens the breaker and hand back a datetime that is as far in
    the past as that clock says, so pybreaker's check (if anyone calls the breaker directly)
    and ours (BreakerBoard._admit) agree.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        super().__init__(pybreaker.STATE_CLOSED)
        self._clock = clock
        self.opened_clock = 0.0

    @property
    def opened_at(self) -> datetime | None:
        if self.state != pybreaker.STATE_OPEN:
            return None
        return datetime.now(UTC) - timedelta(seconds=self._clock() - self.opened_clock)

    @opened_at.setter
    def opened_at(self, value: datetime) -> None:
        self.opened_clock = self._clock()


@dataclass(slots=True)
class _Slot:
    breaker: pybreaker.CircuitBreaker
    storage: _ClockStorage
    generation: int = 0  # bumped on each state change: outcomes of calls admitted before it are stale
    trial: object | None = None  # token of the half-open trial in flight
    trial_started: float = 0.0
    last_error: str = ""


class _Publisher(pybreaker.CircuitBreakerListener):
    """Forward pybreaker's state changes to the board and to on_state_change."""

    def __init__(self, slot: _Slot, name: str, callback: Callable[[str, str, str], None] | None) -> None:
        self._slot = slot
        self._name = name
        self._callback = callback

    def state_change(
        self,
        cb: pybreaker.CircuitBreaker,
        old_state: pybreaker.CircuitBreakerState | None,
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        self._slot.generation += 1
        self._slot.trial = None
        if self._callback is None:
            return
        try:
            self._callback(self._name, old_state.name if old_state else "", new_state.name)
        except Exception:
            # pybreaker notifies before it stores the new state, so an exception escaping
            # here would leave the breaker half-switched; metrics must never do that.
            _log.exception("on_state_change failed for %s", self._name)


def _succeed() -> None:
    return None


def _fail(error: BaseException) -> None:
    raise error


class BreakerBoard:
    """Per-validator circuit breakers that let calls of one validator run concurrently.

    pybreaker's CircuitBreaker.call holds the breaker's lock while the wrapped function
    runs, so every call through one breaker is serialised
    (https://github.com/danielfm/pybreaker/issues/3). Here the board only asks pybreaker
    under a short lock whether a call may start, runs the validator outside any lock, then
    feeds the outcome back through breaker.call(_succeed) / breaker.call(_fail, error) so
    pybreaker's own state machine and listeners do the counting and the transitions.

    One board-wide RLock guards admission and outcomes (each held for microseconds);
    on_state_change runs under it, so it must be quick and must not block.
    """

    def __init__(
        self,
        fail_max: int = 5,
        reset_timeout: float = 30.0,
        *,
        success_threshold: int = 1,
        clock: Callable[[], float] = time.monotonic,
        on_state_change: Callable[[str, str, str], None] | None = None,
    ) -> None:
        self._fail_max = fail_max
        self._reset_timeout = reset_timeout
        self._success_threshold = success_threshold
        self._clock = clock
        self._on_state_change = on_state_change
        self._lock = threading.RLock()
        self._slots: dict[str, _Slot] = {}

    def breaker(self, name: str) -> pybreaker.CircuitBreaker:
        """Return the breaker for name, creating it on first use."""
        return self._slot(name).breaker

    def state(self, name: str) -> str:
        """Return "closed", "open" or "half-open" for name's breaker."""
        return self._slot(name).breaker.current_state

    def states(self) -> dict[str, str]:
        """Return every known breaker's state by validator name."""
        with self._lock:
            return {name: slot.breaker.current_state for name, slot in self._slots.items()}

    def call(self, name: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run fn under name's breaker; raise CircuitOpenError without running it when open."""
        ticket = self._admit(name)
        try:
            value = fn(*args, **kwargs)
        except Exception as error:
            tb = error.__traceback__
            self._settle(name, ticket, error)
            raise error.with_traceback(tb)  # noqa: B904 - the error itself, as raised: pybreaker's re-raise appended its own frames
        self._settle(name, ticket, None)
        return value

    def guarded(self, name: str, policy: Policy, fn: Callable[[], Any]) -> Guarded:
        """Run fn under name's breaker and apply policy when it is refused or fails."""
        try:
            return Guarded(self.call(name, fn))
        except CircuitOpenError as refused:
            why = str(refused)
        except Exception as error:
            why = f"validator {name!r} failed: {type(error).__name__}: {error}"
        if policy == "fail_open":
            return Guarded(skipped=True, reason=why)
        return Guarded(denied=True, reason=why)

    def record_failure(self, name: str, error: BaseException) -> None:
        """Count a failure of name observed elsewhere, e.g. a timeout seen by the parallel runner."""
        with self._lock:
            slot = self._slot(name)
            if slot.breaker.current_state != pybreaker.STATE_OPEN:  # already open: nothing to add
                self._feed(slot, error)

    def _slot(self, name: str) -> _Slot:
        with self._lock:
            slot = self._slots.get(name)
            if slot is None:
                storage = _ClockStorage(self._clock)
                breaker = pybreaker.CircuitBreaker(
                    fail_max=self._fail_max,
                    reset_timeout=self._reset_timeout,
                    success_threshold=self._success_threshold,
                    state_storage=storage,
                    name=name,
                    throw_new_error_on_trip=False,  # _fail's error comes back, not a new one
                )
                slot = self._slots[name] = _Slot(breaker, storage)
                breaker.add_listener(_Publisher(slot, name, self._on_state_change))
            return slot

    def _admit(self, name: str) -> tuple[int, object | None]:
        """Return a ticket for one call of name, or raise CircuitOpenError."""
        with self._lock:
            slot = self._slot(name)
            now = self._clock()
            state = slot.breaker.current_state
            if state == pybreaker.STATE_OPEN:
                open_for = now - slot.storage.opened_clock
                if open_for < self._reset_timeout:
                    detail = f"open for {open_for:.1f}s after {slot.last_error or 'failures'}"
                    raise CircuitOpenError(name, self._reset_timeout - open_for, detail)
                slot.breaker.half_open()
                state = pybreaker.STATE_HALF_OPEN
            if state == pybreaker.STATE_HALF_OPEN:
                # pybreaker lets half-open trials through one at a time (its lock); we keep
                # that without the lock by refusing others while a trial is out. A trial
                # silent for a whole reset_timeout is taken as lost, so a hung validator
                # cannot wedge its breaker half-open.
                busy_for = now - slot.trial_started
                if slot.trial is not None and busy_for < self._reset_timeout:
                    raise CircuitOpenError(name, self._reset_timeout - busy_for, "half-open, a trial call is running")
                slot.trial, slot.trial_started = object(), now
            return slot.generation, slot.trial

    def _settle(self, name: str, ticket: tuple[int, object | None], error: BaseException | None) -> None:
        """Feed a call's outcome to pybreaker unless the breaker has changed state since."""
        generation, trial = ticket
        with self._lock:
            slot = self._slots[name]
            if generation != slot.generation or trial is not slot.trial:
                return  # a late answer from an earlier state (or a lost trial): not evidence now
            slot.trial = None
            self._feed(slot, error)

    def _feed(self, slot: _Slot, error: BaseException | None) -> None:
        if error is None:
            # The common case, closed with no failure counted: pybreaker would only reset
            # the counter to 0 and call listeners' no-op success(); skipping its call and
            # lock saves a few microseconds per validator run.
            if slot.storage.state == pybreaker.STATE_CLOSED and slot.storage.counter == 0 and len(slot.breaker.listeners) == 1:
                return
            slot.breaker.call(_succeed)
            return
        slot.last_error = f"{type(error).__name__}: {error}"
        try:
            slot.breaker.call(_fail, error)
        except BaseException as raised:
            if raised is not error:
                raise
