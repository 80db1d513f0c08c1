"""Run as `python -m hookpkg.argv_atexit`: what runpy sets, and __file__ still there at exit."""
import atexit
import sys

atexit.register(lambda: print("atexit sees", globals().get("__file__"), sys.argv))
print("run", __name__, __spec__.name, __package__, sys.argv, sys.path[0], sorted(globals()))
print("stdin", len(sys.stdin.read()))
