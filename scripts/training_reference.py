#!/usr/bin/env python3
"""Independent reference for `segy(...)` training on a 3-D volume (tests/training_file.rs).

Reads F3 (SEG-Y rev 1, big-endian int16) with numpy alone, builds the cube from the inline and
crossline numbers at trace-header bytes 189 and 193, and writes
tests/fixtures/training/f3_patches.json with:

- `scale`: the clipped RMS of the live samples, as docs/qc.md defines it: traces whose samples
  are all zero (or whose header says dead, id 2) and runs of exact zeros (at least 2 touching a
  trace's end, at least 16 inside) are left out; |x| is clipped at its 99.5th percentile (the
  value at index round((n - 1) * 0.995) of the sorted magnitudes) and the RMS taken;
- a few 32 x 16 patches (time samples x traces) of inline and crossline sections, in file
  units, with where they start.

usage: scripts/training_reference.py [path/to/f3.sgy]
"""
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
PATH = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "shared", "data", "seismic", "field", "f3.sgy")
OUT = os.path.join(HERE, "..", "tests", "fixtures", "training", "f3_patches.json")

raw = open(PATH, "rb").read()
ns = int.from_bytes(raw[3220:3222], "big")
fmt = int.from_bytes(raw[3224:3226], "big")
assert fmt == 3, fmt  # int16
tb = 240 + 2 * ns
n = (len(raw) - 3600) // tb
tr = np.frombuffer(raw, dtype=np.uint8, offset=3600, count=n * tb).reshape(n, tb)
data = tr[:, 240:].copy().view(">i2").astype(np.float64)
hdr = lambda i, b: int.from_bytes(tr[i, b - 1:b + 3].tobytes(), "big", signed=True)
il = np.array([hdr(i, 189) for i in range(n)])
xl = np.array([hdr(i, 193) for i in range(n)])
tid = np.array([int.from_bytes(tr[i, 28:30].tobytes(), "big", signed=True) for i in range(n)])

live = []
for t in range(n):
    x = data[t]
    if tid[t] == 2 or np.all(x == 0):
        continue
    keep = np.ones(ns, bool)
    s = 0
    while s < ns:
        if x[s] != 0:
            s += 1
            continue
        a = s
        while s < ns and x[s] == 0:
            s += 1
        edge = a == 0 or s == ns
        if s - a >= (2 if edge else 16):
            keep[a:s] = False
    live.append(np.abs(x[keep]))
live = np.concatenate(live)
k = int(round((len(live) - 1) * 0.995))
clip = np.sort(live)[k]
scale = float(np.sqrt(np.mean(np.minimum(live, clip) ** 2)))

ils, xls = sorted(set(il)), sorted(set(xl))
cube = np.zeros((len(ils), len(xls), ns))
for t in range(n):
    cube[ils.index(il[t]), xls.index(xl[t])] = data[t]

patches = []
# (along, section number, first trace's crossline/inline number, first sample)
for along, number, first, r in [("inline", 120, 875, 16), ("inline", 133, 877, 43),
                                ("crossline", 880, 111, 0), ("crossline", 892, 118, 32)]:
    if along == "inline":
        p = cube[ils.index(number), xls.index(first):xls.index(first) + 16, r:r + 32]
        inline, crossline = number, first
    else:
        p = cube[ils.index(first):ils.index(first) + 16, xls.index(number), r:r + 32]
        inline, crossline = first, number
    patches.append({"along": along, "inline": inline, "crossline": crossline, "sample": r,
                    "values": p.T.tolist()})  # [time, traces]

os.makedirs(os.path.dirname(OUT), exist_ok=True)
json.dump({"file": "field/f3.sgy", "scale": scale, "clip": float(clip), "live": int(len(live)),
           "inlines": [int(ils[0]), int(ils[-1])], "crosslines": [int(xls[0]), int(xls[-1])],
           "patch": [32, 16], "patches": patches}, open(OUT, "w"), indent=1)
print(f"scale {scale} (clip {clip}, {len(live)} live samples); wrote {OUT}")
