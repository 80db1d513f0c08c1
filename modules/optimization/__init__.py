"""hookopt: a fast, safe runtime for Claude Code hooks.

The public surface is listed here once; the modules hold the implementation.
This file imports nothing: the thin clients pass through it on every tool call.
"""

__all__ = [
    "async_db",
    "async_orchestrator",
    "cache",
    "circuit_breaker",
    "client",
    "daemon",
    "hook_integration",
    "hook_pool",
    "integrated_optimizer",
    "intelligent_batcher",
    "memory_pool",
    "parallel",
    "paths",
    "performance_monitor",
    "pipeline",
    "protocol",
    "subprocess_coordinator",
    "validators",
]
