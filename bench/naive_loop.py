"""The naive way to run hooks warm, as a careful user could without hookopt: the baseline
of bench/test_warm_path.py, and the runtime behind the e2e bench's naive-http server.

One process that has imported what the example's hooks import and, per event, forks once
per hook (all of an event's hooks at once), exec()s the hook's compiled code as __main__
with the event on stdin, and collects stdout, stderr and the exit status. It is asked over
a pipe.
"""

import json
import os
import queue
import subprocess
import sys
import threading
import time

from modules.optimization.protocol import HookResult

# The naive loop: stdin gets one JSON line per event {"event": str, "scripts": [paths]};
# stdout gets one JSON line back with each hook's [exit, stdout, stderr].
NAIVE = r'''
import builtins, json, os, sys
import re, sqlite3, time, datetime, pathlib  # what the example hooks import
codes = {}
def run(path, data):
    code = codes.get(path)
    if code is None:
        with open(path, "rb") as f:  # a consolidated install leaves the scripts as they are
            code = codes[path] = compile(f.read(), path, "exec")
    fds = [os.pipe() for _ in range(3)]
    pid = os.fork()
    if pid == 0:
        os.dup2(fds[0][0], 0); os.dup2(fds[1][1], 1); os.dup2(fds[2][1], 2)
        for r, w in fds:
            os.close(r); os.close(w)
        sys.stdin = open(0, "r", closefd=False); sys.stdout = open(1, "w", closefd=False); sys.stderr = open(2, "w", closefd=False)
        sys.argv = [path]
        status = 0
        try:
            exec(code, {"__name__": "__main__", "__file__": path, "__builtins__": builtins})
        except SystemExit as e:
            status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if not isinstance(e.code, (int, type(None))):
                print(e.code, file=sys.stderr)
        except BaseException:
            import traceback; traceback.print_exc(); status = 1
        sys.stdout.flush(); sys.stderr.flush()
        os._exit(status)
    os.close(fds[0][0]); os.close(fds[1][1]); os.close(fds[2][1])
    os.write(fds[0][1], data); os.close(fds[0][1])
    return pid, fds[1][0], fds[2][0]
def drain(fd):
    out = b""
    while chunk := os.read(fd, 65536):
        out += chunk
    os.close(fd)
    return out
for line in sys.stdin:
    req = json.loads(line)
    data = req["event"].encode()
    started = [run(p, data) for p in req["scripts"]]
    results = []
    for pid, out, err in started:
        o, e = drain(out), drain(err)
        results.append([os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), o.decode(), e.decode()])
    sys.stdout.write(json.dumps(results) + "\n"); sys.stdout.flush()
'''


class NaiveLoop:
    """The naive loop's process, asked one event at a time (from any thread)."""

    def __init__(self, env, cwd, nice=0):
        niced = ["nice", "-n", str(nice)] if nice else []  # nice execs the loop: the pid stays the loop's
        self.proc = subprocess.Popen(
            [*niced, os.path.realpath(sys.executable), "-c", NAIVE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env=env, cwd=cwd, text=True,
        )  # fmt: skip
        self.lock = threading.Lock()

    def run(self, raw, scripts):
        """Each script's HookResult for the event raw (str), in order."""
        with self.lock:
            self.proc.stdin.write(json.dumps({"event": raw, "scripts": scripts}) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the naive loop exited ({self.proc.poll()})")
        return [HookResult(code, out.encode(), err.encode()) for code, out, err in json.loads(line)]

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


class LaterLoop:
    """Observers the naive way: hooks queued at the answer and run afterwards, one at a time and
    in order, by a naive loop of their own at the lowest CPU priority, each once no event came
    for quiet_s or its event is max_defer_s old (the daemon's observer runs wait the same way)."""

    def __init__(self, env, cwd, quiet_s, max_defer_s):
        self.loop = NaiveLoop(env, cwd, nice=19)
        self.quiet_s, self.max_defer_s = quiet_s, max_defer_s
        self.last = time.monotonic()  # when an event last came or was answered
        self.queue = queue.Queue()
        self.thread = threading.Thread(target=self._work, daemon=True)
        self.thread.start()

    def touch(self):
        self.last = time.monotonic()

    def submit(self, raw, scripts):
        self.queue.put((time.monotonic(), raw, scripts))

    def _work(self):
        while (item := self.queue.get()) is not None:
            at, raw, scripts = item
            for script in scripts:
                while (idle := time.monotonic() - self.last) < self.quiet_s and (age := time.monotonic() - at) < self.max_defer_s:
                    time.sleep(min(self.quiet_s - idle, self.max_defer_s - age))
                self.loop.run(raw, [script])

    def close(self):
        self.queue.put(None)
        self.thread.join(timeout=60)
        self.loop.close()
