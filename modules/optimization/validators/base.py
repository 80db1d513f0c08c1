"""What a validator is and what it returns."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

__all__ = ["PASS", "Policy", "Validator", "Verdict"]

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
