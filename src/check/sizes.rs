//! Which input sizes a checked model accepts, and the receptive field of every layer.
//!
//! Both are derived by composing the layers' own size rules ([`Op::output_shape`]), so they
//! can never disagree with what `check` says about a given size:
//!
//! - **Accepted sizes**, per input and spatial axis (the other axes kept as declared): the
//!   model's layers are re-run on sizes `1, 2, 3, ...` up to a bound past a few periods of the
//!   product of every stride and pooling factor, and the accepted set is described as a rule
//!   (`multiples of 16`, `N = 4k + 1, at least 5`, `62 to 65`). A layer whose parameter
//!   shapes depend on its input size (a dense layer's weights fix its feature count) accepts
//!   only the input it was declared with. `exact` is the same without the
//!   sizes where some stride drops trailing samples along that axis.
//! - **Receptive field**, per layer and spatial axis, in input samples, as (extent, jump)
//!   composed through each op's own step ([`crate::ops::OpRules::reach`]): e.g.
//!   `r ← r + (k_eff − 1)·j`, `j ← j·stride` for conv and pooling; merges take the largest;
//!   after a flattening layer every output sees the whole input. With up-sampling layers the
//!   figure is the largest over output positions.

use super::program::{Model, ValueRef};
use super::shape_errors::axis_name;
use crate::ops::{Reach, Shape, ShapeWarning};

/// A set of sizes along one axis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SizeRule {
    /// Every `N ≥ min` with `N ≡ min (mod modulus)`.
    Periodic { min: usize, modulus: usize },
    /// Exactly these inclusive ranges.
    Ranges(Vec<(usize, usize)>),
}

