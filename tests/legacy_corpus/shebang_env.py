#!/usr/bin/env python3
import sys

print("run directly", sys.argv, __file__)
