//! Inference on arrays of any size: the model (alone: not the `train` block, which describes
//! training data) is re-checked at the data's size; sizes it cannot take (e.g. a U-Net's 2^depth divisibility) are padded by reflection and the output cropped
//! back.

use super::engine::{Backend, Engine};
use crate::check::{self, program::Program};
use crate::ir::{self, Params};
use crate::seismic::hygiene;
use ndarray::{ArrayD, Axis, Slice};
use std::collections::HashMap;

/// Supplies parameters for a lowered graph (e.g. from a weights file).
pub type ParamLoader<'a> = &'a dyn Fn(&ir::Graph) -> Result<Params, String>;

pub struct Prepared {
    pub program: Program,
    /// The sample shape the model runs at (after padding).
    pub padded: Vec<usize>,
}

/// Finds the smallest padding (to multiples of 1, 2, 4, ... 1024 on every spatial axis) at which
/// the model checks for samples of `shape`.
pub fn prepare(source: &str, shape: &[usize]) -> Result<Prepared, String> {
    if shape.contains(&0) {
        return Err(format!("the input is empty (shape {shape:?})"));
    }
    let mut first_error = None;
    for m in (0..=10).map(|k| 1usize << k) {
        let padded: Vec<usize> = shape
            .iter()
            .enumerate()
            .map(|(a, &n)| if a == 0 || shape.len() == 1 { n } else { n.div_ceil(m) * m })
            .collect();
        let out = check::check_model(source, Some(std::slice::from_ref(&padded)));
        match out.program {
            Some(program) if program.model.inputs.len() != 1 => {
                let names: Vec<&str> = program.model.inputs.iter().map(|t| t.name.as_str()).collect();
                return Err(format!(
                    "the model has {} inputs ({}); inference feeds one input file, so it runs models with one input",
                    names.len(),
                    names.join(", ")
                ));
            }
            Some(program) => return Ok(Prepared { program, padded }),
            None => {
                if first_error.is_none() {
                    first_error = out.diagnostics.iter().find(|d| d.is_error()).map(|d| d.message.clone());
                }
            }
        }
        if shape.len() == 1 {
            break;
        }
    }
    Err(format!("the model cannot take inputs of shape {shape:?}: {}", first_error.unwrap_or_default()))
}

/// Mirror-pads spatial axes (2.. of a batched array) at their end to `target`.
fn reflect_pad(x: &ArrayD<f64>, target: &[usize]) -> ArrayD<f64> {
    let mut y = x.clone();
    for (a, &t) in target.iter().enumerate().skip(1) {
        let axis = a + 1;
        let n = y.shape()[axis];
        if t == n {
            continue;
        }
        let idx: Vec<usize> = (0..t)
            .map(|i| {
                if n == 1 {
                    return 0;
                }
                let period = 2 * (n - 1);
                let r = i % period;
                if r < n { r } else { period - r }
            })
            .collect();
        y = y.select(Axis(axis), &idx);
    }
    y
}

/// Runs a model on inputs of any size, keeping what it prepared (the re-checked program per
/// sample shape, the compiled engine per batch size, the parameters) for the next call — tiled
/// section inference calls it once per tile.
pub struct Runner<'a> {
    source: &'a str,
    params: Option<ParamLoader<'a>>,
    backend: Backend,
    prepared: HashMap<Vec<usize>, Prepared>,
    engines: HashMap<(Vec<usize>, usize), Engine>,
    params_cache: Option<Params>,
}

