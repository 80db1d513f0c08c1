"""Objects whose teardown at exit is visible: a fresh interpreter runs their finalizers."""
import sys
import weakref

mode = sys.argv[1]


class Noisy:
    def __del__(self):
        print("__del__ ran", flush=True)


def gen():
    try:
        yield 1
    finally:
        print("generator finally ran", flush=True)


if mode == "del":
    keep = Noisy()
if mode == "generator":
    suspended = gen()
    next(suspended)
if mode == "unclosed-file":
    log = open("unclosed.log", "w")
    log.write("buffered, never closed, flushed at exit\n")
if mode == "weakref-callback":
    target = Noisy.__new__(Noisy)
    watcher = weakref.ref(target, lambda ref: print("weakref callback ran", flush=True))
if mode == "finalize":
    anchor = Noisy.__new__(Noisy)
    weakref.finalize(anchor, print, "finalize ran at exit")
if mode == "replaced-stdout":
    import io
    sys.stdout = io.TextIOWrapper(open(sys.stdout.fileno(), "wb", closefd=False), write_through=False)
    print("through a replacement stdout")
if mode == "closed-file":
    with open("closed.log", "w") as log:  # `log` outlives the with block, closed
        log.write("written and closed\n")
    with open("closed.log", "rb", buffering=0) as raw:
        print(raw.read().decode(), end="")
if mode == "thread":
    import threading
    threading.Thread(target=lambda: print("non-daemon thread finished", flush=True)).start()
print("body done")
