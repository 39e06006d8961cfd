#!/usr/bin/env python3
"""Calibrates the Winograd cost model (`TRANSFORM_COST` in src/jit/winograd_choice.rs).

Runs `geonetc bench --profile` on each workload under every forced algorithm (direct, F(2x2),
F(4x4), F(6x6)), keeps each 3x3 layer's fastest forward and backward time over `--reps` runs,
then replays the cost model of src/jit/winograd_choice.rs (same formulas, matrices read from the
source) for a grid of TRANSFORM_COST values and prints, per value, the milliseconds lost
against each layer's measured fastest algorithm, summed over the layers.

    python3 scripts/calibrate_winograd.py target/release/geonetc

Run it on a quiet machine; a layer's time moves by 5-10 % between runs on a shared one.
"""
import argparse
import collections
import json
import re
import subprocess

WORKLOADS = [
    ("../shared/spec/examples/unet_s.geonet", 8),
    ("../shared/peers/dncnn17.geonet", 8),
    ("../shared/peers/unet_bn.geonet", 8),
    ("../shared/peers/conv16.geonet", 16),
]
ALGOS = {"direct": None, "winograd2": 2, "winograd": 4, "winograd6": 6}
ROW = re.compile(r"\s*(\S+)\s+conv\s+\S+\s+([\d.]+)\s+([\d.]+)\s+\d+ %\s+(.*)")


def matrix(src, name):
    body = re.search(r"const " + name + r": \[f64; \d+\] = \[(.*?)\];", src, re.S).group(1)
    body = re.sub(r"//.*", "", body)
    return [eval(t.strip()) for t in body.replace("\n", " ").split(",") if t.strip()]


def lin_comb_ops(coef):
    """winograd_emit::lin_comb_ops: one operation per term after the first, one for the first
    unless it is 1."""
    nz = [c for c in coef if c != 0]
    return 0 if not nz else int(nz[0] != 1.0) + len(nz) - 1


def combos_ops(l, n, keep):
    """winograd_emit::combos_ops: the operations of CombosPlan (column pairs, then row pairs)."""
    c = lambda r, j: l[r * n + j]
    cols, paired, taken = [], 0, [False] * n
    for j in range(n):
        if taken[j] or not any(c(r, j) != 0 for r in range(keep)):
            continue
        taken[j] = True
        partner = next((k for k in range(j + 1, n)
                        if not taken[k] and all(c(r, k) in (c(r, j), -c(r, j)) for r in range(keep))
                        and sum(1 for r in range(keep) if c(r, j) != 0) >= 2), None)
        if partner is None:
            cols.append([c(r, j) for r in range(keep)])
            continue
        taken[partner] = True
        same = [c(r, j) if c(r, partner) == c(r, j) else 0.0 for r in range(keep)]
        opposite = [c(r, j) if c(r, partner) != c(r, j) else 0.0 for r in range(keep)]
        for col in (same, opposite):
            if any(v != 0 for v in col):
                cols.append(col)
                paired += 1
    row = lambda r: [col[r] for col in cols]
    done, ops = [False] * keep, paired
    for p in range(keep):
        if done[p]:
            continue
        done[p] = True
        rp = row(p)
        partner = next((q for q in range(p + 1, keep)
                        if not done[q] and all(a in (b, -b) for a, b in zip(rp, row(q)))
                        and any(a != 0 and a == b for a, b in zip(rp, row(q)))
                        and any(a != 0 and a == -b for a, b in zip(rp, row(q)))
                        and sum(1 for v in rp if v != 0) > 2), None)
        if partner is None:
            ops += lin_comb_ops(rp)
        else:
            done[partner] = True
            rq = row(partner)
            even = [a if a == b else 0.0 for a, b in zip(rp, rq)]
            odd = [0.0 if a == b else a for a, b in zip(rp, rq)]
            ops += lin_comb_ops(even) + lin_comb_ops(odd) + 2
    return ops


def transform_ops(src, m):
    """Tile::transform_ops of src/jit/winograd_tile.rs."""
    a = m + 2
    bt, at = matrix(src, f"F{m}_BT"), matrix(src, f"F{m}_AT")
    return 2 * a * combos_ops(bt, a, a) + 4 * a * a, (a + m) * combos_ops(at, a, m) + a * a + 2 * a * m + 3 * m * m


def cost(src, ci, co, h, w, m, tc):
    """winograd::cost per output position, in GEMM multiply-adds of 4 lanes."""
    r4 = lambda c: (c + 3) // 4 * 4
    if m is None:
        return 9 * ci * r4(co) / 4
    a = m + 2
    inp, out = transform_ops(src, m)
    waste = (-(-h // m)) * (-(-w // m)) * m * m / (h * w)
    return waste * (a * a * ci * r4(co) / 4 + tc * (inp * r4(ci) / 4 + out * r4(co) / 4)) / (m * m)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("geonetc")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--source", default="src/jit/winograd_tile.rs", help="where the matrices are")
    args = ap.parse_args()
    src = open(args.source).read()
    times = collections.defaultdict(dict)  # (workload, layer) -> algo -> (fwd, bwd)
    geometry = {}
    for path, batch in WORKLOADS:
        check = json.loads(subprocess.run([args.geonetc, "check", path, "--format", "json"],
                                          capture_output=True, text=True).stdout)
        shapes = {l["name"]: (l["shape"], l["params"]) for l in check["layers"]}
        for _ in range(args.reps):
            for algo in ALGOS:
                out = subprocess.run([args.geonetc, "bench", path, "--batch", str(batch), "--steps", "4",
                                      "--threads", "2", "--conv", algo, "--profile"],
                                     capture_output=True, text=True).stdout
                for line in out.splitlines():
                    row = ROW.match(line)
                    if not row:
                        continue
                    key = (path.split("/")[-1], row.group(1))
                    f, b = float(row.group(2)), float(row.group(3))
                    old = times[key].get(algo, (f, b))
                    times[key][algo] = (min(old[0], f), min(old[1], b))
                    if algo == "winograd" and row.group(4).startswith("F("):
                        (co, h, w), params = shapes[row.group(1)]
                        geometry[key] = ((params // co - 1) // 9, co, h, w)  # 3x3 with bias
    layers = [k for k in times if k in geometry]
    print(f"{'layer':45s} {'ci':>4s} {'co':>4s} {'size':>8s}  " + "  ".join(f"{a:>15s}" for a in ALGOS))
    for k in layers:
        ci, co, h, w = geometry[k]
        cells = "  ".join(f"{times[k][a][0]:6.2f} / {times[k][a][1]:6.2f}" for a in ALGOS)
        print(f"{k[0] + ' ' + k[1]:45s} {ci:4d} {co:4d} {h:4d}x{w:<4d}  {cells}")
    print("\nms lost against each layer's fastest algorithm (forward, backward), per TRANSFORM_COST:")
    for tc in [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0]:
        lost = [0.0, 0.0]
        for k in layers:
            ci, co, h, w = geometry[k]
            direct = cost(src, ci, co, h, w, None, tc)
            options = [(cost(src, ci, co, h, w, m, tc), m) for m in (4, 2, 6)]
            options = [o for o in options if o[0] * 1.15 < direct]  # MARGIN
            pick = min(options)[1] if options else None
            algo = next(a for a, m in ALGOS.items() if m == pick)
            for d in (0, 1):
                lost[d] += times[k][algo][d] - min(t[d] for t in times[k].values())
        print(f"  {tc:5.2f}: {lost[0]:6.2f} {lost[1]:6.2f}")


if __name__ == "__main__":
    main()
