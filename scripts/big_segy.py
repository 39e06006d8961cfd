#!/usr/bin/env python3
"""Writes a large SEG-Y for the streaming measurement (README, "Large files"): the textual and
binary headers of SRC, then SRC's traces repeated until the file reaches about GB gigabytes.
Never put the result in the repository.

usage: scripts/big_segy.py SRC.sgy OUT.sgy GB
"""
import sys

src, out, gb = sys.argv[1], sys.argv[2], float(sys.argv[3])
data = open(src, "rb").read()
head, traces = data[:3600], data[3600:]
repeats = max(1, int(gb * 1e9 // len(traces)))
with open(out, "wb") as f:
    f.write(head)
    for _ in range(repeats):
        f.write(traces)
print(out, 3600 + repeats * len(traces), "bytes,", repeats, "copies of", src)
