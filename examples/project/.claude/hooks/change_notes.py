#!/usr/bin/env python3
"""Remind Claude which file it just changed and how big it now is."""
import json
import os
import sys

event = json.load(sys.stdin)
path = event.get("tool_input", {}).get("file_path", "")
size = os.path.getsize(path) if os.path.exists(path) else 0
print(json.dumps({
    "hookSpecificOutput": {
        "hookEventName": "PostToolUse",
        "additionalContext": f"{os.path.basename(path)} changed; it is now {size} bytes.",
    }
}))
