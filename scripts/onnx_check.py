#!/usr/bin/env python3
"""Independent check of `geonetc export` with the official ONNX tools.

For every example (examples/*.geonet, errors/ excluded), the two programs that use every op
(tests/fixtures/onnx_ops*.geonet) and every ../shared/peers/*.geonet:

1. `geonetc export --init-seed 1` to learn the tensor names and shapes; the biases and batchnorm
   statistics are then replaced by random numbers (weights stay as initialised) and written as
   a safetensors file in geonet's layout (ConvTranspose weights transposed back to
   [out, in, k...]), so every tensor's placement matters;
2. `geonetc export --weights` that file; `onnx.checker.check_model(full_check=True)`
   (which also runs ONNX shape inference against our value_info);
3. onnxruntime on a random input of the declared shape (batch 2) against
   `geonetc infer --backend interp` (the f64 reference) on the same .npy;
   relative error = max|ort - infer| / max|infer|, required <= 1e-5.

Models with several inputs are checked by onnx.checker and run in onnxruntime, but `infer`
takes one input, so they are not compared. Usage:

    pip install onnx onnxruntime numpy
    cargo build --release
    python3 scripts/onnx_check.py [target/release/geonetc]
"""

import glob
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOLERANCE = 1e-5


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {r.returncode}: {r.stderr.strip()}")
    return r


def write_safetensors(path, tensors):
    """The safetensors format: u64 header length, JSON header, raw little-endian data."""
    header, offset, blobs = {}, 0, []
    for name, array in tensors.items():
        data = np.ascontiguousarray(array, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def random_weights(onnx_path, rng):
    """geonet-layout tensors from an export, biases and batchnorm state randomised."""
    model = onnx.load(onnx_path)
    transposed = {n.input[1] for n in model.graph.node if n.op_type == "ConvTranspose"}
    bn = {}
    for n in model.graph.node:
        if n.op_type == "BatchNormalization":
            bn.update({n.input[1]: "scale", n.input[2]: "shift", n.input[3]: "mean", n.input[4]: "var"})
    out = {}
    for t in model.graph.initializer:
        if t.name.endswith(".scales"):
            continue
        a = numpy_helper.to_array(t).astype(np.float64)
        if t.name in transposed:
            a = np.swapaxes(a, 0, 1)
        role = bn.get(t.name)
        if role == "var":
            a = rng.uniform(0.5, 2.0, a.shape)
        elif role == "scale":
            a = rng.uniform(0.5, 1.5, a.shape)
        elif role in ("shift", "mean") or t.name.endswith(".bias"):
            a = rng.uniform(-0.5, 0.5, a.shape)
        out[t.name] = a
    return out


def check(geonetc, path, work, rng):
    name = os.path.splitext(os.path.basename(path))[0]
    info = json.loads(subprocess.run([geonetc, "check", path, "--format", "json"], capture_output=True, text=True).stdout)
    first = os.path.join(work, f"{name}.init.onnx")
    run([geonetc, "export", path, "--init-seed", "1", "--output", first])
    weights = os.path.join(work, f"{name}.safetensors")
    write_safetensors(weights, random_weights(first, rng))
    model_path = os.path.join(work, f"{name}.onnx")
    run([geonetc, "export", path, "--weights", weights, "--output", model_path])
    model = onnx.load(model_path)
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    feeds = {}
    for inp in info["inputs"]:
        feeds[inp["name"]] = rng.uniform(-1, 1, [2] + inp["shape"]).astype(np.float32)
    got = session.run(None, feeds)
    symbolic = [d.dim_param for i in model.graph.input for d in i.type.tensor_type.shape.dim if d.dim_param]
    if len(feeds) != 1:
        return name, None, f"{len(model.graph.node)} nodes, {len(feeds)} inputs: checker + ORT run only", symbolic
    x = next(iter(feeds.values()))
    npy_in, npy_out = os.path.join(work, f"{name}.in.npy"), os.path.join(work, f"{name}.out.npy")
    np.save(npy_in, x.astype(np.float64))
    run([geonetc, "infer", path, "--weights", weights, "--input", npy_in, "--output", npy_out, "--backend", "interp"])
    expected = np.load(npy_out)
    err = float(np.max(np.abs(got[0].astype(np.float64) - expected)) / max(np.max(np.abs(expected)), 1e-12))
    return name, err, f"{len(model.graph.node)} nodes", symbolic


def main():
    geonetc = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "release", "geonetc")
    files = sorted(glob.glob(os.path.join(ROOT, "examples", "*.geonet")))
    files += sorted(glob.glob(os.path.join(ROOT, "tests", "fixtures", "onnx_ops*.geonet")))
    files += sorted(glob.glob(os.path.join(ROOT, "..", "shared", "peers", "*.geonet")))
    rng = np.random.default_rng(2026)
    failed = 0
    print(f"onnx {onnx.__version__}, onnxruntime {ort.__version__}")
    with tempfile.TemporaryDirectory() as work:
        for path in files:
            try:
                name, err, note, symbolic = check(geonetc, path, work, rng)
            except Exception as e:  # one line per failing model, then go on
                failed += 1
                print(f"FAIL {os.path.relpath(path, ROOT)}: {e}")
                continue
            ok = err is None or err <= TOLERANCE
            failed += not ok
            shown = "   n/a  " if err is None else f"{err:.2e}"
            print(f"{'ok  ' if ok else 'FAIL'} {name:<18} rel.err {shown}  {note}; symbols {symbolic}")
    print(f"{len(files) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
