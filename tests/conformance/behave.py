"""A scriptable hook for the conformance suite: does what behaviours.json says for its name.

Usage: behave.py NAME. The event's scenario is the `#S=<tag>` found in its raw stdin
(a Bash command, a prompt...); the behaviour is looked up as "<event>:<tag>", then
"<event>:*". A behaviour is {"out": str, "err": str, "exit": int, "sleep": s, "once": marker}.
"""
import json
import os
import re
import sys
import time

name = sys.argv[1]
raw = sys.stdin.read()
event = json.loads(raw)
here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "behaviours.json"), encoding="utf-8") as f:
    table = json.load(f)
tag = re.search(r"#S=([A-Za-z0-9_-]+)", raw)
kind = event["hook_event_name"]
spec = table.get(f"{kind}:{tag.group(1) if tag else ''}", table.get(f"{kind}:*", {})).get(name)
if spec is None:
    sys.exit(0)
if spec.get("first_only"):
    # Stop hooks that block forever would loop; block the first time only.
    if event.get("stop_hook_active"):
        sys.exit(0)
time.sleep(spec.get("sleep", 0))
sys.stdout.write(spec.get("out", ""))
sys.stderr.write(spec.get("err", ""))
sys.stdout.flush()
sys.exit(spec.get("exit", 0))
