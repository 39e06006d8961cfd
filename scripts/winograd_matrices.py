"""Independent check of the Winograd transform matrices geonetc's JIT uses (src/jit/winograd_tile.rs).

For F(2x2, 3x3), F(4x4, 3x3) (Lavin & Gray 2016, interpolation points 0, ±1, ±2, ∞) and
F(6x6, 3x3) (points 0, ±1, ±2, ±1/2, ∞), checks
in float64 that A^T [(G g G^T) * (B^T d B)] A equals the 3x3 cross-correlation of a random
(m+2)x(m+2) tile d with a random filter g, and prints the worst error; then the same in float32
to show the round-off the JIT's f32 arithmetic can expect. Run: python3 scripts/winograd_matrices.py
"""
import numpy as np

F2 = dict(
    m=2,
    BT=[[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
    G=[[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]],
    AT=[[1, 1, 1, 0], [0, 1, -1, -1]],
)
F4 = dict(
    m=4,
    BT=[
        [4, 0, -5, 0, 1, 0],
        [0, -4, -4, 1, 1, 0],
        [0, 4, -4, -1, 1, 0],
        [0, -2, -1, 2, 1, 0],
        [0, 2, -1, -2, 1, 0],
        [0, 4, 0, -5, 0, 1],
    ],
    G=[
        [1 / 4, 0, 0],
        [-1 / 6, -1 / 6, -1 / 6],
        [-1 / 6, 1 / 6, -1 / 6],
        [1 / 24, 1 / 12, 1 / 6],
        [1 / 24, -1 / 12, 1 / 6],
        [0, 0, 1],
    ],
    AT=[[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
)

F6 = dict(
    m=6,
    BT=[
        [1, 0, -21 / 4, 0, 21 / 4, 0, -1, 0],
        [0, 1, 1, -17 / 4, -17 / 4, 1, 1, 0],
        [0, -1, 1, 17 / 4, -17 / 4, -1, 1, 0],
        [0, 1 / 2, 1 / 4, -5 / 2, -5 / 4, 2, 1, 0],
        [0, -1 / 2, 1 / 4, 5 / 2, -5 / 4, -2, 1, 0],
        [0, 2, 4, -5 / 2, -5, 1 / 2, 1, 0],
        [0, -2, 4, 5 / 2, -5, -1 / 2, 1, 0],
        [0, -1, 0, 21 / 4, 0, -21 / 4, 0, 1],
    ],
    G=[
        [1, 0, 0],
        [-2 / 9, -2 / 9, -2 / 9],
        [-2 / 9, 2 / 9, -2 / 9],
        [1 / 90, 1 / 45, 2 / 45],
        [1 / 90, -1 / 45, 2 / 45],
        [32 / 45, 16 / 45, 8 / 45],
        [32 / 45, -16 / 45, 8 / 45],
        [0, 0, 1],
    ],
    AT=[
        [1, 1, 1, 1, 1, 1, 1, 0],
        [0, 1, -1, 2, -2, 1 / 2, -1 / 2, 0],
        [0, 1, 1, 4, 4, 1 / 4, 1 / 4, 0],
        [0, 1, -1, 8, -8, 1 / 8, -1 / 8, 0],
        [0, 1, 1, 16, 16, 1 / 16, 1 / 16, 0],
        [0, 1, -1, 32, -32, 1 / 32, -1 / 32, 1],
    ],
)


def corr(d, g, m):
    return np.array([[np.sum(d[i : i + 3, j : j + 3] * g) for j in range(m)] for i in range(m)])


def check(F, dtype, rng, channels=64):
    m = F["m"]
    BT, G, AT = (np.array(F[k], dtype=dtype) for k in ("BT", "G", "AT"))
    worst = 0.0
    for _ in range(200):
        d = rng.standard_normal((channels, m + 2, m + 2)).astype(dtype)
        g = rng.standard_normal((channels, 3, 3)).astype(dtype)
        exact = sum(corr(d[c].astype(np.float64), g[c].astype(np.float64), m) for c in range(channels))
        V = np.einsum("ik,ckl,jl->cij", BT, d, BT)
        U = np.einsum("ik,ckl,jl->cij", G, g, G)
        Y = AT @ (U * V).sum(axis=0) @ AT.T
        scale = np.abs(exact).max()
        worst = max(worst, np.abs(Y - exact).max() / scale)
    return worst


rng = np.random.default_rng(11)
for name, F in (("F(2x2,3x3)", F2), ("F(4x4,3x3)", F4), ("F(6x6,3x3)", F6)):
    e64 = check(F, np.float64, rng)
    e32 = check(F, np.float32, rng)
    print(f"{name}: worst error / output scale, float64 {e64:.2e}, float32 {e32:.2e}")
    assert e64 < 1e-12, "the matrices do not compute the correlation"
