"""A sibling module: importable because sys.path[0] is the script's directory."""
GREETING = "hello from a sibling module"
