"""Claude Code hook: the project's own hook stack, consolidated behind one client per event.

`hookopt install --consolidate` points each event here; the daemon applies the original
matchers and runs the original hooks warm. Standard library only on the fast path.
"""

import sys

# Put the directory holding the modules package first instead of this one: the checkout
# (ROOT/hooks/) or site-packages (SITE/modules/optimization/shipped/hooks/ in a wheel).
_here = sys.path[0]
_shipped = "/modules/optimization/shipped/hooks"
sys.path[0] = _here[: -len(_shipped)] if _here.endswith(_shipped) else _here.rpartition("/")[0]
from modules.optimization.client import main_stack  # noqa: E402

sys.exit(main_stack())
