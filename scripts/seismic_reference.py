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
