import json
import sys


def parse(raw):
    return json.loads(raw)["tool_input"]["missing"]


def main():
    try:
        parse(sys.stdin.read())
    except KeyError as exc:
        raise RuntimeError("hook could not read its input") from exc


main()
