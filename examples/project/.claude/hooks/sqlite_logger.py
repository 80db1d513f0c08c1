#!/usr/bin/env python3
"""Record each finished tool call in .claude/logs/tools.db (SQLite)."""
import json
import os
import sqlite3
import sys
from pathlib import Path

event = json.load(sys.stdin)
logs = Path(os.environ.get("CLAUDE_PROJECT_DIR", ".")) / ".claude" / "logs"
logs.mkdir(parents=True, exist_ok=True)
db = sqlite3.connect(logs / "tools.db", timeout=30)
with db:
    db.execute("CREATE TABLE IF NOT EXISTS calls (tool_use_id TEXT, session TEXT, tool TEXT, input TEXT)")
    db.execute(
        "INSERT INTO calls VALUES (?, ?, ?, ?)",
        (event.get("tool_use_id"), event.get("session_id"), event.get("tool_name"), json.dumps(event.get("tool_input"))),
    )
db.close()
