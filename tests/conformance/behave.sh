#!/bin/sh
# A non-Python hook: a shell script (spawned, never run warm) that behaves like behave.py.
exec python3 "$(dirname "$0")/behave.py" "$@"
