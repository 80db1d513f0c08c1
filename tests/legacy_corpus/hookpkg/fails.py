"""Run as `python -m hookpkg.fails`: the traceback starts in runpy."""


def fail():
    raise ValueError("from a module")


fail()
