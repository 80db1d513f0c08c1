import json
import os
import sys

event = json.load(sys.stdin)
os.makedirs("hook-output", exist_ok=True)
with open(os.path.join("hook-output", "last_tool.txt"), "w") as f:
    f.write(event["tool_name"] + "\n")
with open("hook-output/last_tool.txt") as f:
    print(os.path.abspath(f.name), f.read().strip())
