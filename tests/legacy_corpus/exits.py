"""The ways a script ends: SystemExit variants and sys.excepthook variants."""
import sys

mode = sys.argv[1]
print("mode", mode)
if mode == "exit-object":
    sys.exit(["not", "an", "int"])
if mode == "exit-true":
    sys.exit(True)
if mode == "exit-wide":
    sys.exit(2**40 + 5)
if mode == "exit-none":
    sys.exit()
if mode == "custom-hook":
    sys.excepthook = lambda kind, value, tb: print("custom hook:", kind.__name__, value, file=sys.stderr)
if mode == "hook-raises":
    def broken_hook(kind, value, tb):
        raise ValueError("the hook itself failed")
    sys.excepthook = broken_hook
if mode == "hook-exits":
    sys.excepthook = lambda *args: sys.exit(7)
if mode == "no-hook":
    del sys.excepthook
if mode == "syntax-error":
    exec("def broken(:\n    pass")
raise RuntimeError(f"uncaught in {mode}")
