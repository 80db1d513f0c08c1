import argparse
import json
import sys

parser = argparse.ArgumentParser(description="Checks a tool call.")
parser.add_argument("--strict", action="store_true")
parser.add_argument("rule")
args = parser.parse_args()
event = json.load(sys.stdin)
print(f"rule={args.rule} strict={args.strict} tool={event['tool_name']}")
if args.strict:
    sys.exit(2)
