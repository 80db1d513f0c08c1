import subprocess
import sys

print("before children", flush=True)
subprocess.run(["sh", "-c", "echo child stdout; echo child stderr >&2"], check=True)
subprocess.run([sys.executable, "-c", "import sys; print('python child', sys.argv[1:]); sys.stderr.write('py err\\n')", "x"])
out = subprocess.run(["echo", "captured"], capture_output=True, text=True).stdout
print("captured:", out.strip())
print("buffered line printed after the children")
