import json
import sys

event = json.load(sys.stdin)
print(event["tool_input"]["command"])
