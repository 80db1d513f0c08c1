import sys

for i in range(5):
    print(f"out {i}")
    print(f"err {i}", file=sys.stderr)
    if i == 2:
        sys.stdout.flush()
sys.stdout.write("no newline at the end")
