"""Block a dangerous Bash command: reason on stderr, exit 2."""
import json
import sys

event = json.load(sys.stdin)
command = event.get("tool_input", {}).get("command", "")
if "rm -rf" in command:
    print(f"Blocked: {command!r} deletes recursively", file=sys.stderr)
    sys.exit(2)
print("ok")
