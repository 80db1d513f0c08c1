import sys

print("never read stdin")
sys.stderr.write("still fine\n")
