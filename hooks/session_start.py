#!/usr/bin/env python3
"""Claude Code hook: evaluate the event on stdin with hookopt's validators."""

import sys

from modules.optimization.hook_integration import run_hook

if __name__ == "__main__":
    sys.exit(run_hook())
