import json
import sys

event = json.load(sys.stdin)
context = f"Session {event['session_id']} in {event['cwd']}: remember the style guide."
json.dump({"hookSpecificOutput": {"hookEventName": "UserPromptSubmit", "additionalContext": context}}, sys.stdout)
