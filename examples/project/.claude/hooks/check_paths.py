#!/usr/bin/env python3
"""Deny edits and writes outside the project directory."""
import json
import os
import sys


def main() -> int:
    event = json.load(sys.stdin)
    root = os.path.realpath(os.environ.get("CLAUDE_PROJECT_DIR") or event["cwd"])
    target = os.path.realpath(os.path.join(event["cwd"], event["tool_input"].get("file_path", "")))
    if os.path.commonpath([root, target]) != root:
        json.dump({
            "hookSpecificOutput": {
                "hookEventName": "PreToolUse",
                "permissionDecision": "deny",
                "permissionDecisionReason": f"{target} is outside the project {root}",
            }
        }, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
