import sys

print("ünïcödé ✓ текст 漢字")
sys.stdout.flush()
sys.stdout.buffer.write(b"raw \xff\xfe\x80 bytes\n")
sys.stdout.buffer.flush()
print("stdout encoding", sys.stdout.encoding, sys.stdout.errors)
sys.stderr.write("stderr ✗ \udcff surrogate\n")
