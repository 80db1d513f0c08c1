"""Run as `python -m hookpkg.sub`: a package's __main__."""
import sys

print("main of", __package__, sys.argv)
sys.exit(3)
