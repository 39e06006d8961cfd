#!/usr/bin/env python3
"""Independent reference values for geonetc's SEG-Y/SU reader, from segyio (and numpy for SU).

For every SEG-Y/SU file in ../shared/data/seismic this writes tests/fixtures/seismic/<name>.json
with the geometry, the sample interval, the first, middle and last trace's samples (first 20
values), some trace-header fields of those traces, and min/max/rms over all samples.

usage: scripts/seismic_reference.py   (needs segyio and numpy, e.g. ~/.venvs/peers/bin/python)
"""
import json
import os

import numpy as np
import segyio

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "..", "shared", "data", "seismic")
OUT = os.path.join(HERE, "..", "tests", "fixtures", "seismic")

FILES = ["field/penobscot_xl1155.sgy", "field/viking_small.segy", "field/f3.sgy", "fixtures/small.sgy",
         "fixtures/small-lsb.sgy", "fixtures/multi-text.sgy", "fixtures/f3-lsb.sgy",
         "field/gom_cdp_nmo.su", "fixtures/small.su"]

F = segyio.TraceField


def summary(data, headers, n, dt):
    picks = sorted({0, n // 2, n - 1})
    return {
        "traces": n,
        "samples": int(data.shape[1]),
        "dt_us": dt,
        "min": float(data.min()), "max": float(data.max()),
        "rms": float(np.sqrt(np.mean(data.astype(np.float64) ** 2))),
        "picks": [{"trace": i, "samples": [float(v) for v in data[i, :20]], "header": headers(i)} for i in picks],
    }


for rel in FILES:
    path = os.path.join(DATA, rel)
    name = os.path.basename(rel)
    if rel.endswith(".su"):
        raw = open(path, "rb").read()
        ns = int.from_bytes(raw[114:116], "big")
        n = len(raw) // (240 + 4 * ns)
        tr = np.frombuffer(raw, dtype=np.uint8).reshape(n, 240 + 4 * ns)
        data = tr[:, 240:].copy().view(">f4").astype(np.float32)

        def headers(i):
            h = tr[i, :240].tobytes()
            be = lambda a, b: int.from_bytes(h[a - 1:b], "big", signed=True)
            return {"cdp": be(21, 24), "offset": be(37, 40), "ns": be(115, 116)}

        dt = int.from_bytes(raw[116:118], "big")
        res = summary(data, headers, n, dt)
    else:
        endian = "little" if "lsb" in name else "big"
        with segyio.open(path, ignore_geometry=True, endian=endian) as f:
            data = segyio.tools.collect(f.trace[:]).astype(np.float32)
            dt = int(f.bin[segyio.BinField.Interval])

            def headers(i):
                h = f.header[i]
                return {"cdp": int(h[F.CDP]), "offset": int(h[F.offset]), "inline": int(h[F.INLINE_3D]),
                        "crossline": int(h[F.CROSSLINE_3D]), "sequence_line": int(h[F.TRACE_SEQUENCE_LINE])}

            res = summary(data, headers, f.tracecount, dt)
            res["format_code"] = int(f.bin[segyio.BinField.Format])
    with open(os.path.join(OUT, name + ".json"), "w") as fh:
        json.dump(res, fh, indent=1)
    print("wrote", name, res["traces"], res["samples"])


# ---- 3-D test volumes (issue 12): written here with segyio, read back with segyio --------------
#
# Four small post-stack volumes under tests/fixtures/seismic/volumes/ (IEEE float, 16 samples,
# inlines 10, 12, ..., 20 × crosslines 100..106): `full.sgy` (every trace, inline-major),
# `missing.sgy` (the grid without four traces), `unsorted.sgy` (the missing one's traces in a
# shuffled order, two of them dead: trace id code 2) and `xline_major.sgy` (the full grid by
# crossline). Sample j of the trace at (il, xl) is il + xl / 1000 + j / 100, so a test can tell
# every trace apart. Expected geometry: segyio's own (sorted volumes, `segyio.open`) and the
# headers segyio reads back (`attributes`), reduced with numpy.
VOL = os.path.join(OUT, "volumes")
os.makedirs(VOL, exist_ok=True)
ILINES, XLINES, NS = list(range(10, 21, 2)), list(range(100, 107)), 16
DROPPED = [(12, 103), (16, 100), (16, 101), (20, 106)]


def write_volume(name, keys, dead=()):
    spec = segyio.spec()
    spec.format, spec.samples, spec.tracecount = 5, list(range(NS)), len(keys)
    with segyio.create(os.path.join(VOL, name), spec) as f:
        f.bin.update(hns=NS, hdt=4000)
        for t, (il, xl) in enumerate(keys):
            f.header[t] = {F.INLINE_3D: il, F.CROSSLINE_3D: xl, F.TRACE_SAMPLE_COUNT: NS,
                           F.TRACE_SAMPLE_INTERVAL: 4000, F.TraceIdentificationCode: 2 if t in dead else 1,
                           F.FieldRecord: il, F.CDP: 1000 * il + xl}
            f.trace[t] = np.array([il + xl / 1000 + j / 100 for j in range(NS)], dtype=np.float32)


full = [(il, xl) for il in ILINES for xl in XLINES]
missing = [k for k in full if k not in DROPPED]
rng = np.random.default_rng(12)
unsorted = [missing[i] for i in rng.permutation(len(missing))]
write_volume("full.sgy", full)
write_volume("missing.sgy", missing)
write_volume("unsorted.sgy", unsorted, dead=(3, 17))
write_volume("xline_major.sgy", sorted(full, key=lambda k: (k[1], k[0])))

expected = {}
for name in ["full.sgy", "missing.sgy", "unsorted.sgy", "xline_major.sgy"]:
    path = os.path.join(VOL, name)
    with segyio.open(path, ignore_geometry=True) as f:
        il = np.array(f.attributes(segyio.TraceField.INLINE_3D)[:])
        xl = np.array(f.attributes(segyio.TraceField.CROSSLINE_3D)[:])
        tid = np.array(f.attributes(segyio.TraceField.TraceIdentificationCode)[:])
    uil, uxl = np.unique(il), np.unique(xl)
    step = lambda u: int(np.gcd.reduce(np.diff(u)))
    grid = {(a, b) for a in range(uil[0], uil[-1] + 1, step(uil)) for b in range(uxl[0], uxl[-1] + 1, step(uxl))}
    present = set(zip(il.tolist(), xl.tolist()))
    e = {"traces": int(len(il)),
         "inlines": [int(uil[0]), int(uil[-1]), step(uil), len(range(uil[0], uil[-1] + 1, step(uil)))],
         "crosslines": [int(uxl[0]), int(uxl[-1]), step(uxl), len(range(uxl[0], uxl[-1] + 1, step(uxl)))],
         "missing": sorted([list(k) for k in grid - present]),
         "dead": [int(i) + 1 for i in np.nonzero(tid == 2)[0]]}
    try:
        # segyio opens only complete sorted volumes; its sorting code: 1 crossline, 2 inline.
        with segyio.open(path) as f:
            e["sorting"] = {2: "inline_major", 1: "crossline_major"}[int(f.sorting)]
            assert list(f.ilines) == list(range(e["inlines"][0], e["inlines"][1] + 1, e["inlines"][2]))
    except (RuntimeError, ValueError, KeyError) as err:
        e["sorting"] = None  # not a volume segyio opens: sorting judged from the generator's order
        e["segyio_refuses"] = str(err)[:120]
    expected[name] = e
with open(os.path.join(VOL, "expected.json"), "w") as fh:
    json.dump(expected, fh, indent=1)
print("wrote volumes", {k: (v["traces"], len(v["missing"]), v["sorting"]) for k, v in expected.items()})
