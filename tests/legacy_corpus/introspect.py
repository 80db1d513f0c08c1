"""Print the process state a fresh interpreter starts a script with."""
import os
import signal
import sys

print("env", list(os.environ.items()))
child = __import__("subprocess").run(["env"], capture_output=True, check=False)  # no shell: the C-level environment, in its order
print("env of a child", child.stdout.decode("utf-8", "replace").splitlines())
print("cwd", os.getcwd())
print("path", sys.path)
print("flags", sys.flags)
print("argv", sys.argv, getattr(sys, "orig_argv", None), sys.executable, sys.prefix)
for s in (sys.stdin, sys.stdout, sys.stderr):
    raw = getattr(s.buffer, "raw", s.buffer)
    print(s.name, s.mode, s.encoding, s.errors, s.line_buffering, s.write_through, type(s.buffer).__name__, raw.name)
print("same streams", sys.__stdout__ is sys.stdout, sys.__stderr__ is sys.stderr)
print("fds", sorted(os.listdir("/proc/self/fd")))
print("signals", [(n, str(signal.getsignal(n))) for n in sorted(signal.valid_signals()) if n not in (9, 19)])
print("blocked", signal.pthread_sigmask(signal.SIG_BLOCK, []))
print("affinity", sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None)
print("scheduling", os.sched_getscheduler(0) if hasattr(os, "sched_getscheduler") else None, os.nice(0))
print("fs encoding", sys.getfilesystemencoding(), sys.getfilesystemencodeerrors())
print("first open fd", open(__file__).fileno())
print("importer cache", {k: v for k, v in sys.path_importer_cache.items() if "introspect" in k})
print("stdin bytes", len(sys.stdin.buffer.read()))
