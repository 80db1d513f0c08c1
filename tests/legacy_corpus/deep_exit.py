import sys


def check(depth):
    if depth == 0:
        if sys.argv[1:] == ["message"]:
            sys.exit("validation failed: missing field")
        sys.exit(int(sys.argv[1]) if sys.argv[1:] else 0)
    check(depth - 1)


def main():
    try:
        check(5)
    finally:
        print("cleanup ran")


main()
print("never printed")
