"""Claude Code hook: a thin client of the project's hookopt daemon.

Run it with an absolute interpreter path and -S, e.g.
  /abs/.venv/bin/python -S /abs/hooks/EVENT.py
Standard library only: every import here is paid on every tool call.
"""

import sys

# Put the directory holding the modules package first instead of this one: the checkout
# (ROOT/hooks/) or site-packages (SITE/modules/optimization/shipped/hooks/ in a wheel).
_here = sys.path[0]
_shipped = "/modules/optimization/shipped/hooks"
sys.path[0] = _here[: -len(_shipped)] if _here.endswith(_shipped) else _here.rpartition("/")[0]
from modules.optimization.client import main  # noqa: E402

sys.exit(main())
