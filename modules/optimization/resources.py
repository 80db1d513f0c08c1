"""Files shipped inside the package, found where the package is installed.

The source tree keeps them at the top level (``hooks/``, ``config/``,
``examples/project``); ``modules/optimization/shipped/`` links to them and the
wheel carries copies, so a checkout, an editable install and a wheel (pip,
pipx, ``uv tool``) all find them the same way: through ``importlib.resources``.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["ResourceError", "package_root", "shipped"]


class ResourceError(RuntimeError):
    """A file the package ships with is missing: the installation is incomplete."""


def shipped(*parts: str) -> Path:
    """The on-disk path of a shipped file or directory, e.g. shipped("hooks", "stack.py")."""
    ref = files(__package__ or "modules.optimization").joinpath("shipped", *parts)
    # Claude Code runs hooks by path, so they must be real files, not inside a zip.
    if not isinstance(ref, Path):
        raise ResourceError(f"hookopt is installed as {type(ref).__name__}; it needs a regular (unzipped) install")
    return ref


def package_root() -> Path:
    """The directory that holds the ``modules`` package (site-packages for a wheel, the checkout otherwise)."""
    ref = files("modules")
    if not isinstance(ref, Path):
        raise ResourceError(f"hookopt is installed as {type(ref).__name__}; it needs a regular (unzipped) install")
    return ref.parent
