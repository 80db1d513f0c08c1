#!/usr/bin/env python3
"""Block destructive shell commands (exit 2: the reason goes to Claude)."""
import json
import re
import sys

PATTERNS = [
    (r"\brm\s+-[a-zA-Z]*[rR][a-zA-Z]*\s+(/|~|\.|\.\.)(\s|$)", "recursive delete of a root, home or current directory"),
    (r"\b(curl|wget)\b[^|]*\|\s*(sudo\s+)?(ba|z)?sh\b", "piping a download into a shell"),
    (r":\(\)\s*\{\s*:\|:&\s*\};:", "fork bomb"),
]

event = json.load(sys.stdin)
command = event.get("tool_input", {}).get("command", "")
for pattern, why in PATTERNS:
    if re.search(pattern, command):
        print(f"Blocked: {why}: {command}", file=sys.stderr)
        sys.exit(2)
