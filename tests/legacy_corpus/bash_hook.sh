#!/bin/bash
input=$(cat)
echo "bash saw ${#input} bytes"
echo "to stderr" >&2
exit 3
