#!/usr/bin/env python3
"""Deny reads and writes of secret files (JSON permission decision)."""
import json
import sys
from pathlib import PurePath

SECRET_NAMES = {".env", "id_rsa", "id_ed25519", ".npmrc", ".pypirc", ".netrc"}
SECRET_SUFFIXES = {".pem", ".key", ".p12"}

event = json.load(sys.stdin)
path = PurePath(event.get("tool_input", {}).get("file_path", ""))
if path.name in SECRET_NAMES or path.suffix in SECRET_SUFFIXES or path.name.startswith(".env."):
    if not path.name.endswith((".example", ".sample", ".template")):
        print(json.dumps({
            "hookSpecificOutput": {
                "hookEventName": "PreToolUse",
                "permissionDecision": "deny",
                "permissionDecisionReason": f"{path.name} holds secrets; it must not be read or changed by the agent",
            }
        }))
