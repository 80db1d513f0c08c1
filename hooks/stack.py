"""Claude Code hook: the project's own hook stack, consolidated behind one client per event.

`hookopt install --consolidate` points each event here; the daemon applies the original
matchers and runs the original hooks warm. Standard library only on the fast path.
"""

import sys

sys.path[0] = sys.path[0].rpartition("/")[0]  # the repository root, instead of hooks/
from modules.optimization.client import main_stack  # noqa: E402

sys.exit(main_stack())
