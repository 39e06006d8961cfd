"""Independent reference numbers for geonetc's quality-control measures (tests/qc.rs).

Run: python3 -m venv /tmp/venv && /tmp/venv/bin/pip install numpy scikit-image
     /tmp/venv/bin/python scripts/qc_reference.py
Writes tests/fixtures/qc/*.npy (fixed arrays, [traces, samples]) and tests/fixtures/qc/reference.json.

- SNR: 10 log10(sum clean^2 / sum (clean - x)^2), numpy.
- PSNR: skimage.metrics.peak_signal_noise_ratio(clean, x, data_range=clean.max() - clean.min()).
- SSIM: skimage.metrics.structural_similarity(clean, x, data_range=clean.max() - clean.min(),
  win_size=7, gaussian_weights=False) (uniform window, K1=0.01, K2=0.03, sample covariance).
- Local similarity (Chen & Fomel 2015), ratio form written here independently with numpy:
  s = S[ab] / sqrt(S[a^2] S[b^2] + eps^2), S = triangle smoothing (weights r - |k|, |k| < r,
  zero outside the array) with radius r_t along time and r_x across traces,
  eps = 1e-6 * r_t^2 * r_x^2 * mean(b^2). The smoothing is done by np.convolve here (the Rust code loops).
"""
import json
import os

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "qc")


def ricker(t, f):
    a = (np.pi * f * t) ** 2
    return (1 - 2 * a) * np.exp(-a)


def triangle_smooth(a, r, axis):
    w = np.array([r - abs(k) for k in range(-(r - 1), r)], dtype=np.float64)
    return np.apply_along_axis(lambda v: np.convolve(v, w, mode="same"), axis, a)


def local_similarity(a, b, r_t, r_x):
    eps = 1e-6 * r_t ** 2 * r_x ** 2 * (b * b).mean()
    sm = lambda v: triangle_smooth(triangle_smooth(v, r_t, 1), r_x, 0)
    ab, aa, bb = sm(a * b), sm(a * a), sm(b * b)
    return ab / np.sqrt(np.maximum(aa, 0) * np.maximum(bb, 0) + eps * eps)


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20261201)
    traces, samples = 40, 96
    t = np.arange(samples) * 0.004
    clean = np.zeros((traces, samples))
    for x in range(traces):
        clean[x] += ricker(t - 0.12 - 0.002 * x, 25.0)
        clean[x] -= 0.6 * ricker(t - 0.25 + 0.001 * x, 30.0)
    noisy = clean + 0.3 * rng.standard_normal(clean.shape)
    # A "denoised" estimate: the noisy section smoothed along time, some signal lost with it.
    denoised = triangle_smooth(noisy, 3, 1) / 9.0
    removed = noisy - denoised
    for name, a in [("clean", clean), ("noisy", noisy), ("denoised", denoised)]:
        np.save(os.path.join(OUT, f"{name}.npy"), a)
    r = clean.max() - clean.min()
    ref = {"data_range": r}
    for name, a in [("noisy", noisy), ("denoised", denoised)]:
        ref[name] = {
            "snr_db": 10 * np.log10((clean ** 2).sum() / ((clean - a) ** 2).sum()),
            "psnr_db": peak_signal_noise_ratio(clean, a, data_range=r),
            "ssim": structural_similarity(clean, a, data_range=r, win_size=7, gaussian_weights=False),
        }
    s = local_similarity(removed, denoised, 10, 5)
    ref["local_similarity"] = {
        "radius_samples": 10,
        "radius_traces": 5,
        "mean_abs": float(np.abs(s).mean()),
        "max": float(s.max()),
        "above_0_3": float((s > 0.3).mean()),
        # A few samples of the field, [trace, sample, value].
        "samples": [[i, j, float(s[i, j])] for i, j in [(0, 0), (3, 17), (20, 30), (39, 95), (11, 60)]],
    }
    s2 = local_similarity(noisy, clean, 4, 2)
    ref["local_similarity_noisy_clean_r4x2"] = [[i, j, float(s2[i, j])] for i, j in [(0, 0), (5, 29), (33, 70)]]
    with open(os.path.join(OUT, "reference.json"), "w") as f:
        json.dump(ref, f, indent=2)
        f.write("\n")
    print(json.dumps(ref, indent=2))


if __name__ == "__main__":
    main()
