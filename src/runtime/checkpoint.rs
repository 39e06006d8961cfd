//! Weights and training checkpoints as safetensors, written atomically.
//!
//! - The weights file (the train block's `save`): every parameter and batchnorm statistic as
//!   F32, named `{layer}.weight` etc., the names `check` prints — loadable from PyTorch.
//! - The checkpoint (`{save stem}.ckpt.safetensors`): parameters and optimizer slots in F64 and
//!   the training position in the metadata, so `--resume` continues bit-exactly.

use super::optim::OptState;
use super::train::Fingerprint;
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

/// The safetensors layout, written by hand so that it is byte-for-byte reproducible (the
/// crate's serializer takes the metadata as a `HashMap`, whose order changes from run to
/// run): an 8-byte little-endian header length, the JSON header (`__metadata__` first with its
/// keys sorted, then the tensors sorted by name, each with dtype, shape and data offsets),
/// padded with spaces to a multiple of 8, then the tensors' bytes in the same order.
fn serialize(
    mut entries: Vec<(String, Dtype, Vec<usize>, Vec<u8>)>,
    meta: Vec<(String, String)>,
) -> Result<Vec<u8>, String> {
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let meta: std::collections::BTreeMap<String, String> = meta.into_iter().collect();
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!(meta));
    let mut offset = 0usize;
    for (name, dtype, shape, bytes) in &entries {
        let want = shape.iter().product::<usize>() * dtype.bitsize() / 8;
        if bytes.len() != want {
            return Err(format!("tensor `{name}` has {} bytes, its shape needs {want}", bytes.len()));
        }
        let dtype = match dtype {
            Dtype::F32 => "F32",
            Dtype::F64 => "F64",
            other => return Err(format!("tensor `{name}`: cannot write {other:?}")),
        };
        header.insert(
            name.clone(),
            serde_json::json!({ "dtype": dtype, "shape": shape, "data_offsets": [offset, offset + bytes.len()] }),
        );
        offset += bytes.len();
    }
    let mut json = serde_json::to_vec(&header).map_err(|e| e.to_string())?;
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + json.len() + offset);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    for (_, _, _, bytes) in &entries {
        out.extend_from_slice(bytes);
    }
    Ok(out)
}

/// The training data's RMS stored with the weights (`data_rms`), which inference scales
/// sections to: None when absent; an error when it is not a positive, finite, plausible number
/// (it would turn every output into NaN, Inf or garbage).
pub fn data_rms(meta: &HashMap<String, String>, path: &Path) -> Result<Option<f64>, String> {
    let Some(text) = meta.get("data_rms") else { return Ok(None) };
    match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 1e-30 && v < 1e30 => Ok(Some(v)),
        _ => Err(format!(
            "{}: its metadata data_rms = {text:?} is not a usable RMS (a positive finite number); the file is damaged or was not written by geonetc run",
            path.display()
        )),
    }
}

pub fn save_weights(
    path: &Path,
    graph: &Graph,
    params: &Params,
    meta: Vec<(String, String)>,
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
    fingerprint: &Fingerprint,
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
    let meta = vec![
        ("position".to_string(), serde_json::to_string(pos).map_err(|e| e.to_string())?),
        ("optimizer_t".to_string(), opt.t.to_string()),
        ("fingerprint".to_string(), serde_json::to_string(fingerprint).map_err(|e| e.to_string())?),
    ];
    write_atomically(path, &serialize(entries, meta)?)
}

/// Parameters, optimizer state and position, after checking that the checkpoint was written by
/// a run with the same fingerprint as `expected` (optimizer and its hyper-parameters, loss,
/// seed, batch, data, model): a mismatch is an error naming what differs. The flag is false
/// for checkpoints of older versions, which have no fingerprint to check.
pub fn load_checkpoint(
    path: &Path,
    graph: &Graph,
    opt_template: &OptState,
    expected: &Fingerprint,
) -> Result<(Params, OptState, Position, bool), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| format!("{}: not a safetensors checkpoint ({e})", path.display()))?;
    let meta =
        SafeTensors::read_metadata(&bytes).ok().and_then(|(_, m)| m.metadata().clone()).unwrap_or_default();
    let fingerprint: Option<Fingerprint> = match meta.get("fingerprint") {
        None => None,
        Some(f) => Some(
            serde_json::from_str(f)
                .map_err(|_| format!("{}: its run fingerprint is damaged", path.display()))?,
        ),
    };
    // Compare the runs first: another optimizer's slots may well have the same sizes.
    if let Some(stored) = &fingerprint {
        let diff = stored.differences(expected);
        if !diff.is_empty() {
            return Err(format!(
                "{} was written by a different run; resuming would mix them. It differs in: {}",
                path.display(),
                diff.join("; ")
            ));
        }
    }
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
    Ok((params, opt, pos, fingerprint.is_some()))
}
