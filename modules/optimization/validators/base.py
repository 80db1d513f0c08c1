"""What a validator is, what it returns, and how a function is marked as one (@validator)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Final, Literal, TypeVar

__all__ = ["PASS", "VALIDATOR_MARK", "Policy", "Validator", "Verdict", "collect_validators", "validator"]

Policy = Literal["fail_open", "fail_closed"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """A validator's answer. decision None means "no objection" (never an explicit allow,
    which would skip Claude Code's own permission prompt)."""

    decision: Literal["deny", "ask", "allow"] | None = None
    reason: str = ""
    context: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"decision": self.decision, "reason": self.reason, "context": self.context}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Verdict:
        return cls(data.get("decision"), str(data.get("reason", "")), str(data.get("context", "")))


PASS: Final = Verdict()


@dataclass(frozen=True, slots=True)
class Validator:
    """A named check run for matching events.

    policy says what happens when the check itself fails (raises, times out, or its
    breaker is open): fail_closed denies with a reason, fail_open lets the call through.
    """

    name: str
    fn: Callable[[Mapping[str, Any]], Verdict]
    events: frozenset[str] = field(default_factory=lambda: frozenset({"PreToolUse"}))
    matcher: str = "*"
    policy: Policy = "fail_closed"
    cacheable: bool = True
    priority: int = 0  # lower runs first: guards before observers
    depends_on: tuple[str, ...] = ()
    # Run in a worker process under the profile's memory and CPU limits (a heavy or untrusted check).
    isolated: bool = False
    # Run on the daemon's own loop, without a thread hand-off (which costs more than such a check):
    # for a quick check of in-memory state only, with no I/O, since nothing can time it out there.
    inline: bool = False


F = TypeVar("F", bound=Callable[[Mapping[str, Any]], Verdict])
VALIDATOR_MARK: Final = "hookopt_validator"


def validator(
    name: str | None = None,
    *,
    events: Iterable[str] = ("PreToolUse",),
    matcher: str = "*",
    policy: Policy = "fail_closed",
    cacheable: bool = True,
    priority: int = 0,
    depends_on: Sequence[str] = (),
    isolated: bool = False,
) -> Callable[[F], F]:
    """Mark a function (event -> Verdict) as a validator; the engine collects marked functions
    from the modules it loads (as pluggy marks hook implementations), nothing global.

    isolated runs it in a worker process of the isolated-validator pool, under the
    profile's memory and CPU limits (a heavy or untrusted check).
    """

    def mark(fn: F) -> F:
        spec = Validator(name or fn.__name__, fn, frozenset(events), matcher, policy, cacheable, priority, tuple(depends_on), isolated)
        setattr(fn, VALIDATOR_MARK, spec)
        return fn

    return mark


def collect_validators(namespace: ModuleType | Mapping[str, Any]) -> tuple[Validator, ...]:
    """The validators marked with @validator in a module (or a namespace), in definition order."""
    values = vars(namespace).values() if isinstance(namespace, ModuleType) else namespace.values()
    return tuple(spec for value in values if isinstance(spec := getattr(value, VALIDATOR_MARK, None), Validator))