impl<'a> Runner<'a> {
    pub fn new(source: &'a str, params: Option<ParamLoader<'a>>, backend: Backend) -> Runner<'a> {
        Runner {
            source,
            params,
            backend,
            prepared: HashMap::new(),
            engines: HashMap::new(),
            params_cache: None,
        }
    }

    /// Runs the model on `input` (`[C, ...]` or `[B, C, ...]`), batch by batch.
    pub fn run(&mut self, input: &ArrayD<f64>, declared: &[usize]) -> Result<ArrayD<f64>, String> {
        let batched = match input.ndim() {
            n if n == declared.len() => false,
            n if n == declared.len() + 1 => true,
            _ => {
                return Err(format!(
                    "input has shape {:?}; the model takes {:?} samples (batch axis optional)",
                    input.shape(),
                    declared
                ));
            }
        };
        let bad = input.iter().filter(|v| !v.is_finite()).count();
        if bad > 0 {
            return Err(format!(
                "the input holds {bad} NaN or infinite values of {}; the model needs finite data",
                input.len()
            ));
        }
        let x = if batched { input.clone() } else { input.clone().insert_axis(Axis(0)) };
        let sample: Vec<usize> = x.shape()[1..].to_vec();
        if declared.len() > 1 && sample[0] != declared[0] {
            return Err(format!("input has {} channels; the model takes {}", sample[0], declared[0]));
        }
        if !self.prepared.contains_key(&sample) {
            let p = prepare(self.source, &sample)?;
            self.prepared.insert(sample.clone(), p);
        }
        let prepared = &self.prepared[&sample];
        let n = x.shape()[0];
        let chunk = 8.min(n).max(1);
        let mut outs = vec![];
        for start in (0..n).step_by(chunk) {
            let end = (start + chunk).min(n);
            let xb =
                reflect_pad(&x.slice_axis(Axis(0), Slice::from(start..end)).to_owned(), &prepared.padded);
            let key = (sample.clone(), end - start);
            if !self.engines.contains_key(&key) {
                let g = ir::lower(&prepared.program, end - start);
                self.engines.insert(key.clone(), Engine::new(&g, self.backend)?);
            }
            let engine = self.engines.get_mut(&key).ok_or("engine")?;
            let mut p = match (&self.params_cache, self.params) {
                (Some(p), _) => p.clone(),
                (None, Some(load)) => load(engine.graph())?,
                (None, None) => {
                    if !ir::fully_initialised(engine.graph()) {
                        return Err("the model has parameters without `init`: give --weights".into());
                    }
                    ir::init_params(engine.graph(), 0)
                }
            };
            if self.params_cache.is_none() {
                self.params_cache = Some(p.clone());
            }
            outs.push(engine.forward(&mut p, &[xb], false, 0).remove(0));
        }
        let views: Vec<_> = outs.iter().map(|o| o.view()).collect();
        let mut y = ndarray::concatenate(Axis(0), &views).map_err(|e| e.to_string())?;
        let bad = y.iter().filter(|v| !v.is_finite()).count();
        if bad > 0 {
            return Err(format!(
                "the model's output holds {bad} NaN or infinite values of {}; nothing written (check the weights and the input's range)",
                y.len()
            ));
        }
        // Crop back when the network preserves the (padded) spatial size.
        if prepared.padded != sample && y.ndim() == x.ndim() && y.shape()[2..] == prepared.padded[1..] {
            for (a, &orig) in sample.iter().enumerate().skip(1) {
                y = y.slice_axis(Axis(a + 1), Slice::from(0..orig)).to_owned();
            }
        }
        Ok(if batched { y } else { y.index_axis(Axis(0), 0).to_owned().into_dyn() })
    }
}

/// Runs the model on `input` (`[C, ...]` or `[B, C, ...]`) once.
pub fn run(
    source: &str,
    params: Option<ParamLoader>,
    input: &ArrayD<f64>,
    declared: &[usize],
    backend: Backend,
) -> Result<ArrayD<f64>, String> {
    Runner::new(source, params, backend).run(input, declared)
}

/// How a section is cleaned around the model (see `seismic::hygiene`): the options, which
/// traces the file's headers mark dead, and the training data's RMS it is scaled to.
pub struct SectionHygiene<'a> {
    pub options: &'a hygiene::Options,
    pub dead_in_header: &'a [bool],
    pub target_rms: Option<f64>,
}

/// Denoises a `[traces, samples]` section: scanned, prepared (non-finite samples refused or
/// masked, scaled by its clipped RMS to the training data's RMS), run through the model
/// ([`denoise_section`]) and restored (scaled back, dead and muted samples passed through).
/// This is the thin wiring a streaming caller repeats per window.
pub fn run_section(
    source: &str,
    params: Option<ParamLoader>,
    section: &ndarray::Array2<f64>,
    declared: &[usize],
    clean: &SectionHygiene,
    backend: Backend,
) -> Result<(ndarray::Array2<f64>, hygiene::Report), String> {
    let (traces, samples) = section.dim();
    if traces == 0 || samples == 0 {
        return Err(format!("the section is empty ({traces} traces of {samples} samples)"));
    }
    let found = hygiene::scan(section.view(), clean.dead_in_header, clean.options);
    let (x, scale) = hygiene::prepare(section.view(), &found, clean.target_rms, clean.options)?;
    let y = denoise_section(source, params, &x, declared, backend)?;
    let restored = hygiene::restore(y.view(), section.view(), &found, &scale, clean.options);
    Ok((restored, hygiene::Report::new(&found, scale, clean.options)))
}

