//! How a Winograd transform forms the rows of its matrix with few vector operations: each row a
//! linear combination of a line's values ([`lin_comb`]: zero coefficients and known zeros
//! skipped, ±1 as additions), and the rows (or columns) for the points ±p formed from shared
//! half-sums ([`CombosPlan`], [`combos`]). Used by the transform kernels
//! ([`super::winograd_emit`]), the filter transform ([`super::pack`]) and the cost model's
//! operation counts ([`super::winograd_tile`]).

use super::codegen::{F32X4, fmadd};
use cranelift_codegen::ir::{InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;
use std::collections::HashMap;

/// Splatted f32 constants of one loop body (one line of a transform pass), each made once.
#[derive(Default)]
pub(crate) struct Consts(HashMap<u32, Value>);

impl Consts {
    /// `c` in all four lanes: a 16-byte constant (one load from the constant pool, where a
    /// splatted scalar is a load and a shuffle — in every line of every transform).
    pub(crate) fn get(&mut self, b: &mut FunctionBuilder, c: f64) -> Value {
        let c = c as f32;
        *self.0.entry(c.to_bits()).or_insert_with(|| {
            let bytes: Vec<u8> = (0..4).flat_map(|_| c.to_le_bytes()).collect();
            let k = b.func.dfg.constants.insert(bytes.into());
            b.ins().vconst(F32X4, k)
        })
    }
}

/// `Σ coef[k]·vals[k]` with the zero coefficients and the known zeros (`None`: inputs outside
/// the source) skipped and ±1 as additions; `None` when every term is zero.
pub(crate) fn lin_comb(
    b: &mut FunctionBuilder,
    k: &mut Consts,
    has_fma: bool,
    coef: &[f64],
    vals: &[Option<Value>],
) -> Option<Value> {
    let mut acc: Option<Value> = None;
    for (&c, &v) in coef.iter().zip(vals) {
        let Some(v) = v else { continue };
        if c == 0.0 {
            continue;
        }
        acc = Some(match acc {
            None if c == 1.0 => v,
            None if c == -1.0 => b.ins().fneg(v),
            None => {
                let kc = k.get(b, c);
                b.ins().fmul(v, kc)
            }
            Some(a) if c == 1.0 => b.ins().fadd(a, v),
            Some(a) if c == -1.0 => b.ins().fsub(a, v),
            Some(a) => {
                let kc = k.get(b, c);
                fmadd(b, has_fma, v, kc, a)
            }
        });
    }
    acc
}

/// An input of a [`CombosPlan`]: a column's value, or the sum or difference of two columns whose
/// coefficients agree up to sign in every row (formed once, used by every row).
#[derive(Clone, Copy, Debug, PartialEq)]
enum PlanInput {
    Col(usize),
    Sum(usize, usize),
    Diff(usize, usize),
}

/// One output of a [`CombosPlan`]: a row formed on its own, or two rows that agree up to sign
/// input by input, formed as `E + O` and `E − O` from the same two partial sums.
#[derive(Clone, Copy, Debug, PartialEq)]
enum PlanOutput {
    Row(usize),
    Pair(usize, usize),
}

/// How [`combos`] forms the rows of a transform matrix with fewer operations. The Winograd
/// matrices are built from points ±p: the rows of Bᵀ and G for p and −p agree up to the sign of
/// the odd powers (row pairs), and the columns of Aᵀ for p and −p likewise (column pairs):
/// F(6×6)'s input transform then takes 29 vector operations per line instead of 42, its output
/// transform 20 instead of 32 (F(4×4): 18 instead of 22, 10 instead of 14).
#[derive(Debug)]
struct CombosPlan {
    inputs: Vec<PlanInput>,
    /// `keep × inputs.len()` coefficients on the inputs.
    coef: Vec<f64>,
    outputs: Vec<PlanOutput>,
}

/// Vector operations [`lin_comb`] emits for `coef`: one per term after the first, and one for
/// the first unless it is 1.
fn lin_comb_ops(coef: &[f64]) -> usize {
    let mut nz = coef.iter().filter(|c| **c != 0.0);
    match nz.next() {
        None => 0,
        Some(&first) => usize::from(first != 1.0) + nz.count(),
    }
}

impl CombosPlan {
    /// The plan of the first `keep` rows of `l` (`keep × n` of an `r × n` matrix) when only the
    /// inputs with `present[j]` are known to be non-zero.
    fn new(l: &[f64], n: usize, keep: usize, present: &[bool]) -> CombosPlan {
        let c = |r: usize, j: usize| if present[j] { l[r * n + j] } else { 0.0 };
        let column_used = |j: usize| (0..keep).any(|r| c(r, j) != 0.0);
        // Column pairs, where at least two rows use both (else nothing is saved).
        let mut inputs = vec![];
        let mut columns: Vec<Vec<f64>> = vec![];
        let mut taken = vec![false; n];
        for j in 0..n {
            if taken[j] || !column_used(j) {
                continue;
            }
            taken[j] = true;
            let partner = (j + 1..n).find(|&k| {
                !taken[k]
                    && (0..keep).all(|r| c(r, k) == c(r, j) || c(r, k) == -c(r, j))
                    && (0..keep).filter(|&r| c(r, j) != 0.0).count() >= 2
            });
            match partner {
                Some(k) => {
                    taken[k] = true;
                    let same: Vec<f64> =
                        (0..keep).map(|r| if c(r, k) == c(r, j) { c(r, j) } else { 0.0 }).collect();
                    let opposite: Vec<f64> =
                        (0..keep).map(|r| if c(r, k) != c(r, j) { c(r, j) } else { 0.0 }).collect();
                    if same.iter().any(|v| *v != 0.0) {
                        inputs.push(PlanInput::Sum(j, k));
                        columns.push(same);
                    }
                    if opposite.iter().any(|v| *v != 0.0) {
                        inputs.push(PlanInput::Diff(j, k));
                        columns.push(opposite);
                    }
                }
                None => {
                    inputs.push(PlanInput::Col(j));
                    columns.push((0..keep).map(|r| c(r, j)).collect());
                }
            }
        }
        let ni = inputs.len();
        let coef: Vec<f64> = (0..keep).flat_map(|r| columns.iter().map(move |col| col[r])).collect();
        // Row pairs that agree up to sign input by input, with some of each sign, where pairing
        // saves operations (more than two terms).
        let row = |r: usize| &coef[r * ni..(r + 1) * ni];
        let mut outputs = vec![];
        let mut done = vec![false; keep];
        for p in 0..keep {
            if done[p] {
                continue;
            }
            done[p] = true;
            let partner = (p + 1..keep).find(|&q| {
                let (rp, rq) = (row(p), row(q));
                !done[q]
                    && rp.iter().zip(rq).all(|(a, b)| a == b || *a == -b)
                    && rp.iter().zip(rq).any(|(a, b)| *a != 0.0 && a == b)
                    && rp.iter().zip(rq).any(|(a, b)| *a != 0.0 && *a == -b)
                    && rp.iter().filter(|v| **v != 0.0).count() > 2
            });
            match partner {
                Some(q) => {
                    done[q] = true;
                    outputs.push(PlanOutput::Pair(p, q));
                }
                None => outputs.push(PlanOutput::Row(p)),
            }
        }
        CombosPlan { inputs, coef, outputs }
    }

    /// The even (same sign) and odd (opposite sign) parts of rows `p` and `q`, as seen from `p`.
    fn halves(&self, p: usize, q: usize) -> (Vec<f64>, Vec<f64>) {
        let ni = self.inputs.len();
        let (rp, rq) = (&self.coef[p * ni..(p + 1) * ni], &self.coef[q * ni..(q + 1) * ni]);
        let even = rp.iter().zip(rq).map(|(a, b)| if a == b { *a } else { 0.0 }).collect();
        let odd = rp.iter().zip(rq).map(|(a, b)| if a == b { 0.0 } else { *a }).collect();
        (even, odd)
    }

    /// Vector operations of the plan: the paired inputs, then each output's.
    fn ops(&self) -> usize {
        let ni = self.inputs.len();
        let paired = self.inputs.iter().filter(|i| !matches!(i, PlanInput::Col(_))).count();
        paired
            + self
                .outputs
                .iter()
                .map(|o| match *o {
                    PlanOutput::Row(r) => lin_comb_ops(&self.coef[r * ni..(r + 1) * ni]),
                    PlanOutput::Pair(p, q) => {
                        let (even, odd) = self.halves(p, q);
                        lin_comb_ops(&even) + lin_comb_ops(&odd) + 2
                    }
                })
                .sum::<usize>()
    }
}

/// Vector operations of the first `keep` rows of `l` (`n` columns) as [`combos`] forms them
/// from `n` known values: the cost model's count of a transform pass.
pub(crate) fn combos_ops(l: &[f64], n: usize, keep: usize) -> usize {
    CombosPlan::new(l, n, keep, &vec![true; n]).ops()
}

/// The `keep` combinations `Σ_q l[p·n + q]·vals[q]` for `p < keep` (`n = vals.len()`), `None`
/// where every term is zero, formed by a [`CombosPlan`] (column and row pairs shared).
pub(crate) fn combos(
    b: &mut FunctionBuilder,
    k: &mut Consts,
    has_fma: bool,
    l: &[f64],
    vals: &[Option<Value>],
    keep: usize,
) -> Vec<Option<Value>> {
    let n = vals.len();
    let present: Vec<bool> = vals.iter().map(Option::is_some).collect();
    let plan = CombosPlan::new(l, n, keep, &present);
    let inputs: Vec<Option<Value>> = plan
        .inputs
        .iter()
        .map(|input| match *input {
            PlanInput::Col(j) => vals[j],
            PlanInput::Sum(i, j) => vals[i].zip(vals[j]).map(|(x, y)| b.ins().fadd(x, y)),
            PlanInput::Diff(i, j) => vals[i].zip(vals[j]).map(|(x, y)| b.ins().fsub(x, y)),
        })
        .collect();
    let ni = inputs.len();
    let mut out = vec![None; keep];
    for o in &plan.outputs {
        match *o {
            PlanOutput::Row(r) => out[r] = lin_comb(b, k, has_fma, &plan.coef[r * ni..(r + 1) * ni], &inputs),
            PlanOutput::Pair(p, q) => {
                let (even, odd) = plan.halves(p, q);
                let e = lin_comb(b, k, has_fma, &even, &inputs);
                let o = lin_comb(b, k, has_fma, &odd, &inputs);
                (out[p], out[q]) = match (e, o) {
                    (Some(e), Some(o)) => (Some(b.ins().fadd(e, o)), Some(b.ins().fsub(e, o))),
                    (Some(e), None) => (Some(e), Some(e)),
                    (None, Some(o)) => (Some(o), Some(b.ins().fneg(o))),
                    (None, None) => (None, None),
                };
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jit::winograd_tile::Tile;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The plan's outputs computed in f64 the way [`combos`] emits them.
    fn evaluate(plan: &CombosPlan, vals: &[f64], keep: usize) -> Vec<f64> {
        let inputs: Vec<f64> = plan
            .inputs
            .iter()
            .map(|i| match *i {
                PlanInput::Col(j) => vals[j],
                PlanInput::Sum(i, j) => vals[i] + vals[j],
                PlanInput::Diff(i, j) => vals[i] - vals[j],
            })
            .collect();
        let ni = inputs.len();
        let dot = |c: &[f64]| c.iter().zip(&inputs).map(|(c, v)| c * v).sum::<f64>();
        let mut out = vec![f64::NAN; keep];
        for o in &plan.outputs {
            match *o {
                PlanOutput::Row(r) => out[r] = dot(&plan.coef[r * ni..(r + 1) * ni]),
                PlanOutput::Pair(p, q) => {
                    let (even, odd) = plan.halves(p, q);
                    out[p] = dot(&even) + dot(&odd);
                    out[q] = dot(&even) - dot(&odd);
                }
            }
        }
        out
    }

    /// Every transform matrix of every tile (Bᵀ, Aᵀ, A = (Aᵀ)ᵀ, G), all rows and fewer, with
    /// random inputs known to be zero: the plan forms exactly `l · vals` (to f64 round-off),
    /// every output exactly once.
    #[test]
    fn a_combos_plan_forms_the_matrix_product() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for tile in [Tile::F2, Tile::F4, Tile::F6] {
            let (m, a) = (tile.m(), tile.alpha());
            let at = tile.at();
            let a_mat: Vec<f64> = (0..a * m).map(|k| at[(k % m) * a + k / m]).collect();
            let mats: [(&[f64], usize, usize); 4] =
                [(tile.bt(), a, a), (at, m, a), (&a_mat, a, m), (tile.g(), a, 3)];
            for (l, rows, n) in mats {
                for keep in 1..=rows {
                    for _ in 0..8 {
                        let present: Vec<bool> = (0..n).map(|_| rng.random_range(0..4) > 0).collect();
                        let vals: Vec<f64> = (0..n)
                            .map(|j| if present[j] { rng.random_range(-1.0..1.0) } else { 0.0 })
                            .collect();
                        let plan = CombosPlan::new(l, n, keep, &present);
                        let got = evaluate(&plan, &vals, keep);
                        for r in 0..keep {
                            let want: f64 = (0..n).map(|j| l[r * n + j] * vals[j]).sum();
                            assert!((got[r] - want).abs() < 1e-12, "{tile:?} {rows}x{n} keep {keep} row {r}");
                        }
                    }
                }
            }
        }
    }

    /// The saving the plan is for (counted, not timed): F(6×6)'s input transform line in 29
    /// operations instead of the 42 of one combination per row, its output transform in 20
    /// instead of 32; never more than one combination per row.
    #[test]
    fn pairing_saves_operations_on_the_winograd_matrices() {
        let plain = |l: &[f64], n: usize, keep: usize| -> usize {
            (0..keep).map(|r| lin_comb_ops(&l[r * n..(r + 1) * n])).sum()
        };
        // Counted by hand from the matrices (winograd_tile.rs): e.g. Bᵀ's rows 1 and 2 of F(6×6),
        // 5 + 5 operations alone, are d₂ − 17/4·d₄ + d₆ (2) and d₁ − 17/4·d₃ + d₅ (2) then a sum
        // and a difference (2): 6.
        assert_eq!((plain(Tile::F6.bt(), 8, 8), combos_ops(Tile::F6.bt(), 8, 8)), (42, 29));
        assert_eq!((plain(Tile::F6.at(), 8, 6), combos_ops(Tile::F6.at(), 8, 6)), (32, 20));
        assert_eq!((plain(Tile::F4.bt(), 6, 6), combos_ops(Tile::F4.bt(), 6, 6)), (22, 18));
        assert_eq!((plain(Tile::F4.at(), 6, 4), combos_ops(Tile::F4.at(), 6, 4)), (14, 10));
        for tile in [Tile::F2, Tile::F4, Tile::F6] {
            let (m, a) = (tile.m(), tile.alpha());
            for (l, rows, n) in [(tile.bt(), a, a), (tile.at(), m, a), (tile.g(), a, 3)] {
                for keep in 1..=rows {
                    assert!(combos_ops(l, n, keep) <= plain(l, n, keep), "{tile:?} {rows}x{n} keep {keep}");
                }
            }
        }
    }
}