impl SizeRule {
    /// `any size ≥ 3`, `multiples of 16`, `N = 4k + 1 (≥ 5)`, `62 to 65`, `none`.
    pub fn describe(&self) -> String {
        match self {
            SizeRule::Periodic { min, modulus: 1 } => format!("any size ≥ {min}"),
            SizeRule::Periodic { min, modulus } if min % modulus == 0 => {
                if min == modulus {
                    format!("multiples of {modulus}")
                } else {
                    format!("multiples of {modulus}, at least {min}")
                }
            }
            SizeRule::Periodic { min, modulus } => {
                format!("N = {modulus}k + {} (N ≥ {min})", min % modulus)
            }
            SizeRule::Ranges(r) if r.is_empty() => "none".into(),
            SizeRule::Ranges(r) => r
                .iter()
                .map(|&(a, b)| if a == b { a.to_string() } else { format!("{a} to {b}") })
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// Whether `n` is in the set.
    pub fn contains(&self, n: usize) -> bool {
        match self {
            SizeRule::Periodic { min, modulus } => n >= *min && (n - min).is_multiple_of(*modulus),
            SizeRule::Ranges(r) => r.iter().any(|&(a, b)| a <= n && n <= b),
        }
    }

    /// The smallest size in the set.
    pub fn min(&self) -> Option<usize> {
        match self {
            SizeRule::Periodic { min, .. } => Some(*min),
            SizeRule::Ranges(r) => r.first().map(|p| p.0),
        }
    }

    /// The step between accepted sizes (1 for finite sets).
    pub fn modulus(&self) -> usize {
        match self {
            SizeRule::Periodic { modulus, .. } => *modulus,
            SizeRule::Ranges(_) => 1,
        }
    }
}

/// Accepted sizes along one spatial axis of one input.
#[derive(Clone, Debug, PartialEq)]
pub struct AxisSizes {
    pub input: String,
    /// `length`, `height` or `width`.
    pub axis: &'static str,
    /// Index among the input's spatial axes.
    pub axis_index: usize,
    pub declared: usize,
    /// Sizes `check` accepts (warnings allowed).
    pub accepted: SizeRule,
    /// Accepted sizes where no stride drops samples.
    pub exact: SizeRule,
}

/// The receptive field of one value: samples per spatial axis, or the whole input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Field {
    /// One entry per spatial axis of the value (empty for a flat value fed by flat inputs).
    Axes(Vec<u64>),
    /// Depends on every input sample (after `flatten` or `dense`).
    Whole,
}

impl Field {
    /// `5×5`, `17`, `whole input`, `—`.
    pub fn describe(&self) -> String {
        match self {
            Field::Axes(a) if a.is_empty() => "—".into(),
            Field::Axes(a) => a.iter().map(|v| v.to_string()).collect::<Vec<_>>().join("×"),
            Field::Whole => "whole input".into(),
        }
    }
}

/// The size analysis of a model.
#[derive(Clone, Debug, PartialEq)]
pub struct Sizes {
    /// Per input, per spatial axis, in order.
    pub inputs: Vec<AxisSizes>,
    /// Receptive field of each layer's output, parallel to `model.layers`.
    pub layers: Vec<Field>,
    /// Receptive field of each model output, parallel to `model.outputs`.
    pub outputs: Vec<Field>,
}

/// Largest size probed along one axis; keeps the analysis fast on any model.
const MAX_PROBE: usize = 4096;
/// Layer evaluations allowed per axis: very deep models probe fewer sizes.
const BUDGET: usize = 1 << 21;

pub fn analyze(model: &Model) -> Sizes {
    let mut inputs = vec![];
    for (i, t) in model.inputs.iter().enumerate() {
        let spatial = t.shape.len().saturating_sub(1);
        if t.shape.len() < 2 {
            continue;
        }
        for axis in 0..spatial {
            let declared = t.shape[axis + 1];
            let (accepted, exact) = probe_axis(model, i, axis, declared);
            inputs.push(AxisSizes {
                input: t.name.clone(),
                axis: axis_name(axis, spatial),
                axis_index: axis,
                declared,
                accepted,
                exact,
            });
        }
    }
    let layers = receptive_fields(model);
    let outputs = model
        .outputs
        .iter()
        .map(|o| match o.value {
            ValueRef::Layer(l) => layers.get(l).cloned().unwrap_or(Field::Whole),
            ValueRef::Input(_) => Field::Axes(vec![1; o.shape.len().saturating_sub(1)]),
        })
        .collect();
    Sizes { inputs, layers, outputs }
}

/// The model's verdict at one input shape: `None` if rejected, else whether a stride drops
/// samples along spatial axis `axis` somewhere.
fn run_shapes(model: &Model, inputs: &[Shape], axis: usize, declared: &[Vec<Shape>]) -> Option<bool> {
    let mut shapes: Vec<Shape> = Vec::with_capacity(model.layers.len());
    let mut drops = false;
    for (layer, declared_params) in model.layers.iter().zip(declared) {
        let ins: Vec<&[usize]> = layer
            .inputs
            .iter()
            .map(|r| match r {
                ValueRef::Input(i) => inputs.get(*i).map(|s| s.as_slice()),
                ValueRef::Layer(l) => shapes.get(*l).map(|s| s.as_slice()),
            })
            .collect::<Option<_>>()?;
        // Weights are trained at the declared size: parameter shapes must not change.
        if !declared_params.is_empty() && param_shapes(layer, &ins) != *declared_params {
            return None;
        }
        let (shape, warnings) = layer.op.output_shape(&ins).ok()?;
        drops |= warnings
            .iter()
            .any(|w| matches!(w, ShapeWarning::StrideDropsSamples { axis: a, .. } if *a == axis));
        shapes.push(shape);
    }
    Some(drops)
}

fn param_shapes(layer: &super::program::Layer, inputs: &[&[usize]]) -> Vec<Shape> {
    layer.op.params(inputs).into_iter().map(|p| p.shape).collect()
}

/// Every layer's parameter shapes at the declared input sizes.
fn declared_params(model: &Model) -> Vec<Vec<Shape>> {
    model
        .layers
        .iter()
        .map(|l| {
            let ins: Vec<&[usize]> = l
                .inputs
                .iter()
                .map(|r| match r {
                    ValueRef::Input(i) => model.inputs.get(*i).map_or(&[][..], |t| t.shape.as_slice()),
                    ValueRef::Layer(j) => model.layers.get(*j).map_or(&[][..], |t| t.shape.as_slice()),
                })
                .collect();
            param_shapes(l, &ins)
        })
        .collect()
}

/// The product of every stride along `axis` (saturating): sizes repeat their fate with this
/// period.
fn period(model: &Model, axis: usize) -> usize {
    let mut p: usize = 1;
    for l in &model.layers {
        let s = l.op.rules().axis_rule(axis, 1).map_or(1, |r| r.stride());
        p = p.saturating_mul(s.max(1));
    }
    p
}

/// Largest period the size-by-size probe handles; past it (or past the probe's reach) sizes are
/// sampled around multiples of the period instead.
const MAX_DENSE_PERIOD: usize = MAX_PROBE / 8;

fn probe_axis(model: &Model, input: usize, axis: usize, declared: usize) -> (SizeRule, SizeRule) {
    let p = period(model, axis);
    let base: Vec<Shape> = model.inputs.iter().map(|t| t.shape.clone()).collect();
    let declared_params = declared_params(model);
    let limit = (BUDGET / model.layers.len().max(1)).clamp(16, MAX_PROBE);
    if p > MAX_DENSE_PERIOD || declared > limit {
        return probe_sparse(model, input, axis, declared, p, &declared_params);
    }
    let mut accepted = vec![false];
    let mut exact = vec![false];
    let mut first: Option<usize> = None;
    let mut n = 1;
    loop {
        let mut shapes = base.clone();
        if let Some(d) = shapes.get_mut(input).and_then(|s| s.get_mut(axis + 1)) {
            *d = n;
        }
        let verdict = run_shapes(model, &shapes, axis, &declared_params);
        accepted.push(verdict.is_some());
        exact.push(verdict == Some(false));
        if verdict.is_some() && first.is_none() {
            first = Some(n);
        }
        // Probe a few periods past the first accepted size (and past the declared one).
        let end = first.map_or(declared, |f| f.max(declared.min(f + 8 * p))) + 4 * p + 16;
        if n >= end.min(limit) {
            break;
        }
        n += 1;
    }
    (describe_set(&accepted, p), describe_set(&exact, p))
}

/// For strides whose product `p` is too large to probe size by size (or a declared size past the
/// probe's reach): the sizes 1..=64, windows around the first multiples of `p` and around the
/// declared size are probed, and the smallest step among the divisors of `p` that explains every
/// sample is the rule's modulus. The declared size is always among the samples, so a model that
/// accepts its own input never reads "none".
fn probe_sparse(
    model: &Model,
    input: usize,
    axis: usize,
    declared: usize,
    p: usize,
    declared_params: &[Vec<Shape>],
) -> (SizeRule, SizeRule) {
    const WINDOW: usize = 16;
    let mut points = std::collections::BTreeSet::new();
    points.extend(1..=64);
    let mut centres = vec![declared];
    centres.extend((1..=4).filter_map(|k| p.checked_mul(k)));
    for c in centres {
        points.extend(c.saturating_sub(WINDOW).max(1)..=c.saturating_add(WINDOW));
    }
    let base: Vec<Shape> = model.inputs.iter().map(|t| t.shape.clone()).collect();
    let verdict = |n: usize| {
        let mut shapes = base.clone();
        if let Some(d) = shapes.get_mut(input).and_then(|s| s.get_mut(axis + 1)) {
            *d = n;
        }
        run_shapes(model, &shapes, axis, declared_params)
    };
    let mut verdicts: std::collections::BTreeMap<usize, Option<bool>> =
        points.into_iter().map(|n| (n, verdict(n))).collect();
    // Then one step of every divisor of `p` past each rule's first member, so that no smaller
    // modulus than the true one explains the samples.
    let firsts: Vec<usize> =
        [verdicts.iter().find(|v| v.1.is_some()), verdicts.iter().find(|v| *v.1 == Some(false))]
            .into_iter()
            .flatten()
            .map(|v| *v.0)
            .collect();
    for first in firsts {
        for d in divisors(p) {
            if let Some(n) = first.checked_add(d) {
                verdicts.entry(n).or_insert_with(|| verdict(n));
            }
        }
    }
    let accepted: Vec<(usize, bool)> = verdicts.iter().map(|(&n, v)| (n, v.is_some())).collect();
    let exact: Vec<(usize, bool)> = verdicts.iter().map(|(&n, v)| (n, *v == Some(false))).collect();
    (describe_samples(&accepted, p), describe_samples(&exact, p))
}

/// A rule from sampled membership: periodic with the smallest divisor of `p` that explains
/// every sample from the first member on, else the members themselves.
fn describe_samples(samples: &[(usize, bool)], p: usize) -> SizeRule {
    let Some(min) = samples.iter().find(|s| s.1).map(|s| s.0) else { return SizeRule::Ranges(vec![]) };
    for modulus in divisors(p) {
        if samples.iter().filter(|s| s.0 >= min).all(|&(n, member)| member == ((n - min) % modulus == 0)) {
            return SizeRule::Periodic { min, modulus };
        }
    }
    let mut ranges: Vec<(usize, usize)> = vec![];
    for &(n, member) in samples {
        if !member {
            continue;
        }
        match ranges.last_mut() {
            Some(last) if last.1 + 1 == n => last.1 = n,
            _ => ranges.push((n, n)),
        }
    }
    SizeRule::Ranges(ranges)
}

/// The divisors of `p`, ascending (just 1 and `p` past 2^40, beyond any input size).
fn divisors(p: usize) -> Vec<usize> {
    if p > 1 << 40 {
        return vec![1, p];
    }
    let mut small: Vec<usize> = (1..).take_while(|d| d * d <= p).filter(|d| p.is_multiple_of(*d)).collect();
    let large: Vec<usize> = small.iter().rev().filter(|&&d| d * d != p).map(|d| p / d).collect();
    small.extend(large);
    small
}

/// Turns the probed membership `set[n]` (n = 0..=end) into a rule: periodic when the last
/// stretch still holds sizes, ranges otherwise.
fn describe_set(set: &[bool], p: usize) -> SizeRule {
    let end = set.len().saturating_sub(1);
    let members: Vec<usize> = (1..=end).filter(|&n| set[n]).collect();
    let Some(&min) = members.first() else { return SizeRule::Ranges(vec![]) };
    let continues = end > 2 * p && members.iter().any(|&n| n + 2 * p > end);
    if continues {
        for modulus in 1..=p.max(1) {
            let periodic = (min..=end).all(|n| set[n] == ((n - min) % modulus == 0));
            if periodic {
                return SizeRule::Periodic { min, modulus };
            }
        }
    }
    let mut ranges: Vec<(usize, usize)> = vec![];
    for n in members {
        match ranges.last_mut() {
            Some(last) if last.1 + 1 == n => last.1 = n,
            _ => ranges.push((n, n)),
        }
    }
    SizeRule::Ranges(ranges)
}

fn receptive_fields(model: &Model) -> Vec<Field> {
    let mut fields: Vec<Reach> = Vec::with_capacity(model.layers.len());
    for layer in &model.layers {
        let ins: Vec<Reach> = layer
            .inputs
            .iter()
            .map(|r| match r {
                ValueRef::Input(i) => {
                    let rank = model.inputs.get(*i).map_or(0, |t| t.shape.len().saturating_sub(1));
                    Reach::Axes(vec![(1.0, 1.0); rank])
                }
                ValueRef::Layer(l) => fields.get(*l).cloned().unwrap_or(Reach::Whole),
            })
            .collect();
        fields.push(layer.op.rules().reach(&ins));
    }
    fields
        .into_iter()
        .map(|f| match f {
            Reach::Whole => Field::Whole,
            Reach::Axes(axes) => {
                Field::Axes(axes.iter().map(|&(r, _)| (r - 1e-9).ceil().max(1.0) as u64).collect())
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::check_source;

    fn sizes(src: &str) -> Sizes {
        let out = check_source(src);
        let p = out.program.unwrap_or_else(|| panic!("{:?}", out.diagnostics));
        analyze(&p.model)
    }

    #[test]
    fn two_padded_3x3_convs_see_5x5_and_take_any_size() {
        let s = sizes(
            "model m {\n input x: [1, 32, 32]\n y = x -> conv(4, kernel=3, pad=1) -> conv(1, kernel=3, pad=1)\n output y\n}\n",
        );
        // RF: 1 + 2 + 2 = 5 per axis.
        assert_eq!(s.outputs, vec![Field::Axes(vec![5, 5])]);
        assert_eq!(s.layers[0], Field::Axes(vec![3, 3]));
        // (N + 2 − 3)/1 + 1 = N ≥ 1 for every N ≥ 1.
        assert_eq!(s.inputs[0].accepted, SizeRule::Periodic { min: 1, modulus: 1 });
        assert_eq!(s.inputs[0].accepted.describe(), "any size ≥ 1");
        assert_eq!(s.inputs[1].axis, "width");
    }

    #[test]
    fn valid_convs_need_a_minimum_size() {
        // Two 5-tap valid convs on a trace: N − 4 − 4 ≥ 1 → N ≥ 9; RF 1 + 4 + 4 = 9.
        let s = sizes(
            "model m {\n input t: [1, 64]\n y = t -> conv(2, kernel=5) -> conv(1, kernel=5)\n output y\n}\n",
        );
        assert_eq!(s.inputs.len(), 1);
        assert_eq!(s.inputs[0].axis, "length");
        assert_eq!(s.inputs[0].accepted, SizeRule::Periodic { min: 9, modulus: 1 });
        assert_eq!(s.outputs, vec![Field::Axes(vec![9])]);
    }

    #[test]
    fn stride_two_chain() {
        // conv k=3 s=2 p=1 twice: y = ⌊(x − 1)/2⌋ + 1 accepts every x ≥ 1; no sample dropped
        // when x − 1 is even and (x + 1)/2 − 1 is even too: x ≡ 1 (mod 4).
        // RF: 1 + 2·1 = 3, jump 2; 3 + 2·2 = 7.
        let s = sizes(
            "model m {\n input x: [1, 33, 33]\n y = x -> conv(4, kernel=3, stride=2, pad=1) -> conv(4, kernel=3, stride=2, pad=1)\n output y\n}\n",
        );
        assert_eq!(s.inputs[0].accepted, SizeRule::Periodic { min: 1, modulus: 1 });
        assert_eq!(s.inputs[0].exact, SizeRule::Periodic { min: 1, modulus: 4 });
        assert_eq!(s.inputs[0].exact.describe(), "N = 4k + 1 (N ≥ 1)");
        assert_eq!(s.outputs, vec![Field::Axes(vec![7, 7])]);
    }

    #[test]
    fn unet_depth_4_takes_multiples_of_16() {
        let s = sizes("model m {\n input x: [1, 64, 48]\n y = x -> unet(1, depth=4, base=4)\n output y\n}\n");
        for axis in &s.inputs {
            assert_eq!(axis.accepted, SizeRule::Periodic { min: 16, modulus: 16 }, "{axis:?}");
            assert_eq!(axis.accepted.describe(), "multiples of 16");
        }
        assert_eq!(s.inputs[1].declared, 48);
    }

    #[test]
    fn unet_depth_2_receptive_field() {
        // Per level: two 3×3 convs, then pool 2. Jumps 1 → 2 → 4 (bottleneck) → upconv k=2 s=2
        // adds nothing. enc0: 1 + 2 + 2 = 5; pool: +1 → 6 (j 2); enc1: +4 +4 → 14; pool +2 → 16
        // (j 4); bottleneck: +8 +8 → 32; dec1 upconv (j 2) 32, convs +4 +4 → 40; dec0 upconv
        // (j 1), convs +2 +2 → 44; head 1×1 → 44.
        let s = sizes("model m {\n input x: [1, 32, 32]\n y = x -> unet(1, depth=2, base=4)\n output y\n}\n");
        assert_eq!(s.outputs, vec![Field::Axes(vec![44, 44])]);
    }

    #[test]
    fn dense_fixes_the_size() {
        // conv k=3 → N − 2; maxpool 2 → ⌊(N − 2)/2⌋ must stay 3 (flatten = 4·3·3 = 36): N ∈ 8..9.
        let s = sizes(
            "model m {\n input x: [1, 8, 8]\n y = x -> conv(4, kernel=3) -> maxpool(2) -> flatten -> dense(2)\n output y\n}\n",
        );
        assert_eq!(s.inputs[0].accepted, SizeRule::Ranges(vec![(8, 9)]));
        assert_eq!(s.inputs[0].accepted.describe(), "8 to 9");
        assert_eq!(s.outputs, vec![Field::Whole]);
    }

    #[test]
    fn strides_past_the_probe_still_describe_the_declared_size() {
        // 13 levels of pooling: sizes must be multiples of 2^13 = 8192, past the probe's reach.
        let s = sizes("model m {\n input x: [1, 8192]\n y = x -> unet(1, depth=13, base=1)\n output y\n}\n");
        assert_eq!(s.inputs[0].accepted, SizeRule::Periodic { min: 8192, modulus: 8192 });
        assert_eq!(s.inputs[0].accepted.describe(), "multiples of 8192");
        // Strides 2^10 = 1024 > the size-by-size period limit: multiples of 1024, not a list.
        let s = sizes("model m {\n input x: [1, 2048]\n y = x -> unet(1, depth=10, base=1)\n output y\n}\n");
        assert_eq!(s.inputs[0].accepted.describe(), "multiples of 1024");
    }

    #[test]
    fn describe_rules() {
        assert_eq!(SizeRule::Periodic { min: 32, modulus: 16 }.describe(), "multiples of 16, at least 32");
        assert_eq!(SizeRule::Ranges(vec![(3, 3), (5, 7)]).describe(), "3, 5 to 7");
        assert!(SizeRule::Periodic { min: 5, modulus: 4 }.contains(9));
        assert!(!SizeRule::Periodic { min: 5, modulus: 4 }.contains(8));
    }
}
