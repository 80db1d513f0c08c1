"""hookopt: a fast, safe runtime for Claude Code hooks.

The public surface is listed here once; the modules hold the implementation.
Importing this package imports nothing heavy: the thin clients import their
modules directly.
"""

from __future__ import annotations

__all__ = [
    "cache",
    "circuit_breaker",
    "hook_integration",
    "hook_pool",
    "integrated_optimizer",
    "intelligent_batcher",
    "async_db",
    "async_orchestrator",
    "memory_pool",
    "parallel",
    "performance_monitor",
    "pipeline",
    "protocol",
    "subprocess_coordinator",
    "validators",
]