/// Runs the model over a `[traces, samples]` section as it is (no scaling). 2-D models see it
/// as one channel of time samples × traces, in overlapping tiles of the model's input size
/// blended without seams; 1-D models see each trace. f64 in and out, so the interpreter keeps
/// int32 samples exact.
pub fn denoise_section(
    source: &str,
    params: Option<ParamLoader>,
    x: &ndarray::Array2<f64>,
    declared: &[usize],
    backend: Backend,
) -> Result<ndarray::Array2<f64>, String> {
    let (traces, samples) = x.dim();
    if traces == 0 || samples == 0 {
        return Err(format!("the section is empty ({traces} traces of {samples} samples)"));
    }
    check_size_preserving(source)?;
    let mut runner = Runner::new(source, params, backend);
    let y = match declared {
        [1, _] => {
            let batch = x.clone().insert_axis(Axis(1)).into_dyn();
            let out = runner.run(&batch, declared)?;
            out.index_axis(Axis(1), 0)
                .to_owned()
                .into_dimensionality::<ndarray::Ix2>()
                .map_err(|e| e.to_string())?
        }
        [1, h, w] => {
            let tile = [*h, *w];
            let overlap = (h.min(w) / 4).max(1);
            let t = x.t().to_owned();
            let y = crate::seismic::apply_tiled(&t, tile, overlap, |patch| {
                let sample = patch.to_owned().insert_axis(Axis(0)).into_dyn();
                let out = runner.run(&sample, declared)?;
                out.index_axis(Axis(0), 0)
                    .to_owned()
                    .into_dimensionality::<ndarray::Ix2>()
                    .map_err(|e| e.to_string())
            })?;
            y.t().to_owned()
        }
        _ => {
            return Err(format!(
                "a SEG-Y section feeds models with one input channel ([1, N] or [1, H, W]); this one takes {declared:?}"
            ));
        }
    };
    if y.dim() != x.dim() {
        return Err(format!("the model turned a {:?} section into {:?}", x.dim(), y.dim()));
    }
    Ok(y)
}

/// Section inference blends tiles, which needs a model whose output has its input's size.
/// Otherwise: which layers shrink (or grow) it, so the user knows what to change.
pub(crate) fn check_size_preserving(source: &str) -> Result<(), String> {
    let out = check::check_model(source, None);
    let Some(program) = out.program else {
        return Err(out
            .diagnostics
            .iter()
            .find(|d| d.is_error())
            .map(|d| d.message.clone())
            .unwrap_or_default());
    };
    let m = &program.model;
    let (Some(input), Some(output)) = (m.inputs.first(), m.outputs.first()) else { return Ok(()) };
    if input.shape[1..] == output.shape.get(1..).unwrap_or(&[])[..] {
        return Ok(());
    }
    let shape_of = |v: &crate::check::program::ValueRef| match *v {
        crate::check::program::ValueRef::Input(i) => m.inputs[i].shape.clone(),
        crate::check::program::ValueRef::Layer(i) => m.layers[i].shape.clone(),
    };
    let culprits: Vec<String> = m
        .layers
        .iter()
        .filter_map(|l| {
            let before = shape_of(l.inputs.first()?);
            let changed = before.len() == l.shape.len() && before.len() > 1 && before[1..] != l.shape[1..];
            changed.then(|| format!("{} ({} → {})", l.name, fmt_spatial(&before), fmt_spatial(&l.shape)))
        })
        .collect();
    Err(format!(
        "section inference needs a size-preserving model (output as large as its input), but {} turns {} into {}{}; use `pad=same` on its convolutions",
        m.name,
        fmt_spatial(&input.shape),
        fmt_spatial(&output.shape),
        if culprits.is_empty() {
            String::new()
        } else {
            format!(": the sizes change at {}", culprits.join(", "))
        }
    ))
}

/// `6×6` for the spatial axes of a `[C, H, W]` shape.
fn fmt_spatial(shape: &[usize]) -> String {
    let spatial = shape.get(1..).filter(|s| !s.is_empty()).unwrap_or(shape);
    spatial.iter().map(usize::to_string).collect::<Vec<_>>().join("×")
}
