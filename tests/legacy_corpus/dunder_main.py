"""Uses __file__, __name__ and what a fresh __main__ holds."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    print("file", __file__)
    print("here", HERE)
    print("argv", sys.argv)
    print("orig_argv", getattr(sys, "orig_argv", None))
    print("path0", sys.path[0])
    print("globals", list(globals()))
    print("spec", __spec__, "package", __package__, "doc", __doc__)
    print("loader", type(__loader__).__name__, __loader__.name, __loader__.path)
    print("builtins", type(__builtins__).__name__)
    print("main is module", sys.modules["__main__"].main is main)
    print("executable", sys.executable)


if __name__ == "__main__":
    main()
