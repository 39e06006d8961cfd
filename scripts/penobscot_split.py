#!/usr/bin/env python3
"""Cuts the Penobscot crossline into a training part and a held-out part (README result (b)).

usage: penobscot_split.py PENOBSCOT.sgy OUTDIR [--train-traces 480] [--noise 0.5] [--seed 11]

Writes OUTDIR/train.sgy: the file's first TRAIN traces, byte for byte (textual and binary
headers kept; rev-1 files carry no trace count, so a shorter file is a valid SEG-Y), and
OUTDIR/heldout_clean.npy, OUTDIR/heldout_noisy.npy: the remaining traces as float32
[time, traces], the noisy copy with Gaussian noise of NOISE x RMS(held-out part), seeded.
The IBM floats are decoded here with numpy alone, independently of geonetc's reader.
"""
import argparse, os, struct
import numpy as np

P = argparse.ArgumentParser()
P.add_argument("segy")
P.add_argument("out")
P.add_argument("--train-traces", type=int, default=480)
P.add_argument("--noise", type=float, default=0.5)
P.add_argument("--seed", type=int, default=11)
A = P.parse_args()

raw = open(A.segy, "rb").read()
ns = struct.unpack(">H", raw[3220:3222])[0]
fmt = struct.unpack(">H", raw[3224:3226])[0]
assert fmt == 1, f"expected IBM floats (format 1), got {fmt}"
trace_bytes = 240 + 4 * ns
n = (len(raw) - 3600) // trace_bytes
assert 0 < A.train_traces < n
os.makedirs(A.out, exist_ok=True)
end = 3600 + A.train_traces * trace_bytes
with open(os.path.join(A.out, "train.sgy"), "wb") as f:
    f.write(raw[:end])


def ibm_to_float(words):
    w = words.astype(np.uint32)
    sign = np.where(w >> 31, -1.0, 1.0)
    exponent = ((w >> 24) & 0x7F).astype(np.int32) - 64
    mantissa = (w & 0x00FFFFFF).astype(np.float64) / float(1 << 24)
    return sign * mantissa * np.power(16.0, exponent)


held = []
for t in range(A.train_traces, n):
    start = 3600 + t * trace_bytes + 240
    words = np.frombuffer(raw[start:start + 4 * ns], dtype=">u4")
    held.append(ibm_to_float(words))
clean = np.stack(held, axis=1).astype(np.float32)  # [time, traces]
rng = np.random.default_rng(A.seed)
rms = float(np.sqrt(np.mean(clean.astype(np.float64) ** 2)))
noisy = (clean + A.noise * rms * rng.standard_normal(clean.shape)).astype(np.float32)
np.save(os.path.join(A.out, "heldout_clean.npy"), clean)
np.save(os.path.join(A.out, "heldout_noisy.npy"), noisy)
print(f"train.sgy: {A.train_traces} traces x {ns} samples; held out: {clean.shape[1]} traces, "
      f"rms {rms:.4g}, noise {A.noise} x rms")
