#!/usr/bin/env python3
"""Append every Bash command Claude is about to run to .claude/logs/bash_audit.jsonl."""
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

event = json.load(sys.stdin)
logs = Path(os.environ.get("CLAUDE_PROJECT_DIR", ".")) / ".claude" / "logs"
logs.mkdir(parents=True, exist_ok=True)
record = {
    "at": datetime.now(timezone.utc).isoformat(),
    "session": event.get("session_id"),
    "tool_use_id": event.get("tool_use_id"),
    "command": event.get("tool_input", {}).get("command"),
}
with open(logs / "bash_audit.jsonl", "a", encoding="utf-8") as f:
    f.write(json.dumps(record) + "\n")
