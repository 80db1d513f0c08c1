#!/usr/bin/env python3
"""Append each finished tool call to .claude/logs/tools.jsonl."""
import json
import os
import sys
import time
from pathlib import Path

event = json.load(sys.stdin)
logs = Path(os.environ.get("CLAUDE_PROJECT_DIR", ".")) / ".claude" / "logs"
logs.mkdir(parents=True, exist_ok=True)
with open(logs / "tools.jsonl", "a", encoding="utf-8") as f:
    f.write(json.dumps({
        "ts": time.time(),
        "tool": event.get("tool_name"),
        "tool_use_id": event.get("tool_use_id"),
        "duration_ms": event.get("duration_ms"),
    }) + "\n")
