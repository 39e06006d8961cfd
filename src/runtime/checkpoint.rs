//! Weights and training checkpoints as safetensors, written atomically.
//!
//! - The weights file (the train block's `save`): every parameter and batchnorm statistic as
//!   F32, named `{layer}.weight` etc., the names `check` prints — loadable from PyTorch.
//! - The checkpoint (`{save stem}.ckpt.safetensors`): parameters and optimizer slots in F64 and
//!   the training position in the metadata, so `--resume` continues bit-exactly.

use super::optim::OptState;
use super::write_atomically;
use crate::ir::{Graph, Params};
use ndarray::{ArrayD, IxDyn};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use std::collections::HashMap;
use std::path::Path;

fn bytes_f32(a: &ArrayD<f64>) -> Vec<u8> {
    a.iter().flat_map(|&v| (v as f32).to_le_bytes()).collect()
}

fn bytes_f64(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn serialize(
    entries: Vec<(String, Dtype, Vec<usize>, Vec<u8>)>,
    meta: HashMap<String, String>,
) -> Result<Vec<u8>, String> {
    let views: Vec<(String, TensorView)> = entries
        .iter()
        .map(|(n, d, s, b)| TensorView::new(*d, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    safetensors::serialize(views, Some(meta)).map_err(|e| e.to_string())
}

pub fn save_weights(
    path: &Path,
    graph: &Graph,
    params: &Params,
    meta: HashMap<String, String>,
) -> Result<(), String> {
    let entries = graph
        .params()
        .iter()
        .zip(params)
        .map(|(p, a)| (p.name.clone(), Dtype::F32, p.shape.clone(), bytes_f32(a)))
        .collect();
    write_atomically(path, &serialize(entries, meta)?)
}

fn to_f64(view: &TensorView) -> Result<Vec<f64>, String> {
    let d = view.data();
    Ok(match view.dtype() {
        Dtype::F32 => {
            d.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64).collect()
        }
        Dtype::F64 => d.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect(),
        other => return Err(format!("tensor of type {other:?}; expected F32 or F64")),
    })
}

/// Loads parameters by name. Every mismatch (missing, extra, wrong shape) is named.
pub fn load_weights(path: &Path, graph: &Graph) -> Result<(Params, HashMap<String, String>), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| format!("{}: not a safetensors file ({e})", path.display()))?;
    let meta =
        SafeTensors::read_metadata(&bytes).ok().and_then(|(_, m)| m.metadata().clone()).unwrap_or_default();
    load_from(&st, graph, "", path).map(|p| (p, meta))
}

fn load_from(st: &SafeTensors, graph: &Graph, prefix: &str, path: &Path) -> Result<Params, String> {
    let mut problems = vec![];
    let mut out = vec![];
    for p in graph.params() {
        match st.tensor(&format!("{prefix}{}", p.name)) {
            Err(_) => problems.push(format!("missing `{}`", p.name)),
            Ok(view) if view.shape() != p.shape.as_slice() => {
                problems.push(format!("`{}` is {:?}, the model needs {:?}", p.name, view.shape(), p.shape))
            }
            Ok(view) => match to_f64(&view) {
                Ok(v) => out.push(ArrayD::from_shape_vec(IxDyn(&p.shape), v).map_err(|e| e.to_string())?),
                Err(e) => problems.push(format!("`{}`: {e}", p.name)),
            },
        }
    }
    let known: std::collections::HashSet<String> =
        graph.params().iter().map(|p| format!("{prefix}{}", p.name)).collect();
    let mut extra: Vec<&str> =
        st.names().into_iter().filter(|n| n.starts_with(prefix) && !known.contains(*n)).collect();
    extra.sort();
    problems.extend(extra.iter().map(|n| format!("unexpected `{}`", &n[prefix.len()..])));
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(format!("{} does not fit the model: {}", path.display(), problems.join("; ")))
    }
}

/// Where training stands: resumes continue from here.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Position {
    /// Epochs completed before the current one.
    pub epoch: usize,
    /// Batches of the current epoch already done.
    pub batch: usize,
}

pub fn save_checkpoint(
    path: &Path,
    graph: &Graph,
    params: &Params,
    opt: &OptState,
    pos: &Position,
) -> Result<(), String> {
    let mut entries = vec![];
    for (p, a) in graph.params().iter().zip(params) {
        entries.push((
            format!("param/{}", p.name),
            Dtype::F64,
            p.shape.clone(),
            bytes_f64(&a.iter().copied().collect::<Vec<_>>()),
        ));
    }
    for (p, slots) in graph.params().iter().zip(&opt.slots) {
        for (k, s) in slots.iter().enumerate() {
            entries.push((format!("opt/{}/{k}", p.name), Dtype::F64, vec![s.len()], bytes_f64(s)));
        }
    }
    let mut meta = HashMap::new();
    meta.insert("position".to_string(), serde_json::to_string(pos).map_err(|e| e.to_string())?);
    meta.insert("optimizer_t".to_string(), opt.t.to_string());
    write_atomically(path, &serialize(entries, meta)?)
}

pub fn load_checkpoint(
    path: &Path,
    graph: &Graph,
    opt_template: &OptState,
) -> Result<(Params, OptState, Position), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| format!("{}: not a safetensors checkpoint ({e})", path.display()))?;
    let meta =
        SafeTensors::read_metadata(&bytes).ok().and_then(|(_, m)| m.metadata().clone()).unwrap_or_default();
    let params = load_from(&st, graph, "param/", path)?;
    let mut opt = opt_template.clone();
    for (p, slots) in graph.params().iter().zip(opt.slots.iter_mut()) {
        for (k, s) in slots.iter_mut().enumerate() {
            let name = format!("opt/{}/{k}", p.name);
            let view = st.tensor(&name).map_err(|_| {
                format!("{}: missing optimizer state `{name}` (another optimizer?)", path.display())
            })?;
            let v = to_f64(&view)?;
            if v.len() != s.len() {
                return Err(format!("{}: optimizer state `{name}` has the wrong size", path.display()));
            }
            *s = v;
        }
    }
    opt.t = meta
        .get("optimizer_t")
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| format!("{}: no optimizer step count", path.display()))?;
    let pos: Position = meta
        .get("position")
        .and_then(|p| serde_json::from_str(p).ok())
        .ok_or_else(|| format!("{}: no training position (not a geonetc checkpoint?)", path.display()))?;
    Ok((params, opt, pos))
}
