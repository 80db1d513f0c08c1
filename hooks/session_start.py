"""Claude Code hook: a thin client of the project's hookopt daemon.

Run it with an absolute interpreter path and -S, e.g.
  /abs/.venv/bin/python -S /abs/hooks/EVENT.py
Standard library only: every import here is paid on every tool call.
"""

import sys

sys.path[0] = sys.path[0].rpartition("/")[0]  # the repository root, instead of hooks/
from modules.optimization.client import main  # noqa: E402

sys.exit(main())
