import subprocess
import time

child = subprocess.Popen(["sleep", "1000"])
print(f"started {child.pid}", flush=True)
time.sleep(1000)
