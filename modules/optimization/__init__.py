"""hookopt: a fast, safe runtime for Claude Code hooks."""
