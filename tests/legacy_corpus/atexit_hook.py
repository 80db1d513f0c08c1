import atexit
import sys


@atexit.register
def goodbye():
    # A fresh interpreter has already removed __file__ from __main__ when atexit runs.
    print("atexit sees __file__:", "__file__" in globals())
    sys.stderr.write("atexit stderr\n")


atexit.register(print, "registered second, runs first")
print("body done")
